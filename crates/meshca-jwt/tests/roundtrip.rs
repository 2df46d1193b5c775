//! Signing, key sets and verification that succeed.

mod common;

use common::*;
use meshca_jwt::{decode_header, peek_issuer, verify, Algorithm, Jwk, Jwks, JwtError, KeySet, SigningKey};
use serde_json::json;

fn round_trip(key: &SigningKey, alg: Algorithm) {
    assert_eq!(key.algorithm(), alg);
    let token = key.sign(&claims()).expect("sign");

    let header = decode_header(&token).expect("header");
    assert_eq!(header.alg, alg.as_str());
    assert_eq!(header.kid.as_deref(), Some(key.kid()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(peek_issuer(&token).as_deref(), Ok(ISS));

    let claims = verify(&token, &keyset(&[key]), &validation()).expect("verify");
    assert_eq!(claims.issuer(), Some(ISS));
    assert_eq!(claims.audiences(), vec![AUD]);
    assert_eq!(claims.subject(), Some("system:serviceaccount:default:httpbin"));
    assert_eq!(claims.expires_at(), Some(NOW + 3600));
    assert_eq!(claims.issued_at(), Some(NOW - 10));
    assert_eq!(claims.get("iat"), Some(&json!(NOW - 10)));
    assert_eq!(claims.kubernetes_service_account(), Some(("default".to_string(), "httpbin".to_string())));
}

#[test]
fn es256_round_trip() {
    let key = SigningKey::generate_es256().expect("generate");
    round_trip(&key, Algorithm::ES256);
    let (_, _, sig) = parts(&key.sign(&claims()).expect("sign"));
    assert_eq!(unb64(&sig).len(), 64, "ES256 signatures are fixed r||s");
}

#[test]
fn rs256_round_trip() {
    let key = SigningKey::generate_rs256().expect("generate");
    round_trip(&key, Algorithm::RS256);
    let (_, _, sig) = parts(&key.sign(&claims()).expect("sign"));
    assert_eq!(unb64(&sig).len(), 256, "2048-bit RSA signature");
    let jwk = key.public_jwk();
    assert_eq!(jwk.e.as_deref(), Some("AQAB"));
    assert_eq!(unb64(jwk.n.as_deref().unwrap_or_default()).len(), 256);
}

#[test]
fn jwks_json_round_trip() {
    let ec = SigningKey::generate_es256().expect("generate");
    let rsa = SigningKey::generate_rs256().expect("generate");
    let jwks = Jwks { keys: vec![ec.public_jwk(), rsa.public_jwk()] };
    let json = serde_json::to_vec(&jwks).expect("serialize");
    let parsed: Jwks = serde_json::from_slice(&json).expect("deserialize");
    assert_eq!(parsed, jwks);

    let ec_json: serde_json::Value = serde_json::to_value(ec.public_jwk()).expect("to_value");
    assert_eq!(ec_json["kty"], "EC");
    assert_eq!(ec_json["crv"], "P-256");
    assert_eq!(ec_json["use"], "sig");
    assert_eq!(ec_json["alg"], "ES256");
    assert_eq!(ec_json["kid"], ec.kid());
    assert!(ec_json.get("n").is_none());

    let keys = KeySet::from_jwks_json(&json).expect("key set");
    assert_eq!(keys.len(), 2);
    assert!(!keys.is_empty());
    assert!(keys.contains_kid(ec.kid()));
    assert!(keys.contains_kid(rsa.kid()));
    assert!(!keys.contains_kid("nope"));
    assert_eq!(keys.kids(), vec![ec.kid().to_string(), rsa.kid().to_string()]);

    for key in [&ec, &rsa] {
        let token = key.sign(&claims()).expect("sign");
        let claims = verify(&token, &keys, &validation()).expect("verify");
        assert_eq!(claims.issuer(), Some(ISS));
    }
}

#[test]
fn jwks_json_skips_unknown_key_types() {
    let ec = SigningKey::generate_es256().expect("generate");
    let doc = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA", "kid": "p384"},
        {"kty": "RSA", "alg": "PS256", "n": "AAAA", "e": "AQAB", "kid": "pss"},
        {"kty": "EC", "use": "enc", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "enc"},
        {"weird": true},
        ec.public_jwk(),
    ]});
    let keys = KeySet::from_jwks_json(doc.to_string().as_bytes()).expect("key set");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.kids(), vec![ec.kid().to_string()]);
    let token = ec.sign(&claims()).expect("sign");
    assert!(verify(&token, &keys, &validation()).is_ok());
}

#[test]
fn invalid_jwks_are_rejected() {
    let ec = SigningKey::generate_es256().expect("generate");
    let mut short_x = ec.public_jwk();
    short_x.x = Some("AAAA".into());
    let mut off_curve = ec.public_jwk();
    off_curve.y = off_curve.x.clone();
    let mut mismatched_alg = ec.public_jwk();
    mismatched_alg.alg = Some("RS256".into());
    let small_rsa = Jwk { kty: "RSA".into(), n: Some(b64(&[0xC5; 128])), e: Some("AQAB".into()), ..Jwk::default() };
    for jwk in [short_x, off_curve, mismatched_alg, small_rsa] {
        let result = KeySet::from_jwks(&Jwks { keys: vec![jwk] });
        assert!(matches!(result, Err(JwtError::InvalidKey(_))), "{result:?}");
    }
    for doc in [&b"not json"[..], b"{}", b"[]", br#"{"keys": {}}"#] {
        assert!(matches!(KeySet::from_jwks_json(doc), Err(JwtError::InvalidKey(_))));
    }
}

#[test]
fn duplicate_kids() {
    let a = SigningKey::generate_es256().expect("generate");
    let b = SigningKey::generate_es256().expect("generate");
    let same_twice = Jwks { keys: vec![a.public_jwk(), a.public_jwk()] };
    assert_eq!(KeySet::from_jwks(&same_twice).map(|k| k.len()), Ok(1));
    let mut clash = b.public_jwk();
    clash.kid = Some(a.kid().to_string());
    let clashing = Jwks { keys: vec![a.public_jwk(), clash] };
    assert!(matches!(KeySet::from_jwks(&clashing), Err(JwtError::InvalidKey(_))));
}

#[test]
fn token_without_kid_uses_the_only_key_of_its_type() {
    let ec = SigningKey::generate_es256().expect("generate");
    let rsa = SigningKey::generate_rs256().expect("generate");
    let (_, payload, _) = parts(&ec.sign(&claims()).expect("sign"));
    let header = b64(br#"{"alg":"ES256"}"#);
    let input = format!("{header}.{payload}");
    let token_without_kid = {
        // `SigningKey::sign` always sets a kid, so sign this header with the raw key.
        let pkcs8 = ec.to_pkcs8_der();
        let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
        )
        .expect("pkcs8");
        let sig = kp.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    };
    let mixed = keyset(&[&ec, &rsa]);
    assert!(verify(&token_without_kid, &mixed, &validation()).is_ok());

    let ec2 = SigningKey::generate_es256().expect("generate");
    let two_ec = keyset(&[&ec, &ec2]);
    assert_eq!(verify(&token_without_kid, &two_ec, &validation()), Err(JwtError::UnknownKid(None)));
    let rsa_only = keyset(&[&rsa]);
    assert_eq!(verify(&token_without_kid, &rsa_only, &validation()), Err(JwtError::UnknownKid(None)));
}

#[test]
fn pkcs8_round_trip_keeps_kid() {
    for key in [SigningKey::generate_es256().expect("generate"), SigningKey::generate_rs256().expect("generate")] {
        let der = key.to_pkcs8_der();
        let loaded = SigningKey::from_pkcs8_der(&der).expect("load");
        assert_eq!(loaded.algorithm(), key.algorithm());
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(loaded.public_jwk(), key.public_jwk());
        assert_eq!(*loaded.to_pkcs8_der(), *der);
        let token = loaded.sign(&claims()).expect("sign");
        assert!(verify(&token, &keyset(&[&key]), &validation()).is_ok());
    }
    assert!(matches!(SigningKey::from_pkcs8_der(b"garbage"), Err(JwtError::InvalidKey(_))));
}

#[test]
fn rfc7638_thumbprint_example() {
    // RFC 7638 section 3.1.
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }))
    .expect("jwk");
    assert_eq!(jwk.thumbprint().as_deref(), Ok("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
    // The same key is usable in a key set.
    let keys = KeySet::from_jwks(&Jwks { keys: vec![jwk] }).expect("key set");
    assert_eq!(keys.kids(), vec!["2011-04-29".to_string()]);
}

#[test]
fn own_kid_is_the_thumbprint() {
    for key in [SigningKey::generate_es256().expect("generate"), SigningKey::generate_rs256().expect("generate")] {
        let mut bare = key.public_jwk();
        bare.kid = None;
        bare.alg = None;
        bare.r#use = None;
        assert_eq!(bare.thumbprint().as_deref(), Ok(key.kid()));
        assert_eq!(key.kid().len(), 43);
        assert!(format!("{key:?}").contains(key.kid()));
    }
}

#[test]
fn float_dates_and_string_audience_are_accepted() {
    let key = SigningKey::generate_es256().expect("generate");
    let token =
        key.sign(&json!({"iss": ISS, "aud": AUD, "exp": NOW as f64 + 0.5, "nbf": NOW as f64 - 0.5})).expect("sign");
    let claims = verify(&token, &keyset(&[&key]), &validation()).expect("verify");
    assert_eq!(claims.expires_at(), Some(NOW));
    assert_eq!(claims.not_before(), Some(NOW - 1));
    assert_eq!(claims.audiences(), vec![AUD]);
}

#[test]
fn sign_rejects_non_objects_and_oversized_claims() {
    let key = SigningKey::generate_es256().expect("generate");
    assert!(matches!(key.sign(&json!([1, 2])), Err(JwtError::Signing(_))));
    let big = json!({"iss": ISS, "blob": "x".repeat(16 * 1024)});
    assert!(matches!(key.sign(&big), Err(JwtError::Signing(_))));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeySet>();
    assert_send_sync::<SigningKey>();
    assert_send_sync::<meshca_jwt::Claims>();
    assert_send_sync::<JwtError>();
}
