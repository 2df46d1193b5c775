//! Tokens that must be rejected, each with its specific error.

mod common;

use std::time::Duration;

use aws_lc_rs::hmac;
use common::*;
use meshca_jwt::{decode_header, peek_issuer, verify, JwtError, KeySet, SigningKey, MAX_TOKEN_LEN};
use serde_json::{json, Value};

fn es256() -> SigningKey {
    SigningKey::generate_es256().expect("generate")
}

fn check(token: &str, keys: &KeySet, expected: JwtError) {
    let result = verify(token, keys, &validation());
    assert_eq!(result, Err(expected.clone()));
    let message = expected.to_string();
    assert!(!message.contains(token), "error message leaks the token");
}

fn sign_claims(key: &SigningKey, claims: Value) -> String {
    key.sign(&claims).expect("sign")
}

#[test]
fn alg_none_is_unsupported() {
    let key = es256();
    for sig in [&b""[..], b"x"] {
        let header = json!({"alg": "none", "kid": key.kid()});
        let token = assemble(&header, &claims(), sig);
        let result = verify(&token, &keyset(&[&key]), &validation());
        if sig.is_empty() {
            // An empty third part is structurally invalid before alg is even read.
            assert!(matches!(result, Err(JwtError::Malformed(_))), "{result:?}");
        } else {
            assert_eq!(result, Err(JwtError::UnsupportedAlgorithm("none".into())));
        }
    }
    // Checked before any key lookup: an empty key set still says UnsupportedAlgorithm.
    let token = assemble(&json!({"alg": "none"}), &claims(), b"x");
    assert_eq!(verify(&token, &KeySet::default(), &validation()), Err(JwtError::UnsupportedAlgorithm("none".into())));
}

#[test]
fn hmac_algorithms_are_unsupported() {
    // Classic key-confusion attack: HMAC keyed with the public key.
    let key = SigningKey::generate_rs256().expect("generate");
    let public = serde_json::to_vec(&key.public_jwk()).expect("jwk");
    for (alg, hmac_alg) in [("HS256", hmac::HMAC_SHA256), ("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
        let header = json!({"alg": alg, "kid": key.kid(), "typ": "JWT"});
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims().to_string().as_bytes()));
        let tag = hmac::sign(&hmac::Key::new(hmac_alg, &public), input.as_bytes());
        let token = format!("{input}.{}", b64(tag.as_ref()));
        check(&token, &keyset(&[&key]), JwtError::UnsupportedAlgorithm(alg.into()));
    }
}

#[test]
fn other_algorithms_are_unsupported() {
    let key = es256();
    for alg in ["PS256", "ES384", "RS512", "EdDSA", "es256"] {
        let token = assemble(&json!({"alg": alg, "kid": key.kid()}), &claims(), &[1; 64]);
        check(&token, &keyset(&[&key]), JwtError::UnsupportedAlgorithm(alg.into()));
    }
    // Odd names are sanitized in the error.
    let token = assemble(&json!({"alg": "ES256\n"}), &claims(), &[1; 64]);
    assert_eq!(
        verify(&token, &keyset(&[&key]), &validation()),
        Err(JwtError::UnsupportedAlgorithm("ES256?...".into()))
    );
}

#[test]
fn alg_must_match_key_type() {
    let ec = es256();
    let rsa = SigningKey::generate_rs256().expect("generate");
    let keys = keyset(&[&ec, &rsa]);
    // An RS256 token naming the EC key, and vice versa.
    let (_, payload, sig) = parts(&rsa.sign(&claims()).expect("sign"));
    let header = b64(json!({"alg": "RS256", "kid": ec.kid()}).to_string().as_bytes());
    let result = verify(&format!("{header}.{payload}.{sig}"), &keys, &validation());
    assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");
    let (_, payload, sig) = parts(&ec.sign(&claims()).expect("sign"));
    let header = b64(json!({"alg": "ES256", "kid": rsa.kid()}).to_string().as_bytes());
    let result = verify(&format!("{header}.{payload}.{sig}"), &keys, &validation());
    assert!(matches!(result, Err(JwtError::UnsupportedAlgorithm(_))), "{result:?}");
}

#[test]
fn tampered_tokens_have_bad_signatures() {
    for key in [es256(), SigningKey::generate_rs256().expect("generate")] {
        let keys = keyset(&[&key]);
        let token = key.sign(&claims()).expect("sign");
        let (header, _, sig) = parts(&token);
        let mut evil = claims();
        evil["sub"] = json!("system:serviceaccount:kube-system:admin");
        let tampered = format!("{header}.{}.{sig}", b64(evil.to_string().as_bytes()));
        check(&tampered, &keys, JwtError::BadSignature);

        // A valid signature from another key with the same kid.
        let (_, payload, _) = parts(&token);
        let other = SigningKey::from_pkcs8_der(&match key.algorithm() {
            meshca_jwt::Algorithm::ES256 => es256().to_pkcs8_der(),
            meshca_jwt::Algorithm::RS256 => SigningKey::generate_rs256().expect("generate").to_pkcs8_der(),
        })
        .expect("load");
        let (_, _, other_sig) = parts(&other.sign(&claims()).expect("sign"));
        check(&format!("{header}.{payload}.{other_sig}"), &keys, JwtError::BadSignature);
        // Truncated signature.
        let raw = unb64(&sig);
        let short = b64(&raw[..raw.len() - 3]);
        check(&format!("{header}.{payload}.{short}"), &keys, JwtError::BadSignature);
    }
}

#[test]
fn der_encoded_es256_signature_is_rejected() {
    let key = es256();
    let token = key.sign(&claims()).expect("sign");
    let (header, payload, sig) = parts(&token);
    let raw = unb64(&sig);
    // Wrap r and s in a DER SEQUENCE of two INTEGERs (not the JOSE encoding).
    let mut der = Vec::new();
    for half in [&raw[..32], &raw[32..]] {
        let mut int = half.to_vec();
        if int[0] & 0x80 != 0 {
            int.insert(0, 0);
        }
        der.extend([0x02, int.len() as u8]);
        der.extend(int);
    }
    der.splice(0..0, [0x30, der.len() as u8]);
    let token = format!("{header}.{payload}.{}", b64(&der));
    check(&token, &keyset(&[&key]), JwtError::BadSignature);
}

#[test]
fn expiry_and_not_before() {
    let key = es256();
    let keys = keyset(&[&key]);
    // Expired 61 s ago: beyond the default 60 s leeway.
    check(&sign_claims(&key, claims_expiring_in(-61)), &keys, JwtError::Expired);
    // Expired 30 s ago: within the leeway.
    assert!(verify(&sign_claims(&key, claims_expiring_in(-30)), &keys, &validation()).is_ok());
    // Zero leeway makes that expired too.
    let strict = validation().with_leeway(Duration::ZERO);
    assert_eq!(verify(&sign_claims(&key, claims_expiring_in(-30)), &keys, &strict), Err(JwtError::Expired));
    // Exactly at exp is still valid.
    assert!(verify(&sign_claims(&key, claims_expiring_in(0)), &keys, &strict).is_ok());

    let mut future = claims();
    future["nbf"] = json!(NOW + 120);
    check(&sign_claims(&key, future), &keys, JwtError::NotYetValid);
    let mut soon = claims();
    soon["nbf"] = json!(NOW + 30);
    assert!(verify(&sign_claims(&key, soon), &keys, &validation()).is_ok());

    let mut no_exp = claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    check(&sign_claims(&key, no_exp), &keys, JwtError::MissingClaim("exp"));
    let mut string_exp = claims();
    string_exp["exp"] = json!("tomorrow");
    let result = verify(&sign_claims(&key, string_exp), &keys, &validation());
    assert!(matches!(result, Err(JwtError::Malformed(_))), "{result:?}");
}

#[test]
fn audience_and_issuer() {
    let key = es256();
    let keys = keyset(&[&key]);
    let with = |name: &str, value: Value| {
        let mut c = claims();
        c[name] = value;
        sign_claims(&key, c)
    };
    check(&with("aud", json!("other")), &keys, JwtError::WrongAudience);
    check(&with("aud", json!(["a", "b"])), &keys, JwtError::WrongAudience);
    check(&with("aud", json!([])), &keys, JwtError::WrongAudience);
    let ok = with("aud", json!(["kubernetes", AUD, "other"]));
    assert_eq!(verify(&ok, &keys, &validation()).map(|c| c.audiences().len()), Ok(3));
    let mut no_aud = claims();
    no_aud.as_object_mut().expect("object").remove("aud");
    check(&sign_claims(&key, no_aud), &keys, JwtError::WrongAudience);

    check(&with("iss", json!("https://evil.example")), &keys, JwtError::WrongIssuer);
    let mut no_iss = claims();
    no_iss.as_object_mut().expect("object").remove("iss");
    check(&sign_claims(&key, no_iss), &keys, JwtError::WrongIssuer);
}

#[test]
fn unknown_kid() {
    let key = es256();
    let other = es256();
    let token = key.sign(&claims()).expect("sign");
    check(&token, &keyset(&[&other]), JwtError::UnknownKid(Some(key.kid().into())));
    check(&token, &KeySet::default(), JwtError::UnknownKid(Some(key.kid().into())));
}

#[test]
fn malformed_tokens() {
    let key = es256();
    let keys = keyset(&[&key]);
    let token = key.sign(&claims()).expect("sign");
    let (header, payload, sig) = parts(&token);
    let cases = [
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{sig}.{sig}"),
        String::new(),
        format!("{header}.{payload}.{sig}="),
        format!("{header}.{payload}!.{sig}"),
        format!("{header}.{payload}.+{}", &sig[1..]),
        format!("{}.{payload}.{sig}", b64(b"not json")),
        format!("{}.{payload}.{sig}", b64(br#"{"alg":"ES256""#)),
        format!("{header}.{}.{sig}", b64(b"[1,2,3]")),
        format!("{header}.{payload}.{}", "A".repeat(MAX_TOKEN_LEN)),
    ];
    for (i, bad) in cases.iter().enumerate() {
        let result = verify(bad, &keys, &validation());
        let payload_only = i == 8; // header and signature fine; caught after the signature
        let ok = match &result {
            Err(JwtError::Malformed(msg)) => !msg.contains(bad.as_str()) || bad.is_empty(),
            Err(JwtError::BadSignature) => payload_only,
            _ => false,
        };
        assert!(ok, "case {i}: {result:?}");
    }
    let too_long = format!("{header}.{payload}.{}", "A".repeat(MAX_TOKEN_LEN));
    assert!(matches!(decode_header(&too_long), Err(JwtError::Malformed(_))));
    assert!(matches!(peek_issuer(&too_long), Err(JwtError::Malformed(_))));
}

#[test]
fn arbitrary_mutations_never_panic() {
    let key = es256();
    let keys = keyset(&[&key]);
    let token = key.sign(&claims()).expect("sign");
    let alphabet: Vec<char> = "AZaz09-_.=+/ {}\"\u{e9}\u{0}".chars().collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut chars: Vec<char> = token.chars().collect();
        for _ in 0..(next() % 4 + 1) {
            let pos = (next() as usize) % (chars.len() + 1);
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 if pos < chars.len() => chars[pos] = c,
                1 if pos < chars.len() => {
                    chars.remove(pos);
                }
                _ => chars.insert(pos, c),
            }
        }
        let mutated: String = chars.into_iter().collect();
        if let Ok(claims) = verify(&mutated, &keys, &validation()) {
            assert_eq!(claims.issuer(), Some(ISS));
        }
        let _ = decode_header(&mutated);
        let _ = peek_issuer(&mutated);
    }
}
