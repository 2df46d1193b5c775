//! Strict JSON Web Token (JWT) signing and verification for meshca.
//!
//! This crate implements exactly what the meshca certificate authority needs:
//!
//! * verifying Kubernetes service-account tokens (and any other JWS compact
//!   tokens) signed with **ES256** (ECDSA P-256/SHA-256) or **RS256**
//!   (RSASSA-PKCS1-v1_5/SHA-256, 2048..=8192-bit keys) against a JWKS
//!   ([`verify`], [`KeySet`], [`Validation`]);
//! * minting tokens with a locally held key ([`SigningKey`]);
//! * extracting the Kubernetes service account a token was issued for
//!   ([`Claims::kubernetes_service_account`]).
//!
//! Every other algorithm (`none`, `HS*`, `PS*`, `ES384`, `EdDSA`, ...) is
//! rejected with [`JwtError::UnsupportedAlgorithm`] before any key is looked
//! up. All cryptography is done by `aws-lc-rs`; public keys are parsed once
//! when a [`KeySet`] is built, not on every verification.
//!
//! No function in this crate panics on any input, and no error message
//! contains the token being processed.
//!
//! # Example
//!
//! ```
//! use meshca_jwt::{verify, Jwks, KeySet, SigningKey, Validation};
//! use std::time::{SystemTime, UNIX_EPOCH};
//!
//! # fn main() -> Result<(), meshca_jwt::JwtError> {
//! let key = SigningKey::generate_es256()?;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
//! let token = key.sign(&serde_json::json!({
//!     "iss": "https://kubernetes.default.svc",
//!     "aud": ["istio-ca"],
//!     "sub": "system:serviceaccount:default:httpbin",
//!     "exp": now + 600,
//! }))?;
//!
//! let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] })?;
//! let validation = Validation::new("https://kubernetes.default.svc", "istio-ca");
//! let claims = verify(&token, &keys, &validation)?;
//! assert_eq!(
//!     claims.kubernetes_service_account(),
//!     Some(("default".to_string(), "httpbin".to_string()))
//! );
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod claims;
mod error;
mod jwk;
mod keyset;
mod signing;
mod token;
mod verify;

pub use claims::Claims;
pub use error::JwtError;
pub use jwk::{Jwk, Jwks};
pub use keyset::KeySet;
pub use signing::SigningKey;
pub use token::{decode_header, peek_issuer, Header, MAX_TOKEN_LEN};
pub use verify::{verify, Validation, DEFAULT_LEEWAY};

/// A JWS signature algorithm accepted by this crate.
///
/// These are the only two algorithms ever accepted; see
/// [`Algorithm::from_name`].
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA using P-256 and SHA-256, signature encoded as the 64-byte
    /// fixed-width `r || s` (RFC 7518 section 3.4).
    ES256,
    /// RSASSA-PKCS1-v1_5 using SHA-256 with a 2048..=8192-bit modulus
    /// (RFC 7518 section 3.3).
    RS256,
}

impl Algorithm {
    /// The JOSE name of the algorithm (`"ES256"` or `"RS256"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }

    /// The JWK `kty` of keys usable with this algorithm (`"EC"` or `"RSA"`).
    #[must_use]
    pub const fn key_type(self) -> &'static str {
        match self {
            Algorithm::ES256 => "EC",
            Algorithm::RS256 => "RSA",
        }
    }

    /// Parses a JOSE `alg` value. The comparison is exact (case-sensitive).
    ///
    /// # Errors
    /// [`JwtError::UnsupportedAlgorithm`] for anything other than `ES256`
    /// or `RS256`, including `none` and every HMAC algorithm.
    pub fn from_name(name: &str) -> Result<Self, JwtError> {
        match name {
            "ES256" => Ok(Algorithm::ES256),
            "RS256" => Ok(Algorithm::RS256),
            other => Err(JwtError::UnsupportedAlgorithm(error::sanitize(other))),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = JwtError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(s)
    }
}
