//! JSON Web Keys (RFC 7517) and RFC 7638 thumbprints.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::token::b64_encode;
use crate::JwtError;

/// A JSON Web Key Set: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, in document order.
    pub keys: Vec<Jwk>,
}

/// A public JSON Web Key.
///
/// Only the members needed for EC P-256 (`crv`, `x`, `y`) and RSA (`n`,
/// `e`) public keys are modelled; other members (including any private-key
/// material) are ignored when deserializing and never serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `"EC"` or `"RSA"` (other types are skipped by
    /// [`crate::KeySet`]).
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm (`"ES256"` / `"RS256"`), if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`"sig"`), if declared (JSON member `use`).
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub r#use: Option<String>,
    /// EC curve name (`"P-256"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url (32 bytes for P-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url (32 bytes for P-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url big-endian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    /// The RFC 7638 JWK thumbprint: base64url (unpadded) SHA-256 of the
    /// canonical JSON of the required members (`crv`, `kty`, `x`, `y` for EC;
    /// `e`, `kty`, `n` for RSA).
    ///
    /// # Errors
    /// [`JwtError::InvalidKey`] if `kty` is neither `EC` nor `RSA`, or a
    /// required member is missing.
    pub fn thumbprint(&self) -> Result<String, JwtError> {
        let mut members: BTreeMap<&str, &str> = BTreeMap::new();
        members.insert("kty", &self.kty);
        let required: Vec<(&str, &Option<String>)> = match self.kty.as_str() {
            "EC" => vec![("crv", &self.crv), ("x", &self.x), ("y", &self.y)],
            "RSA" => vec![("e", &self.e), ("n", &self.n)],
            _ => return Err(JwtError::InvalidKey("thumbprint needs an EC or RSA key".into())),
        };
        for (name, value) in required {
            let value = value.as_deref().ok_or_else(|| JwtError::InvalidKey(format!("JWK has no \"{name}\"")))?;
            members.insert(name, value);
        }
        let canonical =
            serde_json::to_vec(&members).map_err(|_| JwtError::InvalidKey("JWK cannot be serialized".into()))?;
        Ok(b64_encode(digest::digest(&digest::SHA256, &canonical).as_ref()))
    }
}
