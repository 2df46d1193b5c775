//! Chain verification with rustls-webpki (an independent implementation from
//! the one that builds our certificates), and signature checks of single links.

use crate::CertDer;
use rustls_pki_types::{TrustAnchor, UnixTime};
use std::time::SystemTime;
use x509_parser::prelude::*;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
    #[error("trust bundle certificate could not be used as a trust anchor: {0}")]
    Anchor(String),
    #[error("chain does not verify: {0}")]
    Chain(String),
}

/// Trust anchors for the given roots, owned so they can be kept and reused.
pub fn anchors(roots: &[CertDer]) -> Result<Vec<TrustAnchor<'static>>, VerifyError> {
    roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()).map_err(|e| VerifyError::Anchor(format!("{e:?}")))
        })
        .collect()
}

/// Which extended key usage the leaf must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
}

/// Verify `leaf` through `intermediates` to one of `anchors` at `now`.
pub fn verify_leaf(
    leaf: &CertDer,
    intermediates: &[CertDer],
    anchors: &[TrustAnchor<'_>],
    now: SystemTime,
    usage: Usage,
) -> Result<(), VerifyError> {
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| VerifyError::Parse(format!("{e:?}")))?;
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    let eku = match usage {
        Usage::Client => webpki::KeyUsage::client_auth(),
        Usage::Server => webpki::KeyUsage::server_auth(),
    };
    ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, anchors, intermediates, time, eku, None, None)
        .map(|_| ())
        .map_err(|e| VerifyError::Chain(format!("{e:?}")))
}

/// Whether `child` names `parent` as issuer and carries a valid signature by it.
pub fn is_signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == parent.subject().as_raw() && child.verify_signature(Some(parent.public_key())).is_ok()
}
