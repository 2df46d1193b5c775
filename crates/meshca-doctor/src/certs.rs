//! Certificate helpers on top of meshca-pki: reading PEM files with the file
//! named in every error, key matching, chain order analysis, validity.

use meshca_pki::inspect::{cert_info, CertInfo};
use meshca_pki::verify::is_signed_by;
use meshca_pki::CertDer;
use std::path::Path;
use std::time::SystemTime;
use x509_parser::prelude::*;

pub const DAY: i64 = 86_400;

/// The certificates of a PEM file; errors name the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertDer>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
    let certs = meshca_pki::pem::parse_certs(&bytes)
        .map_err(|e| format!("{}: {e} (truncated, or not a PEM certificate?)", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

pub fn info(der: &[u8]) -> Option<CertInfo> {
    cert_info(der).ok()
}

/// `"<subject>" (serial <hex>)` for messages.
pub fn describe(der: &[u8]) -> String {
    match cert_info(der) {
        Ok(i) => format!("\"{}\" (serial {})", i.subject, i.serial),
        Err(e) => format!("<unparsable certificate: {e}>"),
    }
}

/// Whether the private key in `key_path` belongs to `cert`.
pub fn key_matches(cert: &[u8], key_path: &Path) -> Result<bool, String> {
    let pem = zeroize_read(key_path)?;
    let key = meshca_pki::PrivateKey::from_pem(&pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let (_, c) = parse_x509_certificate(cert).map_err(|e| format!("certificate does not parse: {e}"))?;
    Ok(c.public_key().raw == key.public_key_spki().as_slice())
}

fn zeroize_read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot be read: {e}", path.display()))
}

pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Validity of one certificate at `now`: `Err(text)` when expired or not yet
/// valid, `Ok(seconds left)` otherwise.
pub fn validity(i: &CertInfo, now: i64) -> Result<i64, String> {
    if now >= i.not_after_unix {
        return Err(format!("\"{}\" expired on {}", i.subject, i.not_after));
    }
    if now < i.not_before_unix {
        return Err(format!("\"{}\" is not valid before {}", i.subject, i.not_before));
    }
    Ok(i.not_after_unix - now)
}

/// Is `child` signed by `parent`?
pub fn signed_by(child: &[u8], parent: &[u8]) -> bool {
    match (parse_x509_certificate(child), parse_x509_certificate(parent)) {
        (Ok((_, c)), Ok((_, p))) => is_signed_by(&c, &p),
        _ => false,
    }
}

/// Walk `chain` (signing certificate first): every link must be signed by the
/// next, the top by (or equal to) a root of `roots`. Returns the problem in words.
pub fn chain_problem(chain: &[CertDer], roots: &[CertDer]) -> Option<String> {
    for (i, pair) in chain.windows(2).enumerate() {
        if pair[0] == pair[1] {
            return Some(format!("certificate #{} {} appears twice in a row", i + 1, describe(&pair[0])));
        }
        if !signed_by(&pair[0], &pair[1]) {
            // Is the issuer elsewhere in the list? Then the order is wrong.
            let issuer_at = chain.iter().position(|c| c != &pair[0] && signed_by(&pair[0], c));
            return Some(match issuer_at {
                Some(j) => format!(
                    "wrong order: certificate #{} {} is followed by #{} {}, but its issuer is #{}; each certificate \
                     must be followed by its issuer",
                    i + 1,
                    describe(&pair[0]),
                    i + 2,
                    describe(&pair[1]),
                    j + 1
                ),
                None => format!(
                    "broken chain: certificate #{} {} is not signed by the next one, #{} {}",
                    i + 1,
                    describe(&pair[0]),
                    i + 2,
                    describe(&pair[1])
                ),
            });
        }
    }
    let top = chain.last()?;
    if roots.iter().any(|r| r == top || signed_by(top, r)) {
        return None;
    }
    let issuer = info(top).map(|i| i.issuer).unwrap_or_default();
    Some(format!(
        "incomplete chain: the top certificate {} was issued by \"{issuer}\", which is neither in the chain nor a root of \
         the bundle",
        describe(top)
    ))
}

/// SHA-256 fingerprints of a bundle, sorted.
pub fn fingerprints(certs: &[CertDer]) -> Vec<String> {
    let mut v: Vec<String> = certs.iter().map(|c| meshca_pki::inspect::sha256_hex(c)).collect();
    v.sort();
    v
}

/// Subjects of a bundle for messages.
pub fn subjects(certs: &[CertDer]) -> String {
    certs.iter().map(|c| describe(c)).collect::<Vec<_>>().join(", ")
}

/// The first root of `roots` that `chain` (leaf first) leads to, if any.
pub fn anchor_of<'a>(chain: &[CertDer], roots: &'a [CertDer]) -> Option<&'a CertDer> {
    let top = chain.last()?;
    roots.iter().find(|r| *r == top || signed_by(top, r))
}

/// Human duration in days/hours.
pub fn human_secs(s: i64) -> String {
    if s.abs() >= 2 * DAY {
        format!("{} days", s / DAY)
    } else if s.abs() >= 7200 {
        format!("{} hours", s / 3600)
    } else {
        format!("{} minutes", s / 60)
    }
}
