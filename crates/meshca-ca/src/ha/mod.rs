//! Several CA replicas sharing one store (`--store etcd://...`): the shared
//! self-signed root (its key sealed with `--store-key-file`) and the local
//! token issuer's key (`token_key`), adopted or created before the server starts; a registry entry per replica carrying
//! the fingerprints of the material it signs with; a watch that installs a
//! renewed root through the staged activation path (`swap::Swapper`); the
//! root renewal at 80% of its life by one elected replica; and the store's
//! health for `/status` and `/metrics`. Without `--store` nothing here runs.
//!
//! Losing the store never stops signing: the material is held in memory and
//! in the data directory; only changes that need agreement (bootstrap of a
//! new root, renewal) wait for the store to return.

mod install;
mod monitor;
mod renew;
pub mod status;
mod token_key;

pub use status::StoreStatus;

use crate::active::ActiveCa;
use crate::clock::SharedClock;
use crate::config::ServeConfig;
use crate::swap::Swapper;
use anyhow::Context as _;
use meshca_store::ca::{bootstrap_root, fingerprint, self_signed_candidate, write_root_files, RootCandidate};
use meshca_store::{AnyStore, EtcdOptions, StoreError, StoreKey, StoreSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Election that picks the replica renewing the shared root.
pub const RENEWAL_ELECTION: &str = "root-renewal";

/// `--store*` options, resolved.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `etcd://host:port[,host:port...]`
    pub url: String,
    pub key_file: PathBuf,
    /// TLS, auth and timeouts; endpoints come from `url`, the prefix from the trust domain.
    pub options: EtcdOptions,
    /// This replica's name in the registry.
    pub replica_id: String,
    /// How long a silent replica's registry entry stays.
    pub registry_ttl: Duration,
    /// Fraction of the root's life after which it is re-signed (Istio: 80%).
    pub renew_at: f64,
    /// How long a replica may sign with material that differs from the others before it is flagged.
    pub mismatch_grace: Duration,
}

impl StoreConfig {
    pub fn new(url: String, key_file: PathBuf, options: EtcdOptions, replica_id: String) -> Self {
        Self {
            url,
            key_file,
            options,
            replica_id,
            registry_ttl: Duration::from_secs(10),
            renew_at: 0.8,
            mismatch_grace: Duration::from_secs(5),
        }
    }
}

/// The root already in the data directory, offered to an empty store so a
/// single replica can grow into several without changing its root.
fn local_root(data_dir: &Path) -> Option<RootCandidate> {
    let dir = data_dir.join("ca");
    let cert_pem = std::fs::read_to_string(dir.join("root-cert.pem")).ok()?;
    let key_pem = zeroize::Zeroizing::new(std::fs::read_to_string(dir.join("root-key.pem")).ok()?);
    Some(RootCandidate { cert_pem, key_pem })
}

/// A replica connected to the store, before the server runs.
pub struct Replica {
    store: AnyStore,
    key: Arc<StoreKey>,
    cfg: StoreConfig,
    /// `mod_revision` of the root installed here (0: unknown or not self-signed).
    root_revision: Arc<AtomicI64>,
    self_signed: bool,
    status: Arc<StoreStatus>,
}

/// What the replica's tasks need from the running server.
pub struct Runtime {
    pub active: Arc<ActiveCa>,
    pub swapper: Swapper,
    pub clock: SharedClock,
    pub data_dir: PathBuf,
    pub grpc_addr: String,
}

impl Replica {
    /// Connect, then (self-signed mode) adopt or create the shared root and
    /// write it into the data directory, where the single-replica code path
    /// reads it. A store that does not answer is tolerated when this replica
    /// adopted a root before: it keeps signing with it.
    pub async fn prepare(sc: &StoreConfig, cfg: &ServeConfig) -> anyhow::Result<Self> {
        let spec = StoreSpec::parse(&sc.url)?;
        let key = StoreKey::from_file(&sc.key_file)?;
        let store = AnyStore::connect(&spec, sc.options.clone()).await?;
        let backend = match spec {
            StoreSpec::Etcd { .. } => "etcd",
        };
        let status = Arc::new(StoreStatus::new(backend, &sc.replica_id, sc.mismatch_grace));
        let plugged = crate::source::detect(&cfg.ca_dir).map_err(|e| anyhow::anyhow!("{e}"))?.is_some();
        let self_signed = cfg.vault.is_none() && !plugged;
        let root_revision = Arc::new(AtomicI64::new(0));
        if self_signed {
            let make = || match local_root(&cfg.data_dir) {
                Some(c) => Ok(c),
                None => self_signed_candidate(
                    &cfg.trust_domain,
                    cfg.self_signed_key,
                    cfg.self_signed_ttl,
                    SystemTime::now(),
                ),
            };
            match bootstrap_root(&store, &key, &sc.replica_id, make).await {
                Ok(root) => {
                    write_root_files(&cfg.data_dir, &root)?;
                    tracing::info!(
                        replica = %sc.replica_id,
                        root_sha256 = %root.fingerprint,
                        created_here = root.created_here,
                        created_by = %root.created_by,
                        "using the shared self-signed root from {}",
                        meshca_store::Store::describe(&store)
                    );
                    root_revision.store(root.revision, std::sync::atomic::Ordering::Relaxed);
                }
                // The store is down but this replica adopted the root before: keep signing with it.
                Err(e @ (StoreError::Timeout { .. } | StoreError::Backend { .. }))
                    if local_root(&cfg.data_dir).is_some() =>
                {
                    tracing::warn!(error = %e, "store unavailable; starting with the root adopted earlier");
                    if let Some(c) = local_root(&cfg.data_dir) {
                        tracing::info!(root_sha256 = %fingerprint(&c.cert_pem)?, "root adopted earlier");
                    }
                    status.set_unhealthy(e.to_string());
                }
                Err(e) => return Err(e).context("shared self-signed root"),
            }
        }
        token_key::prepare(&store, &key, &sc.replica_id, &cfg.data_dir, &status).await?;
        Ok(Self { store, key: Arc::new(key), cfg: sc.clone(), root_revision, self_signed, status })
    }

    /// The store and this replica's id, for the shared policy set (`policy::shared`).
    pub fn policy_store(&self) -> (AnyStore, String) {
        (self.store.clone(), self.cfg.replica_id.clone())
    }

    /// The status shown under `store` in `/status` and in `/metrics`.
    pub fn status(&self) -> Arc<StoreStatus> {
        self.status.clone()
    }

    /// Start the replica's background work: registry entry, store health and
    /// replica list, live installation of a changed root, root renewal.
    pub fn start(self, rt: Runtime) {
        let rt = Arc::new(rt);
        let shared = Arc::new(monitor::Shared {
            store: self.store,
            key: self.key,
            cfg: self.cfg,
            root_revision: self.root_revision,
            status: self.status,
            rt,
            self_signed: self.self_signed,
        });
        monitor::spawn_registry(shared.clone());
        monitor::spawn_monitor(shared.clone());
        if shared.self_signed {
            install::spawn_watch(shared.clone());
            renew::spawn_renewal(shared);
        }
    }
}
