//! Following the CA over its own authenticated channel: the agent opens
//! `meshca.v1.CaEvents/Watch` on the gRPC connection it uses for CSRs, renews
//! early (with jitter) when the CA reports a new signer or bundle, and
//! reports the bundle it holds whenever that changes, so the CA can tell when
//! every agent has received a new root before signing under it. "Holds"
//! means every Envoy stream subscribed to `ROOTCA` has ACKed it (see
//! `root_acks`); until then the previous bundle is reported.
//!
//! Early renewals are driven by the CA's generation number: at most one per
//! generation, so a CA (or anyone else) cannot make the agent renew in a loop.

use crate::caclient::GrpcSigner;
use crate::manager::{backoff, CertManager};
use crate::metrics::Metrics;
use crate::root_acks::RootAcks;
use meshca_pki::inspect::sha256_hex;
use meshca_proto::{AgentReport, CaEvent, CaEventsClient};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the agent holds, compared with each event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub bundle_sha256: String,
    pub signer_sha256: Option<String>,
}

/// Should an event make the agent renew? `acted` is the last generation acted on.
pub fn should_renew(ev: &CaEvent, held: &Held, acted: Option<u64>) -> bool {
    // Nothing held yet: the first certificate request is on its way and gets the current material.
    if acted == Some(ev.generation) || held.bundle_sha256.is_empty() {
        return false;
    }
    let stale_bundle = ev.bundle_sha256 != held.bundle_sha256;
    let stale_signer = held.signer_sha256.as_ref().is_some_and(|s| *s != ev.signer_sha256);
    stale_bundle || stale_signer
}

fn held(manager: &CertManager, identity: &crate::Identity) -> Held {
    let bundle = manager.trust().borrow().as_deref().map(|p| sha256_hex(p.as_bytes())).unwrap_or_default();
    Held { bundle_sha256: bundle, signer_sha256: manager.current(identity).and_then(|c| c.signer_sha256.clone()) }
}

/// Follow the CA's change stream until the process ends, reconnecting with backoff.
pub async fn follow(
    signer: Arc<GrpcSigner>,
    token_file: PathBuf,
    identity: crate::Identity,
    manager: CertManager,
    acks: Arc<RootAcks>,
    metrics: Arc<Metrics>,
) {
    let mut acted: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let res = session(&signer, &token_file, &identity, &manager, &acks, &metrics, &mut acted).await;
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        failures += 1;
        Metrics::inc(&metrics.trust_watch_errors);
        let delay = backoff(Duration::from_millis(200), Duration::from_secs(15), failures, rand::random::<f64>());
        match res {
            Ok(()) => tracing::info!(retry_in = ?delay, "the CA closed the change stream"),
            Err(e) => tracing::warn!(retry_in = ?delay, "the CA change stream failed: {e}"),
        }
        tokio::time::sleep(delay).await;
    }
}

async fn session(
    signer: &GrpcSigner,
    token_file: &std::path::Path,
    identity: &crate::Identity,
    manager: &CertManager,
    acks: &RootAcks,
    metrics: &Metrics,
    acted: &mut Option<u64>,
) -> Result<(), String> {
    let channel = signer.channel().await.map_err(|e| e.to_string())?;
    let mut client = CaEventsClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentReport>(4);
    let mut trust = manager.trust();
    let mut acked = acks.subscribe();
    // The bundle every Envoy validates with, once they all ACKed what the agent holds.
    let confirmed = |h: &Held| acks.all_acked(&h.bundle_sha256).then(|| h.bundle_sha256.clone());
    let mut reported = confirmed(&held(manager, identity)).unwrap_or_default();
    let report = |bundle: &str, acted: Option<u64>| AgentReport {
        bundle_sha256: bundle.to_string(),
        generation: acted.unwrap_or(0),
    };
    tx.send(report(&reported, *acted)).await.map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", GrpcSigner::bearer(token_file).map_err(|e| e.to_string())?);
    let mut events = match client.watch(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                signer.reset();
            }
            return Err(format!("{:?}: {}", s.code(), s.message()));
        }
    };
    tracing::info!("following the CA's change stream");
    loop {
        tokio::select! {
            ev = events.message() => match ev {
                Ok(Some(ev)) => {
                    let h = held(manager, identity);
                    if should_renew(&ev, &h, *acted) {
                        tracing::info!(
                            generation = ev.generation, root_prepared = ev.root_prepared,
                            "the CA signs with new material or publishes a new bundle: renewing early"
                        );
                        manager.renew_early();
                    }
                    *acted = Some(ev.generation);
                }
                Ok(None) => return Ok(()),
                Err(s) => {
                    signer.reset();
                    return Err(format!("{:?}: {}", s.code(), s.message()));
                }
            },
            r = async { tokio::select! { r = trust.changed() => r.is_ok(), r = acked.changed() => r.is_ok() } } => {
                if !r {
                    return Ok(());
                }
                trust.mark_unchanged();
                acked.mark_unchanged();
                let Some(bundle) = confirmed(&held(manager, identity)) else { continue };
                if bundle == reported {
                    continue;
                }
                reported = bundle;
                Metrics::inc(&metrics.trust_reports);
                tracing::info!(bundle_sha256 = %reported, "every Envoy took the new trust bundle: reporting it to the CA");
                if tx.send(report(&reported, *acted)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(generation: u64, bundle: &str, signer: &str) -> CaEvent {
        CaEvent {
            generation,
            signer_sha256: signer.into(),
            bundle_pem: String::new(),
            bundle_sha256: bundle.into(),
            root_prepared: false,
        }
    }

    #[test]
    fn renews_once_per_generation_and_only_when_stale() {
        let h = Held { bundle_sha256: "b1".into(), signer_sha256: Some("s1".into()) };
        assert!(!should_renew(&ev(1, "b1", "s1"), &h, None), "up to date");
        assert!(should_renew(&ev(2, "b2", "s1"), &h, Some(1)), "new bundle");
        assert!(should_renew(&ev(2, "b1", "s2"), &h, Some(1)), "new signer");
        assert!(!should_renew(&ev(2, "b2", "s2"), &h, Some(2)), "already acted on this generation");
        let unknown_signer = Held { bundle_sha256: "b1".into(), signer_sha256: None };
        assert!(!should_renew(&ev(3, "b1", "s9"), &unknown_signer, Some(2)));
        assert!(!should_renew(&ev(1, "b1", "s1"), &Held::default(), None), "the first certificate is on its way");
    }
}
