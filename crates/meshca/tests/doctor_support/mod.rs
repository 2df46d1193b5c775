//! Helpers for the `meshca doctor` tests: run the real binary with
//! `--output json`, look up a check by id, and make CA material with the
//! `meshca certs` CLI and openssl.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// The outcome of one `meshca doctor` run.
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub text: String,
    pub elapsed: std::time::Duration,
}

impl Run {
    /// The check with this id (the first one when several targets share it).
    pub fn check(&self, id: &str) -> &Value {
        self.json["categories"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["checks"].as_array().into_iter().flatten())
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in\n{}", self.text))
    }

    /// Assert `id` has `result` and that its error and hint mention `needles` (case-insensitive).
    pub fn expect(&self, id: &str, result: &str, needles: &[&str]) {
        let c = self.check(id);
        assert_eq!(c["result"], result, "check {id}: {c:#}\nfull report:\n{}", self.text);
        let said = format!("{} {}", c["error"].as_str().unwrap_or(""), c["hint"].as_str().unwrap_or("")).to_lowercase();
        for n in needles {
            assert!(said.contains(&n.to_lowercase()), "check {id} does not mention {n:?}: {c:#}");
        }
    }

    /// Every check is ok or skipped, the run succeeded (exit 0).
    pub fn expect_healthy(&self) {
        for cat in self.json["categories"].as_array().unwrap() {
            for c in cat["checks"].as_array().unwrap() {
                assert!(c["result"] == "ok" || c["result"] == "skipped", "not healthy: {c:#}\nreport:\n{}", self.text);
            }
        }
        assert_eq!(self.json["success"], true);
        assert_eq!(self.code, 0, "{}", self.text);
    }

    /// Ids of the checks that returned ok.
    pub fn ok_ids(&self) -> Vec<String> {
        self.json["categories"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["checks"].as_array().into_iter().flatten())
            .filter(|c| c["result"] == "ok")
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// `meshca doctor ARGS --output json`.
pub fn doctor(args: &[&str]) -> Run {
    let start = Instant::now();
    let out =
        Command::new(bin()).arg("doctor").args(args).args(["--output", "json"]).output().expect("run meshca doctor");
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("doctor output is not JSON ({e}):\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(code == 0, json["success"] == true, "exit code {code} disagrees with success: {text}");
    Run { code, json, text, elapsed }
}

/// `meshca doctor ARGS` in text form: (exit code, stdout).
pub fn doctor_text(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).arg("doctor").args(args).output().expect("run meshca doctor");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
}

pub fn meshca(args: &[&str]) -> String {
    meshca_testkit::cli::meshca(&bin(), args)
}

/// A root in `work/name` and an intermediate under it in `work/<name>-int`, valid `ttl`.
pub fn make_set(work: &Path, name: &str, ttl: &str) -> PathBuf {
    let root = meshca_testkit::cli::make_root(&bin(), work, name);
    meshca_testkit::cli::make_intermediate(&bin(), work, &root, &format!("{name}-int"), ttl)
}

/// Copy the Istio layout files of `set` into `dir` (renamed into place, key last).
pub fn install(set: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem", "ca-key.pem"] {
        let tmp = dir.join(format!(".{f}.tmp"));
        std::fs::copy(set.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(f)).unwrap();
    }
}

/// Run openssl in `dir`; panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    meshca_testkit::openssl::require();
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn free_addr() -> String {
    format!("127.0.0.1:{}", meshca_testkit::free_port())
}

/// `meshca request` a certificate for `ns/sa` from `server` into `out`.
pub fn request_cert(server: &meshca_testkit::Server, work: &Path, ns: &str, sa: &str, out: &Path) {
    let root = work.join(format!("ca-root-{sa}.pem"));
    std::fs::write(&root, server.root_pem()).unwrap();
    let token = work.join(format!("token-{sa}"));
    std::fs::write(&token, server.token(ns, sa)).unwrap();
    meshca(&[
        "request",
        "--ca-addr",
        &server.grpc.to_string(),
        "--ca-root",
        root.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
}

/// Wait until `f` holds (polling every 100 ms, up to 30 s).
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
