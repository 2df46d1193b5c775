//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use meshca_jwt::{Jwks, KeySet, SigningKey, Validation};
use serde_json::{json, Value};

pub const ISS: &str = "https://kubernetes.default.svc.cluster.local";
pub const AUD: &str = "istio-ca";
/// The fixed "current time" of the tests.
pub const NOW: u64 = 1_700_000_000;

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn validation() -> Validation {
    Validation::new(ISS, AUD).with_now(at(NOW))
}

/// Valid claims for [`validation`], expiring `exp_in` seconds after [`NOW`].
pub fn claims_expiring_in(exp_in: i64) -> Value {
    json!({
        "iss": ISS,
        "aud": [AUD],
        "sub": "system:serviceaccount:default:httpbin",
        "iat": NOW - 10,
        "exp": NOW as i64 + exp_in,
    })
}

pub fn claims() -> Value {
    claims_expiring_in(3600)
}

pub fn keyset(keys: &[&SigningKey]) -> KeySet {
    let jwks = Jwks { keys: keys.iter().map(|k| k.public_jwk()).collect() };
    KeySet::from_jwks(&jwks).expect("valid key set")
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("valid base64url")
}

/// Assembles a token from arbitrary parts.
pub fn assemble(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()), b64(signature))
}

/// Splits a token into its three base64url parts.
pub fn parts(token: &str) -> (String, String, String) {
    let v: Vec<&str> = token.split('.').collect();
    assert_eq!(v.len(), 3, "token must have three parts");
    (v[0].to_string(), v[1].to_string(), v[2].to_string())
}
