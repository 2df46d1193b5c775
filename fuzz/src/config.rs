//! The `meshca serve` TOML file, parsed as `crates/meshca/src/serve.rs` and
//! `crates/meshca/src/limits.rs` do it (that crate is a binary, so its types
//! are mirrored here; keep the field lists in step). The real code replays
//! the `serve_config` corpus in `crates/meshca/src/serve_fuzz_corpus.rs`.

use meshca_pki::KeyKind;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Mirror of `serve::FileConfig` without the split-off tables.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
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
    root_propagation_delay: Option<String>,
}

/// Mirror of `serve::VaultArgs` (the `vault_*` keys).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct VaultKeys {
    vault_addr: Option<String>,
    vault_mode: Option<String>,
    vault_ca_file: Option<PathBuf>,
    vault_namespace: Option<String>,
    vault_auth: Option<String>,
    vault_token: Option<String>,
    vault_token_file: Option<PathBuf>,
    vault_auth_mount: Option<String>,
    vault_role_id: Option<String>,
    vault_secret_id_file: Option<PathBuf>,
    vault_auth_role: Option<String>,
    vault_jwt_file: Option<PathBuf>,
    vault_pki_mount: Option<String>,
    vault_intermediate_ttl: Option<String>,
    vault_intermediate_key: Option<KeyKind>,
    vault_common_name: Option<String>,
    vault_cert_path: Option<String>,
    vault_chain_path: Option<String>,
    vault_root_path: Option<String>,
    vault_key_path: Option<String>,
    vault_key_field: Option<String>,
    vault_poll_interval: Option<String>,
}

/// Mirror of `limits::LimitArgs`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LimitKeys {
    grpc_max_concurrent_streams: Option<u32>,
    grpc_max_message_size: Option<usize>,
    grpc_max_pending_accept_reset_streams: Option<usize>,
    grpc_max_local_reset_streams: Option<usize>,
    grpc_request_timeout: Option<String>,
    grpc_idle_timeout: Option<String>,
    grpc_keepalive_interval: Option<String>,
    grpc_keepalive_timeout: Option<String>,
    grpc_max_connection_age: Option<String>,
    grpc_max_connections: Option<usize>,
    grpc_max_inflight: Option<usize>,
    tls_handshake_timeout: Option<String>,
    http_max_connections: Option<usize>,
    http_header_read_timeout: Option<String>,
    http_request_timeout: Option<String>,
    http_max_long_polls: Option<usize>,
    http_long_poll_max_wait: Option<String>,
    audit_max_file_bytes: Option<u64>,
    audit_keep_files: Option<usize>,
    audit_queue_bytes: Option<usize>,
    audit_required: Option<bool>,
    jwt_allow_http: Option<bool>,
}

/// Mirror of `limits::KEYS`.
const LIMIT_KEYS: &[&str] = &[
    "grpc_max_concurrent_streams",
    "grpc_max_message_size",
    "grpc_max_pending_accept_reset_streams",
    "grpc_max_local_reset_streams",
    "grpc_request_timeout",
    "grpc_idle_timeout",
    "grpc_keepalive_interval",
    "grpc_keepalive_timeout",
    "grpc_max_connection_age",
    "grpc_max_connections",
    "grpc_max_inflight",
    "tls_handshake_timeout",
    "http_max_connections",
    "http_header_read_timeout",
    "http_request_timeout",
    "http_max_long_polls",
    "http_long_poll_max_wait",
    "audit_max_file_bytes",
    "audit_keep_files",
    "audit_queue_bytes",
    "audit_required",
    "jwt_allow_http",
];

fn durations(values: &[&Option<String>]) -> Result<(), String> {
    for v in values.iter().filter_map(|v| v.as_deref()) {
        humantime::parse_duration(v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Parse a config text as `meshca serve --config` does, durations included.
pub fn parse(text: &str) -> Result<(), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let vault_keys: Vec<String> = table.keys().filter(|k| k.starts_with("vault_")).cloned().collect();
    let vault: toml::Table = vault_keys.iter().filter_map(|k| table.remove_entry(k)).collect();
    let limits: toml::Table = LIMIT_KEYS.iter().filter_map(|k| table.remove_entry(*k)).collect();
    let file: FileConfig = toml::Value::Table(table).try_into().map_err(|e| e.to_string())?;
    let vault: VaultKeys = toml::Value::Table(vault).try_into().map_err(|e| e.to_string())?;
    let limits: LimitKeys = toml::Value::Table(limits).try_into().map_err(|e| e.to_string())?;
    durations(&[&file.default_ttl, &file.max_ttl, &file.reload_poll_interval, &file.root_propagation_delay])?;
    durations(&[&vault.vault_intermediate_ttl, &vault.vault_poll_interval])?;
    durations(&[
        &limits.grpc_request_timeout,
        &limits.grpc_idle_timeout,
        &limits.grpc_keepalive_interval,
        &limits.grpc_keepalive_timeout,
        &limits.grpc_max_connection_age,
        &limits.tls_handshake_timeout,
        &limits.http_header_read_timeout,
        &limits.http_request_timeout,
        &limits.http_long_poll_max_wait,
    ])?;
    if let Some(td) = &file.trust_domain {
        meshca_pki::SpiffeId::new(td, "ns", "sa").map_err(|e| e.to_string())?;
    }
    Ok(())
}
