//! The Prometheus alerting rules shipped in deploy/prometheus/ are valid
//! (`promtool check rules`) and fire on synthetic series exactly as the unit
//! tests in deploy/prometheus/tests/ expect (`promtool test rules`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").current_dir(dir()).args(args).output().unwrap_or_else(|e| {
        panic!("promtool is required by this test ({e}): install it with `apt-get install prometheus` (scripts/test.sh does)")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_are_valid() {
    let out = promtool(&["check", "rules", "meshca-ca.rules.yml", "meshca-agent.rules.yml"]);
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
}

#[test]
fn rules_fire_on_synthetic_series() {
    let out = promtool(&["test", "rules", "tests/meshca-ca.test.yml", "tests/meshca-agent.test.yml"]);
    assert_eq!(out.matches("SUCCESS").count(), 2, "{out}");
}

#[test]
fn a_wrong_expectation_fails() {
    // Guards against a promtool that passes anything: the agent test with the
    // stale-bundle alert expected for the healthy agent must fail.
    let text = std::fs::read_to_string(dir().join("tests/meshca-agent.test.yml")).unwrap();
    let broken = text.replace(
        "instance: node-b }\n            exp_annotations:\n              summary: \"agent node-b did not",
        "instance: node-a }\n            exp_annotations:\n              summary: \"agent node-b did not",
    );
    assert_ne!(broken, text, "the test file changed; update this test");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("broken.test.yml");
    std::fs::write(
        &f,
        broken.replace("../meshca-agent.rules.yml", &dir().join("meshca-agent.rules.yml").display().to_string()),
    )
    .unwrap();
    let out = Command::new("promtool").args(["test", "rules", f.to_str().unwrap()]).output().expect("promtool");
    assert!(!out.status.success(), "promtool accepted a wrong expectation: {}", String::from_utf8_lossy(&out.stdout));
}
