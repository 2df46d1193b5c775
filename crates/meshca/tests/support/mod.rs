//! Helpers shared by bad_input.rs, plugged.rs, jwt_issuers.rs and
//! http_endpoints.rs: tokens from an external issuer (well-formed and
//! hostile), raw HTTP with headers, metrics parsing, audit polling, and the
//! openssl / meshca CLIs. Every missing tool is a loud panic.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use meshca_jwt::{Jwks, SigningKey};
use meshca_testkit::Server;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims shaped like a Kubernetes projected service-account token, valid
/// from a minute ago for an hour.
pub fn k8s_claims(iss: &str, ns: &str, sa: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": iss,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": ["istio-ca"],
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": { "name": sa, "uid": "0d9e8a4c-1111-4c1e-9d2c-000000000001" },
        },
    })
}

/// A signed token for `ns/sa` from `iss`.
pub fn k8s_token(key: &SigningKey, iss: &str, ns: &str, sa: &str) -> String {
    key.sign(&k8s_claims(iss, ns, sa)).expect("sign token")
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` of a token with arbitrary header and claims.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// `{"alg":"none"}` with an empty signature part.
pub fn alg_none_token(claims: &Value) -> String {
    format!("{}.", signing_input(&json!({"alg": "none", "typ": "JWT"}), claims))
}

/// An HS256 token whose HMAC key is `secret` (for example a public key's bytes,
/// the classic algorithm-confusion attack).
pub fn hs256_token(claims: &Value, kid: &str, secret: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let input = signing_input(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), claims);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// An ES256 token carrying `kid` in its header but signed by a fresh key that
/// nobody published.
pub fn es256_token_with_foreign_key(claims: &Value, kid: &str) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
    let input = signing_input(&json!({"alg": "ES256", "typ": "JWT", "kid": kid}), claims);
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).expect("sign");
    format!("{input}.{}", b64url(sig.as_ref()))
}

/// The JWKS document publishing these keys.
pub fn jwks_json(keys: &[&SigningKey]) -> String {
    serde_json::to_string(&Jwks { keys: keys.iter().map(|k| k.public_jwk()).collect() }).expect("JWKS JSON")
}

pub fn write_jwks(path: &Path, keys: &[&SigningKey]) {
    std::fs::write(path, jwks_json(keys)).expect("write JWKS");
}

/// Raw HTTP/1.1 GET with extra headers: (status, headers lower-cased, body).
pub fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    meshca_testkit::http::http(addr, path, headers)
}

#[allow(unused_imports)]
pub use meshca_testkit::http::header;

#[allow(unused_imports)]
pub use meshca_testkit::http::metric;

pub fn scrape(server: &Server) -> String {
    server.get("/metrics").expect("GET /metrics")
}

/// Wait until the audit log has more than `n` lines and return all of them.
pub fn audit_after(server: &Server, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = server.audit();
        if lines.len() > n {
            return lines;
        }
        assert!(Instant::now() < deadline, "no new audit line after {n} lines: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `meshca ARGS`; panics with its output on failure.
pub fn meshca(args: &[&str]) -> String {
    meshca_testkit::cli::meshca(&bin(), args)
}

/// Run openssl in `dir`; panics with its output on failure.
pub fn openssl_in(dir: &Path, args: &[&str]) -> String {
    meshca_testkit::openssl::require();
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The SPIFFE ID and lifetime (NotAfter - NotBefore, seconds) of a PEM leaf.
pub fn leaf_facts(pem: &str) -> (Option<String>, i64) {
    let der = meshca_pki::pem::parse_certs(pem.as_bytes()).expect("leaf PEM").remove(0);
    let info = meshca_pki::inspect::cert_info(&der).expect("leaf parses");
    (info.spiffe_id, info.not_after_unix - info.not_before_unix)
}

/// Number of PEM certificates in a text.
pub fn pem_count(text: &str) -> usize {
    text.matches("-----BEGIN CERTIFICATE-----").count()
}
