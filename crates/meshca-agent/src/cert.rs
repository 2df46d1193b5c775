//! A workload certificate as the agent holds it: the locally generated key,
//! the chain the CA returned, and the trust bundle that came with it.

use crate::error::AgentError;
use meshca_pki::verify::{anchors, verify_leaf, Usage};
use meshca_pki::{pem, CertDer, PrivateKey};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// One issued certificate with its key. Shared as `Arc<Cert>`.
pub struct Cert {
    /// SPIFFE ID the CA put in the leaf.
    pub spiffe_id: String,
    /// PKCS#8 PEM private key (zeroized on drop).
    pub key_pem: Zeroizing<String>,
    /// Leaf then intermediates, PEM (what Envoy presents and `cert-chain.pem` holds).
    pub chain_pem: String,
    /// The trust bundle returned with the certificate, PEM.
    pub roots_pem: String,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When the agent received it (start of the renewal window).
    pub received: SystemTime,
    /// SHA-256 of the intermediates (which signer issued it).
    pub issuer_fingerprint: String,
    /// SHA-256 of the signing CA's certificate: the first intermediate, or
    /// the root when the bundle has one root and no intermediate came back.
    pub signer_sha256: Option<String>,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cert")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

impl Cert {
    /// Check a CA response (`[leaf, intermediates..., roots]`) against the key
    /// we generated, and build the certificate. The leaf must carry our public
    /// key and chain to the returned roots.
    pub fn from_response(key: &PrivateKey, chain: &[String], now: SystemTime) -> Result<Self, AgentError> {
        let bad = |m: String| AgentError::BadResponse(m);
        let (roots_pem, certs) = chain.split_last().ok_or_else(|| bad("empty certificate chain".into()))?;
        if certs.is_empty() {
            return Err(bad("response has no leaf certificate".into()));
        }
        let mut ders: Vec<CertDer> = Vec::new();
        for c in certs {
            ders.extend(pem::parse_certs(c.as_bytes()).map_err(|e| bad(format!("chain: {e}")))?);
        }
        let roots = pem::parse_certs(roots_pem.as_bytes()).map_err(|e| bad(format!("root bundle: {e}")))?;
        if roots.is_empty() {
            return Err(bad("empty root bundle".into()));
        }
        let leaf = &ders[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(format!("leaf: {e}")))?;
        if parsed.public_key().raw != key.public_key_spki().as_slice() {
            return Err(bad("the leaf certificate does not carry the key we sent".into()));
        }
        let anchors = anchors(&roots).map_err(|e| bad(e.to_string()))?;
        // Intermediates only: drop a root the CA may have appended to the chain.
        let inter: Vec<CertDer> = ders[1..].to_vec();
        verify_leaf(leaf, &inter, &anchors, now, Usage::Client).map_err(|e| bad(format!("leaf: {e}")))?;
        let info = meshca_pki::inspect::cert_info(leaf).map_err(|e| bad(e.to_string()))?;
        let spiffe_id = info.spiffe_id.clone().ok_or_else(|| bad("the leaf has no SPIFFE ID".into()))?;
        let inter_bytes: Vec<u8> = inter.iter().flat_map(|c| c.as_ref().to_vec()).collect();
        Ok(Self {
            spiffe_id,
            key_pem: key.to_pkcs8_pem(),
            chain_pem: pem::certs_to_pem(ders.iter()),
            roots_pem: pem::certs_to_pem(roots.iter()),
            serial: info.serial,
            not_before: unix(info.not_before_unix),
            not_after: unix(info.not_after_unix),
            received: now,
            issuer_fingerprint: meshca_pki::inspect::sha256_hex(&inter_bytes),
            signer_sha256: match (inter.first(), roots.as_slice()) {
                (Some(i), _) => Some(meshca_pki::inspect::sha256_hex(i)),
                (None, [root]) => Some(meshca_pki::inspect::sha256_hex(root)),
                _ => None,
            },
        })
    }

    /// Still usable at `now`?
    pub fn valid_at(&self, now: SystemTime) -> bool {
        now < self.not_after
    }

    /// When to renew: `grace_ratio` of the way from receipt to expiry, moved
    /// by `jitter` (a fraction in [-1, 1]) times `jitter_ratio` of the lifetime.
    pub fn renew_at(&self, grace_ratio: f64, jitter_ratio: f64, jitter: f64) -> SystemTime {
        renew_at(self.received.max(self.not_before), self.not_after, grace_ratio, jitter_ratio, jitter)
    }
}

/// The renewal instant for a certificate valid from `start` to `end`.
pub fn renew_at(start: SystemTime, end: SystemTime, grace_ratio: f64, jitter_ratio: f64, jitter: f64) -> SystemTime {
    let life = end.duration_since(start).unwrap_or_default().as_secs_f64();
    let frac = (grace_ratio + jitter_ratio * jitter.clamp(-1.0, 1.0)).clamp(0.05, 0.95);
    start + Duration::from_secs_f64(life * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_point_is_grace_ratio_with_bounded_jitter() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let end = start + Duration::from_secs(1_000);
        let at = |j| renew_at(start, end, 0.5, 0.01, j).duration_since(start).unwrap().as_secs_f64();
        assert!((at(0.0) - 500.0).abs() < 1e-6);
        assert!((at(1.0) - 510.0).abs() < 1e-6);
        assert!((at(-1.0) - 490.0).abs() < 1e-6);
        assert!((at(7.0) - 510.0).abs() < 1e-6, "jitter is clamped");
        // A silly ratio never renews at the very start or after expiry.
        assert!(renew_at(start, end, 2.0, 0.0, 0.0) < end);
        assert!(renew_at(start, end, 0.0, 0.0, 0.0) > start);
        // An expired window renews at once (start).
        assert_eq!(renew_at(end, start, 0.5, 0.0, 0.0), end);
    }
}
