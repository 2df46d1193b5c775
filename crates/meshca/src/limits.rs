//! `meshca serve` flags for transport, audit and resource limits (see
//! `meshca_ca::limits` and the README's "Limits"); the TOML keys are the
//! flag names with `_`.

use clap::Args;
use meshca_ca::limits::Limits;
use serde::Deserialize;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 5m)"))
}

/// The TOML keys handled here (split off the file before the rest is parsed).
pub const KEYS: &[&str] = &[
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
    "grpc_max_inflight_per_peer",
    "tls_handshake_timeout",
    "listen_backlog",
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

#[derive(Args, Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitArgs {
    /// HTTP/2 streams one gRPC connection may have open at once [default: 100]
    #[arg(long, env = "MESHCA_GRPC_MAX_CONCURRENT_STREAMS")]
    pub grpc_max_concurrent_streams: Option<u32>,
    /// Largest gRPC request message in bytes; a CSR is 1-4 KiB [default: 131072]
    #[arg(long, env = "MESHCA_GRPC_MAX_MESSAGE_SIZE")]
    pub grpc_max_message_size: Option<usize>,
    /// Streams a client may reset before the server accepts them, per connection [default: 20]
    #[arg(long, env = "MESHCA_GRPC_MAX_PENDING_ACCEPT_RESET_STREAMS")]
    pub grpc_max_pending_accept_reset_streams: Option<usize>,
    /// Streams the server may reset for client errors, per connection, before closing it [default: 1024]
    #[arg(long, env = "MESHCA_GRPC_MAX_LOCAL_RESET_STREAMS")]
    pub grpc_max_local_reset_streams: Option<usize>,
    /// A CreateCertificate request, body included, must finish in this time [default: 10s]
    #[arg(long, env = "MESHCA_GRPC_REQUEST_TIMEOUT")]
    pub grpc_request_timeout: Option<String>,
    /// A gRPC connection without a request in flight for this long is closed [default: 5m]
    #[arg(long, env = "MESHCA_GRPC_IDLE_TIMEOUT")]
    pub grpc_idle_timeout: Option<String>,
    /// HTTP/2 PING interval on gRPC connections [default: 60s]
    #[arg(long, env = "MESHCA_GRPC_KEEPALIVE_INTERVAL")]
    pub grpc_keepalive_interval: Option<String>,
    /// An unanswered PING closes the connection after this [default: 20s]
    #[arg(long, env = "MESHCA_GRPC_KEEPALIVE_TIMEOUT")]
    pub grpc_keepalive_timeout: Option<String>,
    /// gRPC connections get GOAWAY after this age (plus 60s grace) [default: 30m]
    #[arg(long, env = "MESHCA_GRPC_MAX_CONNECTION_AGE")]
    pub grpc_max_connection_age: Option<String>,
    /// gRPC connections, TLS handshakes included; more are closed at accept [default: 16384]
    #[arg(long, env = "MESHCA_GRPC_MAX_CONNECTIONS")]
    pub grpc_max_connections: Option<usize>,
    /// CreateCertificate requests in progress at once; more wait, then get RESOURCE_EXHAUSTED [default: 1024]
    #[arg(long, env = "MESHCA_GRPC_MAX_INFLIGHT")]
    pub grpc_max_inflight: Option<usize>,
    /// CreateCertificate requests in progress from one IP address; more wait, then get RESOURCE_EXHAUSTED [default: 256]
    #[arg(long, env = "MESHCA_GRPC_MAX_INFLIGHT_PER_PEER")]
    pub grpc_max_inflight_per_peer: Option<usize>,
    /// A TLS handshake on the gRPC port must complete in this time [default: 10s]
    #[arg(long, env = "MESHCA_TLS_HANDSHAKE_TIMEOUT")]
    pub tls_handshake_timeout: Option<String>,
    /// Kernel accept queue of the gRPC and HTTP ports (the kernel caps it at net.core.somaxconn);
    /// connections beyond it wait for a SYN retransmit (1 s, 3 s, ...) [default: 4096]
    #[arg(long, env = "MESHCA_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// HTTP connections open at once; more are closed at accept [default: 4096]
    #[arg(long, env = "MESHCA_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Request line and headers must arrive in this time; also closes idle keep-alive connections [default: 10s]
    #[arg(long, env = "MESHCA_HTTP_HEADER_READ_TIMEOUT")]
    pub http_header_read_timeout: Option<String>,
    /// An HTTP request must be answered in this time (long-polls: on top of their wait) [default: 30s]
    #[arg(long, env = "MESHCA_HTTP_REQUEST_TIMEOUT")]
    pub http_request_timeout: Option<String>,
    /// Concurrent /root-cert.pem?wait= long-polls; more get 503 [default: 2048]
    #[arg(long, env = "MESHCA_HTTP_MAX_LONG_POLLS")]
    pub http_max_long_polls: Option<usize>,
    /// Longest ?wait= honoured [default: 300s]
    #[arg(long, env = "MESHCA_HTTP_LONG_POLL_MAX_WAIT")]
    pub http_long_poll_max_wait: Option<String>,
    /// Rotate audit.jsonl at this size in bytes [default: 104857600]
    #[arg(long, env = "MESHCA_AUDIT_MAX_FILE_BYTES")]
    pub audit_max_file_bytes: Option<u64>,
    /// Rotated audit files kept (audit.jsonl.1 ...) [default: 3]
    #[arg(long, env = "MESHCA_AUDIT_KEEP_FILES")]
    pub audit_keep_files: Option<usize>,
    /// Bytes of audit records waiting to be written; more are dropped and counted [default: 16777216]
    #[arg(long, env = "MESHCA_AUDIT_QUEUE_BYTES")]
    pub audit_queue_bytes: Option<usize>,
    /// Refuse issuance (UNAVAILABLE) while the audit log cannot be written [default: false: issue, fail /readyz]
    #[arg(long, env = "MESHCA_AUDIT_REQUIRED", num_args = 0..=1, default_missing_value = "true")]
    pub audit_required: Option<bool>,
    /// Accept JWKS / OIDC discovery over plain http:// (lab use only; logs a warning) [default: false]
    #[arg(long, env = "MESHCA_JWT_ALLOW_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub jwt_allow_http: Option<bool>,
}

impl LimitArgs {
    /// Resolve flags/environment over the file over the defaults: (limits, jwt_allow_http).
    pub fn resolve(self, file: LimitArgs) -> anyhow::Result<(Limits, bool)> {
        let d = Limits::default();
        let dur = |flag: Option<String>, file: Option<String>, name: &str, def: Duration| -> anyhow::Result<Duration> {
            match flag.or(file) {
                None => Ok(def),
                Some(s) => {
                    let v = duration(&s).map_err(|e| anyhow::anyhow!("--{}: {e}", name.replace('_', "-")))?;
                    anyhow::ensure!(!v.is_zero(), "--{}: must be more than 0", name.replace('_', "-"));
                    Ok(v)
                }
            }
        };
        macro_rules! num {
            ($f:ident) => {{
                let v = self.$f.or(file.$f).unwrap_or(d.$f);
                anyhow::ensure!(v > 0, "--{}: must be more than 0", stringify!($f).replace('_', "-"));
                v
            }};
        }
        macro_rules! time {
            ($f:ident) => {
                dur(self.$f.clone(), file.$f.clone(), stringify!($f), d.$f)?
            };
        }
        let limits = Limits {
            grpc_max_concurrent_streams: num!(grpc_max_concurrent_streams),
            grpc_max_message_size: num!(grpc_max_message_size),
            grpc_max_pending_accept_reset_streams: num!(grpc_max_pending_accept_reset_streams),
            grpc_max_local_reset_streams: num!(grpc_max_local_reset_streams),
            grpc_request_timeout: time!(grpc_request_timeout),
            grpc_idle_timeout: time!(grpc_idle_timeout),
            grpc_keepalive_interval: time!(grpc_keepalive_interval),
            grpc_keepalive_timeout: time!(grpc_keepalive_timeout),
            grpc_max_connection_age: time!(grpc_max_connection_age),
            grpc_max_connections: num!(grpc_max_connections),
            grpc_max_inflight: num!(grpc_max_inflight),
            grpc_max_inflight_per_peer: num!(grpc_max_inflight_per_peer),
            tls_handshake_timeout: time!(tls_handshake_timeout),
            listen_backlog: num!(listen_backlog),
            http_max_connections: num!(http_max_connections),
            http_header_read_timeout: time!(http_header_read_timeout),
            http_request_timeout: time!(http_request_timeout),
            http_max_long_polls: num!(http_max_long_polls),
            http_long_poll_max_wait: time!(http_long_poll_max_wait),
            audit_max_file_bytes: num!(audit_max_file_bytes),
            audit_keep_files: self.audit_keep_files.or(file.audit_keep_files).unwrap_or(d.audit_keep_files),
            audit_queue_bytes: num!(audit_queue_bytes),
            audit_required: self.audit_required.or(file.audit_required).unwrap_or(d.audit_required),
        };
        anyhow::ensure!(
            limits.grpc_max_message_size >= 4096,
            "--grpc-max-message-size: {} bytes cannot hold a CSR (at least 4096)",
            limits.grpc_max_message_size
        );
        Ok((limits, self.jwt_allow_http.or(file.jwt_allow_http).unwrap_or(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_are_named() {
        let flags = LimitArgs { grpc_request_timeout: Some("3s".into()), ..Default::default() };
        let file =
            LimitArgs { grpc_request_timeout: Some("7s".into()), http_max_connections: Some(9), ..Default::default() };
        let (l, http) = flags.resolve(file).unwrap();
        assert_eq!(l.grpc_request_timeout, Duration::from_secs(3));
        assert_eq!(l.http_max_connections, 9);
        assert!(!http);
        let bad = LimitArgs { http_header_read_timeout: Some("soon".into()), ..Default::default() };
        let e = bad.resolve(LimitArgs::default()).unwrap_err().to_string();
        assert!(e.contains("--http-header-read-timeout"), "{e}");
        let zero = LimitArgs { grpc_max_inflight: Some(0), ..Default::default() };
        assert!(zero.resolve(LimitArgs::default()).unwrap_err().to_string().contains("--grpc-max-inflight"));
    }
}
