//! The workload certificate profile and the signer that issues it.
//!
//! A [`Signer`] is built once per CA material (the issuer's name, key
//! identifier and key are parsed then), so issuing a certificate does no
//! parsing beyond the CSR's own public key.

use crate::{CertDer, PrivateKey};
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// How far NotBefore is set back to tolerate clock skew between machines (Istio: 2 minutes).
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignerError {
    #[error("the signing certificate could not be used: {0}")]
    BadIssuer(String),
    #[error("the signing certificate expired at {0}; no certificate can be issued")]
    IssuerExpired(String),
    #[error("invalid certificate parameter: {0}")]
    Params(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// What goes into a workload (or serving) certificate besides its public key.
#[derive(Debug, Clone, Default)]
pub struct LeafProfile {
    /// URI SANs, normally exactly one SPIFFE ID.
    pub uris: Vec<String>,
    /// DNS SANs (only for meshca's own serving certificate).
    pub dns_names: Vec<String>,
    /// Requested lifetime; NotAfter is clamped to the signer's NotAfter.
    pub ttl: Duration,
}

/// A public key taken verbatim from a CSR (its DER SubjectPublicKeyInfo).
struct RawSpki<'a> {
    spki: &'a [u8],
    bits: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for RawSpki<'_> {
    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki.to_vec()
    }
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        // rcgen writes the certificate's SPKI from this and `der_bytes`.
        self.alg
    }
}

/// A freshly issued leaf and the facts the caller logs about it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: CertDer,
    /// Lowercase hex, as istiod prints serials.
    pub serial_hex: String,
    pub not_after: SystemTime,
}

/// Signs leaf certificates with one CA certificate and key.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    cert: CertDer,
    /// The CA's subject exactly as encoded, which every issued certificate's issuer must equal.
    subject_raw: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

pub(crate) fn to_system_time(t: &x509_parser::time::ASN1Time) -> SystemTime {
    let ts = t.timestamp();
    if ts >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(ts.unsigned_abs())
    }
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// 128 random bits, positive and of fixed length.
pub fn random_serial() -> Result<SerialNumber, SignerError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SignerError::Sign("random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

impl Signer {
    /// A signer from a CA certificate and its key. The caller has checked that
    /// the key matches (see [`crate::material`]).
    pub fn new(cert: CertDer, key: PrivateKey) -> Result<Self, SignerError> {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert).map_err(|e| SignerError::BadIssuer(e.to_string()))?;
        let not_before = to_system_time(&parsed.validity().not_before);
        let not_after = to_system_time(&parsed.validity().not_after);
        let subject_raw = parsed.subject().as_raw().to_vec();
        let issuer =
            Issuer::from_ca_cert_der(&cert, key.into_key_pair()).map_err(|e| SignerError::BadIssuer(e.to_string()))?;
        Ok(Self { issuer, cert, subject_raw, not_before, not_after })
    }

    pub fn cert(&self) -> &CertDer {
        &self.cert
    }
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Issue a leaf for the DER SubjectPublicKeyInfo `spki`.
    ///
    /// Profile (Istio's): empty subject, the SANs of `profile` (critical, as
    /// the subject is empty), digitalSignature + keyEncipherment, serverAuth +
    /// clientAuth, CA:FALSE, 128-bit random serial, NotBefore = now - 2 min,
    /// NotAfter = min(now + ttl, signer NotAfter).
    pub fn sign_leaf(&self, spki: &[u8], profile: &LeafProfile, now: SystemTime) -> Result<CertDer, SignerError> {
        self.issue(spki, profile, now).map(|i| i.cert)
    }

    /// [`Signer::sign_leaf`], also returning the serial and NotAfter chosen.
    pub fn issue(&self, spki: &[u8], profile: &LeafProfile, now: SystemTime) -> Result<Issued, SignerError> {
        if now >= self.not_after {
            return Err(SignerError::IssuerExpired(crate::material::fmt_time(self.not_after)));
        }
        let (bits, alg) = spki_parts(spki).ok_or_else(|| {
            SignerError::Params("public key is not a supported SubjectPublicKeyInfo (ECDSA P-256/P-384, RSA)".into())
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.as_ref());
        params.serial_number = Some(serial);
        let mut not_before = now.checked_sub(CLOCK_SKEW_BACKDATE).unwrap_or(now);
        if not_before < self.not_before {
            not_before = self.not_before;
        }
        let not_after = now.checked_add(profile.ttl).map_or(self.not_after, |t| t.min(self.not_after));
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let mut sans = Vec::with_capacity(profile.uris.len() + profile.dns_names.len());
        for u in &profile.uris {
            sans.push(SanType::URI(u.clone().try_into().map_err(|_| SignerError::Params(format!("URI SAN {u:?}")))?));
        }
        for d in &profile.dns_names {
            sans.push(SanType::DnsName(
                d.clone().try_into().map_err(|_| SignerError::Params(format!("DNS SAN {d:?}")))?,
            ));
        }
        params.subject_alt_names = sans;
        let key = RawSpki { spki, bits, alg };
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| SignerError::Sign(e.to_string()))?;
        let cert = self.exact_issuer(cert.der())?;
        Ok(Issued { cert, serial_hex, not_after })
    }

    /// Sign a subordinate CA certificate (used by `meshca certs intermediate`).
    pub fn sign_params(&self, params: &CertificateParams, key: &KeyPair) -> Result<CertDer, SignerError> {
        let cert = params.signed_by(key, &self.issuer).map_err(|e| SignerError::Sign(e.to_string()))?;
        self.exact_issuer(cert.der())
    }

    /// rcgen rebuilds the issuer name from a map keyed by attribute type, so
    /// repeated types (DC=..,DC=.., two OUs) collapse. When the issuer it
    /// wrote differs from the CA's subject, put the CA's subject bytes in
    /// and sign the TBSCertificate again.
    fn exact_issuer(&self, cert: &[u8]) -> Result<CertDer, SignerError> {
        let subject = self.subject_raw.as_slice();
        let fail = || SignerError::Sign("could not re-encode the certificate".into());
        let (cert_body, _) = der_content(cert, 0x30).ok_or_else(fail)?;
        let tbs_len = der_len(cert_body).ok_or_else(fail)?;
        let (tbs, rest) = cert_body.split_at(tbs_len);
        let sig_alg = &rest[..der_len(rest).ok_or_else(fail)?];
        let (tbs_body, _) = der_content(tbs, 0x30).ok_or_else(fail)?;
        // version [0], serialNumber, signature, then issuer.
        let mut at = 0;
        if tbs_body.first() == Some(&0xa0) {
            at += der_len(tbs_body).ok_or_else(fail)?;
        }
        for _ in 0..2 {
            at += der_len(&tbs_body[at..]).ok_or_else(fail)?;
        }
        let issuer_len = der_len(&tbs_body[at..]).ok_or_else(fail)?;
        if &tbs_body[at..at + issuer_len] == subject {
            return Ok(CertDer::from(cert.to_vec()));
        }
        let mut body = tbs_body[..at].to_vec();
        body.extend_from_slice(subject);
        body.extend_from_slice(&tbs_body[at + issuer_len..]);
        let new_tbs = der_encode(0x30, &body);
        let sig = rcgen::SigningKey::sign(self.issuer.key(), &new_tbs).map_err(|e| SignerError::Sign(e.to_string()))?;
        let mut bits = vec![0u8];
        bits.extend_from_slice(&sig);
        let mut out = new_tbs;
        out.extend_from_slice(sig_alg);
        out.extend_from_slice(&der_encode(0x03, &bits));
        Ok(CertDer::from(der_encode(0x30, &out)))
    }
}

/// Total length (header + content) of the DER TLV at the start of `b`.
fn der_len(b: &[u8]) -> Option<usize> {
    let first = *b.get(1)?;
    let (hdr, len) = if first < 0x80 {
        (2, first as usize)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (2 + n, len)
    };
    let total = hdr.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

/// The content of the TLV at the start of `b` (which must have `tag`), and what follows it.
fn der_content(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let total = der_len(b)?;
    let hdr = if b[1] < 0x80 { 2 } else { 2 + (b[1] & 0x7f) as usize };
    Some((&b[hdr..total], &b[total..]))
}

fn der_encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The subjectPublicKey BIT STRING contents of a DER SubjectPublicKeyInfo,
/// and the rcgen algorithm whose SPKI encoding matches it.
fn spki_parts(spki: &[u8]) -> Option<(Vec<u8>, &'static SignatureAlgorithm)> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    };
    use x509_parser::prelude::FromDer;
    let (rest, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let alg_oid = &parsed.algorithm.algorithm;
    let alg: &'static SignatureAlgorithm = if *alg_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = parsed.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok())?;
        if curve == OID_EC_P256 {
            &rcgen::PKCS_ECDSA_P256_SHA256
        } else if curve == OID_NIST_EC_P384 {
            &rcgen::PKCS_ECDSA_P384_SHA384
        } else {
            return None;
        }
    } else if *alg_oid == OID_PKCS1_RSAENCRYPTION {
        &rcgen::PKCS_RSA_SHA256
    } else {
        return None;
    };
    let bits = parsed.subject_public_key.data.to_vec();
    // The certificate's SPKI is re-encoded from these parts; make sure it is
    // byte-identical to the CSR's, so the key in the certificate is exactly the key asked for.
    let key = RawSpki { spki, bits: bits.clone(), alg };
    let reencoded = yasna_free_spki(&key);
    (reencoded == spki).then_some((bits, alg))
}

/// rcgen's encoding of a public key as SubjectPublicKeyInfo.
fn yasna_free_spki(key: &RawSpki<'_>) -> Vec<u8> {
    struct Plain<'a>(&'a RawSpki<'a>);
    impl PublicKeyData for Plain<'_> {
        fn der_bytes(&self) -> &[u8] {
            &self.0.bits
        }
        fn algorithm(&self) -> &'static SignatureAlgorithm {
            self.0.alg
        }
    }
    Plain(key).subject_public_key_info()
}
