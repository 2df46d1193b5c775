//! Envoy's Aggregated Discovery Service (state of the world
//! `StreamAggregatedResources`) on the SDS unix socket: the secrets (`default`,
//! the other workloads and `ROOTCA`, the same content and per-stream logic as [`crate::sds`]) and
//! the policy filters as ECDS resources (`TypedExtensionConfig`).
//!
//! The policy resources of one version always travel in ONE response, so
//! Envoy applies a new policy set in one step. Until the first policy is
//! compiled nothing is answered for ECDS: the listeners' filters stay on
//! their fail-closed defaults. Each stream tracks the nonce of its last ECDS
//! response; an ACK marks every resource of that response acked (and the
//! version applied when the response carried the whole set), a NACK records
//! Envoy's `error_detail.message` per resource, logged at warn and reported.

use crate::metrics::Metrics;
use crate::sds::{secret_type_url, SdsService, StreamState};
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Type URL of ECDS resources.
pub fn ecds_type_url() -> String {
    TypedExtensionConfig::type_url()
}

/// One compiled policy version: ECDS resource name -> the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct EcdsSnapshot {
    pub version: String,
    pub resources: BTreeMap<String, TypedExtensionConfig>,
}

/// Why a resource Envoy asks for is not served.
pub const UNSERVED: &str =
    "Envoy's bootstrap has this filter but the agent has no --port for it (the filter keeps its deny-all default)";

/// What Envoy did with one ECDS resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceStatus {
    pub version: String,
    /// `sent`, `acked`, `nacked`, or `unserved` (Envoy asks for it, the agent has no such port).
    pub state: &'static str,
    pub error: String,
}

/// Envoy's last rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub version: String,
    pub message: String,
    pub at: SystemTime,
}

/// The ECDS side as seen from Envoy's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcdsStatus {
    /// Version of the last response sent on any stream.
    pub version_sent: String,
    /// Version of the last response Envoy ACKed that carried the whole set.
    pub version_acked: String,
    pub resources: BTreeMap<String, ResourceStatus>,
    pub last_nack: Option<Nack>,
    pub nacks: u64,
    pub streams: u64,
}

/// The policy resources to serve and what Envoy answered; shared by the ADS
/// streams, the policy client (publisher) and `/status`.
pub struct XdsState {
    /// The steps to the current set (see [`crate::xds_stages`]); the last is the set.
    ecds: watch::Sender<Option<Arc<Vec<EcdsSnapshot>>>>,
    status: Mutex<EcdsStatus>,
    /// Bumped on every change of `status`.
    changed: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl XdsState {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            ecds: watch::channel(None).0,
            status: Mutex::new(EcdsStatus::default()),
            changed: watch::channel(0).0,
            metrics,
        })
    }

    /// Serve `snapshot` to every stream: one response, or the staged steps of a DENY change.
    pub fn publish(&self, snapshot: EcdsSnapshot) {
        self.ecds.send_if_modified(|cur| {
            let old = cur.as_ref().and_then(|p| p.last());
            if old == Some(&snapshot) {
                return false;
            }
            *cur = Some(Arc::new(crate::xds_stages::stages(old, &snapshot)));
            true
        });
    }

    /// The current set.
    pub fn snapshot(&self) -> Option<EcdsSnapshot> {
        self.ecds.borrow().as_ref().and_then(|p| p.last().cloned())
    }

    pub fn status(&self) -> EcdsStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notified on every change of [`XdsState::status`].
    pub fn subscribe_status(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut EcdsStatus)) {
        {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut st);
            self.metrics.set_policy_acked(&st.version_acked);
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

/// ADS: secrets from [`SdsService`], policy filters from [`XdsState`].
#[derive(Clone)]
pub struct AdsService {
    sds: SdsService,
    xds: Arc<XdsState>,
}

impl AdsService {
    pub fn new(sds: SdsService, xds: Arc<XdsState>) -> Self {
        Self { sds, xds }
    }

    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

/// The ECDS half of one ADS stream.
#[derive(Default)]
struct EcdsStream {
    subscribed: BTreeSet<String>,
    last_nonce: String,
    nonces: u64,
    /// (version, resource names) of the last response.
    last_sent: Option<(String, BTreeSet<String>)>,
}

struct AdsConn {
    id: u64,
    node: String,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    xds: Arc<XdsState>,
    ecds_rx: watch::Receiver<Option<Arc<Vec<EcdsSnapshot>>>>,
    ecds: EcdsStream,
    /// The steps being sent, and the index of the one in flight.
    plan: Option<(Arc<Vec<EcdsSnapshot>>, usize)>,
}

impl AdsConn {
    /// Send the subscribed policy resources when they changed (or always, with `force`).
    async fn push(&mut self, force: bool) -> bool {
        let steps = self.ecds_rx.borrow_and_update().clone();
        let same = match (&self.plan, &steps) {
            (Some((p, _)), Some(c)) => Arc::ptr_eq(p, c),
            (None, None) => true,
            _ => false,
        };
        if !same {
            // A stream that never had a policy goes straight to the current set.
            let first = if self.ecds.last_sent.is_none() { steps.as_ref().map_or(0, |s| s.len() - 1) } else { 0 };
            self.plan = steps.map(|s| (s, first));
        }
        let Some(snap) = self.plan.as_ref().map(|(s, i)| s[*i].clone()) else {
            return true; // no policy yet: the listeners stay fail-closed
        };
        let wanted: BTreeSet<String> = if self.ecds.subscribed.is_empty() {
            snap.resources.keys().cloned().collect()
        } else {
            self.ecds.subscribed.clone()
        };
        let mut names = BTreeSet::new();
        let mut resources = Vec::new();
        let mut unserved = Vec::new();
        for name in &wanted {
            match snap.resources.get(name) {
                Some(r) => {
                    names.insert(name.clone());
                    resources.push(Any { type_url: ecds_type_url(), value: r.encode_to_vec() });
                }
                None => unserved.push(name.clone()),
            }
        }
        if !unserved.is_empty() && force {
            tracing::warn!(stream = self.id, node = %self.node, resources = ?unserved, version = %snap.version,
                "ECDS: Envoy's bootstrap has filters for ports the agent does not serve (no --port): they stay closed");
            self.xds.update(|st| {
                for n in &unserved {
                    st.resources.insert(
                        n.clone(),
                        ResourceStatus { version: String::new(), state: "unserved", error: UNSERVED.to_string() },
                    );
                }
            });
        }
        if resources.is_empty() {
            return true;
        }
        // A new set with the version of the last response (recompiled for new workload labels) is
        // sent too: only an unchanged set is skipped.
        if !force && same && self.ecds.last_sent.as_ref() == Some(&(snap.version.clone(), names.clone())) {
            return true;
        }
        self.ecds.nonces += 1;
        let nonce = format!("e{}-{}", self.ecds.nonces, hex::encode(rand::random::<[u8; 4]>()));
        let resp = DiscoveryResponse {
            version_info: snap.version.clone(),
            resources,
            type_url: ecds_type_url(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        tracing::info!(stream = self.id, node = %self.node, version = %snap.version, resources = ?names, "ECDS: push");
        self.ecds.last_nonce = nonce;
        self.ecds.last_sent = Some((snap.version.clone(), names.clone()));
        Metrics::inc(&self.xds.metrics.policy_pushes);
        self.xds.update(|st| {
            st.version_sent = snap.version.clone();
            for n in &names {
                st.resources.insert(
                    n.clone(),
                    ResourceStatus { version: snap.version.clone(), state: "sent", error: String::new() },
                );
            }
        });
        self.tx.send(Ok(resp)).await.is_ok()
    }

    async fn request(&mut self, req: DiscoveryRequest) -> bool {
        if let Some(err) = &req.error_detail {
            if req.response_nonce != self.ecds.last_nonce {
                return true;
            }
            let Some((version, names)) = self.ecds.last_sent.clone() else { return true };
            Metrics::inc(&self.xds.metrics.policy_nacks);
            // A rejected step: go straight to the set itself (its own answer is what counts).
            let mut jumped = false;
            if let Some((steps, i)) = self.plan.as_mut() {
                if *i + 1 < steps.len() {
                    *i = steps.len() - 1;
                    jumped = true;
                }
            }
            tracing::warn!(
                stream = self.id, node = %self.node, nonce = %req.response_nonce, version = %version,
                running = %req.version_info, code = err.code, "ECDS: Envoy rejected the policy filters (NACK): {}", err.message
            );
            self.xds.update(|st| {
                st.nacks += 1;
                st.last_nack =
                    Some(Nack { version: version.clone(), message: err.message.clone(), at: SystemTime::now() });
                for n in &names {
                    st.resources.insert(
                        n.clone(),
                        ResourceStatus { version: version.clone(), state: "nacked", error: err.message.clone() },
                    );
                }
            });
            if jumped {
                return self.push(true).await;
            }
            return true;
        }
        if !req.response_nonce.is_empty() && req.response_nonce != self.ecds.last_nonce {
            tracing::debug!(stream = self.id, nonce = %req.response_nonce, "ECDS: stale nonce, ignored");
            return true;
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        if !req.response_nonce.is_empty() && names == self.ecds.subscribed {
            if let Some((version, sent)) = self.ecds.last_sent.clone() {
                let whole = self
                    .xds
                    .snapshot()
                    .is_some_and(|s| s.version == version && s.resources.keys().all(|k| sent.contains(k)));
                tracing::debug!(stream = self.id, version = %version, "ECDS: ACK");
                self.xds.update(|st| {
                    for n in &sent {
                        st.resources.insert(
                            n.clone(),
                            ResourceStatus { version: version.clone(), state: "acked", error: String::new() },
                        );
                    }
                    if whole {
                        st.version_acked = version.clone();
                    }
                });
                // A staged change: the next step once Envoy took this one.
                let next = match self.plan.as_mut() {
                    Some((steps, i)) if steps[*i].version == version && *i + 1 < steps.len() => {
                        *i += 1;
                        true
                    }
                    _ => false,
                };
                if next {
                    return self.push(true).await;
                }
            }
            return true;
        }
        tracing::info!(stream = self.id, node = %self.node, resources = ?names, "ECDS: subscribe");
        self.ecds.subscribed = names;
        self.push(true).await
    }
}

async fn serve_stream(mut inbound: Streaming<DiscoveryRequest>, sds: SdsService, mut conn: AdsConn) {
    let mut secrets = sds.conn(conn.tx.clone());
    let mut secret_state = StreamState::new(conn.id);
    conn.xds.update(|st| st.streams += 1);
    let (secret_url, ecds_url) = (secret_type_url(), ecds_type_url());
    loop {
        let ok = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if let Some(node) = &req.node {
                        conn.node = node.id.clone();
                    }
                    if req.type_url == secret_url {
                        secrets.request(&mut secret_state, req).await
                    } else if req.type_url == ecds_url {
                        conn.request(req).await
                    } else {
                        tracing::warn!(stream = conn.id, type_url = %req.type_url, "ADS: type not served here, ignoring request");
                        true
                    }
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::debug!(stream = conn.id, "ADS stream error: {e}");
                    false
                }
            },
            ok = secrets.changed() => ok && secrets.push(&mut secret_state, false).await,
            r = conn.ecds_rx.changed() => r.is_ok() && conn.push(false).await,
        };
        if !ok {
            break;
        }
    }
    sds.stream_gone(conn.id);
    conn.xds.update(|st| st.streams = st.streams.saturating_sub(1));
    tracing::info!(stream = conn.id, node = %conn.node, "ADS: stream closed");
}

type DeltaStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let id = self.sds.next_stream_id();
        let conn = AdsConn {
            id,
            node: String::new(),
            tx,
            xds: self.xds.clone(),
            ecds_rx: self.xds.ecds.subscribe(),
            ecds: EcdsStream::default(),
            plan: None,
        };
        tracing::info!(stream = id, "ADS: stream opened");
        tokio::spawn(serve_stream(request.into_inner(), self.sds.clone(), conn));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta ADS is not supported; use state of the world (api_type: GRPC)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    fn snapshot(version: &str, names: &[&str]) -> EcdsSnapshot {
        let resources = names
            .iter()
            .map(|n| (n.to_string(), TypedExtensionConfig { name: n.to_string(), typed_config: None }))
            .collect();
        EcdsSnapshot { version: version.into(), resources }
    }

    fn request(names: &[&str], nonce: &str, error: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: ecds_type_url(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            error_detail: error.map(|m| RpcStatus { code: 3, message: m.into(), details: vec![] }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn one_response_per_version_with_ack_and_nack_per_resource() {
        let metrics = Arc::new(Metrics::default());
        let xds = XdsState::new(metrics.clone());
        let (tx, mut rx) = mpsc::channel(16);
        let mut conn = AdsConn {
            id: 1,
            node: "test".into(),
            tx,
            xds: xds.clone(),
            ecds_rx: xds.ecds.subscribe(),
            ecds: EcdsStream::default(),
            plan: None,
        };
        let names = ["meshca.80.rbac_allow", "meshca.80.rbac_deny"];
        // Before the first policy nothing is answered: Envoy keeps its fail-closed defaults.
        assert!(conn.request(request(&names, "", None)).await);
        assert!(rx.try_recv().is_err());

        xds.publish(snapshot("v1", &names));
        assert!(conn.push(false).await);
        let r1 = rx.try_recv().unwrap().unwrap();
        assert_eq!((r1.version_info.as_str(), r1.resources.len()), ("v1", 2), "the whole set in one response");
        assert_eq!(xds.status().resources["meshca.80.rbac_deny"].state, "sent");
        assert!(conn.push(false).await);
        assert!(rx.try_recv().is_err(), "no change, no response");

        // A stale nonce is not an ACK; the right one is.
        assert!(conn.request(request(&names, "stale", None)).await);
        assert_eq!(xds.status().version_acked, "");
        assert!(conn.request(request(&names, &r1.nonce, None)).await);
        let st = xds.status();
        assert_eq!(st.version_acked, "v1");
        assert!(st.resources.values().all(|r| r.state == "acked" && r.version == "v1"), "{st:?}");

        // v2 rejected: every resource of the response is nacked with Envoy's message, v1 stays applied.
        xds.publish(snapshot("v2", &names));
        assert!(conn.push(false).await);
        let r2 = rx.try_recv().unwrap().unwrap();
        assert!(conn.request(request(&names, &r2.nonce, Some("bad regex"))).await);
        let st = xds.status();
        assert_eq!((st.version_sent.as_str(), st.version_acked.as_str(), st.nacks), ("v2", "v1", 1));
        assert_eq!(st.last_nack.as_ref().map(|n| n.message.as_str()), Some("bad regex"));
        assert!(st.resources.values().all(|r| r.state == "nacked" && r.error == "bad regex"), "{st:?}");
        assert_eq!(metrics.policy_nacks.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(metrics.render(SystemTime::now()).contains("meshca_agent_policy_version_acked{version=\"v1\"} 1"));

        // A new subscription (one more name) is answered at once with what exists.
        let more = ["meshca.80.rbac_allow", "meshca.80.rbac_deny", "meshca.81.peer_tls"];
        assert!(conn.request(request(&more, &r2.nonce, None)).await);
        let r3 = rx.try_recv().unwrap().unwrap();
        assert_eq!(r3.resources.len(), 2, "only resources the set has are sent");
    }
}
