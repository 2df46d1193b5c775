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
        let issuer =
            Issuer::from_ca_cert_der(&cert, key.into_key_pair()).map_err(|e| SignerError::BadIssuer(e.to_string()))?;
        Ok(Self { issuer, cert, not_before, not_after })
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
        Ok(Issued { cert: cert.der().clone(), serial_hex, not_after })
    }

    /// Sign a subordinate CA certificate (used by `meshca certs intermediate`).
    pub fn sign_params(&self, params: &CertificateParams, key: &KeyPair) -> Result<CertDer, SignerError> {
        let cert = params.signed_by(key, &self.issuer).map_err(|e| SignerError::Sign(e.to_string()))?;
        Ok(cert.der().clone())
    }
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
