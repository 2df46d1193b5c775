//! Vault auth methods beyond a root token, against a real OpenBao dev server:
//! JWT login with a service-account-style token file, and short-lived tokens
//! that meshca must renew to keep rotating its intermediate.

mod vault_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vault_support::*;

const POLICY: &str = r#"path "pki_int/root/sign-intermediate" { capabilities = ["update"] }
"#;

#[test]
fn jwt_login_and_short_token_ttls_are_renewed_across_rotations() {
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev(work.path());
    let root = bao.setup_seed_pki();
    bao.cli(&["policy", "write", "meshca", bao.file("meshca.hcl", POLICY).trim_start_matches('@')]);

    // JWT auth trusting a key the test holds, as a cluster's service-account issuer would be.
    let key = meshca_pki::PrivateKey::generate(meshca_pki::KeyKind::EcP256).unwrap();
    let pub_pem = meshca_pki::pem::encode("PUBLIC KEY", &key.public_key_spki());
    let signing = meshca_jwt::SigningKey::from_pkcs8_der(&key.key_pair().serialize_der()).unwrap();
    bao.cli(&["auth", "enable", "jwt"]);
    bao.cli(&["write", "auth/jwt/config", &format!("jwt_validation_pubkeys={}", bao.file("sa.pub", &pub_pem))]);
    bao.cli(&[
        "write",
        "auth/jwt/role/meshca",
        "role_type=jwt",
        "bound_audiences=vault",
        "user_claim=sub",
        "bound_subject=system:serviceaccount:istio-system:meshca",
        "token_policies=meshca",
        "token_ttl=6s",
        "token_max_ttl=1h",
    ]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let jwt = signing
        .sign(&serde_json::json!({
            "iss": "https://kubernetes.default.svc",
            "sub": "system:serviceaccount:istio-system:meshca",
            "aud": ["vault"],
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        }))
        .unwrap();
    let jwt_file = work.path().join("sa-token");
    std::fs::write(&jwt_file, &jwt).unwrap();

    // A plain token with a 6 s TTL: only renewal keeps it alive (token auth cannot log in again).
    let short = bao.json(&["token", "create", "-policy=meshca", "-ttl=6s", "-explicit-max-ttl=1h"])["auth"]
        ["client_token"]
        .as_str()
        .unwrap()
        .to_string();

    let jwt_dir = work.path().join("jwt");
    let tok_dir = work.path().join("tok");
    std::fs::create_dir_all(&jwt_dir).unwrap();
    std::fs::create_dir_all(&tok_dir).unwrap();
    let jwt_server = start_meshca(
        &jwt_dir,
        vault_args(
            &bao,
            &[
                "--vault-auth",
                "jwt",
                "--vault-auth-role",
                "meshca",
                "--vault-jwt-file",
                jwt_file.to_str().unwrap(),
                "--vault-intermediate-ttl",
                "16s",
            ],
        ),
        vec![],
    )
    .unwrap();
    let tok_server = start_meshca(
        &tok_dir,
        vault_args(&bao, &["--vault-intermediate-ttl", "16s"]),
        vec![("MESHCA_VAULT_TOKEN".into(), short)],
    )
    .unwrap();
    assert!(jwt_server.logs().contains("logged in to Vault with jwt"), "{}", jwt_server.logs());

    // Both rotate at ~8 s, after their 6 s tokens would have expired without renewal.
    for s in [&jwt_server, &tok_server] {
        wait_until(Duration::from_secs(20), "a rotation with a renewed token", || {
            let st = s.status();
            st["generation"].as_u64().unwrap_or(0) >= 2 && st["last_error"].is_null()
        });
        assert_eq!(s.root_pem().trim(), root.trim());
        let log = s.logs();
        assert!(log.contains("renewed the Vault token"), "{log}");
    }

    // A JWT Vault does not accept: the login error names the role and the token file.
    let bad = work.path().join("bad-token");
    std::fs::write(
        &bad,
        signing.sign(&serde_json::json!({"sub": "someone-else", "aud": "vault", "exp": now + 600})).unwrap(),
    )
    .unwrap();
    let out = serve_fails(
        work.path(),
        vault_args(
            &bao,
            &["--vault-auth", "jwt", "--vault-auth-role", "meshca", "--vault-jwt-file", bad.to_str().unwrap()],
        ),
        &[],
    );
    assert!(out.contains("Vault refused the jwt login at /v1/auth/jwt/login"), "{out}");
    assert!(out.contains("--vault-auth-role \"meshca\""), "{out}");
}

#[test]
fn https_to_vault_trusts_only_the_ca_file() {
    let work = tempfile::tempdir().unwrap();
    let bao = Bao::start_dev_tls(work.path());
    assert!(bao.addr.starts_with("https://"));
    let root = bao.setup_seed_pki();
    let ca = bao.ca_file.clone().unwrap();
    let env = vec![("MESHCA_VAULT_TOKEN".to_string(), "root".to_string())];
    let server = start_meshca(work.path(), vault_args(&bao, &["--vault-ca-file", ca.to_str().unwrap()]), env).unwrap();
    assert_eq!(server.root_pem().trim(), root.trim());
    drop(server);

    // Without the CA file the dev server's certificate is not trusted: a clear start-up failure.
    let out = serve_fails(work.path(), vault_args(&bao, &[]), &[("MESHCA_VAULT_TOKEN", "root")]);
    assert!(out.contains("is unreachable") && out.contains("--vault-ca-file"), "{out}");
    assert!(out.to_lowercase().contains("certificate"), "the TLS cause is shown: {out}");
}
