//! Interoperability with an independent implementation: the `openssl` CLI.
//!
//! Keys and signatures are produced by `openssl genpkey` / `openssl dgst`
//! and verified here, and tokens signed here are verified by
//! `openssl dgst -verify`. These tests fail (loudly) if `openssl` is not on
//! `PATH`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use meshca_jwt::{verify, Algorithm, Jwk, JwtError, KeySet, SigningKey};
use serde_json::json;

/// Runs `openssl` in `dir`, panicking with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) => panic!(
            "cannot run the `openssl` CLI ({e}); these interoperability tests require \
             `openssl` on PATH"
        ),
    };
    assert!(output.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// Reads one DER TLV with the given tag, returning (contents, rest).
fn der_tlv(tag: u8, input: &[u8]) -> (&[u8], &[u8]) {
    assert_eq!(input[0], tag, "unexpected DER tag");
    let (len, header) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (input[2] as usize, 3),
        0x82 => ((input[2] as usize) << 8 | input[3] as usize, 4),
        other => panic!("unsupported DER length byte {other:#x}"),
    };
    (&input[header..header + len], &input[header + len..])
}

/// Parses `SEQUENCE { INTEGER, INTEGER }` (ECDSA-Sig-Value, RSAPublicKey)
/// into two unsigned big-endian integers without leading zeros.
fn der_two_integers(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (seq, rest) = der_tlv(0x30, der);
    assert!(rest.is_empty(), "trailing data after DER SEQUENCE");
    let (a, seq) = der_tlv(0x02, seq);
    let (b, seq) = der_tlv(0x02, seq);
    assert!(seq.is_empty(), "more than two INTEGERs");
    let strip = |v: &[u8]| v.iter().skip_while(|&&b| b == 0).copied().collect::<Vec<u8>>();
    (strip(a), strip(b))
}

/// DER `ECDSA-Sig-Value` -> JOSE `r || s` (32 bytes each).
fn der_to_fixed(der: &[u8]) -> Vec<u8> {
    let (r, s) = der_two_integers(der);
    let mut out = vec![0u8; 64];
    out[32 - r.len()..32].copy_from_slice(&r);
    out[64 - s.len()..].copy_from_slice(&s);
    out
}

/// JOSE `r || s` -> DER `ECDSA-Sig-Value`.
fn fixed_to_der(sig: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for half in [&sig[..32], &sig[32..]] {
        let mut int: Vec<u8> = half.iter().skip_while(|&&b| b == 0).copied().collect();
        if int.first().is_none_or(|b| b & 0x80 != 0) {
            int.insert(0, 0);
        }
        body.extend([0x02, int.len() as u8]);
        body.extend(int);
    }
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    der
}

/// The unsigned JWS signing input for `header`/claims, written to `input.txt`.
fn signing_input(dir: &Path, header: serde_json::Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims().to_string().as_bytes()));
    fs::write(dir.join("input.txt"), &input).expect("write input");
    input
}

/// Checks that openssl accepts the signature of a token signed by us.
fn openssl_verifies(dir: &Path, key: &SigningKey, public_pem: &str) {
    let token = key.sign(&claims()).expect("sign");
    let (header, payload, sig) = parts(&token);
    fs::write(dir.join("ours.txt"), format!("{header}.{payload}")).expect("write");
    let sig = unb64(&sig);
    let sig = match key.algorithm() {
        Algorithm::ES256 => fixed_to_der(&sig),
        Algorithm::RS256 => sig,
    };
    fs::write(dir.join("ours.sig"), sig).expect("write");
    let out = openssl(dir, &["dgst", "-sha256", "-verify", public_pem, "-signature", "ours.sig", "ours.txt"]);
    assert!(String::from_utf8_lossy(&out).contains("Verified OK"));
}

#[test]
fn es256_token_signed_by_openssl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"]);
    openssl(dir, &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec_pub.pem"]);
    let spki = openssl(dir, &["pkey", "-in", "ec.pem", "-pubout", "-outform", "DER"]);
    // P-256 SubjectPublicKeyInfo: 26 bytes of prefix, then 04 || x || y.
    assert_eq!(spki.len(), 91);
    assert_eq!(spki[26], 0x04);
    let jwk = Jwk {
        kty: "EC".into(),
        crv: Some("P-256".into()),
        x: Some(b64(&spki[27..59])),
        y: Some(b64(&spki[59..91])),
        kid: Some("openssl-ec".into()),
        ..Jwk::default()
    };
    let jwks = json!({ "keys": [jwk] }).to_string();
    let keys = KeySet::from_jwks_json(jwks.as_bytes()).expect("key set");

    let input = signing_input(dir, json!({"alg": "ES256", "kid": "openssl-ec", "typ": "JWT"}));
    let der = openssl(dir, &["dgst", "-sha256", "-sign", "ec.pem", "input.txt"]);
    let token = format!("{input}.{}", b64(&der_to_fixed(&der)));
    let verified = verify(&token, &keys, &validation()).expect("openssl ES256 token verifies");
    assert_eq!(verified.issuer(), Some(ISS));

    // The DER form openssl emits is not valid JOSE.
    let der_token = format!("{input}.{}", b64(&der));
    assert_eq!(verify(&der_token, &keys, &validation()), Err(JwtError::BadSignature));

    // Same key loaded from openssl's PKCS#8: same thumbprint, and openssl
    // verifies what we sign.
    let p8 = openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER"]);
    let ours = SigningKey::from_pkcs8_der(&p8).expect("load openssl key");
    assert_eq!(ours.algorithm(), Algorithm::ES256);
    assert_eq!(jwk.thumbprint().as_deref(), Ok(ours.kid()));
    openssl_verifies(dir, &ours, "ec_pub.pem");
}

#[test]
fn rs256_token_signed_by_openssl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    openssl(dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
    openssl(dir, &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa_pub.pem"]);
    let pkcs1 = openssl(dir, &["rsa", "-in", "rsa.pem", "-RSAPublicKey_out", "-outform", "DER"]);
    let (n, e) = der_two_integers(&pkcs1);
    assert_eq!(n.len(), 256);
    let jwk = Jwk {
        kty: "RSA".into(),
        n: Some(b64(&n)),
        e: Some(b64(&e)),
        kid: Some("openssl-rsa".into()),
        alg: Some("RS256".into()),
        r#use: Some("sig".into()),
        ..Jwk::default()
    };
    let jwks = json!({ "keys": [jwk] }).to_string();
    let keys = KeySet::from_jwks_json(jwks.as_bytes()).expect("key set");

    let input = signing_input(dir, json!({"alg": "RS256", "kid": "openssl-rsa"}));
    let sig = openssl(dir, &["dgst", "-sha256", "-sign", "rsa.pem", "input.txt"]);
    assert_eq!(sig.len(), 256);
    let token = format!("{input}.{}", b64(&sig));
    let verified = verify(&token, &keys, &validation()).expect("openssl RS256 token verifies");
    assert_eq!(verified.audiences(), vec![AUD]);

    // A PSS signature over the same input is not RS256.
    let pss = openssl(dir, &["dgst", "-sha256", "-sign", "rsa.pem", "-sigopt", "rsa_padding_mode:pss", "input.txt"]);
    let pss_token = format!("{input}.{}", b64(&pss));
    assert_eq!(verify(&pss_token, &keys, &validation()), Err(JwtError::BadSignature));

    let p8 = openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "rsa.pem", "-outform", "DER"]);
    let ours = SigningKey::from_pkcs8_der(&p8).expect("load openssl key");
    assert_eq!(ours.algorithm(), Algorithm::RS256);
    assert_eq!(jwk.thumbprint().as_deref(), Ok(ours.kid()));
    openssl_verifies(dir, &ours, "rsa_pub.pem");
}

#[test]
fn small_rsa_keys_from_openssl_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let p8 = {
        openssl(dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "k.pem"]);
        openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-outform", "DER"])
    };
    assert!(matches!(SigningKey::from_pkcs8_der(&p8), Err(JwtError::InvalidKey(_))));
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", "p384.pem"]);
    let p384 = openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "p384.pem", "-outform", "DER"]);
    assert!(matches!(SigningKey::from_pkcs8_der(&p384), Err(JwtError::InvalidKey(_))));
}
