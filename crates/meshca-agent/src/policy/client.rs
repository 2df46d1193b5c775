//! The `meshca.v1.PolicyDelivery/Watch` client: one stream over the CA's
//! authenticated gRPC channel (the same multi-address connection as CSRs),
//! reconnected with backoff. Every update is compiled and published to the
//! ADS server; a report goes back at once and whenever Envoy's answer changes.

use super::labels::{self, Labels};
use super::{compile, workload, PolicyConfig, PolicyHandle};
use crate::caclient::{GrpcSigner, Identity};
use crate::manager::{backoff, CertManager, CertState};
use crate::metrics::Metrics;
use meshca_proto::{PolicyDeliveryClient, PolicyReport, PolicyUpdate, RefreshJwksRequest, ResourceState};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// At most one JWKS refresh per key per this interval.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub struct Client {
    pub cfg: PolicyConfig,
    pub signer: Arc<GrpcSigner>,
    pub token_file: PathBuf,
    pub identity: Identity,
    pub manager: CertManager,
    pub handle: Arc<PolicyHandle>,
    pub metrics: Arc<Metrics>,
}

/// The namespace of the agent's SPIFFE ID, once it has a certificate.
async fn namespace(manager: &CertManager, identity: &Identity) -> String {
    let mut rx = manager.subscribe(identity);
    loop {
        if let CertState::Available(c) = &*rx.borrow_and_update() {
            match workload::spiffe_parts(&c.spiffe_id) {
                Some((_, ns, _)) => return ns,
                None => tracing::warn!(identity = %c.spiffe_id, "policy: the identity names no namespace"),
            }
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Client {
    /// Follow the server until the process ends.
    pub async fn run(self, mut refresh: mpsc::Receiver<()>) {
        let mut labels_rx = labels::watch(&self.cfg, &self.handle);
        let ns = namespace(&self.manager, &self.identity).await;
        self.handle.update(|s| s.namespace = ns.clone());
        let mut failures = 0u32;
        let mut last_refresh: HashMap<String, Instant> = HashMap::new();
        loop {
            let started = Instant::now();
            let res = self.session(&ns, &mut labels_rx, &mut refresh, &mut last_refresh).await;
            self.handle.update(|s| s.connected = false);
            if started.elapsed() > Duration::from_secs(30) {
                failures = 0;
            }
            failures += 1;
            let delay = backoff(Duration::from_millis(200), Duration::from_secs(15), failures, rand::random::<f64>());
            match res {
                Ok(()) => tracing::info!(retry_in = ?delay, "policy: the server closed the stream"),
                Err(e) => {
                    tracing::warn!(retry_in = ?delay, "policy: the stream failed: {e}");
                    self.handle.update(|s| s.last_error = Some((e, SystemTime::now())));
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn report(&self, labels: &BTreeMap<String, String>) -> PolicyReport {
        let c = self.handle.status();
        let x = self.handle.xds.status();
        let error = x
            .last_nack
            .as_ref()
            .filter(|n| n.version == x.version_sent)
            .map(|n| format!("Envoy NACK of {}: {}", n.version, n.message))
            .unwrap_or(c.compile_error);
        PolicyReport {
            labels: labels.clone().into_iter().collect(),
            version_received: c.version_received,
            version_applied: x.version_acked,
            resources: x
                .resources
                .into_iter()
                .map(|(name, r)| ResourceState { name, version: r.version, state: r.state.to_string(), error: r.error })
                .collect(),
            error,
        }
    }

    async fn session(
        &self,
        ns: &str,
        labels_rx: &mut watch::Receiver<Option<Labels>>,
        refresh: &mut mpsc::Receiver<()>,
        last_refresh: &mut HashMap<String, Instant>,
    ) -> Result<(), String> {
        let current = labels_rx.borrow_and_update().clone();
        let Some(mut labels) = current else {
            let why = self.handle.status().labels_error.map(|(e, _)| e).unwrap_or_default();
            return Err(format!("no valid workload labels yet: {why}"));
        };
        self.handle.update(|s| s.labels = labels.clone());
        let mut workload = meshca_policy::model::Workload::new(ns, labels.clone());
        let channel = self.signer.channel().await.map_err(|e| e.to_string())?;
        let mut client = PolicyDeliveryClient::new(channel.clone());
        let (tx, rx) = mpsc::channel::<PolicyReport>(8);
        let mut sent = self.report(&labels);
        tx.send(sent.clone()).await.map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert("authorization", GrpcSigner::bearer(&self.token_file).map_err(|e| e.to_string())?);
        let mut updates = match client.watch(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                    self.signer.reset();
                }
                return Err(format!("{:?}: {}", s.code(), s.message()));
            }
        };
        tracing::info!(namespace = %ns, labels = ?labels, "policy: following the server's policy set");
        self.handle.update(|s| s.connected = true);
        let mut acks = self.handle.xds.subscribe_status();
        let mut keys: Vec<String> = Vec::new();
        let mut last: Option<PolicyUpdate> = None;
        loop {
            tokio::select! {
                m = updates.message() => match m {
                    Ok(Some(u)) => {
                        keys = u.jwks.keys().chain(u.jwks_errors.keys()).cloned().collect();
                        self.apply(&u, &workload);
                        last = Some(u);
                    }
                    Ok(None) => return Ok(()),
                    Err(s) => {
                        self.signer.reset();
                        return Err(format!("{:?}: {}", s.code(), s.message()));
                    }
                },
                r = acks.changed() => if r.is_err() { return Ok(()) },
                Some(()) = refresh.recv() => self.refresh(&channel, &keys, last_refresh),
                // Without a labels file the sender is gone at once: the branch never fires.
                Ok(()) = labels_rx.changed() => {
                    let new = labels_rx.borrow_and_update().clone();
                    if let Some(new) = new.filter(|n| *n != labels) {
                        tracing::info!(from = ?labels, to = ?new, "policy: recompiling for the new workload labels");
                        labels = new;
                        workload = meshca_policy::model::Workload::new(ns, labels.clone());
                        self.handle.update(|s| s.labels = labels.clone());
                        if let Some(u) = &last {
                            self.compile(u, &workload);
                        }
                    }
                }
            }
            let now = self.report(&labels);
            if now != sent {
                sent = now;
                if tx.send(sent.clone()).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Compile an update and hand it to Envoy; a failure keeps Envoy on what it runs.
    fn apply(&self, u: &PolicyUpdate, workload: &meshca_policy::model::Workload) {
        Metrics::inc(&self.metrics.policy_updates);
        let objects: Vec<String> =
            u.objects.iter().map(|o| format!("{} {}/{} ({})", o.kind, o.namespace, o.name, o.source)).collect();
        tracing::info!(version = %u.version, objects = u.objects.len(), jwks = u.jwks.len(), "policy: update received");
        if !u.refused.is_empty() {
            tracing::warn!(version = %u.version, "policy: the server refused its latest policy directory: {}", u.refused);
        }
        for (k, e) in &u.jwks_errors {
            tracing::warn!(key = %k, "policy: the server could not fetch this JWKS (tokens it signs are refused): {e}");
        }
        self.handle.update(|s| {
            s.version_received = u.version.clone();
            s.objects = objects;
            s.server_refused = u.refused.clone();
            s.jwks = u.jwks.keys().cloned().collect();
            s.jwks_errors = u.jwks_errors.clone().into_iter().collect();
        });
        self.compile(u, workload);
    }

    /// Compile `u` for `workload` and publish it; a failure keeps Envoy on what it runs.
    fn compile(&self, u: &PolicyUpdate, workload: &meshca_policy::model::Workload) {
        match compile::snapshot(u, workload, &self.cfg.ports) {
            Ok(snap) => {
                tracing::info!(version = %u.version, resources = snap.resources.len(), "policy: compiled");
                self.handle.update(|s| {
                    s.version_compiled = u.version.clone();
                    s.compile_error.clear();
                });
                self.handle.xds.publish(snap);
            }
            Err(e) => {
                Metrics::inc(&self.metrics.policy_compile_errors);
                tracing::warn!(version = %u.version, "policy: cannot compile, Envoy keeps the previous policy: {e}");
                let msg = format!("compiling {}: {e}", u.version);
                self.handle.update(|s| {
                    s.compile_error = msg.clone();
                    s.last_error = Some((msg, SystemTime::now()));
                });
            }
        }
    }

    /// Ask the server to refetch every JWKS of the set (each at most once per second).
    fn refresh(&self, channel: &Channel, keys: &[String], last: &mut HashMap<String, Instant>) {
        for key in keys {
            if last.get(key).is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
                continue;
            }
            last.insert(key.clone(), Instant::now());
            Metrics::inc(&self.metrics.jwks_refreshes);
            let mut client = PolicyDeliveryClient::new(channel.clone());
            let Ok(bearer) = GrpcSigner::bearer(&self.token_file) else { continue };
            let key = key.clone();
            tokio::spawn(async move {
                let mut req = tonic::Request::new(RefreshJwksRequest { key: key.clone() });
                req.metadata_mut().insert("authorization", bearer);
                req.set_timeout(Duration::from_secs(10));
                match client.refresh_jwks(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        tracing::info!(key = %key, started = r.started, reason = %r.reason, "policy: JWKS refresh requested (unknown kid)");
                    }
                    Err(s) => {
                        tracing::warn!(key = %key, "policy: JWKS refresh failed: {:?}: {}", s.code(), s.message())
                    }
                }
            });
        }
    }
}
