//! Reading certificates back: istiod's one-line `x509 cert - ...` format and
//! a detailed, serializable view for `meshca certs inspect` and `/status`.

use crate::name::to_go_string;
use serde::Serialize;
use x509_parser::prelude::*;

/// Everything `meshca certs inspect --verbose` shows about one certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    pub issuer: String,
    pub subject: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub is_ca: bool,
    pub path_len: Option<u32>,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub spiffe_id: Option<String>,
    pub key: String,
    pub sha256_fingerprint: String,
    pub self_signed: bool,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("certificate could not be parsed: {0}")]
pub struct ParseError(pub String);

fn rfc3339(t: &ASN1Time) -> String {
    t.to_datetime().format(&::time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Lowercase hex of the serial without leading zero bytes, as Go's `%x` prints it.
pub fn serial_hex(cert: &X509Certificate<'_>) -> String {
    let s = cert.tbs_certificate.serial.to_str_radix(16);
    if s.is_empty() {
        "0".into()
    } else {
        s
    }
}

/// SHA-256 of DER, as colon-free lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// "ECDSA P-256", "RSA 2048", ... for a DER SubjectPublicKeyInfo.
pub fn describe_spki(spki_der: &[u8]) -> Option<String> {
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    Some(describe_key(&spki))
}

pub(crate) fn describe_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    use x509_parser::oid_registry::*;
    let alg = &spki.algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => "ECDSA P-256".into(),
            Some(c) if c == OID_NIST_EC_P384 => "ECDSA P-384".into(),
            Some(c) if c == OID_NIST_EC_P521 => "ECDSA P-521".into(),
            Some(c) => format!("ECDSA curve {}", c.to_id_string()),
            None => "ECDSA (no curve)".into(),
        }
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                format!("RSA {}", rsa_bits(rsa.modulus))
            }
            _ => "RSA (unparsable)".into(),
        }
    } else if alg.algorithm == OID_SIG_ED25519 {
        "Ed25519".into()
    } else {
        format!("key type {}", alg.algorithm.to_id_string())
    }
}

/// Bit length of a big-endian modulus, ignoring leading zero bytes.
pub(crate) fn rsa_bits(modulus: &[u8]) -> usize {
    let m: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    m.len() * 8 - m[0].leading_zeros() as usize
}

/// istiod's log line for one certificate.
pub fn istiod_line(der: &[u8]) -> Result<String, ParseError> {
    let (_, cert) = parse_x509_certificate(der).map_err(|e| ParseError(e.to_string()))?;
    Ok(format!(
        "x509 cert - Issuer: \"{}\", Subject: \"{}\", SN: {}, NotBefore: \"{}\", NotAfter: \"{}\"",
        to_go_string(cert.issuer()),
        to_go_string(cert.subject()),
        serial_hex(&cert),
        rfc3339(&cert.validity().not_before),
        rfc3339(&cert.validity().not_after),
    ))
}

/// The detailed view of one certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, ParseError> {
    let (_, cert) = parse_x509_certificate(der).map_err(|e| ParseError(e.to_string()))?;
    let mut info = CertInfo {
        issuer: to_go_string(cert.issuer()),
        subject: to_go_string(cert.subject()),
        serial: serial_hex(&cert),
        not_before: rfc3339(&cert.validity().not_before),
        not_after: rfc3339(&cert.validity().not_after),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        is_ca: false,
        path_len: None,
        key_usage: Vec::new(),
        extended_key_usage: Vec::new(),
        dns_names: Vec::new(),
        uris: Vec::new(),
        ip_addresses: Vec::new(),
        spiffe_id: None,
        key: describe_key(cert.public_key()),
        sha256_fingerprint: sha256_hex(der),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
    };
    if let Ok(Some(bc)) = cert.basic_constraints() {
        info.is_ca = bc.value.ca;
        info.path_len = bc.value.path_len_constraint;
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        let k = ku.value;
        for (on, name) in [
            (k.digital_signature(), "digitalSignature"),
            (k.non_repudiation(), "contentCommitment"),
            (k.key_encipherment(), "keyEncipherment"),
            (k.data_encipherment(), "dataEncipherment"),
            (k.key_agreement(), "keyAgreement"),
            (k.key_cert_sign(), "keyCertSign"),
            (k.crl_sign(), "cRLSign"),
        ] {
            if on {
                info.key_usage.push(name.to_string());
            }
        }
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = eku.value;
        for (on, name) in [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
        ] {
            if on {
                info.extended_key_usage.push(name.to_string());
            }
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => info.dns_names.push(d.to_string()),
                GeneralName::URI(u) => {
                    if u.starts_with("spiffe://") && info.spiffe_id.is_none() {
                        info.spiffe_id = Some(u.to_string());
                    }
                    info.uris.push(u.to_string());
                }
                GeneralName::IPAddress(b) => info.ip_addresses.push(ip_string(b)),
                _ => {}
            }
        }
    }
    Ok(info)
}

fn ip_string(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => hex::encode(b),
    }
}
