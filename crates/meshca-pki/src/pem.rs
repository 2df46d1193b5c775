//! PEM encoding and decoding of certificates, with errors a person can act on.

use crate::CertDer;
use rustls_pki_types::pem::{PemObject, SectionKind};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PemError {
    #[error("no PEM certificate found (expected a \"-----BEGIN CERTIFICATE-----\" block)")]
    NoCertificate,
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

/// Parse every `CERTIFICATE` block of a PEM text, in order. Other block kinds
/// are ignored; an empty result is an error.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertDer>, PemError> {
    let mut out = Vec::new();
    for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| PemError::Malformed(describe_error(&e)))?;
        if kind == SectionKind::Certificate {
            out.push(CertDer::from(der));
        }
    }
    if out.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(out)
}

/// A readable description of a PEM parse error (the library prints markers as byte lists).
pub fn describe_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => {
            format!("missing \"-----END {}-----\" line (file truncated?)", String::from_utf8_lossy(end_marker))
        }
        Error::IllegalSectionStart { line } => {
            format!("malformed section start line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// Encode DER as a PEM block with the given label, 64 columns, ending with a newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    s.push_str("-----BEGIN ");
    s.push_str(label);
    s.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END ");
    s.push_str(label);
    s.push_str("-----\n");
    s
}

/// A certificate as PEM.
pub fn cert_to_pem(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

/// Several certificates as one PEM text, in order.
pub fn certs_to_pem<'a>(ders: impl IntoIterator<Item = &'a CertDer>) -> String {
    ders.into_iter().map(|d| cert_to_pem(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let der = vec![0x30u8, 0x03, 0x02, 0x01, 0x05];
        let pem = format!("{}{}", cert_to_pem(&der), cert_to_pem(&der[..4]));
        let certs = parse_certs(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &der[..]);
        assert_eq!(certs[1].as_ref(), &der[..4]);
        assert_eq!(parse_certs(b"hello"), Err(PemError::NoCertificate));
        assert!(matches!(
            parse_certs(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(PemError::Malformed(_))
        ));
    }
}
