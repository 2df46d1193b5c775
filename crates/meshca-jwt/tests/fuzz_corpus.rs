//! Replays the fuzz corpus of meshca-jwt's parsers (fuzz/corpus/{jwt,jwks})
//! with the calls of the fuzz targets (fuzz/src/lib.rs): no input panics, and
//! the named seeds keep their verdicts.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use meshca_jwt::{verify, Claims, Jwks, JwtError, KeySet, Validation};
use std::time::{Duration, UNIX_EPOCH};

const ISSUER: &str = "https://kubernetes.default.svc";
const AUDIENCE: &str = "istio-ca";

/// The fuzz targets' fixed time (2027-01-15).
fn validation() -> Validation {
    Validation::new(ISSUER, AUDIENCE).with_now(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

fn keyset() -> KeySet {
    KeySet::from_jwks_json(&replay::fuzz_file("keys/jwks.json")).expect("fuzz/keys/jwks.json is a valid JWKS")
}

/// The valid tokens of fuzz/keys/tokens.json (`{"name": "token", ...}`).
fn tokens() -> Vec<String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&replay::fuzz_file("keys/tokens.json")).expect("fuzz/keys/tokens.json is a JSON object");
    map.values().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

fn checked(result: Result<Claims, JwtError>) -> Result<Claims, JwtError> {
    if let Ok(claims) = &result {
        assert_eq!(claims.issuer(), Some(ISSUER));
        assert!(claims.audiences().contains(&AUDIENCE));
    }
    result
}

fn jwt(token: &[u8], keys: &KeySet) -> Option<Result<Claims, JwtError>> {
    let token = std::str::from_utf8(token).ok()?;
    let _ = meshca_jwt::peek_issuer(token);
    let _ = meshca_jwt::decode_header(token);
    Some(checked(verify(token, keys, &validation())))
}

#[test]
fn jwt_corpus_verifies_or_is_refused() {
    let keys = keyset();
    let n = replay::replay("jwt", |_, data| drop(jwt(data, &keys)));
    assert!(n >= 10, "jwt corpus has only {n} inputs");
    let seed = |name: &str| jwt(&replay::input("jwt", name), &keys).expect("UTF-8 seed");
    for ok in ["es_ok", "rs_ok", "es_nokid", "es_aud_str", "es_float_dates"] {
        if let Err(e) = seed(ok) {
            panic!("{ok}: a valid token was refused: {e}");
        }
    }
    assert!(matches!(seed("es_expired"), Err(JwtError::Expired)));
    assert!(matches!(seed("es_nbf_future"), Err(JwtError::NotYetValid)));
    assert!(matches!(seed("es_wrong_iss"), Err(JwtError::WrongIssuer)));
    assert!(matches!(seed("es_no_exp"), Err(JwtError::MissingClaim("exp"))));
    assert!(matches!(seed("es_unknown_kid"), Err(JwtError::UnknownKid(_))));
    // An unsigned token has an empty third part: malformed before its `alg` is read.
    assert!(matches!(seed("none_alg"), Err(JwtError::Malformed(_))));
    assert!(matches!(seed("hs256"), Err(JwtError::UnsupportedAlgorithm(_))));
    for malformed in ["es_crit", "dup_header", "two_parts", "padded", "deep_json", "es_iss_num", "es_aud_mixed"] {
        assert!(seed(malformed).is_err(), "{malformed}: accepted");
    }
    assert_eq!(
        meshca_jwt::peek_issuer(&String::from_utf8_lossy(&replay::input("jwt", "es_ok"))).ok().as_deref(),
        Some(ISSUER)
    );
}

#[test]
fn jwks_corpus_builds_a_key_set_or_is_refused() {
    let tokens = tokens();
    assert_eq!(tokens.len(), 2, "fuzz/keys/tokens.json holds two tokens");
    let build = |data: &[u8]| -> Result<KeySet, JwtError> {
        if let Ok(doc) = serde_json::from_slice::<Jwks>(data) {
            for key in &doc.keys {
                let _ = key.thumbprint();
            }
            let _ = KeySet::from_jwks(&doc);
        }
        let set = KeySet::from_jwks_json(data)?;
        assert!(set.len() >= set.kids().len());
        for token in &tokens {
            let _ = checked(verify(token, &set, &validation()));
        }
        Ok(set)
    };
    let n = replay::replay("jwks", |_, data| drop(build(data)));
    assert!(n >= 10, "jwks corpus has only {n} inputs");
    let seed = |name: &str| build(&replay::input("jwks", name));
    assert_eq!(seed("both").map(|s| s.kids()).ok(), Some(vec!["es".to_string(), "rs".to_string()]));
    let both = seed("both").expect("valid JWKS");
    for token in &tokens {
        checked(verify(token, &both, &validation())).expect("corpus token verifies against the corpus JWKS");
    }
    assert_eq!(seed("okp_oct").map(|s| s.len()).ok(), Some(1));
    assert_eq!(seed("empty").map(|s| s.is_empty()).ok(), Some(true));
    for bad in ["dup_kid_diff", "ec_short_x", "ec_not_on_curve", "rsa_small", "rsa_alg_es", "not_object", "deep"] {
        assert!(matches!(seed(bad), Err(JwtError::InvalidKey(_))), "{bad}: {:?}", seed(bad).map(|s| s.kids()));
    }
}
