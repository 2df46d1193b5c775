//! JWKS documents that accept no token, and the fail-closed rule for JWKS the server could not
//! fetch.

use std::collections::BTreeMap;

/// A JWKS whose only key, with id `$kid`, is a P-256 public key whose private key was discarded
/// when it was made.
macro_rules! unusable_jwks {
    ($kid:literal) => {
        concat!(
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":""#,
            $kid,
            r#"","alg":"ES256","x":"tbjcrwd6YKtfK665D6RymYQsjfrzPlzQF65r-Iu0kng","y":"5bnHekD8tp6Kz4_vvEYDZJxF3JrT8ulxhViIEcxeUg0"}]}"#
        )
    };
}

/// A JWKS whose only key nobody holds: Envoy refuses a provider without a valid key, and no token
/// can ever verify against this one (the bootstrap's deny-all jwt_authn default uses it).
pub const UNUSABLE_JWKS: &str = unusable_jwks!("meshca-no-policy-yet");

/// The same key under the id `meshca-jwks-fetch-failed`: what a provider whose JWKS fetch failed
/// gets (see [`fail_closed_jwks`]).
pub const FETCH_FAILED_JWKS: &str = unusable_jwks!("meshca-jwks-fetch-failed");

/// The JWKS to inline (for `PolicyInputs::jwks`): every fetched document, and
/// [`FETCH_FAILED_JWKS`] for every key (jwksUri or issuer) whose fetch failed and that has no
/// fetched document. Its tokens are then refused (401; the unknown `kid` makes the agent ask for a
/// refetch) instead of the key compiling to a `remote_jwks` on a cluster the bootstrap does not
/// have, which Envoy would reject, running on with the previous policies: fail closed.
pub fn fail_closed_jwks(
    fetched: impl IntoIterator<Item = (String, String)>,
    failed: impl IntoIterator<Item = String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = fetched.into_iter().collect();
    for key in failed {
        out.entry(key).or_insert_with(|| FETCH_FAILED_JWKS.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_fetches_get_a_key_nobody_holds() {
        let fetched = [("https://a/jwks".to_string(), "{\"keys\":[]}".to_string())];
        let failed = ["https://b/jwks".to_string(), "https://a/jwks".to_string()];
        let out = fail_closed_jwks(fetched, failed);
        assert_eq!(out["https://a/jwks"], "{\"keys\":[]}", "a fetched document wins over an error");
        assert_eq!(out["https://b/jwks"], FETCH_FAILED_JWKS);
        assert_eq!(out.len(), 2);
        assert!(fail_closed_jwks([], []).is_empty());
        for (doc, kid) in [(UNUSABLE_JWKS, "meshca-no-policy-yet"), (FETCH_FAILED_JWKS, "meshca-jwks-fetch-failed")] {
            let v: serde_json::Value = serde_json::from_str(doc).unwrap();
            assert_eq!(v["keys"][0]["kid"], kid);
            assert_eq!((v["keys"][0]["kty"].as_str(), v["keys"].as_array().map(Vec::len)), (Some("EC"), Some(1)));
        }
    }
}
