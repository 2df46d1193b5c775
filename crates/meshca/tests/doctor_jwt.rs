//! `meshca doctor --token`: a local OIDC issuer served by the test
//! (discovery + JWKS over HTTP), and the seed's failure modes: an issuer that
//! is not a URL without a jwksUri, an unreachable JWKS, an expired token, an
//! unknown kid, an untrusted issuer, a wrong audience.

mod doctor_support;

use doctor_support::*;
use meshca_jwt::{Jwks, SigningKey};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;

/// Serve `/.well-known/openid-configuration` and `/jwks` for `key` on a
/// background thread; returns the issuer URL.
fn oidc_issuer(key: &SigningKey) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let iss = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")}).to_string();
    let jwks = serde_json::to_string(&Jwks { keys: vec![key.public_jwk()] }).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/.well-known/openid-configuration" => ("200 OK", discovery.clone()),
                "/jwks" => ("200 OK", jwks.clone()),
                _ => ("404 Not Found", String::new()),
            };
            let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        }
    });
    iss
}

fn token(key: &SigningKey, iss: &str, exp_in: i64, aud: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    key.sign(&json!({"iss": iss, "sub": "user-1", "aud": [aud], "iat": now - 7200, "exp": now + exp_in})).unwrap()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_token_from_a_discoverable_issuer_is_healthy_and_failures_name_the_cause() {
    let work = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_es256().unwrap();
    let iss = oidc_issuer(&key);
    let good = write(work.path(), "good", &token(&key, &iss, 3600, "istio-ca"));
    let trusted = format!("{iss}=oidc");
    doctor(&["--token", &good, "--jwt-issuer", &trusted]).expect_healthy();
    // Without --jwt-issuer the doctor discovers the token's own issuer.
    doctor(&["--token", &good]).expect_healthy();

    let expired = write(work.path(), "expired", &token(&key, &iss, -3600, "istio-ca"));
    doctor(&["--token", &expired, "--jwt-issuer", &trusted]).expect(
        "jwt.validity",
        "error",
        &["the token expired", "ago", "fresh token"],
    );

    let stranger = SigningKey::generate_es256().unwrap();
    let unknown_kid = write(work.path(), "kid", &token(&stranger, &iss, 3600, "istio-ca"));
    let run = doctor(&["--token", &unknown_kid, "--jwt-issuer", &trusted]);
    run.expect("jwt.kid-known", "error", &[stranger.kid(), "rotated its signing key"]);

    let wrong_aud = write(work.path(), "aud", &token(&key, &iss, 3600, "other"));
    doctor(&["--token", &wrong_aud]).expect("jwt.audience", "error", &["[\"other\"]", "expected \"istio-ca\""]);

    let run = doctor(&["--token", &good, "--jwt-issuer", "https://elsewhere.example=oidc"]);
    run.expect("jwt.issuer-trusted", "error", &["is not among the trusted issuers", "--jwt-issuer"]);
}

#[test]
fn issuer_not_a_url_without_jwks_uri_and_an_unreachable_jwks() {
    let work = tempfile::tempdir().unwrap();
    let key = SigningKey::generate_rs256().unwrap();
    // The seed's service-account issuer: an e-mail address, no jwksUri.
    let iss = "628645741881-noabiu23f5a8m8ovd8ucv698lj78vv0l@developer.gserviceaccount.com";
    let t = write(work.path(), "t", &token(&key, iss, 3600, "istio-ca"));
    let run = doctor(&["--token", &t]);
    run.expect("jwt.jwks-reachable", "error", &["is not a URL and no JWKS (jwksUri)", "OIDC discovery"]);
    run.expect("jwt.signature", "skipped", &["jwt.jwks-reachable failed"]);
    // With the JWKS configured explicitly it verifies.
    let jwks = write(work.path(), "jwks.json", &serde_json::to_string(&Jwks { keys: vec![key.public_jwk()] }).unwrap());
    doctor(&["--token", &t, "--jwt-issuer", &format!("{iss}={jwks}")]).expect_healthy();

    let down = format!("http://{}", free_addr());
    let t = write(work.path(), "down", &token(&key, &down, 3600, "istio-ca"));
    doctor(&["--token", &t]).expect("jwt.jwks-reachable", "error", &["OIDC discovery failed", "nothing listens"]);
    let not_jwt = write(work.path(), "garbage", "not.a-token");
    doctor(&["--token", &not_jwt]).expect("jwt.well-formed", "error", &["compact JWS"]);
}
