//! `meshca serve --store etcd://...` flags; the replica logic (shared root,
//! registry, live swap, renewal, store health) is `meshca_ca::ha`.

use anyhow::Context;
use clap::Args;
use meshca_ca::ha::StoreConfig;
use meshca_store::{spec, EtcdOptions, EtcdTls};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The TOML keys of the store options (the flags' names with `_`).
pub const KEYS: [&str; 8] = [
    "store",
    "store_key_file",
    "store_tls_ca",
    "store_tls_cert",
    "store_tls_key",
    "store_user",
    "store_password_file",
    "replica_id",
];

/// `--store*` flags (environment `MESHCA_STORE*`); the TOML keys are the same names with `_`.
#[derive(Args, Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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

impl StoreArgs {
    /// Flags/environment over the file.
    pub fn merge(self, file: StoreArgs) -> StoreArgs {
        macro_rules! m { ($($f:ident),*) => { StoreArgs { $($f: self.$f.or(file.$f)),* } } }
        m!(
            store,
            store_key_file,
            store_tls_ca,
            store_tls_cert,
            store_tls_key,
            store_user,
            store_password_file,
            replica_id
        )
    }

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

    /// The resolved store options; `None` without `--store`.
    pub fn config(&self, trust_domain: &str, grpc_addr: SocketAddr) -> anyhow::Result<Option<StoreConfig>> {
        let Some(url) = self.store.as_deref().filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        spec::StoreSpec::parse(url)?;
        let key_file = self.store_key_file.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "--store needs --store-key-file: the 32-byte key (the same on every replica) that seals private keys \
                 in the store; make one with `head -c 32 /dev/urandom | base64 > store.key`"
            )
        })?;
        let id = self.replica_id.clone().unwrap_or_else(|| format!("{}-{}", hostname(), grpc_addr.port()));
        Ok(Some(StoreConfig::new(url.to_string(), key_file, self.options(trust_domain)?, id)))
    }
}
