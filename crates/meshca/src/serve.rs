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
    /// Log format: text or json [default: text]
    #[arg(long, env = "MESHCA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Accept a plug-in root bundle that shares no root with the current one (cuts off existing workloads)
    #[arg(long, env = "MESHCA_ALLOW_ROOT_REPLACE", num_args = 0..=1, default_missing_value = "true")]
    pub allow_root_replace: Option<bool>,
    /// How often the plug-in directory is polled, in addition to file-change events [default: 30s]
    #[arg(long, env = "MESHCA_RELOAD_POLL_INTERVAL", value_parser = duration)]
    pub reload_poll_interval: Option<Duration>,
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
    log_format: Option<String>,
    allow_root_replace: Option<bool>,
    reload_poll_interval: Option<String>,
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
                toml::from_str(&text).with_context(|| format!("config file {}", p.display()))
            }
        }
    }

    /// Merge flags/env over the file over the defaults.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = self.file()?;
        let d = ServeConfig::default();
        let file_dur = |v: Option<String>, key: &str| -> anyhow::Result<Option<Duration>> {
            v.map(|s| duration(&s).map_err(|e| anyhow::anyhow!("config file: {key}: {e}"))).transpose()
        };
        let issuers = self.jwt_issuer.or(file.jwt_issuer).unwrap_or_default();
        let jwt_issuers = issuers
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
            .collect::<anyhow::Result<Vec<_>>>()?;
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
            allow_root_replace: self.allow_root_replace.or(file.allow_root_replace).unwrap_or(d.allow_root_replace),
            reload_poll_interval: self
                .reload_poll_interval
                .or(file_dur(file.reload_poll_interval, "reload_poll_interval")?)
                .unwrap_or(d.reload_poll_interval),
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

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(meshca_ca::server::run(cfg, shutdown_signal()))
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
