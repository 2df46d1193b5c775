//! CSRs as a workload would make them.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcP256,
    EcP384,
    Rsa2048,
}

pub fn key(kind: KeyType) -> KeyPair {
    match kind {
        KeyType::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key"),
        KeyType::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key"),
        KeyType::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("RSA key")
        }
    }
}

/// A CSR (PEM) with an optional URI SAN, and its key (PKCS#8 PEM).
pub fn make_csr(kind: KeyType, uri: Option<&str>) -> (String, String) {
    let key = key(kind);
    let csr = csr_for(&key, uri);
    (csr, key.serialize_pem())
}

/// A CSR for an existing key.
pub fn csr_for(key: &KeyPair, uri: Option<&str>) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(u) = uri {
        params.subject_alt_names = vec![SanType::URI(u.to_string().try_into().expect("URI SAN"))];
    }
    params.serialize_request(key).expect("CSR").pem().expect("CSR PEM")
}
