//! `meshca serve`: configuration from a TOML file, `MESHCA_*` variables and
//! flags (flags override the environment, which overrides the file).

use anyhow::Context;
use clap::Args;
use meshca_ca::config::ServeConfig;
use meshca_pki::KeyKind;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30m, 24h, 90d)"))
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with '_' for '-').
    #[arg(long, env = "MESHCA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Plug-in CA directory (layout ca-cert.pem/ca-key.pem/cert-chain.pem/root-cert.pem, or tls.crt/tls.key/ca.crt) [default: ./etc/cacerts]
    #[arg(long, env = "MESHCA_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Data directory: self-signed root, token key, audit log [default: ./meshca-data]
    #[arg(long, env = "MESHCA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// SPIFFE trust domain [default: cluster.local]
    #[arg(long, env = "MESHCA_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:15012]
    #[arg(long, env = "MESHCA_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address (health, metrics, trust bundle, status) [default: 127.0.0.1:15014]
    #[arg(long, env = "MESHCA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Serve gRPC without TLS (local use only)
    #[arg(long, env = "MESHCA_PLAINTEXT", num_args = 0..=1, default_missing_value = "true")]
    pub plaintext: Option<bool>,
    /// DNS SANs of the gRPC serving certificate, comma-separated [default: istiod.istio-system.svc,localhost]
    #[arg(long, env = "MESHCA_SERVING_DNS", value_delimiter = ',')]
    pub serving_dns: Option<Vec<String>>,
    /// Certificate lifetime when the request asks for none [default: 24h]
    #[arg(long, env = "MESHCA_DEFAULT_TTL", value_parser = duration)]
    pub default_ttl: Option<Duration>,
    /// Longest lifetime a request may ask for; longer requests are refused [default: 90d]
    #[arg(long, env = "MESHCA_MAX_TTL", value_parser = duration)]
    pub max_ttl: Option<Duration>,
    /// Trusted JWT issuer, ISSUER=SOURCE where SOURCE is a JWKS file, a JWKS URL or `oidc` (repeatable)
    #[arg(long = "jwt-issuer", env = "MESHCA_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Option<Vec<String>>,
    /// Audience tokens must carry [default: istio-ca]
    #[arg(long, env = "MESHCA_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// Node accounts (ns/sa) allowed to request certificates for other identities, comma-separated
    #[arg(long, env = "MESHCA_TRUSTED_NODE_ACCOUNTS", value_delimiter = ',')]
    pub trusted_node_accounts: Option<Vec<String>>,
    /// Key type of the generated self-signed root [default: ec-p256; Istio's is rsa-2048]
    #[arg(long, env = "MESHCA_SELF_SIGNED_KEY")]
    pub self_signed_key: Option<KeyKind>,
    /// Lifetime of a new self-signed root; with --store it is re-signed at 80% of it [default: 3650d]
    #[arg(long, env = "MESHCA_SELF_SIGNED_TTL", value_parser = duration)]
    pub self_signed_ttl: Option<Duration>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "MESHCA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Accept a plug-in root bundle that shares no root with the current one (cuts off existing workloads)
    #[arg(long, env = "MESHCA_ALLOW_ROOT_REPLACE", num_args = 0..=1, default_missing_value = "true")]
    pub allow_root_replace: Option<bool>,
    /// How often the plug-in directory is polled, in addition to file-change events [default: 30s]
    #[arg(long, env = "MESHCA_RELOAD_POLL_INTERVAL", value_parser = duration)]
    pub reload_poll_interval: Option<Duration>,
    /// How long a new root is published before a signer under it may sign, unless every connected agent confirms
    /// it sooner [default: the longest lifetime issued since start-up, capped at --max-ttl]
    #[arg(long, env = "MESHCA_ROOT_PROPAGATION_DELAY", value_parser = duration)]
    pub root_propagation_delay: Option<Duration>,
    // --- Vault/OpenBao CA source ---
    #[command(flatten)]
    pub vault: VaultArgs,
    // --- Transport, audit and resource limits (limits.rs) ---
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
    // --- Shared state for several replicas (store_args.rs) ---
    #[command(flatten)]
    pub store: crate::store_args::StoreArgs,
    // --- Policy delivery to agents (policy/serve_args.rs) ---
    #[command(flatten)]
    pub policy: crate::policy::ServePolicyArgs,
}

/// The TOML file: the same keys as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    ca_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    trust_domain: Option<String>,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    plaintext: Option<bool>,
    serving_dns: Option<Vec<String>>,
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    jwt_issuer: Option<Vec<String>>,
    token_audience: Option<String>,
    trusted_node_accounts: Option<Vec<String>>,
    self_signed_key: Option<KeyKind>,
    self_signed_ttl: Option<String>,
    log_format: Option<String>,
    allow_root_replace: Option<bool>,
    reload_poll_interval: Option<String>,
    root_propagation_delay: Option<String>,
    /// The `vault_*` keys, split off before the rest is parsed.
    #[serde(skip)]
    vault: VaultArgs,
    /// The limit keys (`crate::limits::KEYS`), split off likewise.
    #[serde(skip)]
    limits: crate::limits::LimitArgs,
    /// The store keys (`crate::store_args::KEYS`), split off likewise.
    #[serde(skip)]
    store: crate::store_args::StoreArgs,
    /// The policy keys (`crate::policy::POLICY_KEYS`), split off likewise.
    #[serde(skip)]
    policy: crate::policy::ServePolicyArgs,
}

impl ServeArgs {
    /// The log format after merging (needed before the rest, to set up logging).
    pub fn log_format(&self) -> anyhow::Result<String> {
        let file = self.file()?;
        Ok(self.log_format.clone().or(file.log_format).unwrap_or_else(|| "text".into()))
    }

    fn file(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            None => Ok(FileConfig::default()),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?;
                let mut table: toml::Table =
                    toml::from_str(&text).with_context(|| format!("config file {}", p.display()))?;
                let vault_keys: Vec<String> = table.keys().filter(|k| k.starts_with("vault_")).cloned().collect();
                let vault: toml::Table = vault_keys.iter().filter_map(|k| table.remove_entry(k)).collect();
                let limits: toml::Table = crate::limits::KEYS.iter().filter_map(|k| table.remove_entry(*k)).collect();
                let store: toml::Table =
                    crate::store_args::KEYS.iter().filter_map(|k| table.remove_entry(*k)).collect();
                let policy: toml::Table =
                    crate::policy::POLICY_KEYS.iter().filter_map(|k| table.remove_entry(*k)).collect();
                let mut file: FileConfig =
                    toml::Value::Table(table).try_into().with_context(|| format!("config file {}", p.display()))?;
                file.vault =
                    toml::Value::Table(vault).try_into().with_context(|| format!("config file {}", p.display()))?;
                file.limits =
                    toml::Value::Table(limits).try_into().with_context(|| format!("config file {}", p.display()))?;
                file.store =
                    toml::Value::Table(store).try_into().with_context(|| format!("config file {}", p.display()))?;
                file.policy =
                    toml::Value::Table(policy).try_into().with_context(|| format!("config file {}", p.display()))?;
                Ok(file)
            }
        }
    }

    /// Merge flags/env over the file over the defaults.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = self.file()?;
        let d = ServeConfig::default();
        let vault = self.vault.clone().merge(file.vault.clone()).resolve()?;
        let (limits, jwt_allow_http) = self.limits.clone().resolve(file.limits.clone())?;
        let file_dur = |v: Option<String>, key: &str| -> anyhow::Result<Option<Duration>> {
            v.map(|s| duration(&s).map_err(|e| anyhow::anyhow!("config file: {key}: {e}"))).transpose()
        };
        let issuers = self.jwt_issuer.or(file.jwt_issuer).unwrap_or_default();
        let jwt_issuers = parse_jwt_issuers(&issuers)?;
        let trusted = self.trusted_node_accounts.or(file.trusted_node_accounts).unwrap_or_default();
        for t in &trusted {
            let ok = t.split_once('/').is_some_and(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains('/'));
            anyhow::ensure!(ok, "--trusted-node-accounts: {t:?} is not of the form namespace/serviceaccount");
        }
        let cfg = ServeConfig {
            ca_dir: self.ca_dir.or(file.ca_dir).unwrap_or(d.ca_dir),
            data_dir: self.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            trust_domain: self.trust_domain.or(file.trust_domain).unwrap_or(d.trust_domain),
            grpc_addr: self.grpc_addr.or(file.grpc_addr).unwrap_or(d.grpc_addr),
            http_addr: self.http_addr.or(file.http_addr).unwrap_or(d.http_addr),
            plaintext: self.plaintext.or(file.plaintext).unwrap_or(d.plaintext),
            serving_dns: self.serving_dns.or(file.serving_dns).unwrap_or(d.serving_dns),
            default_ttl: self.default_ttl.or(file_dur(file.default_ttl, "default_ttl")?).unwrap_or(d.default_ttl),
            max_ttl: self.max_ttl.or(file_dur(file.max_ttl, "max_ttl")?).unwrap_or(d.max_ttl),
            jwt_issuers,
            token_audience: self.token_audience.or(file.token_audience).unwrap_or(d.token_audience),
            trusted_node_accounts: trusted,
            self_signed_key: self.self_signed_key.or(file.self_signed_key).unwrap_or(d.self_signed_key),
            self_signed_ttl: self
                .self_signed_ttl
                .or(file_dur(file.self_signed_ttl, "self_signed_ttl")?)
                .unwrap_or(d.self_signed_ttl),
            allow_root_replace: self.allow_root_replace.or(file.allow_root_replace).unwrap_or(d.allow_root_replace),
            reload_poll_interval: self
                .reload_poll_interval
                .or(file_dur(file.reload_poll_interval, "reload_poll_interval")?)
                .unwrap_or(d.reload_poll_interval),
            root_propagation_delay: self
                .root_propagation_delay
                .or(file_dur(file.root_propagation_delay, "root_propagation_delay")?),
            vault,
            limits,
            jwt_allow_http,
            ..d
        };
        meshca_pki::SpiffeId::new(&cfg.trust_domain, "ns", "sa").map_err(|e| anyhow::anyhow!("--trust-domain: {e}"))?;
        anyhow::ensure!(
            cfg.default_ttl <= cfg.max_ttl,
            "--default-ttl ({:?}) is longer than --max-ttl ({:?})",
            cfg.default_ttl,
            cfg.max_ttl
        );
        Ok(cfg)
    }
}

/// `--jwt-issuer ISSUER=SOURCE` values as (issuer, source) pairs; blank entries are ignored.
pub fn parse_jwt_issuers(issuers: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    issuers
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.split_once('=')
                .map(|(i, src)| (i.trim().to_string(), src.trim().to_string()))
                .filter(|(i, src)| !i.is_empty() && !src.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("--jwt-issuer {s:?}: expected ISSUER=SOURCE (a JWKS file, a JWKS URL, or oidc)")
                })
        })
        .collect()
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let store = args.store.clone().merge(args.file()?.store);
    let policy = args.policy.clone().merge(args.file()?.policy);
    let mut cfg = args.resolve()?;
    cfg.policy = policy.config(&cfg)?;
    cfg.store = store.config(&cfg.trust_domain, cfg.grpc_addr)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move { meshca_ca::server::run(cfg, shutdown_signal()).await })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

// --- Vault/OpenBao CA source (see crates/meshca-ca/src/vault) ---

/// `--vault-*` flags; the TOML keys are the same names with `_`.
#[derive(Args, Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultArgs {
    /// Vault/OpenBao address (https://host:8200); makes Vault the CA source
    #[arg(long, env = "MESHCA_VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// vault-upstream (meshca's own intermediate, signed by Vault) or vault-kv (read cert, chain, root and key) [default: vault-upstream]
    #[arg(long, env = "MESHCA_VAULT_MODE")]
    pub vault_mode: Option<String>,
    /// PEM CA bundle trusted for TLS to Vault
    #[arg(long, env = "MESHCA_VAULT_CA_FILE")]
    pub vault_ca_file: Option<PathBuf>,
    /// Vault namespace (X-Vault-Namespace)
    #[arg(long, env = "MESHCA_VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// token, approle, jwt or kubernetes [default: approle with --vault-role-id, kubernetes/jwt with --vault-auth-role, else token]
    #[arg(long, env = "MESHCA_VAULT_AUTH")]
    pub vault_auth: Option<String>,
    /// Vault token (prefer the environment variable or --vault-token-file)
    #[arg(long, env = "MESHCA_VAULT_TOKEN", hide_env_values = true)]
    pub vault_token: Option<String>,
    /// File holding the Vault token (re-read at every login; e.g. a Vault agent sink)
    #[arg(long, env = "MESHCA_VAULT_TOKEN_FILE")]
    pub vault_token_file: Option<PathBuf>,
    /// Mount of the auth method [default: approle, jwt or kubernetes]
    #[arg(long, env = "MESHCA_VAULT_AUTH_MOUNT")]
    pub vault_auth_mount: Option<String>,
    /// AppRole role ID
    #[arg(long, env = "MESHCA_VAULT_ROLE_ID")]
    pub vault_role_id: Option<String>,
    /// File holding the AppRole secret ID
    #[arg(long, env = "MESHCA_VAULT_SECRET_ID_FILE")]
    pub vault_secret_id_file: Option<PathBuf>,
    /// Role of the JWT/Kubernetes auth method
    #[arg(long, env = "MESHCA_VAULT_AUTH_ROLE")]
    pub vault_auth_role: Option<String>,
    /// Service-account token for JWT/Kubernetes auth [default: /var/run/secrets/kubernetes.io/serviceaccount/token]
    #[arg(long, env = "MESHCA_VAULT_JWT_FILE")]
    pub vault_jwt_file: Option<PathBuf>,
    /// vault-upstream: PKI mount that signs meshca's intermediate [default: pki_int]
    #[arg(long, env = "MESHCA_VAULT_PKI_MOUNT")]
    pub vault_pki_mount: Option<String>,
    /// vault-upstream: lifetime requested for each intermediate; rotated at half-life [default: 48h]
    #[arg(long, env = "MESHCA_VAULT_INTERMEDIATE_TTL")]
    pub vault_intermediate_ttl: Option<String>,
    /// vault-upstream: key type of the intermediate (kept in memory only) [default: ec-p256]
    #[arg(long, env = "MESHCA_VAULT_INTERMEDIATE_KEY")]
    pub vault_intermediate_key: Option<KeyKind>,
    /// vault-upstream: common name of the intermediate [default: "meshca intermediate <hostname>"]
    #[arg(long, env = "MESHCA_VAULT_COMMON_NAME")]
    pub vault_common_name: Option<String>,
    /// vault-kv: signing certificate [default: pki_int/cert/ca]
    #[arg(long, env = "MESHCA_VAULT_CERT_PATH")]
    pub vault_cert_path: Option<String>,
    /// vault-kv: CA chain [default: pki_int/cert/ca_chain]
    #[arg(long, env = "MESHCA_VAULT_CHAIN_PATH")]
    pub vault_chain_path: Option<String>,
    /// Root certificate [vault-kv default: pki/cert/ca; vault-upstream default: the top of the returned chain]
    #[arg(long, env = "MESHCA_VAULT_ROOT_PATH")]
    pub vault_root_path: Option<String>,
    /// vault-kv: KV secret holding the key, v1 or v2 [default: kv/istioca]
    #[arg(long, env = "MESHCA_VAULT_KEY_PATH")]
    pub vault_key_path: Option<String>,
    /// vault-kv: field of the secret holding the PEM key [default: ca-key.pem]
    #[arg(long, env = "MESHCA_VAULT_KEY_FIELD")]
    pub vault_key_field: Option<String>,
    /// vault-kv: how often Vault is read [default: 30s]
    #[arg(long, env = "MESHCA_VAULT_POLL_INTERVAL")]
    pub vault_poll_interval: Option<String>,
}

impl VaultArgs {
    /// Flags/environment over the file.
    fn merge(self, file: VaultArgs) -> VaultArgs {
        macro_rules! m { ($($f:ident),*) => { VaultArgs { $($f: self.$f.or(file.$f)),* } } }
        m!(
            vault_addr,
            vault_mode,
            vault_ca_file,
            vault_namespace,
            vault_auth,
            vault_token,
            vault_token_file,
            vault_auth_mount,
            vault_role_id,
            vault_secret_id_file,
            vault_auth_role,
            vault_jwt_file,
            vault_pki_mount,
            vault_intermediate_ttl,
            vault_intermediate_key,
            vault_common_name,
            vault_cert_path,
            vault_chain_path,
            vault_root_path,
            vault_key_path,
            vault_key_field,
            vault_poll_interval
        )
    }

    fn resolve(self) -> anyhow::Result<Option<meshca_ca::vault::VaultConfig>> {
        use meshca_ca::vault::{AuthConfig, VaultConfig};
        let Some(addr) = self.vault_addr.filter(|a| !a.trim().is_empty()) else {
            return Ok(None);
        };
        let dur = |v: Option<String>, flag: &str| -> anyhow::Result<Option<Duration>> {
            v.map(|s| duration(&s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))).transpose()
        };
        let method = match self.vault_auth.as_deref() {
            Some(m) => m.to_string(),
            None if self.vault_role_id.is_some() => "approle".into(),
            None if self.vault_auth_role.is_some() => {
                if self.vault_jwt_file.is_some() { "jwt" } else { "kubernetes" }.into()
            }
            None => "token".into(),
        };
        let auth = match method.as_str() {
            "token" => {
                anyhow::ensure!(
                    self.vault_token.is_some() || self.vault_token_file.is_some(),
                    "--vault-addr is set but no Vault credentials are: give MESHCA_VAULT_TOKEN, --vault-token-file, \
                     --vault-role-id with --vault-secret-id-file (AppRole), or --vault-auth-role (Kubernetes/JWT)"
                );
                AuthConfig::token(self.vault_token, self.vault_token_file)
            }
            "approle" => AuthConfig::AppRole {
                mount: self.vault_auth_mount.unwrap_or_else(|| "approle".into()),
                role_id: self
                    .vault_role_id
                    .ok_or_else(|| anyhow::anyhow!("--vault-auth approle needs --vault-role-id"))?,
                secret_id: None,
                secret_id_file: self.vault_secret_id_file,
            },
            kind @ ("jwt" | "kubernetes") => AuthConfig::Jwt {
                kind: if kind == "jwt" { "jwt" } else { "kubernetes" },
                mount: self.vault_auth_mount.unwrap_or_else(|| kind.to_string()),
                role: self
                    .vault_auth_role
                    .ok_or_else(|| anyhow::anyhow!("--vault-auth {kind} needs --vault-auth-role"))?,
                jwt_file: self.vault_jwt_file.unwrap_or_else(|| PathBuf::from(meshca_ca::vault::auth::K8S_TOKEN_FILE)),
            },
            other => anyhow::bail!("--vault-auth {other:?}: expected token, approle, jwt or kubernetes"),
        };
        let mut cfg = VaultConfig::new(addr, auth);
        if let Some(m) = self.vault_mode {
            cfg.mode = m.parse().map_err(|e: String| anyhow::anyhow!("--vault-mode: {e}"))?;
        }
        cfg.ca_file = self.vault_ca_file;
        cfg.namespace = self.vault_namespace;
        if let Some(m) = self.vault_pki_mount {
            cfg.upstream.mount = m;
        }
        if let Some(t) = dur(self.vault_intermediate_ttl, "vault-intermediate-ttl")? {
            anyhow::ensure!(t >= Duration::from_secs(10), "--vault-intermediate-ttl must be at least 10s");
            cfg.upstream.ttl = t;
        }
        if let Some(k) = self.vault_intermediate_key {
            cfg.upstream.key = k;
        }
        if let Some(cn) = self.vault_common_name {
            cfg.upstream.common_name = cn;
        }
        cfg.upstream.root_path = self.vault_root_path.clone();
        let kv = &mut cfg.kv;
        for (dst, src) in [
            (&mut kv.cert, self.vault_cert_path),
            (&mut kv.chain, self.vault_chain_path),
            (&mut kv.root, self.vault_root_path),
            (&mut kv.key, self.vault_key_path),
            (&mut kv.key_field, self.vault_key_field),
        ] {
            if let Some(v) = src {
                *dst = v.trim_matches('/').to_string();
            }
        }
        if let Some(p) = dur(self.vault_poll_interval, "vault-poll-interval")? {
            anyhow::ensure!(p >= Duration::from_millis(100), "--vault-poll-interval must be at least 100ms");
            cfg.poll_interval = p;
        }
        Ok(Some(cfg))
    }
}

#[cfg(test)]
#[path = "serve_fuzz_corpus.rs"]
mod fuzz_corpus;
