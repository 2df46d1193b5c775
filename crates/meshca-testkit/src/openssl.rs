//! The openssl CLI as an independent verifier.

use std::path::Path;
use std::process::Command;

/// Panics with a clear message when openssl is missing: tests never skip.
pub fn require() {
    let ok = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "the `openssl` CLI is required by this test but was not found on PATH (install the openssl package)");
}

/// Run openssl with args; Ok(stdout) on success, Err(stderr+stdout) otherwise.
pub fn run(args: &[&str]) -> Result<String, String> {
    require();
    let out = Command::new("openssl").args(args).output().expect("running openssl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stderr), stdout))
    }
}

/// `openssl verify -CAfile roots -untrusted chain leaf` on a CA response chain
/// (leaf, intermediates..., root bundle). `dir` receives the PEM files.
pub fn verify_response(dir: &Path, chain: &[String]) -> Result<(), String> {
    assert!(chain.len() >= 2, "a response chain has at least a leaf and a root bundle, got {}", chain.len());
    let leaf = dir.join("leaf.pem");
    let roots = dir.join("roots.pem");
    std::fs::write(&leaf, &chain[0]).unwrap();
    std::fs::write(&roots, &chain[chain.len() - 1]).unwrap();
    let mut args = vec!["verify".to_string(), "-CAfile".into(), roots.display().to_string()];
    let middle = &chain[1..chain.len() - 1];
    if !middle.is_empty() {
        let inter = dir.join("untrusted.pem");
        std::fs::write(&inter, middle.concat()).unwrap();
        args.push("-untrusted".into());
        args.push(inter.display().to_string());
    }
    args.push(leaf.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&refs)?;
    if out.contains(": OK") {
        Ok(())
    } else {
        Err(out)
    }
}

/// `openssl x509 -noout -text` of a PEM certificate.
pub fn text(dir: &Path, pem: &str) -> String {
    let p = dir.join("cert-text.pem");
    std::fs::write(&p, pem).unwrap();
    run(&["x509", "-noout", "-text", "-in", p.to_str().unwrap()]).expect("openssl x509 -text")
}
