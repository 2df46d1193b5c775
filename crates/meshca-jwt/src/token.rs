//! Splitting and decoding the JWS compact serialization, without verifying.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Algorithm, JwtError};

/// Tokens longer than this many bytes are rejected as
/// [`JwtError::Malformed`] without being decoded (16 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The JOSE header of a token.
///
/// Only the members this crate understands are exposed. A header carrying
/// `crit` is rejected, since no critical extension is supported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// The `alg` member, as written in the token (not yet validated; see
    /// [`Header::algorithm`]).
    pub alg: String,
    /// The `kid` member, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The `typ` member, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

impl Header {
    /// The header's algorithm, if it is one this crate accepts.
    ///
    /// # Errors
    /// [`JwtError::UnsupportedAlgorithm`] for anything but `ES256`/`RS256`.
    pub fn algorithm(&self) -> Result<Algorithm, JwtError> {
        Algorithm::from_name(&self.alg)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Header, JwtError> {
        if obj.contains_key("crit") {
            return Err(malformed("header has an unsupported \"crit\" member"));
        }
        let alg = match obj.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            Some(_) => return Err(malformed("header \"alg\" is not a string")),
            None => return Err(malformed("header has no \"alg\"")),
        };
        Ok(Header { alg, kid: optional_string(obj, "kid")?, typ: optional_string(obj, "typ")? })
    }
}

fn optional_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, JwtError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::Malformed(format!("header \"{name}\" is not a string"))),
    }
}

/// The three parts of a compact JWS, still base64url encoded.
pub(crate) struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header || '.' || payload`, the bytes that are signed.
    pub signing_input: &'a str,
}

pub(crate) fn malformed(msg: &str) -> JwtError {
    JwtError::Malformed(msg.to_string())
}

/// Splits a token into its three parts, enforcing the length cap.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!("token is longer than {MAX_TOKEN_LEN} bytes")));
    }
    let mut it = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(malformed("token must have exactly three dot-separated parts"));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(malformed("token has an empty part"));
    }
    let signing_input =
        token.get(..header.len() + 1 + payload.len()).ok_or_else(|| malformed("token has an invalid structure"))?;
    Ok(Parts { header, payload, signature, signing_input })
}

/// Decodes unpadded base64url, rejecting padding and non-canonical input.
pub(crate) fn b64_decode(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed(format!("{what} is not valid unpadded base64url")))
}

/// Encodes bytes as unpadded base64url.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses bytes as a JSON object whose top-level member names are unique.
///
/// Error messages never echo the input.
pub(crate) fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<StrictObject>(bytes) {
        Ok(StrictObject(map)) => Ok(map),
        Err(e) => {
            let kind = if e.is_data() { "not a JSON object with unique member names" } else { "not valid JSON" };
            Err(JwtError::Malformed(format!("{what} is {kind} (line {}, column {})", e.line(), e.column())))
        }
    }
}

/// Decodes and parses the header part.
pub(crate) fn parse_header(parts: &Parts<'_>) -> Result<Header, JwtError> {
    let bytes = b64_decode(parts.header, "header")?;
    Header::from_object(&parse_object(&bytes, "header")?)
}

/// Decodes the JOSE header of a token **without verifying anything else**.
///
/// Enforces the same structural rules as [`crate::verify`]: length cap,
/// exactly three non-empty base64url parts, a JSON-object header with a
/// string `alg`. The algorithm itself is not checked here.
///
/// # Errors
/// [`JwtError::Malformed`] if the token or its header is malformed.
pub fn decode_header(token: &str) -> Result<Header, JwtError> {
    parse_header(&split(token)?)
}

/// Returns the **unverified** `iss` claim of a token.
///
/// Use it only to pick the key set of the issuer the token claims to come
/// from; then call [`crate::verify`], which checks `iss` again.
///
/// # Errors
/// [`JwtError::Malformed`] if the token or its payload is malformed or `iss`
/// is not a string, [`JwtError::MissingClaim`]`("iss")` if it is absent.
pub fn peek_issuer(token: &str) -> Result<String, JwtError> {
    let parts = split(token)?;
    let payload = parse_object(&b64_decode(parts.payload, "payload")?, "payload")?;
    match payload.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        Some(_) => Err(malformed("claim \"iss\" is not a string")),
        None => Err(JwtError::MissingClaim("iss")),
    }
}

/// A JSON object that rejects duplicate top-level member names (a classic
/// source of parser-differential attacks on JWTs).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StrictObjectVisitor)
    }
}

struct StrictObjectVisitor;

impl<'de> Visitor<'de> for StrictObjectVisitor {
    type Value = StrictObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(A::Error::custom("duplicate member name"));
            }
            let value: Value = access.next_value()?;
            map.insert(key, value);
        }
        Ok(StrictObject(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        b64_encode(s.as_bytes())
    }

    #[test]
    fn header_is_decoded() {
        let token = format!("{}.{}.c2ln", enc(r#"{"alg":"RS256","kid":"k1"}"#), enc("{}"));
        let h = decode_header(&token).expect("valid header");
        assert_eq!(h.alg, "RS256");
        assert_eq!(h.kid.as_deref(), Some("k1"));
        assert_eq!(h.typ, None);
        assert_eq!(h.algorithm(), Ok(Algorithm::RS256));
    }

    #[test]
    fn header_rules_are_strict() {
        let p = enc("{}");
        for header in [
            r#"{"alg":"ES256","alg":"ES256"}"#,
            r#"{"alg":"ES256","crit":["b64"]}"#,
            r#"{"alg":256}"#,
            r#"{"kid":"x"}"#,
            r#"{"alg":"ES256","kid":7}"#,
            r#"["ES256"]"#,
            r#""secret-looking-string""#,
        ] {
            let token = format!("{}.{p}.c2ln", enc(header));
            match decode_header(&token) {
                Err(JwtError::Malformed(msg)) => assert!(!msg.contains("secret"), "{msg}"),
                other => panic!("{header}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn padding_and_empty_parts_are_rejected() {
        let h = enc(r#"{"alg":"ES256"}"#);
        for token in [
            format!("{h}=.e30.c2ln"),
            format!("{h}..c2ln"),
            format!("{h}.e30."),
            ".e30.c2ln".to_string(),
            format!("{h}.e30.c2ln."),
        ] {
            assert!(matches!(decode_header(&token), Err(JwtError::Malformed(_))));
        }
    }

    #[test]
    fn peek_issuer_reads_iss() {
        let h = enc(r#"{"alg":"ES256"}"#);
        let t = format!("{h}.{}.c2ln", enc(r#"{"iss":"https://k8s"}"#));
        assert_eq!(peek_issuer(&t), Ok("https://k8s".to_string()));
        let t = format!("{h}.{}.c2ln", enc(r#"{"sub":"x"}"#));
        assert_eq!(peek_issuer(&t), Err(JwtError::MissingClaim("iss")));
        let t = format!("{h}.{}.c2ln", enc(r#"{"iss":1}"#));
        assert!(matches!(peek_issuer(&t), Err(JwtError::Malformed(_))));
    }
}
