//! Renewal of the shared self-signed root at 80% of its life (Istio's
//! default), or when asked (SIGUSR2): one replica at a time (election), the
//! same key re-signed with the same subject (so every certificate issued so
//! far keeps verifying), written with a compare on the record's
//! `mod_revision`. Every replica, the writer included, installs the result
//! from its watch. While the store is unavailable the renewal waits.

use super::monitor::Shared;
use super::RENEWAL_ELECTION;
use meshca_pki::leaf::{random_serial, CLOCK_SKEW_BACKDATE};
use meshca_pki::name::dn_printed_as;
use meshca_pki::PrivateKey;
use meshca_store::ca::{read_root, renew_root, RootCandidate, SharedRoot};
use meshca_store::{Store, Swap};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const STORE_WAIT: Duration = Duration::from_secs(5);

/// NotBefore and NotAfter of the first certificate in `pem`.
fn validity(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    let der = meshca_pki::pem::parse_certs(pem.as_bytes()).map_err(|e| e.to_string())?;
    let first = der.first().ok_or("no certificate")?;
    let i = meshca_pki::inspect::cert_info(first).map_err(|e| e.to_string())?;
    let at = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
    Ok((at(i.not_before_unix), at(i.not_after_unix)))
}

/// When `pem` is due for renewal: after `fraction` of its life, counted from
/// its issuance (NotBefore is backdated by the clock-skew allowance).
fn due_at(pem: &str, fraction: f64) -> Result<SystemTime, String> {
    let (nb, na) = validity(pem)?;
    let life = na.duration_since(nb).unwrap_or_default();
    let start = if life > CLOCK_SKEW_BACKDATE { nb + CLOCK_SKEW_BACKDATE } else { nb };
    Ok(start + na.duration_since(start).unwrap_or_default().mul_f64(fraction.clamp(0.0, 1.0)))
}

/// The root re-signed from its own key: same subject, same lifetime, from now.
fn resign(root: &SharedRoot, now: SystemTime) -> Result<RootCandidate, String> {
    let (nb, na) = validity(&root.cert_pem)?;
    let life = na.duration_since(nb).unwrap_or_default().saturating_sub(CLOCK_SKEW_BACKDATE);
    let der = meshca_pki::pem::parse_certs(root.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, old) = x509_parser::parse_x509_certificate(&der[0]).map_err(|e| e.to_string())?;
    let attr = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).unwrap_or_default().to_string()
    };
    let cn = attr(&mut old.subject().iter_common_name());
    let org = attr(&mut old.subject().iter_organization());
    let key = PrivateKey::from_pem(root.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name =
        dn_printed_as(&[(DnType::CommonName, cn.as_str()), (DnType::OrganizationName, org.as_str())]);
    params.serial_number = Some(random_serial().map_err(|e| e.to_string())?);
    params.not_before = time::OffsetDateTime::from(now - CLOCK_SKEW_BACKDATE);
    params.not_after = time::OffsetDateTime::from(now + life);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(key.key_pair()).map_err(|e| e.to_string())?;
    Ok(RootCandidate { cert_pem: meshca_pki::pem::cert_to_pem(cert.der()), key_pem: root.key_pem.clone() })
}

/// One attempt: lead the election, re-read the root, renew it if still due
/// (or requested). Returns when the stored root is next due.
async fn attempt(sh: &Shared, requested: bool) -> Result<SystemTime, String> {
    if !sh.status.healthy() {
        return Err("the store is unavailable: a root renewal needs agreement".into());
    }
    let id = &sh.cfg.replica_id;
    let leadership = tokio::time::timeout(STORE_WAIT, sh.store.campaign(RENEWAL_ELECTION, id, Duration::from_secs(10)))
        .await
        .map_err(|_| "another replica holds the renewal election (or the store is slow)".to_string())?
        .map_err(|e| e.to_string())?;
    let result = async {
        let root = tokio::time::timeout(STORE_WAIT, read_root(&sh.store, &sh.key))
            .await
            .map_err(|_| "the store did not answer".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("the store holds no shared root")?;
        let now = sh.rt.clock.now();
        let due = due_at(&root.cert_pem, sh.cfg.renew_at)?;
        if !requested && now < due {
            return Ok(due); // another replica renewed it already
        }
        let renewed = resign(&root, now)?;
        let next = due_at(&renewed.cert_pem, sh.cfg.renew_at)?;
        match renew_root(&sh.store, &sh.key, id, root.revision, &renewed).await.map_err(|e| e.to_string())? {
            Swap::Swapped { mod_revision } => {
                let fp = meshca_store::ca::fingerprint(&renewed.cert_pem).unwrap_or_default();
                tracing::info!(
                    revision = mod_revision,
                    root_sha256 = %fp,
                    requested,
                    "renewed the shared root (same key re-signed)"
                );
                sh.status.renewed(now);
                Ok(next)
            }
            Swap::Conflict(_) => Err("another replica changed the root meanwhile; retrying".into()),
        }
    }
    .await;
    if let Err(e) = leadership.resign().await {
        tracing::debug!(error = %e, "could not resign the renewal election (its lease will expire)");
    }
    result
}

/// Renew when due or requested (SIGUSR2), waiting while the store is unavailable.
pub(super) fn spawn_renewal(sh: Arc<Shared>) {
    let wake = Arc::new(tokio::sync::Notify::new());
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) {
        Ok(mut usr2) => {
            let (sh, wake) = (sh.clone(), wake.clone());
            tokio::spawn(async move {
                while usr2.recv().await.is_some() {
                    tracing::info!("SIGUSR2: renewal of the shared root requested");
                    sh.status.request_renewal();
                    wake.notify_one();
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGUSR2 (requested root renewal): {e}"),
    }
    tokio::spawn(async move {
        let signer_pem = meshca_pki::pem::cert_to_pem(sh.rt.active.load().material.signer().cert());
        let mut due = due_at(&signer_pem, sh.cfg.renew_at).unwrap_or_else(|_| sh.rt.clock.now());
        loop {
            let requested = sh.status.renewal_requested();
            let now = sh.rt.clock.now();
            let mut pending = false;
            if requested || now >= due {
                match attempt(&sh, requested).await {
                    Ok(next) => {
                        due = next;
                        sh.status.renewal_waiting(None);
                    }
                    Err(why) => {
                        tracing::warn!(reason = %why, "the shared root renewal waits");
                        sh.status.renewal_waiting(Some(why));
                        pending = true;
                    }
                }
            }
            let wait = if pending {
                Duration::from_secs(1)
            } else {
                due.duration_since(sh.rt.clock.now())
                    .unwrap_or_default()
                    .clamp(Duration::from_secs(1), Duration::from_secs(60))
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}
