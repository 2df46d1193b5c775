//! Building CA certificates: self-signed roots and per-cluster intermediates
//! (the profiles of Istio's `tools/certs` makefiles).

use crate::leaf::{random_serial, CLOCK_SKEW_BACKDATE};
use crate::name::dn_printed_as;
use crate::{CertDer, KeyKind, PrivateKey, Signer, SignerError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// Subject and lifetime of a new CA certificate.
#[derive(Debug, Clone)]
pub struct AuthorityOptions {
    pub common_name: String,
    pub organization: String,
    /// `L=` of the subject; Istio's intermediates carry the cluster name here.
    pub locality: Option<String>,
    pub ttl: Duration,
    pub key: KeyKind,
    /// `pathLenConstraint`; `None` leaves the path unconstrained.
    pub path_len: Option<u8>,
}

/// A CA certificate and its key, freshly made.
pub struct NewAuthority {
    pub cert: CertDer,
    pub key: PrivateKey,
}

fn ca_params(
    opts: &AuthorityOptions,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, SignerError> {
    let mut params = CertificateParams::default();
    let mut parts =
        vec![(DnType::CommonName, opts.common_name.as_str()), (DnType::OrganizationName, opts.organization.as_str())];
    if let Some(l) = &opts.locality {
        parts.push((DnType::LocalityName, l.as_str()));
    }
    params.distinguished_name = dn_printed_as(&parts);
    params.serial_number = Some(random_serial()?);
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    params.is_ca = IsCa::Ca(match opts.path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A new self-signed root valid from now (minus the clock-skew allowance) for `ttl`.
pub fn new_root(opts: &AuthorityOptions, now: SystemTime) -> Result<NewAuthority, SignerError> {
    let key = PrivateKey::generate(opts.key).map_err(|e| SignerError::Params(e.to_string()))?;
    let params = ca_params(opts, now - CLOCK_SKEW_BACKDATE, now + opts.ttl)?;
    let cert = params.self_signed(key.key_pair()).map_err(|e| SignerError::Sign(e.to_string()))?;
    Ok(NewAuthority { cert: cert.der().clone(), key })
}

/// A new intermediate signed by `parent`; its NotAfter never passes the parent's.
pub fn new_intermediate(
    opts: &AuthorityOptions,
    parent: &Signer,
    now: SystemTime,
) -> Result<NewAuthority, SignerError> {
    if now >= parent.not_after() {
        return Err(SignerError::IssuerExpired(crate::material::fmt_time(parent.not_after())));
    }
    let key = PrivateKey::generate(opts.key).map_err(|e| SignerError::Params(e.to_string()))?;
    let not_after = (now + opts.ttl).min(parent.not_after());
    let not_before = (now - CLOCK_SKEW_BACKDATE).max(parent.not_before());
    let mut params = ca_params(opts, not_before, not_after)?;
    params.use_authority_key_identifier_extension = true;
    let cert = parent.sign_params(&params, key.key_pair())?;
    Ok(NewAuthority { cert, key })
}
