//! The replica's registry entry (kept in step with the material it signs
//! with) and the store monitor (health, replica list, and a backstop for a
//! root change the watch missed).

use super::{Runtime, StoreConfig, StoreStatus};
use crate::active::ActiveCa;
use meshca_pki::inspect::sha256_hex;
use meshca_store::ca::{list_replicas, register_replica, ReplicaRecord, ROOT_KEY};
use meshca_store::{AnyStore, Registration, Store, StoreKey};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the monitor asks the store.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe that takes longer counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Shared {
    pub store: AnyStore,
    pub key: Arc<StoreKey>,
    pub cfg: StoreConfig,
    pub root_revision: Arc<AtomicI64>,
    pub status: Arc<StoreStatus>,
    pub rt: Arc<Runtime>,
    pub self_signed: bool,
}

/// SHA-256 of every certificate this replica signs with: signer, chain, roots.
pub fn fingerprints(active: &ActiveCa) -> Vec<String> {
    let snap = active.load();
    let m = &snap.material;
    std::iter::once(m.signer().cert()).chain(m.chain().iter()).chain(m.roots().iter()).map(|c| sha256_hex(c)).collect()
}

/// Keep this replica's registry entry alive and up to date with its material
/// (every mode: self-signed, plug-in, Vault), re-registering after a store outage.
pub(super) fn spawn_registry(sh: Arc<Shared>) {
    tokio::spawn(async move {
        let mut changes = sh.rt.active.subscribe();
        let mut registration: Option<Registration> = None;
        loop {
            let fps = fingerprints(&sh.rt.active);
            sh.status.set_mine(fps.clone());
            let rec = ReplicaRecord::new(&sh.cfg.replica_id, &sh.rt.grpc_addr, env!("CARGO_PKG_VERSION"), fps);
            let ok = match &registration {
                Some(r) => match serde_json::to_vec(&rec) {
                    Ok(v) => r
                        .update(v)
                        .await
                        .map_err(|e| tracing::warn!(error = %e, "could not update this replica's registry entry"))
                        .is_ok(),
                    Err(_) => false,
                },
                None => match register_replica(&sh.store, &rec, sh.cfg.registry_ttl).await {
                    Ok(r) => {
                        tracing::info!(replica = %sh.cfg.replica_id, "registered this replica");
                        registration = Some(r);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not register this replica; retrying");
                        false
                    }
                },
            };
            let wait = if ok { Duration::from_secs(30) } else { Duration::from_secs(2) };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// Probe the store every second: health, the replica list, and the root's revision.
pub(super) fn spawn_monitor(sh: Arc<Shared>) {
    tokio::spawn(async move {
        loop {
            match tokio::time::timeout(PROBE_TIMEOUT, list_replicas(&sh.store)).await {
                Ok(Ok(replicas)) => {
                    sh.status.set_healthy();
                    sh.status.set_replicas(replicas);
                }
                Ok(Err(e)) => sh.status.set_unhealthy(e.to_string()),
                Err(_) => sh.status.set_unhealthy(format!(
                    "store {}: no answer within {PROBE_TIMEOUT:?} (with etcd: is a majority of the members up?)",
                    sh.store.describe()
                )),
            }
            if sh.self_signed && sh.status.healthy() {
                if let Ok(Ok(Some(e))) = tokio::time::timeout(PROBE_TIMEOUT, sh.store.get(ROOT_KEY)).await {
                    if e.mod_revision > sh.root_revision.load(Ordering::Relaxed) {
                        super::install::install_entry(&sh, &e);
                    }
                }
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}
