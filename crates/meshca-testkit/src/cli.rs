//! The `meshca` CLI as tests use it to make CA material.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `meshca ARGS`; panics with its output on failure, returns stdout.
pub fn meshca(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("running the meshca CLI");
    assert!(
        out.status.success(),
        "meshca {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `meshca certs root` into `work/NAME` with CN "Root NAME"; returns the directory.
pub fn make_root(bin: &Path, work: &Path, name: &str) -> PathBuf {
    let dir = work.join(name);
    meshca(bin, &["certs", "root", "--out", dir.to_str().unwrap(), "--cn", &format!("Root {name}")]);
    dir
}

/// `meshca certs intermediate` under `root` into `work/NAME` (cluster NAME).
pub fn make_intermediate(bin: &Path, work: &Path, root: &Path, name: &str, ttl: &str) -> PathBuf {
    let dir = work.join(name);
    let (r, o) = (root.to_str().unwrap(), dir.to_str().unwrap());
    meshca(bin, &["certs", "intermediate", "--root", r, "--out", o, "--cluster", name, "--ttl", ttl]);
    dir
}

/// `meshca certs bundle` of PEM files into `out`; returns the bundle.
pub fn make_bundle(bin: &Path, out: &Path, inputs: &[&Path]) -> String {
    let mut args = vec!["certs", "bundle", "--out", out.to_str().unwrap()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    meshca(bin, &args);
    std::fs::read_to_string(out).unwrap()
}
