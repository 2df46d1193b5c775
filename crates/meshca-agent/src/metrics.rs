//! The agent's Prometheus metrics, rendered by hand in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Default)]
pub struct Metrics {
    pub csr_sent: AtomicU64,
    pub renewals: AtomicU64,
    pub renewal_failures: AtomicU64,
    pub early_renewals: AtomicU64,
    pub trust_updates: AtomicU64,
    pub trust_watch_errors: AtomicU64,
    /// Trust bundles reported to the CA over the change stream.
    pub trust_reports: AtomicU64,
    pub sds_connections: AtomicI64,
    pub sds_streams_total: AtomicU64,
    pub sds_pushes: AtomicU64,
    pub sds_acks: AtomicU64,
    pub sds_nacks: AtomicU64,
    /// Policy updates received from the CA server.
    pub policy_updates: AtomicU64,
    pub policy_compile_errors: AtomicU64,
    /// ECDS responses sent / rejected by Envoy.
    pub policy_pushes: AtomicU64,
    pub policy_nacks: AtomicU64,
    /// RefreshJwks calls made after Envoy saw an unknown `kid`.
    pub jwks_refreshes: AtomicU64,
    /// Policy version Envoy ACKed as a whole ("" until then).
    policy_acked: Mutex<String>,
    /// identity -> (SPIFFE ID, NotAfter unix seconds)
    expiry: Mutex<BTreeMap<String, (String, i64)>>,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_expiry(&self, name: &str, spiffe: &str, not_after: SystemTime) {
        let secs = not_after.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        self.expiry.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), (spiffe.to_string(), secs));
    }

    pub fn set_policy_acked(&self, version: &str) {
        let mut v = self.policy_acked.lock().unwrap_or_else(|p| p.into_inner());
        if *v != version {
            *v = version.to_string();
        }
    }

    pub fn render(&self, now: SystemTime) -> String {
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        };
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter("meshca_agent_csr_total", "CSRs sent to the CA.", g(&self.csr_sent));
        counter("meshca_agent_renewals_total", "Certificates obtained (first issue and renewals).", g(&self.renewals));
        counter("meshca_agent_renewal_failures_total", "Failed certificate requests.", g(&self.renewal_failures));
        counter(
            "meshca_agent_early_renewals_total",
            "Renewals brought forward because the CA's material changed.",
            g(&self.early_renewals),
        );
        counter("meshca_agent_trust_updates_total", "Trust bundle changes taken in.", g(&self.trust_updates));
        counter(
            "meshca_agent_trust_watch_errors_total",
            "Failed or ended CA change streams, and failed polls of the CA's HTTP port.",
            g(&self.trust_watch_errors),
        );
        counter(
            "meshca_agent_trust_reports_total",
            "Trust bundles reported to the CA over the change stream.",
            g(&self.trust_reports),
        );
        counter("meshca_agent_sds_streams_total", "SDS streams opened.", g(&self.sds_streams_total));
        counter("meshca_agent_sds_pushes_total", "SDS responses sent.", g(&self.sds_pushes));
        counter("meshca_agent_sds_acks_total", "SDS responses acknowledged.", g(&self.sds_acks));
        counter("meshca_agent_sds_nacks_total", "SDS responses rejected by Envoy.", g(&self.sds_nacks));
        counter(
            "meshca_agent_policy_updates_total",
            "Policy updates received from the CA server.",
            g(&self.policy_updates),
        );
        counter(
            "meshca_agent_policy_compile_errors_total",
            "Policy updates that could not be compiled for Envoy.",
            g(&self.policy_compile_errors),
        );
        counter("meshca_agent_policy_pushes_total", "ECDS responses sent to Envoy.", g(&self.policy_pushes));
        counter("meshca_agent_policy_nacks_total", "ECDS responses rejected by Envoy.", g(&self.policy_nacks));
        counter(
            "meshca_agent_jwks_refreshes_total",
            "JWKS refreshes requested after Envoy met an unknown key id.",
            g(&self.jwks_refreshes),
        );
        let acked = self.policy_acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = write!(
            out,
            "# HELP meshca_agent_policy_version_acked The policy version Envoy runs (ACKed as a whole), as a label.\n# TYPE meshca_agent_policy_version_acked gauge\nmeshca_agent_policy_version_acked{{version=\"{acked}\"}} {}\n",
            u8::from(!acked.is_empty())
        );
        let _ = write!(
            out,
            "# HELP meshca_agent_sds_connections Open SDS streams.\n# TYPE meshca_agent_sds_connections gauge\nmeshca_agent_sds_connections {}\n",
            self.sds_connections.load(Ordering::Relaxed)
        );
        let expiry = self.expiry.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP meshca_agent_cert_expiry_timestamp_seconds NotAfter of the current certificate.\n");
        out.push_str("# TYPE meshca_agent_cert_expiry_timestamp_seconds gauge\n");
        for (name, (id, t)) in expiry.iter() {
            let _ = writeln!(
                out,
                "meshca_agent_cert_expiry_timestamp_seconds{{resource=\"{name}\",identity=\"{id}\"}} {t}"
            );
        }
        out.push_str("# HELP meshca_agent_cert_expiry_seconds Seconds until the current certificate expires.\n");
        out.push_str("# TYPE meshca_agent_cert_expiry_seconds gauge\n");
        for (name, (id, t)) in expiry.iter() {
            let _ =
                writeln!(out, "meshca_agent_cert_expiry_seconds{{resource=\"{name}\",identity=\"{id}\"}} {}", t - now);
        }
        out
    }
}
