//! Transport and resource limits of `meshca serve` (both ports, the audit
//! log), their defaults, and the counters that say when one was hit.
//!
//! Every limit has a flag (see the README's "Limits" section). The defaults
//! keep one unauthenticated client from holding more than a few MiB of memory
//! or more than its share of file descriptors, while leaving room for
//! thousands of workloads renewing at once.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The resolved limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// HTTP/2 streams one gRPC connection may have open at once.
    pub grpc_max_concurrent_streams: u32,
    /// Largest gRPC message accepted: room for the largest CSR the CSR policy
    /// accepts (64 KiB of PEM; real ones are 1-4 KiB) and the request metadata.
    pub grpc_max_message_size: usize,
    /// Streams the client resets before the server accepted them, per
    /// connection (HTTP/2 "rapid reset" protection).
    pub grpc_max_pending_accept_reset_streams: usize,
    /// Streams the server resets (client errors, or an answer sent before the
    /// request body was read), per connection, before it is closed.
    pub grpc_max_local_reset_streams: usize,
    /// A CreateCertificate request (reading its body included) must finish in this time.
    pub grpc_request_timeout: Duration,
    /// A gRPC connection with no request in flight for this long is closed.
    pub grpc_idle_timeout: Duration,
    /// HTTP/2 PING interval on gRPC connections (dead-peer detection).
    pub grpc_keepalive_interval: Duration,
    /// A PING not answered in this time closes the connection.
    pub grpc_keepalive_timeout: Duration,
    /// Connections are asked to go away (GOAWAY) after this age, then given a minute to finish.
    pub grpc_max_connection_age: Duration,
    /// gRPC connections (TLS handshakes in progress included); more are closed at accept.
    pub grpc_max_connections: usize,
    /// CreateCertificate requests being handled at once, over all connections;
    /// more wait (body unread) within the request timeout, then get RESOURCE_EXHAUSTED.
    pub grpc_max_inflight: usize,
    /// CreateCertificate requests in progress from one IP address; more wait
    /// (body unread) within the request timeout, then get RESOURCE_EXHAUSTED.
    pub grpc_max_inflight_per_peer: usize,
    /// A TLS handshake must complete in this time.
    pub tls_handshake_timeout: Duration,
    /// Kernel accept queue of each listening port (capped by `net.core.somaxconn`):
    /// room for a restart storm's connections while the accept loop is busy;
    /// beyond it the kernel drops connection attempts and clients wait a SYN retransmit (1 s, 3 s, ...).
    pub listen_backlog: u32,
    /// HTTP connections open at once; more are closed at accept.
    pub http_max_connections: usize,
    /// The request line and headers must arrive in this time (also closes idle keep-alive connections).
    pub http_header_read_timeout: Duration,
    /// An HTTP request (long-polls: on top of their wait) must be answered in this time.
    pub http_request_timeout: Duration,
    /// Concurrent `/root-cert.pem?wait=` long-polls; more are answered 503 with Retry-After.
    pub http_max_long_polls: usize,
    /// Longest `?wait=` honoured.
    pub http_long_poll_max_wait: Duration,
    /// The audit file is rotated (audit.jsonl -> audit.jsonl.1 ...) when it reaches this size.
    pub audit_max_file_bytes: u64,
    /// Rotated audit files kept.
    pub audit_keep_files: usize,
    /// Bytes of audit records waiting to be written; records beyond are dropped and counted.
    pub audit_queue_bytes: usize,
    /// Refuse issuance (UNAVAILABLE) while the audit log cannot be written.
    pub audit_required: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            grpc_max_concurrent_streams: 100,
            grpc_max_message_size: 128 * 1024,
            grpc_max_pending_accept_reset_streams: 20,
            grpc_max_local_reset_streams: 1024,
            grpc_request_timeout: Duration::from_secs(10),
            grpc_idle_timeout: Duration::from_secs(300),
            grpc_keepalive_interval: Duration::from_secs(60),
            grpc_keepalive_timeout: Duration::from_secs(20),
            grpc_max_connection_age: Duration::from_secs(30 * 60),
            grpc_max_connections: 16_384,
            grpc_max_inflight: 1024,
            grpc_max_inflight_per_peer: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            listen_backlog: 4096,
            http_max_connections: 4096,
            http_header_read_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(30),
            http_max_long_polls: 2048,
            http_long_poll_max_wait: Duration::from_secs(300),
            audit_max_file_bytes: 100 * 1024 * 1024,
            audit_keep_files: 3,
            audit_queue_bytes: 16 * 1024 * 1024,
            audit_required: false,
        }
    }
}

/// Descriptors kept free for files, Vault/JWKS clients and the accept loops themselves.
const FD_RESERVE: u64 = 64;

impl Limits {
    /// Shrink the connection caps so that both ports together fit in `nofile`
    /// descriptors (one TCP connection is one descriptor). Returns a warning
    /// when something had to give.
    pub fn fit_descriptors(&mut self, nofile: u64) -> Option<String> {
        let budget = nofile.saturating_sub(FD_RESERVE) as usize;
        let wanted = self.grpc_max_connections + self.http_max_connections;
        if wanted <= budget {
            return None;
        }
        let http = self.http_max_connections.min(budget / 4).max(1);
        let grpc = budget.saturating_sub(http).max(1);
        let msg = format!(
            "the open-file limit is {nofile}: connection caps lowered from {}/{} to {grpc}/{http} (gRPC/HTTP); \
             raise the hard limit (ulimit -Hn, LimitNOFILE=) for more",
            self.grpc_max_connections, self.http_max_connections
        );
        self.grpc_max_connections = grpc;
        self.http_max_connections = http;
        Some(msg)
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft before, soft now).
pub fn raise_nofile() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let cur = getrlimit(Resource::Nofile);
    let before = cur.current.unwrap_or(u64::MAX);
    if cur.current.is_some() && cur.current != cur.maximum {
        let new = rustix::process::Rlimit { current: cur.maximum, maximum: cur.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, new) {
            tracing::warn!(error = %e, "could not raise the open-file soft limit to the hard limit");
            return (before, before);
        }
    }
    (before, getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Counters of limits that were hit, rendered with the other metrics.
#[derive(Debug, Default)]
pub struct LimitCounters {
    pub grpc_connections_refused: AtomicU64,
    pub grpc_idle_closed: AtomicU64,
    pub grpc_handshake_failures: AtomicU64,
    pub grpc_requests_shed: AtomicU64,
    pub grpc_requests_timed_out: AtomicU64,
    pub grpc_no_credential: AtomicU64,
    pub http_connections_refused: AtomicU64,
    pub http_requests_timed_out: AtomicU64,
    pub http_long_polls_refused: AtomicU64,
    pub audit_write_failures: AtomicU64,
    pub audit_bytes_dropped: AtomicU64,
    pub audit_rotations: AtomicU64,
    /// 1 while the audit log cannot be written.
    pub audit_failing: AtomicU64,
}

impl LimitCounters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Append the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            "meshca_grpc_connections_refused_total",
            "gRPC connections closed at accept because --grpc-max-connections were open.",
            &self.grpc_connections_refused,
        );
        counter(
            "meshca_grpc_idle_connections_closed_total",
            "gRPC connections closed after --grpc-idle-timeout without a request.",
            &self.grpc_idle_closed,
        );
        counter(
            "meshca_grpc_tls_handshake_failures_total",
            "TLS handshakes on the gRPC port that failed or timed out.",
            &self.grpc_handshake_failures,
        );
        counter(
            "meshca_grpc_requests_shed_total",
            "CreateCertificate requests refused (RESOURCE_EXHAUSTED) because --grpc-max-inflight were in progress.",
            &self.grpc_requests_shed,
        );
        counter(
            "meshca_grpc_requests_timed_out_total",
            "CreateCertificate requests cut off by --grpc-request-timeout.",
            &self.grpc_requests_timed_out,
        );
        counter(
            "meshca_grpc_requests_without_credential_total",
            "Requests refused before their body was read: no bearer token, no client certificate, or a token \
             from an issuer that is not trusted.",
            &self.grpc_no_credential,
        );
        counter(
            "meshca_http_connections_refused_total",
            "HTTP connections closed at accept because --http-max-connections were open.",
            &self.http_connections_refused,
        );
        counter(
            "meshca_http_requests_timed_out_total",
            "HTTP requests cut off by --http-request-timeout.",
            &self.http_requests_timed_out,
        );
        counter(
            "meshca_http_long_polls_refused_total",
            "Trust-bundle long-polls answered 503 because --http-max-long-polls were waiting.",
            &self.http_long_polls_refused,
        );
        counter(
            "meshca_audit_write_failures_total",
            "Failed writes of the audit log (disk full, I/O error); /readyz fails while they last.",
            &self.audit_write_failures,
        );
        counter(
            "meshca_audit_bytes_dropped_total",
            "Bytes of audit records dropped (queue over --audit-queue-bytes, or the write failed).",
            &self.audit_bytes_dropped,
        );
        counter(
            "meshca_audit_rotations_total",
            "Audit file rotations (--audit-max-file-bytes).",
            &self.audit_rotations,
        );
        let _ = writeln!(
            out,
            "# HELP meshca_audit_failing 1 while the audit log cannot be written.\n# TYPE meshca_audit_failing gauge\nmeshca_audit_failing {}",
            self.audit_failing.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP meshca_log_lines_suppressed_total Log lines dropped by the per-call-site rate limit.\n# TYPE meshca_log_lines_suppressed_total counter\nmeshca_log_lines_suppressed_total {}",
            crate::logging::suppressed_total()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_a_small_descriptor_limit() {
        let mut l = Limits::default();
        assert!(l.fit_descriptors(1 << 20).is_none());
        let w = l.fit_descriptors(1024).expect("must shrink");
        assert!(w.contains("1024"), "{w}");
        assert!(l.grpc_max_connections + l.http_max_connections <= 1024 - 64);
        assert_eq!(l.http_max_connections, 240);
    }
}
