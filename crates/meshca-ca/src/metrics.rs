//! Prometheus metrics, hand-rolled on atomics so the issuing path never takes
//! a lock to count. Names keep Istio's `citadel_server_*` series alongside
//! meshca's own. Expiry gauges are computed from the active CA material at
//! scrape time, so they can never go stale after a reload.
//!
//! Istio's counters are exposed with the `_total` suffix
//! (`citadel_server_csr_count_total`, ...), the form OpenTelemetry's
//! Prometheus exporter gives them, because `promtool check metrics` refuses a
//! counter named `..._count`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Upper bounds (seconds) of the issuance latency histogram.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Why a request was refused, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Authentication,
    Csr,
    Ttl,
    Signing,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Authentication => "authentication",
            Refusal::Csr => "csr",
            Refusal::Ttl => "ttl",
            Refusal::Signing => "signing",
        }
    }
    const ALL: [Refusal; 4] = [Refusal::Authentication, Refusal::Csr, Refusal::Ttl, Refusal::Signing];
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub csr_count: AtomicU64,
    pub auth_failures: AtomicU64,
    pub sign_errors: AtomicU64,
    pub issued: AtomicU64,
    refusals: [AtomicU64; 4],
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub audit_dropped: AtomicU64,
    /// Transport, audit and log limits that were hit (see `limits.rs`).
    pub limits: crate::limits::LimitCounters,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
}

/// Facts about the active material, read at scrape time.
pub struct MaterialFacts {
    pub roots: usize,
    /// Earliest NotAfter among the roots.
    pub root_expiry: SystemTime,
    /// Earliest NotAfter of the signing certificate and its chain.
    pub chain_expiry: SystemTime,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Metrics {
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_issuance(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos.fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, facts: Option<&MaterialFacts>, now: SystemTime) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter(&mut out, "citadel_server_csr_count_total", "The number of CSRs received.", &self.csr_count);
        counter(
            &mut out,
            "citadel_server_authentication_failure_count_total",
            "The number of authentication failures.",
            &self.auth_failures,
        );
        counter(
            &mut out,
            "citadel_server_csr_sign_err_count_total",
            "The number of errors occurred when signing the CSR.",
            &self.sign_errors,
        );
        counter(
            &mut out,
            "citadel_server_success_cert_issuance_count_total",
            "The number of certificates issuances that have succeeded.",
            &self.issued,
        );
        counter(
            &mut out,
            "meshca_ca_reload_total",
            "CA material reloads that were validated and swapped in.",
            &self.reloads,
        );
        counter(
            &mut out,
            "meshca_ca_reload_failures_total",
            "CA material reloads refused by validation; the previous material stayed active.",
            &self.reload_failures,
        );
        counter(
            &mut out,
            "meshca_audit_dropped_total",
            "Audit records dropped because the audit writer fell behind.",
            &self.audit_dropped,
        );
        let _ = writeln!(out, "# HELP meshca_requests_refused_total Certificate requests refused, by reason.\n# TYPE meshca_requests_refused_total counter");
        for r in Refusal::ALL {
            let _ = writeln!(
                out,
                "meshca_requests_refused_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.refusals[r as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP meshca_issuance_duration_seconds Time to handle a certificate request that was issued.\n# TYPE meshca_issuance_duration_seconds histogram");
        let mut cumulative = 0u64;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "meshca_issuance_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "meshca_issuance_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "meshca_issuance_duration_seconds_sum {}",
            self.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "meshca_issuance_duration_seconds_count {count}");
        if let Some(f) = facts {
            let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            };
            gauge(
                &mut out,
                "citadel_server_root_cert_expiry_timestamp",
                "The unix timestamp, in seconds, when the root cert will expire.",
                unix(f.root_expiry),
            );
            gauge(
                &mut out,
                "citadel_server_root_cert_expiry_seconds",
                "The time remaining, in seconds, before the root cert will expire.",
                unix(f.root_expiry) - unix(now),
            );
            gauge(
                &mut out,
                "citadel_server_cert_chain_expiry_timestamp",
                "The unix timestamp, in seconds, when the cert chain will expire.",
                unix(f.chain_expiry),
            );
            gauge(
                &mut out,
                "citadel_server_cert_chain_expiry_seconds",
                "The time remaining, in seconds, before the cert chain will expire.",
                unix(f.chain_expiry) - unix(now),
            );
            gauge(&mut out, "meshca_trust_roots", "Roots in the active trust bundle.", f.roots as f64);
        }
        self.limits.render(&mut out);
        let _ = writeln!(out, "# HELP meshca_build_info meshca version.\n# TYPE meshca_build_info gauge\nmeshca_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let m = Metrics::default();
        m.observe_issuance(Duration::from_micros(50));
        m.observe_issuance(Duration::from_millis(3));
        m.observe_issuance(Duration::from_secs(10));
        m.refused(Refusal::Csr);
        let out = m.render(None, SystemTime::now());
        assert!(out.contains("meshca_issuance_duration_seconds_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("meshca_issuance_duration_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("meshca_issuance_duration_seconds_bucket{le=\"2.5\"} 2\n"), "{out}");
        assert!(out.contains("meshca_issuance_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("meshca_issuance_duration_seconds_count 3\n"), "{out}");
        assert!(out.contains("meshca_requests_refused_total{reason=\"csr\"} 1\n"), "{out}");
    }
}
