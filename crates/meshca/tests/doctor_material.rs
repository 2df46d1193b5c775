//! `meshca doctor --ca-dir`: plug-in CA files made with `meshca certs` and
//! openssl, healthy and broken the ways the seeds and Istio issues describe.

mod doctor_support;

use doctor_support::*;
use std::path::Path;

fn cat(files: &[&Path], out: &Path) {
    let text: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    std::fs::write(out, text).unwrap();
}

#[test]
fn a_healthy_set_reports_all_ok_in_every_format() {
    let work = tempfile::tempdir().unwrap();
    let set = make_set(work.path(), "a", "9000h");
    let run = doctor(&["--ca-dir", set.to_str().unwrap()]);
    run.expect_healthy();
    assert_eq!(run.ok_ids().iter().filter(|i| i.starts_with("ca-material.")).count(), 7, "{}", run.text);
    let (code, text) = doctor_text(&["--ca-dir", set.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(text.starts_with("ca-material\n-----------\n√ plug-in CA files are present"), "{text}");
    assert!(text.contains("- Vault is reachable, initialized and unsealed (skipped: no --vault-addr given)"), "{text}");
    assert!(text.trim_end().ends_with("Status check results are √"), "{text}");
    let (code, short) = doctor_text(&["--ca-dir", set.to_str().unwrap(), "--output", "short"]);
    assert_eq!(code, 0);
    assert_eq!(short.trim(), "Status check results are √", "short output shows only problems");
}

#[test]
fn missing_secret_objects_name_the_missing_files() {
    let work = tempfile::tempdir().unwrap();
    let set = make_set(work.path(), "a", "9000h");
    std::fs::remove_file(set.join("ca-key.pem")).unwrap();
    std::fs::remove_file(set.join("cert-chain.pem")).unwrap();
    let run = doctor(&["--ca-dir", set.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    run.expect("ca-material.files-complete", "error", &["incomplete", "ca-key.pem, cert-chain.pem", "not all synced"]);
    // Everything after the fatal check is skipped and says why.
    run.expect("ca-material.chain-ordered", "skipped", &["ca-material.files-complete failed"]);

    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    doctor(&["--ca-dir", empty.to_str().unwrap()]).expect(
        "ca-material.files-complete",
        "error",
        &["no plug-in CA files", "self-signed"],
    );
}

#[test]
fn key_from_another_generation_is_a_mismatch() {
    let work = tempfile::tempdir().unwrap();
    let set = make_set(work.path(), "a", "9000h");
    let other = make_set(work.path(), "b", "9000h");
    std::fs::copy(other.join("ca-key.pem"), set.join("ca-key.pem")).unwrap();
    doctor(&["--ca-dir", set.to_str().unwrap()]).expect(
        "ca-material.key-matches-cert",
        "error",
        &["does not match the key", "different generations"],
    );
}

#[test]
fn chain_in_the_wrong_order_and_a_broken_chain_are_told_apart() {
    let work = tempfile::tempdir().unwrap();
    let set = make_set(work.path(), "a", "9000h");
    // Root first, then the intermediate (istio#22530).
    cat(&[&set.join("root-cert.pem"), &set.join("ca-cert.pem")], &set.join("cert-chain.pem"));
    doctor(&["--ca-dir", set.to_str().unwrap()]).expect(
        "ca-material.chain-ordered",
        "error",
        &["wrong order", "is #2, not #1", "followed by its issuer"],
    );

    // A bundle holding another root: the chain reaches no trusted root (istio#46600).
    let set = make_set(work.path(), "c", "9000h");
    let foreign = meshca_testkit::cli::make_root(&bin(), work.path(), "foreign");
    std::fs::copy(set.join("ca-cert.pem"), set.join("cert-chain.pem")).unwrap();
    std::fs::copy(foreign.join("root-cert.pem"), set.join("root-cert.pem")).unwrap();
    doctor(&["--ca-dir", set.to_str().unwrap()]).expect(
        "ca-material.chain-ordered",
        "error",
        &["incomplete chain", "Root c", "signed by unknown authority"],
    );

    // The root twice at the end (istio#39001) is a warning.
    let set = make_set(work.path(), "d", "9000h");
    cat(
        &[&set.join("ca-cert.pem"), &set.join("root-cert.pem"), &set.join("root-cert.pem")],
        &set.join("cert-chain.pem"),
    );
    let run = doctor(&["--ca-dir", set.to_str().unwrap()]);
    run.expect("ca-material.chain-ordered", "warning", &["contains the root 2 times", "istio#39001"]);
    assert_eq!(run.code, 0);
}

#[test]
fn an_end_entity_certificate_plugged_in_as_the_ca_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let set = make_set(work.path(), "a", "9000h");
    let d = set.as_path();
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf-key.pem",
            "-subj",
            "/CN=not-a-ca",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "300",
            "-extfile",
            "ext.cnf",
            "-out",
            "leaf.pem",
        ],
    );
    cat(&[&d.join("leaf.pem"), &d.join("ca-cert.pem")], &d.join("cert-chain.pem"));
    std::fs::copy(d.join("leaf.pem"), d.join("ca-cert.pem")).unwrap();
    std::fs::copy(d.join("leaf-key.pem"), d.join("ca-key.pem")).unwrap();
    let run = doctor(&["--ca-dir", d.to_str().unwrap()]);
    run.expect("ca-material.key-matches-cert", "ok", &[]);
    run.expect("ca-material.signer-is-ca", "error", &["CN=not-a-ca", "CA:TRUE is missing", "not authorized to sign"]);
    run.expect("ca-material.chain-ordered", "ok", &[]);
}

#[test]
fn short_lived_material_warns_and_weak_keys_fail() {
    let work = tempfile::tempdir().unwrap();
    let set = make_set(work.path(), "a", "720h");
    let run = doctor(&["--ca-dir", set.to_str().unwrap(), "--max-workload-ttl", "90d"]);
    run.expect("ca-material.validity", "warning", &["a-int", "expires on", "60 days"]);
    run.expect(
        "ca-material.outlives-workload-ttl",
        "warning",
        &["expires in", "before a workload certificate issued now (up to 90 days)", "outlive their issuer"],
    );
    assert_eq!(run.code, 0, "warnings do not fail the run");

    // An RSA-1024 root and intermediate made with openssl.
    let d = work.path().join("weak");
    std::fs::create_dir_all(&d).unwrap();
    openssl(
        &d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "root-key.pem",
            "-subj",
            "/CN=weak root",
            "-days",
            "400",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root-cert.pem",
        ],
    );
    std::fs::write(d.join("ca.cnf"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        .unwrap();
    openssl(
        &d,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-subj",
            "/CN=weak int",
            "-out",
            "ca.csr",
        ],
    );
    openssl(
        &d,
        &[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-days",
            "300",
            "-extfile",
            "ca.cnf",
            "-out",
            "ca-cert.pem",
        ],
    );
    std::fs::copy(d.join("ca-cert.pem"), d.join("cert-chain.pem")).unwrap();
    let run = doctor(&["--ca-dir", d.to_str().unwrap()]);
    run.expect("ca-material.algorithms", "error", &["RSA 1024", "RSA >= 2048"]);
}
