//! Vault/OpenBao as the CA source.
//!
//! Two modes:
//!
//! - `vault-upstream` (the default): meshca generates its intermediate key in
//!   memory, has Vault's PKI engine sign it (`<mount>/root/sign-intermediate`)
//!   for a short TTL, and rotates it at half-life. The key never leaves the
//!   process. Several replicas each hold their own intermediate under the
//!   same root.
//! - `vault-kv`: the layout of the "Vault as the Istio CA" recipe, read over
//!   the HTTP API and polled: signing certificate and chain from a PKI mount,
//!   the root from another, the key from a KV secret (v1 or v2).
//!
//! Whatever Vault returns goes through `CaMaterial::from_input` and the
//! shared [`Swapper`](crate::reload::Swapper), exactly like a file reload. A
//! failed refresh (Vault unreachable, sealed, a policy problem) is recorded in
//! `/status` and `meshca_ca_reload_failures_total`, retried with backoff, and
//! never drops the material that is currently valid.

pub mod auth;
pub mod client;
pub mod kv;
pub mod upstream;

use crate::active::SourceKind;
use crate::clock::SharedClock;
use crate::reload::{Outcome, Swapper};
use meshca_pki::{CaMaterial, KeyKind};
use std::path::PathBuf;
use std::time::Duration;

pub use auth::AuthConfig;
pub use client::{VaultClient, VaultError};

/// Which layout meshca reads from Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultMode {
    /// meshca's own intermediate, signed by Vault, rotated at half-life.
    Upstream,
    /// Certificate, chain, root and key read from Vault and polled.
    Kv,
}

impl std::str::FromStr for VaultMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vault-upstream" | "upstream" => Ok(Self::Upstream),
            "vault-kv" | "kv" => Ok(Self::Kv),
            other => Err(format!("unknown Vault mode {other:?} (expected vault-upstream or vault-kv)")),
        }
    }
}

impl VaultMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "vault-upstream",
            Self::Kv => "vault-kv",
        }
    }
}

/// Paths of the `vault-kv` layout (all relative to `/v1/`).
#[derive(Debug, Clone)]
pub struct KvPaths {
    pub cert: String,
    pub chain: String,
    pub root: String,
    /// KV secret holding the key: `kv/istioca` (v1), `secret/istioca` or `secret/data/istioca` (v2).
    pub key: String,
    pub key_field: String,
}

impl Default for KvPaths {
    fn default() -> Self {
        Self {
            cert: "pki_int/cert/ca".into(),
            chain: "pki_int/cert/ca_chain".into(),
            root: "pki/cert/ca".into(),
            key: "kv/istioca".into(),
            key_field: "ca-key.pem".into(),
        }
    }
}

/// Settings of `vault-upstream`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// PKI mount whose CA signs meshca's intermediate.
    pub mount: String,
    /// Requested lifetime of each intermediate.
    pub ttl: Duration,
    pub key: KeyKind,
    pub common_name: String,
    /// Where the trust root is read (e.g. `pki/cert/ca`); `None`: the
    /// self-signed certificate at the top of the chain Vault returns.
    pub root_path: Option<String>,
}

/// `--vault-*` settings.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// `http(s)://host:port`, without `/v1`.
    pub addr: String,
    pub mode: VaultMode,
    /// PEM CA bundle trusted for TLS to Vault (instead of the system roots).
    pub ca_file: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    pub auth: AuthConfig,
    pub kv: KvPaths,
    pub upstream: UpstreamConfig,
    /// `vault-kv`: how often Vault is read.
    pub poll_interval: Duration,
    /// Longest wait between retries after a failed refresh.
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl VaultConfig {
    pub fn new(addr: impl Into<String>, auth: AuthConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "meshca".into());
        Self {
            addr: addr.into(),
            mode: VaultMode::Upstream,
            ca_file: None,
            namespace: None,
            auth,
            kv: KvPaths::default(),
            upstream: UpstreamConfig {
                mount: "pki_int".into(),
                ttl: Duration::from_secs(48 * 3600),
                key: KeyKind::EcP256,
                common_name: format!("meshca intermediate {host}"),
                root_path: None,
            },
            poll_interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }

    /// What `/status` shows as the material's location.
    pub fn location(&self) -> PathBuf {
        let what = match self.mode {
            VaultMode::Upstream => format!("{}/root/sign-intermediate", self.upstream.mount),
            VaultMode::Kv => self.kv.cert.clone(),
        };
        PathBuf::from(format!("vault:{}/v1/{what}", self.addr.trim_end_matches('/')))
    }
}

/// The running source: the authenticated client plus what the mode needs.
pub struct VaultSource {
    cfg: VaultConfig,
    client: VaultClient,
    upstream: Option<upstream::Upstream>,
}

/// Connect, authenticate and fetch the first material. Any failure here is
/// fatal: without material there is nothing to sign with.
pub async fn start(cfg: &VaultConfig, clock: &SharedClock) -> anyhow::Result<(CaMaterial, VaultSource)> {
    let client = VaultClient::new(cfg).map_err(|e| anyhow::anyhow!("Vault ({}): {e}", cfg.addr))?;
    let fatal = |e: VaultError| {
        anyhow::anyhow!(
            "cannot start: the CA source is Vault ({} mode, {}) and no CA material could be obtained from it: {e}",
            cfg.mode.as_str(),
            cfg.addr
        )
    };
    client.health().await.map_err(fatal)?;
    client.login().await.map_err(fatal)?;
    let (material, upstream) = match cfg.mode {
        VaultMode::Kv => (kv::fetch(&client, &cfg.kv, clock.now()).await.map_err(fatal)?, None),
        VaultMode::Upstream => {
            let mut up = upstream::Upstream::new(cfg.upstream.clone());
            let m = up.issue(&client, clock).await.map_err(fatal)?;
            (m, Some(up))
        }
    };
    tracing::info!(
        addr = %cfg.addr,
        mode = cfg.mode.as_str(),
        location = %cfg.location().display(),
        "Use CA material from Vault"
    );
    crate::server::log_material(&material);
    Ok((material, VaultSource { cfg: cfg.clone(), client, upstream }))
}

/// Backoff after `failures` consecutive failed refreshes: 1 s, 2 s, 4 s, ... capped.
fn backoff(failures: u32, cap: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(10)).min(cap).max(Duration::from_millis(500))
}

impl VaultSource {
    /// Refresh in the background until the process ends.
    pub fn spawn(self, swapper: Swapper) {
        tokio::spawn(self.run(swapper));
    }

    async fn run(mut self, swapper: Swapper) {
        let mut failures: u32 = 0;
        loop {
            let now = swapper.clock.now();
            let due = match &self.upstream {
                Some(up) => up.rotate_at().duration_since(now).unwrap_or_default(),
                None => self.cfg.poll_interval,
            };
            // After a failure: retry with backoff (in vault-kv never later than the next regular poll).
            let mut wait = match (failures, &self.upstream) {
                (0, _) => due,
                (n, Some(_)) => backoff(n, self.cfg.max_backoff),
                (n, None) => backoff(n, self.cfg.max_backoff).min(self.cfg.poll_interval),
            };
            if let Some(renew_in) = self.client.renew_due_in().await {
                wait = wait.min(renew_in);
            }
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;

            if let Err(e) = self.client.maintain_token().await {
                tracing::warn!("Vault token renewal failed (will log in again or retry): {e}");
            }
            let now = swapper.clock.now();
            let result = match &mut self.upstream {
                Some(up) => {
                    if now < up.rotate_at() {
                        continue;
                    }
                    tracing::info!(
                        "preparing the next intermediate: the current one is past half-life (expires {})",
                        meshca_pki::material::fmt_time(up.not_after())
                    );
                    up.issue(&self.client, &swapper.clock).await
                }
                None => kv::fetch(&self.client, &self.cfg.kv, now).await,
            };
            match result {
                Ok(material) => {
                    let prev_failures = failures;
                    let recovered = failures > 0;
                    failures = 0;
                    let location = self.cfg.location();
                    match swapper.offer(material, SourceKind::Vault, location.clone(), &self.bundle_name()) {
                        Outcome::Unchanged if recovered => {
                            // Same material as before the failures: clear the error shown in /status.
                            swapper.active.reload_ok(swapper.clock.now());
                            tracing::info!("Vault refresh succeeded again; the CA material is unchanged");
                        }
                        Outcome::Refused(_) => failures = prev_failures.saturating_add(1),
                        other => tracing::debug!(?other, "Vault refresh"),
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let current = swapper.active.load();
                    let expires = meshca_pki::material::fmt_time(current.material.signer().not_after());
                    let retry = backoff(failures, self.cfg.max_backoff);
                    swapper.refuse(format!(
                        "Vault refresh failed (attempt {failures}, retrying in {}s); still issuing with the current \
                         signing certificate, valid until {expires}: {e}",
                        retry.as_secs().max(1)
                    ));
                }
            }
        }
    }

    /// `vault-kv` only: fetch again to obtain an owned copy for the status reset.
    fn bundle_name(&self) -> String {
        match self.cfg.mode {
            VaultMode::Kv => format!("Vault {}", self.cfg.kv.root),
            VaultMode::Upstream => match &self.cfg.upstream.root_path {
                Some(p) => format!("Vault {p}"),
                None => format!("the root of the chain returned by Vault {}", self.cfg.upstream.mount),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap), Duration::from_secs(1));
        assert_eq!(backoff(2, cap), Duration::from_secs(2));
        assert_eq!(backoff(5, cap), Duration::from_secs(16));
        assert_eq!(backoff(9, cap), cap);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("vault-kv".parse::<VaultMode>().unwrap(), VaultMode::Kv);
        assert_eq!("vault-upstream".parse::<VaultMode>().unwrap(), VaultMode::Upstream);
        assert!("file".parse::<VaultMode>().is_err());
    }
}
