//! Minting tokens with a locally held private key.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::token::{b64_encode, MAX_TOKEN_LEN};
use crate::{Algorithm, Jwk, JwtError};

/// A private key that signs tokens: ES256 (P-256) or RS256 (RSA
/// 2048..=8192 bits, PKCS#1 v1.5 with SHA-256).
///
/// The `kid` is the RFC 7638 thumbprint of the public key, so it is stable
/// across a PKCS#8 export/import and identical in every replica that loads
/// the same key. The variants cannot be constructed directly; use
/// [`SigningKey::generate_es256`], [`SigningKey::generate_rs256`] or
/// [`SigningKey::from_pkcs8_der`]. `Debug` output shows only the algorithm
/// and `kid`.
pub enum SigningKey {
    /// ECDSA P-256 / SHA-256 with fixed-width `r || s` signatures.
    #[non_exhaustive]
    Es256 {
        /// The key pair.
        key_pair: EcdsaKeyPair,
        /// The public key as a JWK, `kid`, `alg` and `use` included.
        public: Jwk,
        /// The RFC 7638 thumbprint of the public key.
        kid: String,
        /// The PKCS#8 v1 encoding of the private key.
        pkcs8: Zeroizing<Vec<u8>>,
    },
    /// RSASSA-PKCS1-v1_5 / SHA-256.
    #[non_exhaustive]
    Rs256 {
        /// The key pair.
        key_pair: RsaKeyPair,
        /// The public key as a JWK, `kid`, `alg` and `use` included.
        public: Jwk,
        /// The RFC 7638 thumbprint of the public key.
        kid: String,
        /// The PKCS#8 v1 encoding of the private key.
        pkcs8: Zeroizing<Vec<u8>>,
    },
}

impl SigningKey {
    /// Generates a new P-256 key.
    ///
    /// # Errors
    /// [`JwtError::Signing`] if key generation fails.
    pub fn generate_es256() -> Result<SigningKey, JwtError> {
        let key_pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| JwtError::Signing("P-256 key generation failed".into()))?;
        SigningKey::from_ec(key_pair)
    }

    /// Generates a new 2048-bit RSA key.
    ///
    /// # Errors
    /// [`JwtError::Signing`] if key generation fails.
    pub fn generate_rs256() -> Result<SigningKey, JwtError> {
        let key_pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| JwtError::Signing("RSA key generation failed".into()))?;
        SigningKey::from_rsa(key_pair)
    }

    /// Loads an unencrypted PKCS#8 private key, detecting its type: a P-256
    /// EC key becomes ES256, an RSA key of 2048..=8192 bits RS256.
    ///
    /// # Errors
    /// [`JwtError::InvalidKey`] for anything else (other curves, small RSA
    /// keys, garbage).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, JwtError> {
        if let Ok(key_pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            return SigningKey::from_ec(key_pair);
        }
        match RsaKeyPair::from_pkcs8(der) {
            Ok(key_pair) => SigningKey::from_rsa(key_pair),
            Err(rsa_error) => Err(JwtError::InvalidKey(format!(
                "not a PKCS#8 P-256 EC or 2048..=8192-bit RSA private key ({rsa_error})"
            ))),
        }
    }

    /// The PKCS#8 v1 DER encoding of the private key (wiped from memory
    /// when dropped).
    #[must_use]
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        match self {
            SigningKey::Es256 { pkcs8, .. } | SigningKey::Rs256 { pkcs8, .. } => pkcs8.clone(),
        }
    }

    /// The key id: the RFC 7638 JWK thumbprint (base64url SHA-256) of the
    /// public key.
    #[must_use]
    pub fn kid(&self) -> &str {
        match self {
            SigningKey::Es256 { kid, .. } | SigningKey::Rs256 { kid, .. } => kid,
        }
    }

    /// The public key as a JWK with `kid`, `alg` and `use: "sig"` set, ready
    /// to publish in a JWKS.
    #[must_use]
    pub fn public_jwk(&self) -> Jwk {
        match self {
            SigningKey::Es256 { public, .. } | SigningKey::Rs256 { public, .. } => public.clone(),
        }
    }

    /// The algorithm this key signs with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Es256 { .. } => Algorithm::ES256,
            SigningKey::Rs256 { .. } => Algorithm::RS256,
        }
    }

    /// Signs `claims` (which must be a JSON object) into a compact JWS with
    /// the header `{"alg": .., "kid": .., "typ": "JWT"}`.
    ///
    /// No claim is added or checked; include `iss`, `aud`, `exp`, ... as
    /// needed.
    ///
    /// # Errors
    /// [`JwtError::Signing`] if `claims` is not an object, the token would
    /// exceed [`MAX_TOKEN_LEN`] (and so could not be verified), or the
    /// signature operation fails.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        if !claims.is_object() {
            return Err(JwtError::Signing("claims must be a JSON object".into()));
        }
        let header = serde_json::json!({
            "alg": self.algorithm().as_str(),
            "kid": self.kid(),
            "typ": "JWT",
        });
        let header =
            serde_json::to_vec(&header).map_err(|_| JwtError::Signing("cannot serialize the header".into()))?;
        let payload =
            serde_json::to_vec(claims).map_err(|_| JwtError::Signing("cannot serialize the claims".into()))?;
        let mut token = b64_encode(&header);
        token.push('.');
        token.push_str(&b64_encode(&payload));

        let signature_len = match self {
            SigningKey::Es256 { .. } => 64,
            SigningKey::Rs256 { key_pair, .. } => key_pair.public_modulus_len(),
        };
        if token.len() + 1 + signature_len.div_ceil(3) * 4 > MAX_TOKEN_LEN {
            return Err(JwtError::Signing(format!("token would be longer than {MAX_TOKEN_LEN} bytes")));
        }

        let rng = SystemRandom::new();
        let failed = |_| JwtError::Signing("signature operation failed".into());
        let signature = match self {
            SigningKey::Es256 { key_pair, .. } => {
                key_pair.sign(&rng, token.as_bytes()).map_err(failed)?.as_ref().to_vec()
            }
            SigningKey::Rs256 { key_pair, .. } => {
                let mut signature = vec![0; signature_len];
                key_pair.sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut signature).map_err(failed)?;
                signature
            }
        };
        token.push('.');
        token.push_str(&b64_encode(&signature));
        Ok(token)
    }

    fn from_ec(key_pair: EcdsaKeyPair) -> Result<SigningKey, JwtError> {
        let pkcs8 =
            key_pair.to_pkcs8v1().map_err(|_| JwtError::InvalidKey("cannot encode the EC key as PKCS#8".into()))?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        // SEC 1 uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = key_pair.public_key().as_ref();
        let (Some(0x04), Some(x), Some(y)) = (point.first(), point.get(1..33), point.get(33..65)) else {
            return Err(JwtError::InvalidKey("unexpected EC public key encoding".into()));
        };
        let jwk = Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(b64_encode(x)),
            y: Some(b64_encode(y)),
            ..Jwk::default()
        };
        let (public, kid) = finish_jwk(jwk, Algorithm::ES256)?;
        Ok(SigningKey::Es256 { key_pair, public, kid, pkcs8 })
    }

    fn from_rsa(key_pair: RsaKeyPair) -> Result<SigningKey, JwtError> {
        let pkcs8 =
            AsDer::as_der(&key_pair).map_err(|_| JwtError::InvalidKey("cannot encode the RSA key as PKCS#8".into()))?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        let public_key = key_pair.public_key();
        let jwk = Jwk {
            kty: "RSA".into(),
            n: Some(b64_encode(public_key.modulus().big_endian_without_leading_zero())),
            e: Some(b64_encode(public_key.exponent().big_endian_without_leading_zero())),
            ..Jwk::default()
        };
        let (public, kid) = finish_jwk(jwk, Algorithm::RS256)?;
        Ok(SigningKey::Rs256 { key_pair, public, kid, pkcs8 })
    }
}

/// Computes the thumbprint of a bare public JWK and decorates it with
/// `kid`, `alg` and `use`.
fn finish_jwk(mut jwk: Jwk, alg: Algorithm) -> Result<(Jwk, String), JwtError> {
    let kid = jwk.thumbprint()?;
    jwk.kid = Some(kid.clone());
    jwk.alg = Some(alg.as_str().into());
    jwk.r#use = Some("sig".into());
    Ok((jwk, kid))
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("alg", &self.algorithm()).field("kid", &self.kid()).finish_non_exhaustive()
    }
}
