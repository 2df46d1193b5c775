//! The resolved configuration of `meshca serve` (the binary merges the TOML
//! file, `MESHCA_*` variables and flags into this).

use meshca_pki::KeyKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub ca_dir: PathBuf,
    pub data_dir: PathBuf,
    pub trust_domain: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub plaintext: bool,
    pub serving_dns: Vec<String>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// `(issuer, source)`; source is a JWKS file, a JWKS URL or `oidc`.
    pub jwt_issuers: Vec<(String, String)>,
    pub token_audience: String,
    /// `ns/sa` accounts allowed to use `ImpersonatedIdentity`.
    pub trusted_node_accounts: Vec<String>,
    pub self_signed_key: KeyKind,
    pub self_signed_ttl: Duration,
    /// Lifetime of the gRPC serving certificate (renewed at half-life).
    pub serving_ttl: Duration,
    /// Accept a new root bundle that shares no root with the current one.
    pub allow_root_replace: bool,
    /// Poll of the plug-in directory backing up file-change events.
    pub reload_poll_interval: Duration,
    /// How long a new root is published before a signer under it may sign
    /// when not every connected agent has confirmed it. `None`: the longest
    /// lifetime issued since start-up, capped at `max_ttl`.
    pub root_propagation_delay: Option<Duration>,
    /// Vault/OpenBao as the CA source (`--vault-addr`); `None`: plug-in directory or self-signed.
    pub vault: Option<crate::vault::VaultConfig>,
    /// Transport, audit and resource limits (see `limits.rs` and the README's "Limits").
    pub limits: crate::limits::Limits,
    /// Accept JWKS/OIDC over plain HTTP (`--jwt-allow-http`; warns).
    pub jwt_allow_http: bool,
    /// Policy delivery (`--policy-dir`); `None`: no policies served.
    pub policy: Option<crate::policy::PolicyOptions>,
    /// Shared store for several replicas (`--store`); `None`: the data directory only.
    pub store: Option<crate::ha::StoreConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            ca_dir: PathBuf::from("./etc/cacerts"),
            data_dir: PathBuf::from("./meshca-data"),
            trust_domain: "cluster.local".into(),
            grpc_addr: "127.0.0.1:15012".parse().expect("literal address"),
            http_addr: "127.0.0.1:15014".parse().expect("literal address"),
            plaintext: false,
            serving_dns: vec!["istiod.istio-system.svc".into(), "localhost".into()],
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            jwt_issuers: Vec::new(),
            token_audience: "istio-ca".into(),
            trusted_node_accounts: Vec::new(),
            self_signed_key: KeyKind::EcP256,
            self_signed_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
            serving_ttl: Duration::from_secs(24 * 3600),
            allow_root_replace: false,
            reload_poll_interval: Duration::from_secs(30),
            root_propagation_delay: None,
            vault: None,
            limits: crate::limits::Limits::default(),
            jwt_allow_http: false,
            policy: None,
            store: None,
        }
    }
}
