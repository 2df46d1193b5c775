//! `meshca policy check` / `compile` from the command line: exit codes, text and JSON output,
//! the examples of the README, and errors that name the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshca")).args(args).output().expect("run meshca");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn ex(name: &str) -> String {
    examples().join(name).display().to_string()
}

#[test]
fn productpage_walkthrough_explains_the_denial() {
    let (pol, reqs) = (ex("productpage.yaml"), ex("productpage-requests.yaml"));
    let base = ["policy", "check", "--policies", &pol, "--namespace", "default", "--labels", "app=productpage"];
    let (code, out, err) = run(&[&base[..], &["--requests", &reqs]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ALLOW 200 [stage allow] by ns[default]-policy[productpage-viewer]-rule[0]"), "{out}");
    assert!(out.contains("methods [GET] but request had POST"), "{out}");

    let (code, out, err) =
        run(&[&base[..], &["--method", "POST", "--path", "/productpage", "--expect", "allow", "-o", "json"]].concat());
    assert_eq!(code, 1, "an unmet expectation fails: {out}{err}");
    assert!(err.contains("did not get the expected decision"), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["decision"], "deny");
    assert_eq!(v[0]["status"], 403);
    assert_eq!(v[0]["stage"], "no-allow-match");
    assert_eq!(v[0]["policy"], Value::Null);
    assert_eq!(v[0]["explanation"]["nearest_misses"][0]["failed"]["actual"], "POST");
}

#[test]
fn jwt_walkthrough_gives_envoy_messages() {
    let (pol, reqs, jwks) = (ex("jwt.yaml"), ex("jwt-requests.yaml"), ex("jwt-jwks.json"));
    let args = [
        "policy",
        "check",
        "--policies",
        &pol,
        "--namespace",
        "foo",
        "--labels",
        "app=httpbin",
        "--jwks",
        &jwks,
        "--jwt-now",
        "2018-07-04T19:13:30Z",
        "--requests",
        &reqs,
        "--output",
        "json",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<(String, u64, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let msg = x["explanation"]["jwt"]["message"].as_str().unwrap_or("").to_string();
            (x["stage"].as_str().unwrap().to_string(), x["status"].as_u64().unwrap(), msg)
        })
        .collect();
    let want = [
        ("no-allow-match", 403, "no token"),
        ("jwt", 401, "Jwt is expired"),
        ("jwt", 401, "Jwt issuer is not configured"),
        ("jwt", 401, "Jwt verification fails"),
    ];
    let want: Vec<(String, u64, String)> = want.iter().map(|(a, b, c)| (a.to_string(), *b, c.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn compile_prints_json_and_yaml_for_the_same_filters() {
    let pol = ex("productpage.yaml");
    let base = ["policy", "compile", "--policies", &pol, "--namespace", "default", "--labels", "app=productpage"];
    let (code, json_out, err) = run(&base);
    assert_eq!(code, 0, "{err}");
    let j: Value = serde_json::from_str(&json_out).unwrap();
    let f = &j["http_filters"][0];
    let tc = if f["typed_config"].is_null() { &f["typedConfig"] } else { &f["typed_config"] };
    let policies = &tc["rules"]["policies"];
    assert!(policies.get("ns[default]-policy[productpage-viewer]-rule[0]").is_some(), "{json_out}");
    let (code, yaml_out, err) = run(&[&base[..], &["--output", "yaml"]].concat());
    assert_eq!(code, 0, "{err}");
    let y = meshca_policy::load::yaml_to_json("out.yaml", &yaml_out).unwrap();
    assert_eq!(y, vec![j]);
    let (code, tcp, _) = run(&[&base[..], &["--protocol", "tcp"]].concat());
    assert_eq!(code, 0);
    assert!(tcp.contains("network_filters"), "{tcp}");
}

#[test]
fn bad_input_names_the_file_and_request() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = dir.path().join("reqs.yaml");
    std::fs::write(&reqs, "- name: typo\n  methd: GET\n").unwrap();
    let pol = ex("productpage.yaml");
    let (code, _, err) = run(&["policy", "check", "--policies", &pol, "--requests", reqs.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("reqs.yaml") && err.contains("request #1 (typo)") && err.contains("methd"), "{err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: a}\nspec:\n  rulez: []\n").unwrap();
    let (code, _, err) = run(&["policy", "check", "--policies", bad.to_str().unwrap(), "--method", "GET"]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.yaml:5") && err.contains("rulez"), "{err}");

    let (code, _, err) = run(&["policy", "check", "--policies", &pol, "--source-ip", "999.1.1.1"]);
    assert_eq!(code, 1);
    assert!(err.contains("source.ip"), "{err}");
}

#[test]
fn lint_json_lists_findings_and_fails_on_errors() {
    let (code, out, err) = run(&["policy", "lint", &ex("lint-traps.yaml"), "--output", "json"]);
    assert_eq!(code, 1, "errors fail the run: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let f = v.as_array().unwrap();
    for key in ["id", "severity", "file", "line", "object", "message", "hint"] {
        assert!(f.iter().all(|x| x.get(key).is_some()), "{key} missing: {out}");
    }
    let p001 = f.iter().find(|x| x["id"] == "POL001").expect("POL001");
    assert_eq!((p001["severity"].as_str(), p001["line"].as_u64()), (Some("error"), Some(14)));
    assert!(p001["file"].as_str().unwrap().ends_with("lint-traps.yaml"));
    let (code, out, _) = run(&["policy", "lint", &ex("productpage.yaml")]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn diff_groups_changes_and_convert_reports_losses() {
    let args = [
        "policy",
        "diff",
        &ex("productpage.yaml"),
        &ex("productpage-v2.yaml"),
        "--namespace",
        "default",
        "--labels",
        "app=productpage",
    ];
    let (code, out, err) = run(&[&args[..], &["--output", "json"]].concat());
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["newly_allowed"].as_array().unwrap().iter().any(|c| c["request"]["method"] == "POST"), "{out}");
    assert!(
        v["newly_denied"].as_array().unwrap().iter().any(|c| c["request"]["source"]["principal"].is_null()),
        "{out}"
    );
    let (code, _, _) = run(&[&args[..], &["--fail-on-change"]].concat());
    assert_eq!(code, 1);

    let (code, out, err) = run(&["policy", "convert", &ex("legacy.yaml"), "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = v["objects"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "AuthorizationPolicy",
            "AuthorizationPolicy",
            "PeerAuthentication",
            "RequestAuthentication",
            "AuthorizationPolicy"
        ]
    );
    assert!(v["issues"].as_array().unwrap().iter().any(|i| i["message"].as_str().unwrap().contains("USE_ORIGIN")));
    let (code, yaml, _) = run(&["policy", "convert", &ex("legacy.yaml")]);
    assert_eq!(code, 0);
    let docs = meshca_policy::load::load_str("converted.yaml", &yaml).expect("converted YAML loads as modern policies");
    assert_eq!(docs.len(), 5);
}

#[test]
fn tcp_denial_names_the_rule_that_vanished() {
    let pol = ex("productpage.yaml");
    let args = [
        "policy",
        "check",
        "--policies",
        &pol,
        "--namespace",
        "default",
        "--labels",
        "app=productpage",
        "--protocol",
        "tcp",
    ];
    let (code, out, err) = run(&[&args[..], &["--source-principal", "cluster.local/ns/a/sa/b", "-o", "json"]].concat());
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v[0]["decision"].as_str(), v[0]["stage"].as_str()), (Some("deny"), Some("no-allow-match")));
    assert_eq!(v[0]["status"], Value::Null);
    let notes = v[0]["explanation"]["notes"].to_string();
    assert!(notes.contains("ns[default]-policy[productpage-viewer]-rule[0]") && notes.contains("HTTP only"), "{out}");
}
