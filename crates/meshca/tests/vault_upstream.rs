//! `--vault-mode vault-upstream` (the default) against a real OpenBao dev
//! server: meshca's own intermediate, signed by `pki_int`, rotated at
//! half-life under load; policy and mount errors; Vault sealed, unsealed and
//! gone while meshca keeps issuing.

mod vault_support;

use meshca_testkit::{connect, make_csr, openssl, request, KeyType};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vault_support::*;

const ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";

/// Exactly what vault-upstream needs: the PKI certificate reads are unauthenticated and
/// token lookup/renewal comes with the default policy.
const MINIMAL_POLICY: &str = r#"path "pki_int/root/sign-intermediate" { capabilities = ["update"] }
"#;

fn metric(server: &meshca_testkit::Server, name: &str) -> u64 {
    let m = server.get("/metrics").unwrap();
    m.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{m}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_upstream_rotates_twice_under_load_with_zero_failures() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    let root = bao.setup_seed_pki();
    let (role_id, secret_id) = bao.approle(MINIMAL_POLICY);
    let secret_file = work.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id).unwrap();

    let args = vault_args(
        &bao,
        &[
            "--vault-role-id",
            &role_id,
            "--vault-secret-id-file",
            secret_file.to_str().unwrap(),
            "--vault-intermediate-ttl",
            "20s",
            "--vault-common-name",
            "meshca intermediate test-replica",
        ],
    );
    let server = start_meshca(work.path(), args, vec![]).unwrap();
    assert_eq!(server.root_pem().trim(), root.trim(), "the trust bundle is Vault's root");
    let token = server.token("default", "sleep");
    let log = server.logs();
    assert!(log.contains("logged in to Vault with AppRole"), "{log}");

    // Light concurrent load for 25 s: two rotations happen at ~10 s and ~20 s.
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (grpc, roots, token, failures) = (server.grpc, root.clone(), token.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut client = connect(grpc, &roots, None).await.unwrap();
            while started.elapsed() < Duration::from_secs(25) {
                let (csr, _) = make_csr(KeyType::EcP256, Some(ID));
                match client.create_certificate(request(&csr, 3600, Some(&token), None)).await {
                    Ok(r) => out.push((r.into_inner().cert_chain, std::time::SystemTime::now())),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            out
        }));
    }
    let mut chains = Vec::new();
    for t in tasks {
        chains.extend(t.await.unwrap());
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request may fail across rotations");
    assert!(chains.len() > 200, "only {} certificates issued", chains.len());

    // Group by intermediate; every leaf verifies with openssl against Vault's root
    // (at its issuance time: the short-lived intermediates have expired since).
    let mut groups: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
    for (c, received) in &chains {
        assert_eq!(c.len(), 4, "leaf, meshca intermediate, pki_int CA, root bundle");
        assert_eq!(c[3].trim(), root.trim(), "trust bundle unchanged across rotations");
        let at = received.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let g = groups.entry(format!("{}{}", c[1], c[2])).or_default();
        g.0.push(c[0].clone());
        g.1 = g.1.max(at);
    }
    assert!(groups.len() >= 3, "expected the initial intermediate plus two rotations, saw {}", groups.len());
    for (chain, (leaves, attime)) in &groups {
        verify_group(work.path(), &root, chain, leaves, *attime).unwrap();
    }
    let any = &chains[0].0;
    let text = openssl::text(work.path(), &any[1]);
    assert!(
        text.contains("CN=meshca intermediate test-replica") || text.contains("CN = meshca intermediate test-replica"),
        "{text}"
    );
    assert!(text.contains("CA:TRUE"), "{text}");

    let status = server.status();
    assert_eq!(status["source"], "vault");
    assert!(status["generation"].as_u64().unwrap() >= 3, "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    assert!(metric(&server, "meshca_ca_reload_total") >= 2);
    let log = server.logs();
    assert!(log.matches("Vault signed a new meshca intermediate").count() >= 3, "{log}");

    // The intermediate key is never written: the only key on disk is meshca's token key.
    for entry in walk(&server.data_dir) {
        if entry.components().any(|c| c.as_os_str() == "token") {
            continue;
        }
        let body = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(!body.contains("PRIVATE KEY"), "{} holds a private key", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn missing_capability_wrong_mount_and_bad_credentials_are_named() {
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    bao.setup_seed_pki();

    // AppRole whose policy lacks update on sign-intermediate.
    let (role_id, secret_id) = bao.approle(
        r#"path "pki_int/cert/*" { capabilities = ["read"] }
"#,
    );
    let secret_file = work.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id).unwrap();
    let approle = |extra: &[&str]| {
        let mut a = vec!["--vault-role-id", &role_id, "--vault-secret-id-file", secret_file.to_str().unwrap()];
        a.extend_from_slice(extra);
        vault_args(&bao, &a)
    };
    let out = serve_fails(work.path(), approle(&[]), &[]);
    assert!(out.contains("cannot start"), "{out}");
    assert!(out.contains("Vault denied POST /v1/pki_int/root/sign-intermediate (403"), "{out}");
    assert!(out.contains(r#"path "pki_int/root/sign-intermediate" { capabilities = ["update"] }"#), "{out}");

    // A wrong secret ID.
    std::fs::write(work.path().join("bad-secret"), "00000000-0000-0000-0000-000000000000").unwrap();
    let bad = work.path().join("bad-secret");
    let out = serve_fails(
        work.path(),
        vault_args(&bao, &["--vault-role-id", &role_id, "--vault-secret-id-file", bad.to_str().unwrap()]),
        &[],
    );
    assert!(out.contains("Vault refused the approle login at /v1/auth/approle/login"), "{out}");

    // A PKI mount that does not exist.
    let env = [("MESHCA_VAULT_TOKEN", "root")];
    let out = serve_fails(work.path(), vault_args(&bao, &["--vault-pki-mount", "pki_wrong"]), &env);
    assert!(out.contains(r#"Vault has nothing mounted at "pki_wrong/""#), "{out}");
    assert!(out.contains("--vault-pki-mount"), "{out}");

    // The intermediate mistaken for the root.
    let out = serve_fails(work.path(), vault_args(&bao, &["--vault-root-path", "pki_int/cert/ca"]), &env);
    assert!(out.contains("is not self-signed"), "{out}");

    // An auth mount that does not exist.
    let out = serve_fails(work.path(), approle(&["--vault-auth-mount", "approle2"]), &[]);
    assert!(out.contains(r#"no approle auth method is mounted at "auth/approle2/""#), "{out}");
    assert!(out.contains("--vault-auth-mount"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_then_unsealed_then_gone_vault_never_stops_issuance() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let mut bao = Bao::start_dev(work.path());
    let root = bao.setup_seed_pki();
    let env = vec![("MESHCA_VAULT_TOKEN".to_string(), "root".to_string())];
    let server = start_meshca(work.path(), vault_args(&bao, &["--vault-intermediate-ttl", "12s"]), env).unwrap();
    let token = server.token("default", "sleep");
    let first = server.status()["signer"]["sha256"].as_str().unwrap().to_string();

    // Sealed at the first rotation (~6 s): refresh fails, issuance continues, /status and metrics show it.
    bao.seal();
    wait_until(Duration::from_secs(20), "a sealed-Vault error in /status", || {
        server.status()["last_error"].as_str().is_some_and(|e| e.contains("is sealed"))
    });
    let err = server.status()["last_error"].as_str().unwrap().to_string();
    assert!(err.contains("still issuing with the current signing certificate, valid until"), "{err}");
    assert!(metric(&server, "meshca_ca_reload_failures_total") >= 1);
    let chain = issue(&server, &root, &token, ID).await;
    openssl::verify_response(work.path(), &chain).unwrap();
    assert_eq!(server.status()["signer"]["sha256"].as_str().unwrap(), first, "still the first intermediate");

    // Unsealed (dev mode keeps its state across seal/unseal): the retry succeeds and the error clears.
    bao.unseal();
    wait_until(Duration::from_secs(20), "a new intermediate after unseal", || {
        let s = server.status();
        s["last_error"].is_null() && s["signer"]["sha256"].as_str() != Some(first.as_str())
    });
    let chain = issue(&server, &root, &token, ID).await;
    openssl::verify_response(work.path(), &chain).unwrap();

    // Vault gone: the next rotation fails as unreachable; the current intermediate keeps signing.
    bao.stop();
    wait_until(Duration::from_secs(20), "an unreachable-Vault error in /status", || {
        server.status()["last_error"].as_str().is_some_and(|e| e.contains("is unreachable"))
    });
    let chain = issue(&server, &root, &token, ID).await;
    openssl::verify_response(work.path(), &chain).unwrap();
    let log = server.logs();
    assert!(log.contains("Vault refresh failed"), "{log}");

    // Starting with Vault unreachable: a clear failure (nothing to sign with).
    let out = serve_fails(work.path(), vault_args(&bao, &[]), &[("MESHCA_VAULT_TOKEN", "root")]);
    assert!(out.contains("cannot start: the CA source is Vault") && out.contains("is unreachable"), "{out}");
}
