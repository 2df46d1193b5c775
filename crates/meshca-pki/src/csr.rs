//! CSR checks. Only the CSR's public key ever reaches a certificate; every
//! other part of the request is inspected to refuse requests that ask for
//! something the caller is not entitled to.

use crate::inspect::rsa_bits;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::*;
use x509_parser::prelude::FromDer;

/// Limits applied to every CSR.
#[derive(Debug, Clone)]
pub struct CsrPolicy {
    /// Largest accepted PEM text, in bytes.
    pub max_pem_bytes: usize,
    pub min_rsa_bits: usize,
    pub max_rsa_bits: usize,
}

impl Default for CsrPolicy {
    fn default() -> Self {
        Self { max_pem_bytes: 64 * 1024, min_rsa_bits: 2048, max_rsa_bits: 8192 }
    }
}

/// The kind of key a CSR carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrKey {
    EcP256,
    EcP384,
    Rsa(usize),
}

/// A CSR that passed every check: its public key and the URI SANs it asked for.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    pub spki_der: Vec<u8>,
    pub key: CsrKey,
    pub uri_sans: Vec<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CsrError {
    #[error("empty CSR")]
    Empty,
    #[error("CSR too large: {len} bytes (limit {max})")]
    TooLarge { len: usize, max: usize },
    #[error("CSR is not PEM: expected a \"-----BEGIN CERTIFICATE REQUEST-----\" block")]
    NotPem,
    #[error("CSR could not be parsed: {0}")]
    Parse(String),
    #[error("CSR signature does not verify")]
    BadSignature,
    #[error("CSR signature algorithm {0} is not accepted (use SHA-256 or stronger)")]
    WeakSignature(String),
    #[error("unsupported CSR key: {0} (accepted: ECDSA P-256, ECDSA P-384, RSA 2048-8192)")]
    UnsupportedKey(String),
    #[error("RSA key of {0} bits is too small (minimum 2048)")]
    RsaTooSmall(usize),
    #[error("CSR asks for a CA certificate")]
    CaRequested,
    #[error("CSR carries a SAN of type {0}; only the caller's SPIFFE URI is allowed")]
    ForbiddenSan(&'static str),
    #[error("CSR asks for identity {requested:?} but the caller is {authenticated:?}")]
    IdentityMismatch { requested: String, authenticated: String },
    #[error("CSR carries more than one URI SAN")]
    MultipleUris,
    #[error("CSR carries an unknown critical extension {0}")]
    UnknownCriticalExtension(String),
}

/// Parse and check a PEM CSR for the authenticated `identity` (a SPIFFE URI).
pub fn validate(pem: &str, identity: &str, policy: &CsrPolicy) -> Result<ValidatedCsr, CsrError> {
    if pem.trim().is_empty() {
        return Err(CsrError::Empty);
    }
    if pem.len() > policy.max_pem_bytes {
        return Err(CsrError::TooLarge { len: pem.len(), max: policy.max_pem_bytes });
    }
    let der = csr_der(pem)?;
    validate_der(&der, identity, policy)
}

fn csr_der(pem: &str) -> Result<Vec<u8>, CsrError> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem.as_bytes()) {
        match item {
            Ok((SectionKind::Csr, der)) => return Ok(der),
            Ok(_) => continue,
            Err(e) => return Err(CsrError::Parse(format!("bad PEM: {}", crate::pem::describe_error(&e)))),
        }
    }
    Err(CsrError::NotPem)
}

/// Checks on a DER CSR; see [`validate`].
pub fn validate_der(der: &[u8], identity: &str, policy: &CsrPolicy) -> Result<ValidatedCsr, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| CsrError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Parse("trailing data after the CSR".into()));
    }
    let info = &csr.certification_request_info;
    let key = check_key(&info.subject_pki, policy)?;
    let sig_oid = &csr.signature_algorithm.algorithm;
    let strong = [
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_PKCS1_RSASSAPSS,
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ECDSA_WITH_SHA512,
    ];
    if !strong.contains(sig_oid) {
        return Err(CsrError::WeakSignature(sig_oid.to_id_string()));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let mut uri_sans = Vec::new();
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for gn in &san.general_names {
                        match gn {
                            GeneralName::URI(u) => uri_sans.push(u.to_string()),
                            GeneralName::DNSName(_) => return Err(CsrError::ForbiddenSan("DNS")),
                            GeneralName::IPAddress(_) => return Err(CsrError::ForbiddenSan("IP address")),
                            GeneralName::RFC822Name(_) => return Err(CsrError::ForbiddenSan("email")),
                            _ => return Err(CsrError::ForbiddenSan("non-URI")),
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::CaRequested),
                ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                    return Err(CsrError::CaRequested)
                }
                ParsedExtension::BasicConstraints(_)
                | ParsedExtension::KeyUsage(_)
                | ParsedExtension::ExtendedKeyUsage(_)
                | ParsedExtension::SubjectKeyIdentifier(_) => {}
                _ if ext.critical => return Err(CsrError::UnknownCriticalExtension(ext.oid.to_id_string())),
                _ => {}
            }
        }
    }
    match uri_sans.as_slice() {
        [] => {}
        [one] if one == identity => {}
        [one] => {
            return Err(CsrError::IdentityMismatch { requested: one.clone(), authenticated: identity.to_string() })
        }
        _ => return Err(CsrError::MultipleUris),
    }
    Ok(ValidatedCsr { spki_der: info.subject_pki.raw.to_vec(), key, uri_sans })
}

fn check_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>, policy: &CsrPolicy) -> Result<CsrKey, CsrError> {
    let alg = &spki.algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(CsrKey::EcP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(CsrKey::EcP384),
            _ => Err(CsrError::UnsupportedKey(crate::inspect::describe_key(spki))),
        };
    }
    if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrError::UnsupportedKey("unparsable RSA key".into()));
        };
        let bits = rsa_bits(rsa.modulus);
        if bits < policy.min_rsa_bits {
            return Err(CsrError::RsaTooSmall(bits));
        }
        if bits > policy.max_rsa_bits {
            return Err(CsrError::UnsupportedKey(format!("RSA {bits}")));
        }
        return Ok(CsrKey::Rsa(bits));
    }
    Err(CsrError::UnsupportedKey(crate::inspect::describe_key(spki)))
}
