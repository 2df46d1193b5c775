//! The one door new CA material goes through, whatever its source (plug-in
//! files, Vault): unchanged sets are ignored, root bundles that would cut
//! workloads off are refused, a signer under a root workloads may not hold yet
//! is staged (see `rotation`), everything else is swapped in atomically and
//! logged.

use crate::active::{ActiveCa, SourceKind};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::rotation::{ActivationCause, Prepared};
use crate::server::log_material;
use meshca_pki::inspect::sha256_hex;
use meshca_pki::material::fmt_time;
use meshca_pki::{CaMaterial, CertDer};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What one offer of material did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Swapped {
        bundle_changed: bool,
    },
    /// The new root is published; its signer waits for it to reach every workload.
    Prepared,
    Refused(String),
    /// The directory holds no plug-in set; the current material stays.
    NothingPlugged,
}

fn same_set(a: &[CertDer], b: &[CertDer]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

fn overlaps(a: &[CertDer], b: &[CertDer]) -> bool {
    a.iter().any(|x| b.contains(x))
}

#[derive(Clone)]
pub struct Swapper {
    pub active: Arc<ActiveCa>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub trust_domain: String,
    /// Accept a root bundle that shares no root with the current one, at once.
    pub allow_root_replace: bool,
}

impl Swapper {
    /// Record a refused set; the current material stays active.
    pub fn refuse(&self, msg: String) -> Outcome {
        self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("CA material reload refused, the current material stays active: {msg}");
        self.active.reload_failed(msg.clone(), self.clock.now());
        Outcome::Refused(msg)
    }

    /// Offer validated `material` from `source` at `location`. `bundle_name`
    /// names the root bundle (file or path) in messages.
    pub fn offer(&self, material: CaMaterial, source: SourceKind, location: PathBuf, bundle_name: &str) -> Outcome {
        let _op = self.active.staging.operation();
        let current = self.active.load();
        let old = &current.material;
        if self.active.staging.is_prepared(&material) {
            return Outcome::Unchanged;
        }
        if current.source == source
            && material.signer().cert() == old.signer().cert()
            && material.chain() == old.chain()
            && same_set(material.roots(), old.roots())
        {
            if self.active.staging.withdraw() {
                tracing::warn!("the prepared signer was withdrawn: the source holds the active material again");
            }
            return Outcome::Unchanged;
        }
        let disjoint = !overlaps(material.roots(), old.roots());
        if disjoint && !self.allow_root_replace {
            return self.refuse(format!(
                "{bundle_name}: the new root bundle shares no root with the current one, so every workload holding a \
                 certificate from the current root would be cut off. Rotate in three steps: (1) put a bundle with \
                 both the old and the new roots in root-cert.pem, keeping the old signing certificate; (2) once every \
                 workload trusts both, switch ca-cert.pem/ca-key.pem/cert-chain.pem to the new intermediate; (3) once \
                 every workload has renewed, remove the old root. Start meshca with --allow-root-replace to skip this check"
            ));
        }
        let now = self.clock.now();
        let new_root = material.signing_root().cloned();
        let settled = disjoint // --allow-root-replace: the operator's explicit choice
            || new_root.as_ref().is_some_and(|r| {
                old.roots().contains(r) && self.active.staging.settled(r, &sha256_hex(old.roots_pem().as_bytes()), now)
            });
        if self.active.staging.withdraw() {
            tracing::info!("a newer CA set replaces the prepared signer");
        }
        if settled {
            return self.swap(material, source, location);
        }
        self.prepare(material, source, location, new_root)
    }

    /// Swap `material` in now.
    fn swap(&self, material: CaMaterial, source: SourceKind, location: PathBuf) -> Outcome {
        let bundle_changed = !same_set(material.roots(), self.active.load().material.roots());
        let roots = material.roots().len();
        let snapshot = self.active.replace(material, source, location, self.clock.now());
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!("Istiod has detected the newly added intermediate CA and updated its key and certs accordingly");
        log_material(&snapshot.material);
        if bundle_changed {
            tracing::info!("spiffe  Added {roots} certs to trust domain {} in peer cert verifier", self.trust_domain);
        }
        tracing::info!(generation = snapshot.generation, "meshca certificates are reloaded");
        Outcome::Swapped { bundle_changed }
    }

    /// Publish the new roots with the current signer and hold `material` back.
    fn prepare(
        &self,
        material: CaMaterial,
        source: SourceKind,
        location: PathBuf,
        new_root: Option<CertDer>,
    ) -> Outcome {
        let current = self.active.load();
        let old = &current.material;
        let mut roots: Vec<CertDer> = material.roots().to_vec();
        // The current signer must stay verifiable while it signs.
        if let Some(r) = old.signing_root() {
            if !roots.contains(r) {
                roots.push(r.clone());
            }
        }
        let now = self.clock.now();
        let published = match old.with_roots(roots, now) {
            Ok(m) => m,
            Err(e) => return self.refuse(format!("cannot publish the new root bundle with the current signer: {e}")),
        };
        let bundle_sha256 = sha256_hex(published.roots_pem().as_bytes());
        let delay = self.active.staging.propagation_delay();
        let activate_by = now + delay;
        let subject = |d: &CertDer| meshca_pki::inspect::cert_info(d).map(|i| i.subject).unwrap_or_default();
        let new_root_name = new_root.as_ref().map(subject).unwrap_or_default();
        let signer_name = subject(material.signer().cert());
        let bundle_changed = !same_set(published.roots(), old.roots());
        tracing::warn!(
            new_root = %new_root_name, signer = %signer_name, activate_by = %fmt_time(activate_by),
            delay_s = delay.as_secs(),
            "the new signer chains to a root that workloads may not hold yet: its root is published now and the \
             current signer keeps signing until every connected agent holds the new bundle or the delay has passed"
        );
        // Recorded before the bundle is published, so whoever sees the new bundle also sees why.
        self.active.staging.prepare(Prepared {
            material,
            source,
            location,
            prepared_at: now,
            activate_by,
            bundle_sha256,
        });
        if bundle_changed {
            let snapshot = self.active.replace(published, current.source.clone(), current.directory.clone(), now);
            tracing::info!(
                generation = snapshot.generation,
                "spiffe  Added {} certs to trust domain {} in peer cert verifier",
                snapshot.material.roots().len(),
                self.trust_domain
            );
        }
        self.active.reload_ok(now);
        Outcome::Prepared
    }

    /// Activate the prepared signer if its time has come (or `force`).
    pub fn activate_ready(&self, force: bool) -> Option<ActivationCause> {
        let _op = self.active.staging.operation();
        let (p, cause) = self.active.staging.take_ready(self.clock.now(), force)?;
        tracing::info!(
            cause = cause.as_str(),
            waited_ms = self.clock.now().duration_since(p.prepared_at).unwrap_or_default().as_millis() as u64,
            "activating the prepared signer"
        );
        self.swap(p.material, p.source, p.location);
        Some(cause)
    }
}

/// Activate prepared signers as soon as agents confirm or the delay passes;
/// SIGUSR1 forces the activation of a prepared signer (operator override).
pub fn spawn_activation(swapper: Swapper) {
    tokio::spawn(async move {
        let agents = swapper.active.staging.agents.clone();
        let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            .map_err(|e| tracing::warn!("cannot listen for SIGUSR1 (forced root activation): {e}"))
            .ok();
        loop {
            let wait = match swapper.active.staging.activate_by() {
                Some(t) => t.duration_since(swapper.clock.now()).unwrap_or_default().min(Duration::from_secs(1)),
                None => Duration::from_secs(1),
            };
            let mut force = false;
            tokio::select! {
                _ = agents.reported.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    force = true;
                    if !swapper.active.staging.has_prepared() {
                        tracing::info!("SIGUSR1: no prepared signer to activate");
                    }
                }
            }
            swapper.activate_ready(force);
        }
    });
}
