//! `meshca doctor --policy-dir`: the seeds' policy failure modes, found in
//! the files an operator applies. Policies Istio refuses (with file, line and
//! field), authorization that never matches what it names (too restrictive),
//! HTTP-only rules on TCP ports, duplicate and legacy objects.

mod doctor_support;

use doctor_support::doctor;
use std::path::Path;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policy");

fn dir_with(work: &Path, name: &str, files: &[(&str, &str)]) -> String {
    let d = work.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (f, body) in files {
        std::fs::write(d.join(f), body).unwrap();
    }
    d.display().to_string()
}

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(EXAMPLES).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn policy_failure_modes_are_named_with_file_line_and_fix() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // A sound set: loads, no lint error.
    let allow = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-sleep\n  \
                 namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  rules:\n  - from:\n    \
                 - source:\n        principals: [\"cluster.local/ns/foo/sa/sleep\"]\n";
    let ok = doctor(&["--policy-dir", &dir_with(w, "ok", &[("allow.yaml", allow)])]);
    ok.expect("policy.valid", "ok", &[]);
    ok.expect("policy.lint-errors", "ok", &[]);
    ok.expect_healthy();

    // Refused by Istio's validation: the file, line and field are named.
    let broken =
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: x\n  namespace: foo\n\
                  spec:\n  rules:\n  - from:\n    - source:\n        principal: [\"a\"]\n";
    let r = doctor(&["--policy-dir", &dir_with(w, "broken", &[("p.yaml", broken)])]);
    r.expect("policy.valid", "error", &["p.yaml:10", "spec.rules[0].from[0].source.principal", "did you mean"]);
    r.expect("policy.lint-errors", "skipped", &[]);
    assert_eq!(r.code, 1);

    // Too restrictive: a principal written with spiffe:// never matches.
    let r = doctor(&["--policy-dir", &dir_with(w, "traps", &[("traps.yaml", &example("lint-traps.yaml"))])]);
    r.expect("policy.lint-errors", "error", &["spiffe://", "traps.yaml:", "without the scheme"]);
    r.expect("policy.lint-warnings", "warning", &["HTTP-only"]);
    assert_eq!(r.code, 1);

    // Legacy objects left behind, and a second ClusterRbacConfig.
    let dup =
        "apiVersion: rbac.istio.io/v1alpha1\nkind: ClusterRbacConfig\nmetadata:\n  name: other\nspec:\n  mode: ON\n";
    let r = doctor(&[
        "--policy-dir",
        &dir_with(w, "legacy", &[("legacy.yaml", &example("legacy.yaml")), ("dup.yaml", dup)]),
    ]);
    let lint = r.check("policy.lint-errors").to_string() + &r.check("policy.lint-warnings").to_string();
    assert!(lint.contains("legacy v1alpha1 object"), "{lint}");
    assert!(lint.contains("ClusterRbacConfig"), "{lint}");
    assert!(r.check("policy.lint-errors")["result"] == "error", "a second ClusterRbacConfig is an error: {}", r.text);

    // No directory: a clear failure, not a panic.
    let r = doctor(&["--policy-dir", &w.join("missing").display().to_string()]);
    r.expect("policy.valid", "error", &["cannot read"]);
}
