//! Policies from the CA server to Envoy: the client of `meshca.v1.PolicyDelivery`
//! ([`client`]) receives the objects that may apply to this workload, compiles
//! them for the declared ports ([`compile`]), publishes the ECDS resources to
//! the ADS server ([`crate::xds`]) and reports what Envoy runs. The state of
//! each hop is kept here for `/status`.

pub mod client;
pub mod compile;
pub mod labels;
pub mod workload;

use crate::xds::XdsState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;
pub use workload::{PortArg, Protocol};

/// `meshca agent` policy settings.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// `--workload-labels`.
    pub labels: BTreeMap<String, String>,
    /// `--workload-labels-file` (downward API), watched (the `labels` module); overrides `labels` keys.
    pub labels_file: Option<PathBuf>,
    /// `--port`.
    pub ports: Vec<PortArg>,
}

impl PolicyConfig {
    /// The workload's labels now.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, String> {
        match &self.labels_file {
            Some(f) => labels::merge(&self.labels, f, labels::read(f)),
            None => Ok(self.labels.clone()),
        }
    }
}

/// What the policy client knows (the first two hops; the third is in [`XdsState`]).
#[derive(Debug, Clone, Default)]
pub struct ClientStatus {
    pub connected: bool,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub version_received: String,
    pub version_compiled: String,
    /// `kind namespace/name (source)` of the objects received.
    pub objects: Vec<String>,
    pub jwks: Vec<String>,
    pub jwks_errors: BTreeMap<String, String>,
    /// The server's last refused load of its policy directory.
    pub server_refused: String,
    /// The last compile or connection error, with when it happened.
    pub last_error: Option<(String, SystemTime)>,
    pub compile_error: String,
    /// Why the labels file was last refused (the previous labels stay), with when; `None` when it is fine.
    pub labels_error: Option<(String, SystemTime)>,
}

/// Shared by the policy client, the access log service and `/status`.
pub struct PolicyHandle {
    pub xds: Arc<XdsState>,
    status: Mutex<ClientStatus>,
    /// "Envoy met a token whose `kid` is not in the JWKS": the client refreshes.
    refresh: mpsc::Sender<()>,
}

impl PolicyHandle {
    pub fn new(xds: Arc<XdsState>) -> (Arc<Self>, mpsc::Receiver<()>) {
        let (refresh, rx) = mpsc::channel(4);
        (Arc::new(Self { xds, status: Mutex::new(ClientStatus::default()), refresh }), rx)
    }

    pub fn status(&self) -> ClientStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ClientStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Ask for a JWKS refresh (coalesced; the client rate-limits per key).
    pub fn jwks_unknown_kid(&self) {
        let _ = self.refresh.try_send(());
    }

    /// The `policy` section of the agent's `/status`.
    pub fn status_json(&self) -> serde_json::Value {
        let c = self.status();
        let x = self.xds.status();
        let resources: serde_json::Map<String, serde_json::Value> = x
            .resources
            .iter()
            .map(|(k, r)| (k.clone(), serde_json::json!({ "version": r.version, "state": r.state, "error": r.error })))
            .collect();
        let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let pending = !c.version_compiled.is_empty() && x.version_acked != c.version_compiled;
        serde_json::json!({
            "connected": c.connected,
            "namespace": c.namespace,
            "labels": c.labels,
            "labels_error": c.labels_error.map(|(m, t)| serde_json::json!({ "message": m, "at_unix": unix(t) })),
            "version_received": c.version_received,
            "version_compiled": c.version_compiled,
            "version_sent": x.version_sent,
            "version_acked": x.version_acked,
            "up_to_date": !c.version_received.is_empty() && c.version_received == x.version_acked,
            "pending": pending,
            "objects": c.objects,
            "resources": resources,
            "envoy_streams": x.streams,
            "nacks": x.nacks,
            "last_nack": x.last_nack.map(|n| serde_json::json!({ "version": n.version, "message": n.message, "at_unix": unix(n.at) })),
            "compile_error": c.compile_error,
            "last_error": c.last_error.map(|(m, t)| serde_json::json!({ "message": m, "at_unix": unix(t) })),
            "server_refused": c.server_refused,
            "jwks": c.jwks,
            "jwks_errors": c.jwks_errors,
        })
    }
}
