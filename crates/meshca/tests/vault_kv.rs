//! `--vault-mode vault-kv` against a real OpenBao dev server laid out as in
//! "Vault as the Istio CA" (seed 003): pki (root), pki_int (intermediate),
//! the intermediate's key in KV.

mod vault_support;

use meshca_testkit::openssl;
use std::time::Duration;
use vault_support::*;

const ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";

fn root_token() -> Vec<(String, String)> {
    vec![("MESHCA_VAULT_TOKEN".into(), "root".into())]
}

fn norm(pem: &str) -> String {
    pem.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_mode_issues_from_the_seed_layout_and_follows_a_rotation() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    let root = bao.setup_seed_pki();
    let first_int = bao.ca_pem("pki_int");

    let args = vault_args(&bao, &["--vault-mode", "vault-kv", "--vault-poll-interval", "300ms"]);
    let server = start_meshca(work.path(), args, root_token()).unwrap();
    assert_eq!(norm(&server.root_pem()), norm(&root), "the trust bundle is Vault's pki root");
    let status = server.status();
    assert_eq!(status["source"], "vault", "{status}");
    assert!(status["directory"].as_str().unwrap().starts_with("vault:http://127.0.0.1:"), "{status}");
    let log = server.logs();
    assert!(log.contains("Use CA material from Vault"), "{log}");

    let token = server.token("default", "sleep");
    let chain = issue(&server, &root, &token, ID).await;
    assert_eq!(chain.len(), 3, "leaf, Vault's intermediate, root bundle");
    assert_eq!(norm(&chain[1]), norm(&first_int));
    // openssl against the root as Vault has it, independent of meshca's bundle.
    openssl::verify_response(work.path(), &[chain[0].clone(), chain[1].clone(), root.clone()]).unwrap();

    // Rotate the intermediate in Vault (new key in KV, set-signed, default issuer): picked up by the poll.
    let second_int = bao.rotate_kv_intermediate("Istio Intermediate Authority 2", "ec");
    wait_until(Duration::from_secs(15), "meshca to switch to the rotated intermediate", || {
        server.status()["signer"]["subject"].as_str().is_some_and(|s| s.contains("Authority 2"))
    });
    let chain = issue(&server, &root, &token, ID).await;
    assert_eq!(norm(&chain[1]), norm(&second_int), "the new intermediate signs");
    assert_eq!(norm(&chain[2]), norm(&root), "bundle unchanged");
    openssl::verify_response(work.path(), &chain).unwrap();
    let status = server.status();
    assert!(status["last_error"].is_null(), "{status}");
    assert!(server.logs().contains("Istiod has detected the newly added intermediate CA"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_v2_key_and_a_bad_key_in_vault_is_refused_without_dropping_material() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    let root = bao.setup_seed_pki();
    // The dev server mounts KV v2 at secret/; copy the key there (addressed without data/).
    let key = bao.json(&["kv", "get", "kv/istioca"])["data"]["ca-key.pem"].as_str().unwrap().to_string();
    bao.cli(&["kv", "put", "secret/istioca", &format!("ca-key.pem={}", bao.file("k.pem", &key))]);

    let args = vault_args(
        &bao,
        &["--vault-mode", "vault-kv", "--vault-key-path", "secret/istioca", "--vault-poll-interval", "300ms"],
    );
    let server = start_meshca(work.path(), args, root_token()).unwrap();
    let token = server.token("default", "sleep");
    let chain = issue(&server, &root, &token, ID).await;
    openssl::verify_response(work.path(), &chain).unwrap();
    let generation = server.status()["generation"].as_u64().unwrap();

    // A key that does not belong to the certificate: refused, the current material keeps signing.
    let other = meshca_pki::PrivateKey::generate(meshca_pki::KeyKind::EcP256).unwrap().to_pkcs8_pem();
    bao.cli(&["kv", "put", "secret/istioca", &format!("ca-key.pem={}", bao.file("k2.pem", &other))]);
    wait_until(Duration::from_secs(10), "the mismatched key to be refused", || {
        server.status()["last_error"].as_str().is_some_and(|e| e.contains("does not match"))
    });
    let status = server.status();
    let err = status["last_error"].as_str().unwrap();
    assert!(err.contains("vault:secret/data/istioca (field ca-key.pem)"), "names the KV v2 path: {err}");
    assert_eq!(status["generation"].as_u64().unwrap(), generation, "nothing swapped");
    let chain = issue(&server, &root, &token, ID).await;
    openssl::verify_response(work.path(), &chain).unwrap();
    let metrics = server.get("/metrics").unwrap();
    let failures: u64 = metrics
        .lines()
        .find(|l| l.starts_with("meshca_ca_reload_failures_total "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(failures >= 1, "{metrics}");

    // Put the right key back: the error clears.
    bao.cli(&["kv", "put", "secret/istioca", &format!("ca-key.pem={}", bao.file("k.pem", &key))]);
    wait_until(Duration::from_secs(10), "the error to clear", || server.status()["last_error"].is_null());
}

#[test]
fn kv_mode_start_up_errors_name_the_problem() {
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    bao.setup_seed_pki();
    let env = [("MESHCA_VAULT_TOKEN", "root")];
    let kv = |extra: &[&str]| {
        let mut a = vec!["--vault-mode", "vault-kv"];
        a.extend_from_slice(extra);
        vault_args(&bao, &a)
    };

    // The intermediate mistaken for the root.
    let out = serve_fails(work.path(), kv(&["--vault-root-path", "pki_int/cert/ca"]), &env);
    assert!(out.contains("cannot start"), "{out}");
    assert!(out.contains("vault:pki_int/cert/ca") && out.contains("is not self-signed"), "{out}");
    assert!(out.contains("Istio Intermediate Authority"), "{out}");

    // A secret that does not exist.
    let out = serve_fails(work.path(), kv(&["--vault-key-path", "kv/nope"]), &env);
    assert!(out.contains("no KV secret holding the CA key (--vault-key-path) at \"kv/nope\""), "{out}");

    // A mount that does not exist.
    let out = serve_fails(work.path(), kv(&["--vault-cert-path", "pki_nope/cert/ca"]), &env);
    assert!(out.contains("nothing mounted at \"pki_nope/\""), "{out}");

    // A policy without read on the key: the 403 names the path and the grant.
    let policy = r#"path "pki_int/cert/*" { capabilities = ["read"] }
path "pki/cert/ca" { capabilities = ["read"] }
"#;
    bao.cli(&["policy", "write", "meshca-kv", bao.file("kv.hcl", policy).trim_start_matches('@')]);
    let tok = bao.json(&["token", "create", "-policy=meshca-kv"])["auth"]["client_token"].as_str().unwrap().to_string();
    let out = serve_fails(work.path(), kv(&[]), &[("MESHCA_VAULT_TOKEN", &tok)]);
    assert!(out.contains("Vault denied GET /v1/kv/istioca (403"), "{out}");
    assert!(out.contains(r#"path "kv/istioca" { capabilities = ["read"] }"#), "{out}");

    // A token Vault does not know.
    let out = serve_fails(work.path(), kv(&[]), &[("MESHCA_VAULT_TOKEN", "not-a-token")]);
    assert!(out.contains("Vault refused the configured token"), "{out}");

    // Nothing listening.
    let dead = format!("http://127.0.0.1:{}", meshca_testkit::free_port());
    let out =
        serve_fails(work.path(), vec!["--vault-addr".into(), dead, "--vault-mode".into(), "vault-kv".into()], &env);
    assert!(out.contains("cannot start") && out.contains("is unreachable"), "{out}");
}
