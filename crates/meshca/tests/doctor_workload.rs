//! `meshca doctor --cert-dir`: workload certificates from a real CA (via
//! `meshca request`), and two workloads checked against each other (mtls).

mod doctor_support;

use doctor_support::*;
use meshca_pki::authority::{new_root, AuthorityOptions};
use meshca_pki::{KeyKind, LeafProfile, PrivateKey, Signer};
use meshca_testkit::{Server, ServerOptions};
use std::path::Path;
use std::time::{Duration, SystemTime};

const A: &str = "spiffe://cluster.local/ns/a/sa/a";
const B: &str = "spiffe://cluster.local/ns/b/sa/b";

fn start(work: &Path, opts: ServerOptions) -> Server {
    std::fs::create_dir_all(work).unwrap();
    Server::start(&bin(), work, opts).expect("meshca serve starts")
}

#[test]
fn identity_and_mtls_between_two_workloads() {
    let work = tempfile::tempdir().unwrap();
    let ca = start(&work.path().join("ca1"), ServerOptions::default());
    let (d1, d2) = (work.path().join("w1"), work.path().join("w2"));
    request_cert(&ca, work.path(), "a", "a", &d1);
    request_cert(&ca, work.path(), "b", "b", &d2);
    let http = ca.http.to_string();
    let (s1, s2) = (d1.to_str().unwrap(), d2.to_str().unwrap());

    let run = doctor(&[
        "--cert-dir",
        s1,
        "--cert-dir",
        s2,
        "--expect-identity",
        A,
        "--expect-identity",
        B,
        "--ca-http-addr",
        &http,
    ]);
    run.expect_healthy();
    run.expect("mtls.first-accepts-second", "ok", &[]);
    run.expect("workload.bundle-current", "ok", &[]);

    // Wrong SAN: the first workload expects another peer identity.
    let c = "spiffe://cluster.local/ns/b/sa/c";
    let run = doctor(&["--cert-dir", s1, "--cert-dir", s2, "--expect-identity", A, "--expect-identity", c]);
    run.expect("workload.identity", "ok", &[]);
    let ids: Vec<_> = run.json["categories"][3]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "workload.identity")
        .collect();
    assert_eq!(ids[1]["result"], "error", "{}", run.text);
    assert!(ids[1]["error"].as_str().unwrap().contains(
        "the certificate is for spiffe://cluster.local/ns/b/sa/b, expected spiffe://cluster.local/ns/b/sa/c"
    ));
    assert!(ids[1]["hint"].as_str().unwrap().contains("SAN matcher"));
    run.expect("mtls.first-accepts-second", "error", &["presents \"spiffe://cluster.local/ns/b/sa/b\"", "wrong SAN"]);
    run.expect("mtls.second-accepts-first", "ok", &[]);

    // Different roots: a workload of another CA.
    let other = start(&work.path().join("ca2"), ServerOptions::default());
    let d3 = work.path().join("w3");
    request_cert(&other, work.path(), "b", "b3", &d3);
    let run = doctor(&["--cert-dir", s1, "--cert-dir", d3.to_str().unwrap()]);
    run.expect("workload.chain", "ok", &[]);
    run.expect(
        "mtls.first-accepts-second",
        "error",
        &["chains to", "trusts only", "different roots", "unknown authority"],
    );
    run.expect("mtls.second-accepts-first", "error", &["different roots"]);
    assert_eq!(run.code, 1);
}

#[test]
fn root_update_not_detected_by_the_workload() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cacerts");
    install(&make_set(work.path(), "a", "9000h"), &dir);
    let opts =
        ServerOptions { ca_dir: Some(dir.clone()), args: vec!["--allow-root-replace".into()], ..Default::default() };
    let ca = start(&work.path().join("ca"), opts);
    let w = work.path().join("w");
    request_cert(&ca, work.path(), "a", "a", &w);
    let generation = ca.status()["generation"].clone();
    install(&make_set(work.path(), "b", "9000h"), &dir);
    wait_for("the CA to switch to root b", || ca.status()["generation"] != generation);
    let http = ca.http.to_string();
    let run = doctor(&["--cert-dir", w.to_str().unwrap(), "--expect-identity", A, "--ca-http-addr", &http]);
    run.expect("workload.chain", "ok", &[]);
    run.expect(
        "workload.bundle-current",
        "error",
        &["Root b", "Root a", "root update not detected", "restart the agent"],
    );
    assert_eq!(run.code, 1);
}

/// A workload directory signed by a root made `days_ago`, the leaf issued at `issued_at`.
fn library_dir(dir: &Path, issued_at: SystemTime) {
    let now = SystemTime::now();
    let opts = AuthorityOptions {
        common_name: "Root lib".into(),
        organization: "Istio".into(),
        locality: None,
        ttl: Duration::from_secs(400 * 86400),
        key: KeyKind::EcP256,
        path_len: None,
    };
    let root = new_root(&opts, now - Duration::from_secs(10 * 86400)).unwrap();
    let root_pem = meshca_pki::pem::cert_to_pem(&root.cert);
    let signer = Signer::new(root.cert, root.key).unwrap();
    let key = PrivateKey::generate(KeyKind::EcP256).unwrap();
    let profile = LeafProfile { uris: vec![A.into()], dns_names: vec![], ttl: Duration::from_secs(3600) };
    let leaf = signer.sign_leaf(&key.public_key_spki(), &profile, issued_at).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), meshca_pki::pem::cert_to_pem(&leaf)).unwrap();
    std::fs::write(dir.join("key.pem"), key.to_pkcs8_pem().as_bytes()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_pem).unwrap();
}

#[test]
fn expired_and_not_yet_valid_workload_certificates() {
    let work = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let expired = work.path().join("expired");
    library_dir(&expired, now - Duration::from_secs(5 * 86400));
    let run = doctor(&["--cert-dir", expired.to_str().unwrap(), "--expect-identity", A]);
    run.expect("workload.identity", "ok", &[]);
    run.expect("workload.validity", "error", &["expired on", "did not renew"]);
    run.expect("workload.chain", "error", &["does not verify"]);

    let ahead = work.path().join("ahead");
    library_dir(&ahead, now + Duration::from_secs(3600));
    doctor(&["--cert-dir", ahead.to_str().unwrap()]).expect(
        "workload.validity",
        "error",
        &["not valid before", "clock skew beyond 5 minutes", "NTP"],
    );
    // Two minutes ahead: within the tolerance, a warning.
    let near = work.path().join("near");
    library_dir(&near, now + Duration::from_secs(240));
    doctor(&["--cert-dir", near.to_str().unwrap()]).expect("workload.validity", "warning", &["small clock skew"]);

    let missing = work.path().join("missing");
    std::fs::create_dir_all(&missing).unwrap();
    doctor(&["--cert-dir", missing.to_str().unwrap()]).expect(
        "workload.files",
        "error",
        &["cert-chain.pem", "has not written"],
    );
}
