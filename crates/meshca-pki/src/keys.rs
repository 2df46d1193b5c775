//! Private keys: the kinds meshca generates, loading plug-in keys in any of
//! the PEM forms Istio users have (PKCS#8, PKCS#1 RSA, SEC1 EC), and writing
//! them back as PKCS#8. Key bytes are zeroized on drop.

use rcgen::{KeyPair, PublicKeyData, RsaKeySize};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The key types meshca can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    EcP256,
    EcP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyKind {
    pub const NAMES: &'static str = "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096";

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "ec-p256",
            KeyKind::EcP384 => "ec-p384",
            KeyKind::Rsa2048 => "rsa-2048",
            KeyKind::Rsa3072 => "rsa-3072",
            KeyKind::Rsa4096 => "rsa-4096",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "ec-p256" | "ecdsa-p256" | "p256" | "p-256" => KeyKind::EcP256,
            "ec-p384" | "ecdsa-p384" | "p384" | "p-384" => KeyKind::EcP384,
            "rsa-2048" | "rsa2048" => KeyKind::Rsa2048,
            "rsa-3072" | "rsa3072" => KeyKind::Rsa3072,
            "rsa-4096" | "rsa4096" => KeyKind::Rsa4096,
            other => return Err(KeyError::UnknownKind(other.to_string())),
        })
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("unknown key type {0:?} (expected one of: {names})", names = KeyKind::NAMES)]
    UnknownKind(String),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("no private key found in PEM (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)")]
    NoKey,
    #[error("private key could not be parsed or is of an unsupported type (supported: ECDSA P-256/P-384, RSA)")]
    Unsupported,
}

/// A private key able to sign certificates. The key bytes are zeroized on
/// drop (rcgen's `zeroize` feature) and never appear in `Debug` output.
pub struct PrivateKey {
    pair: KeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.description())
    }
}

impl PrivateKey {
    pub fn generate(kind: KeyKind) -> Result<Self, KeyError> {
        let g = |e: rcgen::Error| KeyError::Generate(e.to_string());
        let pair = match kind {
            KeyKind::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(g)?,
            KeyKind::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(g)?,
            KeyKind::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(g)?,
            KeyKind::Rsa3072 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072).map_err(g)?,
            KeyKind::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096).map_err(g)?,
        };
        Ok(Self { pair })
    }

    /// Load the first private key block of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoKey)?;
        // rcgen keeps the DER it was given and `to_pkcs8_pem` writes it back,
        // so convert PKCS#1 and SEC1 keys to PKCS#8 first.
        let pkcs8 = Zeroizing::new(to_pkcs8_der(&der)?);
        let der = PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice()));
        let pair = KeyPair::try_from(&der).map_err(|_| KeyError::Unsupported)?;
        Ok(Self { pair })
    }

    /// PKCS#8 PEM, zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pem::encode("PRIVATE KEY", &Zeroizing::new(self.pair.serialize_der())))
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn public_key_spki(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// "ECDSA P-256", "RSA 2048", ...
    pub fn description(&self) -> String {
        crate::inspect::describe_spki(&self.public_key_spki()).unwrap_or_else(|| "unknown".into())
    }

    pub fn key_pair(&self) -> &KeyPair {
        &self.pair
    }

    pub(crate) fn into_key_pair(self) -> KeyPair {
        self.pair
    }
}

/// PKCS#8 DER of a PKCS#8, PKCS#1 (RSA) or SEC1 (P-256/P-384) private key.
fn to_pkcs8_der(der: &PrivateKeyDer<'_>) -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
    let bad = |_| KeyError::Unsupported;
    Ok(match der {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => {
            let kp = aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der()).map_err(|_| KeyError::Unsupported)?;
            let doc: Pkcs8V1Der<'static> = kp.as_der().map_err(bad)?;
            doc.as_ref().to_vec()
        }
        PrivateKeyDer::Sec1(k) => {
            let sec1 = k.secret_sec1_der();
            let kp = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, sec1)
                .or_else(|_| EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_ASN1_SIGNING, sec1))
                .map_err(|_| KeyError::Unsupported)?;
            kp.to_pkcs8v1().map_err(bad)?.as_ref().to_vec()
        }
        _ => return Err(KeyError::Unsupported),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_generate() {
        for kind in [KeyKind::EcP256, KeyKind::EcP384, KeyKind::Rsa2048] {
            assert_eq!(kind.as_str().parse::<KeyKind>().unwrap(), kind);
            let key = PrivateKey::generate(kind).unwrap();
            let pem = key.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let again = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(again.public_key_spki(), key.public_key_spki());
        }
        assert!(matches!("dsa".parse::<KeyKind>(), Err(KeyError::UnknownKind(_))));
        assert_eq!(PrivateKey::from_pem(b"nothing").unwrap_err(), KeyError::NoKey);
    }

    #[test]
    fn debug_does_not_leak_key_material() {
        let key = PrivateKey::generate(KeyKind::EcP256).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(ECDSA P-256)");
    }
}
