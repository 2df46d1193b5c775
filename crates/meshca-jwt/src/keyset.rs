//! A set of verification keys, parsed once from a JWKS.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::{Algorithm, Jwk, Jwks, JwtError};

/// Length in bytes of a P-256 field element / coordinate.
const P256_COORD_LEN: usize = 32;
/// Accepted RSA modulus sizes, in bits.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// Verification keys, indexed by `kid`, each already parsed into an
/// `aws-lc-rs` [`ParsedPublicKey`] bound to its algorithm (ES256 keys to
/// `ECDSA_P256_SHA256_FIXED`, RS256 keys to `RSA_PKCS1_2048_8192_SHA256`), so
/// verification never re-parses key material.
///
/// Building a set is strict about the keys it can use and lenient about the
/// ones it cannot:
///
/// * keys of another type (`OKP`, `oct`, ...), EC keys on another curve,
///   keys whose `use` is not `sig` and keys whose `alg` is some other
///   algorithm (`RS512`, `PS256`, ...) are **skipped**;
/// * an EC P-256 or RSA key that is malformed, an RSA modulus outside
///   2048..=8192 bits, an `alg` naming the other supported algorithm, or two
///   different keys with the same `kid` is an [`JwtError::InvalidKey`] error.
///
/// A set may end up empty; check [`KeySet::is_empty`] if that matters.
#[derive(Clone, Default)]
pub struct KeySet {
    entries: Vec<Entry>,
    by_kid: HashMap<String, usize>,
}

#[derive(Clone)]
pub(crate) struct Entry {
    kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: ParsedPublicKey,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    ///
    /// Entries whose `kty` is not `EC` or `RSA` are skipped before their
    /// other members are even looked at.
    ///
    /// # Errors
    /// [`JwtError::InvalidKey`] if the document is not a JWKS or a usable key
    /// is invalid (see the type-level documentation).
    pub fn from_jwks_json(bytes: &[u8]) -> Result<KeySet, JwtError> {
        #[derive(Deserialize)]
        struct RawJwks {
            keys: Vec<Value>,
        }
        let raw: RawJwks =
            serde_json::from_slice(bytes).map_err(|e| JwtError::InvalidKey(format!("not a JWKS document: {e}")))?;
        let mut set = KeySet::default();
        for value in raw.keys {
            if !matches!(value.get("kty").and_then(Value::as_str), Some("EC" | "RSA")) {
                continue;
            }
            let jwk: Jwk =
                serde_json::from_value(value).map_err(|e| JwtError::InvalidKey(format!("invalid JWK: {e}")))?;
            set.add(&jwk)?;
        }
        Ok(set)
    }

    /// Builds a key set from already deserialized keys.
    ///
    /// # Errors
    /// [`JwtError::InvalidKey`] if a usable key is invalid (see the
    /// type-level documentation).
    pub fn from_jwks(jwks: &Jwks) -> Result<KeySet, JwtError> {
        let mut set = KeySet::default();
        for jwk in &jwks.keys {
            set.add(jwk)?;
        }
        Ok(set)
    }

    /// Whether a key with this `kid` is in the set.
    #[must_use]
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Number of usable keys (with or without a `kid`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no usable key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `kid`s of the keys that have one, in document order.
    #[must_use]
    pub fn kids(&self) -> Vec<String> {
        self.entries.iter().filter_map(|e| e.kid.clone()).collect()
    }

    /// Selects the key for a token: by `kid` if the token has one, otherwise
    /// the only key of the algorithm's type.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Entry, JwtError> {
        let entry = match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .and_then(|&i| self.entries.get(i))
                .ok_or_else(|| JwtError::UnknownKid(Some(kid.to_string())))?,
            None => {
                let mut candidates = self.entries.iter().filter(|e| e.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => only,
                    _ => return Err(JwtError::UnknownKid(None)),
                }
            }
        };
        if entry.alg != alg {
            return Err(JwtError::UnsupportedAlgorithm(format!(
                "{alg} does not match the key type {}",
                entry.alg.key_type()
            )));
        }
        Ok(entry)
    }

    fn add(&mut self, jwk: &Jwk) -> Result<(), JwtError> {
        let Some(alg) = usable_algorithm(jwk)? else {
            return Ok(());
        };
        let key = match alg {
            Algorithm::ES256 => parse_ec_p256(jwk)?,
            Algorithm::RS256 => parse_rsa(jwk)?,
        };
        if let Some(kid) = &jwk.kid {
            if let Some(existing) = self.by_kid.get(kid).and_then(|&i| self.entries.get(i)) {
                if existing.alg == alg && existing.key.as_ref() == key.as_ref() {
                    return Ok(()); // the same key listed twice
                }
                return Err(JwtError::InvalidKey(format!("two different keys share the kid {kid:?}")));
            }
            self.by_kid.insert(kid.clone(), self.entries.len());
        }
        self.entries.push(Entry { kid: jwk.kid.clone(), alg, key });
        Ok(())
    }
}

/// The algorithm a JWK is usable with, `None` if it must be skipped.
fn usable_algorithm(jwk: &Jwk) -> Result<Option<Algorithm>, JwtError> {
    if jwk.r#use.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match jwk.kty.as_str() {
        "EC" => match jwk.crv.as_deref() {
            Some("P-256") => Algorithm::ES256,
            Some(_) => return Ok(None),
            None => return Err(JwtError::InvalidKey("EC JWK has no \"crv\"".into())),
        },
        "RSA" => Algorithm::RS256,
        _ => return Ok(None),
    };
    match jwk.alg.as_deref() {
        None => Ok(Some(alg)),
        Some(declared) if declared == alg.as_str() => Ok(Some(alg)),
        Some(declared @ ("ES256" | "RS256")) => {
            Err(JwtError::InvalidKey(format!("JWK alg {declared} does not match its kty {}", jwk.kty)))
        }
        Some(_) => Ok(None),
    }
}

fn decode_member(jwk: &Jwk, name: &'static str, value: Option<&String>) -> Result<Vec<u8>, JwtError> {
    let value = value.ok_or_else(|| JwtError::InvalidKey(format!("{} JWK has no \"{name}\"", jwk.kty)))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| JwtError::InvalidKey(format!("{} JWK \"{name}\" is not unpadded base64url", jwk.kty)))
}

fn parse_ec_p256(jwk: &Jwk) -> Result<ParsedPublicKey, JwtError> {
    let x = decode_member(jwk, "x", jwk.x.as_ref())?;
    let y = decode_member(jwk, "y", jwk.y.as_ref())?;
    if x.len() != P256_COORD_LEN || y.len() != P256_COORD_LEN {
        return Err(JwtError::InvalidKey("P-256 JWK coordinates must be 32 bytes each".into()));
    }
    let mut point = Vec::with_capacity(1 + 2 * P256_COORD_LEN);
    point.push(0x04); // SEC 1 uncompressed point
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .map_err(|e| JwtError::InvalidKey(format!("P-256 JWK rejected: {e}")))
}

fn parse_rsa(jwk: &Jwk) -> Result<ParsedPublicKey, JwtError> {
    let n = decode_member(jwk, "n", jwk.n.as_ref())?;
    let e = decode_member(jwk, "e", jwk.e.as_ref())?;
    // RFC 7518 asks for minimal encodings; tolerate stray leading zeros.
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = match n.first() {
        Some(&first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(JwtError::InvalidKey(format!(
            "RSA modulus has {bits} bits, expected {RSA_MIN_BITS}..={RSA_MAX_BITS}"
        )));
    }
    let e_is_valid = e.len() <= 8 && e.last().is_some_and(|b| b & 1 == 1) && e != [1];
    if !e_is_valid {
        return Err(JwtError::InvalidKey("RSA public exponent is invalid".into()));
    }
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|e| JwtError::InvalidKey(format!("RSA JWK rejected: {e}")))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| (e.kid.as_deref(), e.alg))).finish()
    }
}
