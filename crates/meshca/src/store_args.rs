//! `meshca serve --store etcd://...`: several replicas share the self-signed
//! root (its key sealed with `--store-key-file`) and a registry of replicas
//! in etcd. The shared root is written into the data directory before the
//! server starts, where the single-replica code path reads it.

use anyhow::Context;
use clap::Args;
use meshca_ca::config::ServeConfig;
use meshca_store::ca::{bootstrap_root, register_replica, self_signed_candidate, write_root_files, ReplicaRecord};
use meshca_store::ca::{fingerprint, RootCandidate};
use meshca_store::{spec, AnyStore, EtcdOptions, EtcdTls, Registration, StoreError, StoreKey, StoreSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a replica's registry entry outlives a silent replica.
const REGISTRY_TTL: Duration = Duration::from_secs(10);

/// `--store*` flags (environment `MESHCA_STORE*`).
#[derive(Args, Debug, Default, Clone)]
pub struct StoreArgs {
    /// Shared state for several replicas: etcd://host:port[,host:port...] [default: none, the data directory only]
    #[arg(long, env = "MESHCA_STORE")]
    pub store: Option<String>,
    /// File with the 32-byte key (raw or base64) that seals private keys in the store; the same on every replica
    #[arg(long, env = "MESHCA_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,
    /// PEM CA bundle for TLS to etcd (makes the endpoints https)
    #[arg(long, env = "MESHCA_STORE_TLS_CA")]
    pub store_tls_ca: Option<PathBuf>,
    /// Client certificate for TLS to etcd
    #[arg(long, env = "MESHCA_STORE_TLS_CERT")]
    pub store_tls_cert: Option<PathBuf>,
    /// Client key for TLS to etcd
    #[arg(long, env = "MESHCA_STORE_TLS_KEY")]
    pub store_tls_key: Option<PathBuf>,
    /// etcd user name (etcd auth)
    #[arg(long, env = "MESHCA_STORE_USER")]
    pub store_user: Option<String>,
    /// File holding the etcd user's password
    #[arg(long, env = "MESHCA_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// This replica's name in the registry [default: <hostname>-<gRPC port>]
    #[arg(long, env = "MESHCA_REPLICA_ID")]
    pub replica_id: Option<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "meshca".into())
}

/// The root already in the data directory, offered to an empty store so a
/// single replica can grow into several without changing its root.
fn local_root(data_dir: &Path) -> Option<RootCandidate> {
    let dir = data_dir.join("ca");
    let cert_pem = std::fs::read_to_string(dir.join("root-cert.pem")).ok()?;
    let key_pem = zeroize::Zeroizing::new(std::fs::read_to_string(dir.join("root-key.pem")).ok()?);
    Some(RootCandidate { cert_pem, key_pem })
}

impl StoreArgs {
    fn options(&self, trust_domain: &str) -> anyhow::Result<EtcdOptions> {
        let mut o = EtcdOptions::new(Vec::new(), spec::prefix_for(trust_domain));
        if self.store_tls_ca.is_some() || self.store_tls_cert.is_some() || self.store_tls_key.is_some() {
            o.tls = Some(EtcdTls {
                ca_file: self.store_tls_ca.clone(),
                cert_file: self.store_tls_cert.clone(),
                key_file: self.store_tls_key.clone(),
            });
        }
        match (&self.store_user, &self.store_password_file) {
            (Some(u), Some(p)) => {
                let pw = std::fs::read_to_string(p)
                    .with_context(|| format!("--store-password-file {}", p.display()))?
                    .trim()
                    .to_string();
                o.user = Some((u.clone(), pw));
            }
            (None, None) => {}
            _ => anyhow::bail!("--store-user and --store-password-file go together"),
        }
        Ok(o)
    }

    /// With `--store`: connect, adopt or create the shared self-signed root
    /// (written to the data directory), and register this replica. The
    /// returned handle keeps the registry entry alive; `None` without `--store`.
    pub async fn prepare(&self, cfg: &ServeConfig) -> anyhow::Result<Option<Registration>> {
        let Some(url) = self.store.as_deref().filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let spec = StoreSpec::parse(url)?;
        let key_file = self.store_key_file.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "--store needs --store-key-file: the 32-byte key (the same on every replica) that seals private keys \
                 in the store; make one with `head -c 32 /dev/urandom | base64 > store.key`"
            )
        })?;
        let key = StoreKey::from_file(key_file)?;
        let store = AnyStore::connect(&spec, self.options(&cfg.trust_domain)?).await?;
        let id = self.replica_id.clone().unwrap_or_else(|| format!("{}-{}", hostname(), cfg.grpc_addr.port()));
        let plugged = meshca_ca::source::detect(&cfg.ca_dir).map_err(|e| anyhow::anyhow!("{e}"))?.is_some();
        let mut fingerprints = Vec::new();
        if cfg.vault.is_none() && !plugged {
            let make = || match local_root(&cfg.data_dir) {
                Some(c) => Ok(c),
                None => self_signed_candidate(
                    &cfg.trust_domain,
                    cfg.self_signed_key,
                    cfg.self_signed_ttl,
                    SystemTime::now(),
                ),
            };
            match bootstrap_root(&store, &key, &id, make).await {
                Ok(root) => {
                    write_root_files(&cfg.data_dir, &root)?;
                    tracing::info!(
                        replica = %id,
                        root_sha256 = %root.fingerprint,
                        created_here = root.created_here,
                        created_by = %root.created_by,
                        "using the shared self-signed root from {}",
                        meshca_store::Store::describe(&store)
                    );
                    fingerprints.push(root.fingerprint.clone());
                }
                // The store is down but this replica adopted the root before: keep signing with it.
                Err(e @ (StoreError::Timeout { .. } | StoreError::Backend { .. }))
                    if local_root(&cfg.data_dir).is_some() =>
                {
                    tracing::warn!(error = %e, "store unavailable; starting with the root adopted earlier");
                    if let Some(c) = local_root(&cfg.data_dir) {
                        fingerprints.push(fingerprint(&c.cert_pem)?);
                    }
                }
                Err(e) => return Err(e).context("shared self-signed root"),
            }
        }
        let rec = ReplicaRecord::new(&id, &cfg.grpc_addr.to_string(), env!("CARGO_PKG_VERSION"), fingerprints);
        match register_replica(&store, &rec, REGISTRY_TTL).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(error = %e, "could not register this replica; retrying in the background");
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        if let Ok(registration) = register_replica(&store, &rec, REGISTRY_TTL).await {
                            tracing::info!("registered this replica");
                            // Held for the life of the process.
                            let _keep = registration;
                            std::future::pending::<()>().await;
                        }
                    }
                });
                Ok(None)
            }
        }
    }
}
