//! Envoy's Secret Discovery Service (state of the world `StreamSecrets`) on a
//! unix socket: `default` is the primary workload's certificate and key,
//! every extra workload's certificate is served under its own name (see
//! [`crate::workloads`]; fetched at the first request naming it), `ROOTCA` is
//! the trust bundle. A name the agent does not serve gets nothing (one
//! warning per stream). Each stream tracks what it subscribed to, the nonce of the
//! last response and the content it carried: a subscription (or a
//! reconnection) is answered at once, an ACK needs nothing, a NACK is logged
//! and the stream keeps serving, and a change of either resource is pushed.

use crate::caclient::Identity;
use crate::manager::{CertManager, CertState};
use crate::metrics::Metrics;
use crate::root_acks::RootAcks;
use crate::workloads::WorkloadSet;
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_stream::{StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

/// Resource name of the workload certificate.
pub const DEFAULT_RESOURCE: &str = "default";
/// Resource name of the trust bundle.
pub const ROOT_RESOURCE: &str = "ROOTCA";

/// How long a `FetchSecrets` for a certificate not fetched yet waits for it.
const FETCH_WAIT: Duration = Duration::from_secs(10);
/// Unknown names quoted in the (one per stream) warning.
const UNKNOWN_LOGGED: usize = 8;

pub fn secret_type_url() -> String {
    Secret::type_url()
}

#[derive(Clone)]
pub struct SdsService {
    manager: CertManager,
    workloads: Arc<WorkloadSet>,
    metrics: Arc<Metrics>,
    streams: Arc<AtomicU64>,
    acks: Arc<RootAcks>,
}

impl SdsService {
    /// Serve `identity` as `default` (and nothing else until [`SdsService::with_workloads`]).
    pub fn new(manager: CertManager, identity: Identity, metrics: Arc<Metrics>) -> Self {
        let workloads = Arc::new(WorkloadSet::single(identity));
        Self { manager, workloads, metrics, streams: Arc::new(AtomicU64::new(0)), acks: Arc::default() }
    }

    /// Serve every workload of `workloads` (its primary as `default`).
    pub fn with_workloads(mut self, workloads: Arc<WorkloadSet>) -> Self {
        self.workloads = workloads;
        self
    }

    /// Record which bundle each `ROOTCA` stream ACKed into `acks`.
    pub fn with_root_acks(mut self, acks: Arc<RootAcks>) -> Self {
        self.acks = acks;
        self
    }

    pub fn into_server(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self)
    }

    /// A new stream id (SDS and ADS streams share the numbering, for [`RootAcks`]).
    pub(crate) fn next_stream_id(&self) -> u64 {
        self.streams.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The secret side of a stream answering on `tx`.
    pub(crate) fn conn(&self, tx: mpsc::Sender<Result<DiscoveryResponse, Status>>) -> Conn {
        Conn {
            tx,
            manager: self.manager.clone(),
            workloads: self.workloads.clone(),
            certs: BTreeMap::new(),
            changes: StreamMap::new(),
            trust: self.manager.trust(),
            metrics: self.metrics.clone(),
            acks: self.acks.clone(),
            warned_unknown: false,
        }
    }

    /// Forget a closed stream's `ROOTCA` subscription.
    pub(crate) fn stream_gone(&self, id: u64) {
        self.acks.gone(id);
    }
}

impl StreamState {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            node: String::new(),
            subscribed: BTreeSet::new(),
            last_nonce: String::new(),
            last_sent: BTreeMap::new(),
            nonces: 0,
            sent_root: None,
        }
    }
}

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource { specifier: Some(Specifier::InlineBytes(bytes.to_vec())), ..Default::default() })
}

/// The secret named `name`, if we have it now: `ROOTCA` from `trust`, a
/// workload's certificate from `cert` (its state, `None` for a name not served).
pub(crate) fn build(name: &str, cert: Option<&CertState>, trust: Option<&str>) -> Option<Secret> {
    let kind = match name {
        ROOT_RESOURCE => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(trust?.as_bytes()),
            ..Default::default()
        }),
        _ => {
            let c = cert?.cert()?;
            secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(c.chain_pem.as_bytes()),
                private_key: inline(c.key_pem.as_bytes()),
                ..Default::default()
            })
        }
    };
    Some(Secret { name: name.to_string(), r#type: Some(kind) })
}

/// One stream's protocol state (also the secret half of an ADS stream).
pub(crate) struct StreamState {
    id: u64,
    node: String,
    subscribed: BTreeSet<String>,
    last_nonce: String,
    /// name -> encoded secret of the last response.
    last_sent: BTreeMap<String, Vec<u8>>,
    nonces: u64,
    /// Nonce and bundle of the last response that carried `ROOTCA`.
    sent_root: Option<(String, Arc<str>)>,
}

pub(crate) struct Conn {
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    manager: CertManager,
    workloads: Arc<WorkloadSet>,
    /// The latest state of each subscribed workload certificate, by resource name.
    certs: BTreeMap<String, CertState>,
    /// Their changes (one watch per subscribed name; nothing is polled).
    changes: StreamMap<String, WatchStream<CertState>>,
    trust: watch::Receiver<Option<Arc<str>>>,
    metrics: Arc<Metrics>,
    acks: Arc<RootAcks>,
    /// Names this agent does not serve were already logged on this stream.
    warned_unknown: bool,
}

impl Conn {
    /// Wait until a subscribed certificate or the trust bundle changes; false
    /// once the manager is gone. Cancel safe.
    pub(crate) async fn changed(&mut self) -> bool {
        tokio::select! {
            Some((name, state)) = self.changes.next(), if !self.changes.is_empty() => {
                self.certs.insert(name, state);
                true
            }
            r = self.trust.changed() => r.is_ok(),
        }
    }

    /// Follow the certificates of `names` (subscribing to the manager, which
    /// fetches a certificate at its first subscription) and drop the others.
    fn follow(&mut self, st: &StreamState, names: &BTreeSet<String>) {
        self.certs.retain(|n, _| names.contains(n));
        let gone: Vec<String> = self.changes.keys().filter(|k| !names.contains(*k)).cloned().collect();
        for k in gone {
            self.changes.remove(&k);
        }
        let mut unknown = Vec::new();
        for name in names {
            if name == ROOT_RESOURCE || self.certs.contains_key(name) {
                continue;
            }
            match self.workloads.get(name) {
                Some(id) => {
                    let mut rx = self.manager.subscribe(id);
                    let now = rx.borrow_and_update().clone();
                    self.certs.insert(name.clone(), now);
                    self.changes.insert(name.clone(), WatchStream::from_changes(rx));
                }
                None => unknown.push(name.as_str()),
            }
        }
        if unknown.is_empty() {
            return;
        }
        let shown = &unknown[..unknown.len().min(UNKNOWN_LOGGED)];
        if self.warned_unknown {
            tracing::debug!(stream = st.id, node = %st.node, resources = ?shown, count = unknown.len(), "SDS: resources this agent does not serve");
        } else {
            self.warned_unknown = true;
            tracing::warn!(stream = st.id, node = %st.node, resources = ?shown, count = unknown.len(),
                "SDS: resources this agent does not serve (not configured as workloads): nothing is sent for them");
        }
    }

    /// Send the subscribed resources when they differ from the last response
    /// (or always, with `force`). Nothing is sent while none is available.
    pub(crate) async fn push(&mut self, st: &mut StreamState, force: bool) -> bool {
        let trust = self.trust.borrow_and_update().clone();
        let mut content = BTreeMap::new();
        for name in &st.subscribed {
            if let Some(s) = build(name, self.certs.get(name), trust.as_deref()) {
                content.insert(name.clone(), s.encode_to_vec());
            }
        }
        if content.is_empty() || (!force && content == st.last_sent) {
            return true;
        }
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (k, v) in &content {
            digest.update(k.as_bytes());
            digest.update(v);
        }
        let version = hex::encode(&digest.finish().as_ref()[..8]);
        st.nonces += 1;
        let nonce = format!("{}-{}", st.nonces, hex::encode(rand::random::<[u8; 4]>()));
        let resources =
            content.values().map(|v| Any { type_url: secret_type_url(), value: v.clone() }).collect::<Vec<_>>();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources,
            type_url: secret_type_url(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        tracing::info!(stream = st.id, node = %st.node, version = %version, resources = ?content.keys().collect::<Vec<_>>(), "SDS: push");
        if let (true, Some(t)) = (content.contains_key(ROOT_RESOURCE), trust.as_ref()) {
            st.sent_root = Some((nonce.clone(), t.clone()));
        }
        st.last_nonce = nonce;
        st.last_sent = content;
        Metrics::inc(&self.metrics.sds_pushes);
        self.tx.send(Ok(resp)).await.is_ok()
    }

    /// Handle one request; false ends the stream.
    pub(crate) async fn request(&mut self, st: &mut StreamState, req: DiscoveryRequest) -> bool {
        if let Some(node) = &req.node {
            st.node = node.id.clone();
        }
        if !req.type_url.is_empty() && req.type_url != secret_type_url() {
            tracing::warn!(stream = st.id, type_url = %req.type_url, "SDS: unexpected type URL, ignoring request");
            return true;
        }
        if let Some(err) = &req.error_detail {
            Metrics::inc(&self.metrics.sds_nacks);
            tracing::warn!(
                stream = st.id, node = %st.node, nonce = %req.response_nonce, version = %req.version_info,
                code = err.code, "SDS: Envoy rejected the secrets (NACK): {}", err.message
            );
            return true;
        }
        if !req.response_nonce.is_empty() && req.response_nonce != st.last_nonce {
            tracing::debug!(stream = st.id, nonce = %req.response_nonce, "SDS: stale nonce, ignored");
            return true;
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let initial = req.response_nonce.is_empty();
        if !initial && names == st.subscribed {
            if let Some((nonce, bundle)) = &st.sent_root {
                if *nonce == req.response_nonce {
                    self.acks.acked(st.id, bundle);
                }
            }
            Metrics::inc(&self.metrics.sds_acks);
            tracing::debug!(stream = st.id, version = %req.version_info, "SDS: ACK");
            return true;
        }
        tracing::info!(stream = st.id, node = %st.node, resources = ?names, "SDS: subscribe");
        if names.contains(ROOT_RESOURCE) {
            self.acks.subscribed(st.id);
        } else {
            self.acks.gone(st.id);
        }
        self.follow(st, &names);
        st.subscribed = names;
        self.push(st, true).await
    }
}

async fn serve_stream(mut inbound: Streaming<DiscoveryRequest>, mut conn: Conn, id: u64) {
    struct Gauge(Arc<Metrics>);
    impl Drop for Gauge {
        fn drop(&mut self) {
            self.0.sds_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
    conn.metrics.sds_connections.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&conn.metrics.sds_streams_total);
    let _gauge = Gauge(conn.metrics.clone());
    let mut st = StreamState::new(id);
    loop {
        let ok = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => conn.request(&mut st, req).await,
                Ok(None) => false,
                Err(e) => {
                    tracing::debug!(stream = id, "SDS stream error: {e}");
                    false
                }
            },
            ok = conn.changed() => ok && conn.push(&mut st, false).await,
        };
        if !ok {
            break;
        }
    }
    conn.acks.gone(id);
    tracing::info!(stream = id, node = %st.node, "SDS: stream closed");
}

type DeltaStream = Pin<
    Box<
        dyn tokio_stream::Stream<
                Item = Result<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse, Status>,
            > + Send,
    >,
>;

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = DeltaStream;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("delta SDS is not supported; use state of the world (StreamSecrets)"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let conn = self.conn(tx);
        let id = self.next_stream_id();
        tokio::spawn(serve_stream(request.into_inner(), conn, id));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(&self, request: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        let req = request.into_inner();
        let names: BTreeSet<&String> = req.resource_names.iter().collect();
        let mut watched = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match self.workloads.get(name) {
                Some(id) => watched.push((name, Some(self.manager.subscribe(id)))),
                None if name == ROOT_RESOURCE => watched.push((name, None)),
                None => unknown.push(name.as_str()),
            }
        }
        // A certificate nobody asked for yet is being fetched now: wait (a little) for it.
        let mut states = Vec::with_capacity(watched.len());
        for (name, rx) in watched {
            states.push((
                name,
                match rx {
                    Some(rx) => Some(first_state(rx).await),
                    None => None,
                },
            ));
        }
        let trust = self.manager.trust().borrow().clone();
        let resources: Vec<Any> = states
            .iter()
            .filter_map(|(name, state)| build(name, state.as_ref(), trust.as_deref()))
            .map(|s| Any { type_url: secret_type_url(), value: s.encode_to_vec() })
            .collect();
        if !unknown.is_empty() {
            let shown = &unknown[..unknown.len().min(UNKNOWN_LOGGED)];
            tracing::warn!(resources = ?shown, count = unknown.len(), "FetchSecrets: resources this agent does not serve");
        }
        if resources.is_empty() {
            return Err(Status::unavailable("no requested secret is available yet"));
        }
        Ok(Response::new(DiscoveryResponse { resources, type_url: secret_type_url(), ..Default::default() }))
    }
}

/// The state of a certificate once it is no longer initializing (or after [`FETCH_WAIT`]).
async fn first_state(mut rx: watch::Receiver<CertState>) -> CertState {
    let _ = tokio::time::timeout(FETCH_WAIT, rx.wait_for(|s| !matches!(s, CertState::Initializing))).await;
    let state = rx.borrow().clone();
    state
}

/// Mode of the SDS socket (connecting needs write permission on it).
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory the agent creates.
pub const SOCKET_DIR_MODE: u32 = 0o750;

/// Create the socket's directory 0750 (not subject to the umask). A directory
/// that already exists is left as it is (it may be shared, like /tmp), with a
/// warning when anyone may write to it without the sticky bit.
fn prepare_socket_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o7777), "the SDS socket directory is world-writable: anyone may replace the socket");
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(SOCKET_DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(SOCKET_DIR_MODE))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// Bind the unix socket (replacing a stale one) and serve until `shutdown`.
pub async fn serve(
    path: &Path,
    service: SdsService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_routes(path, tonic::service::Routes::new(service.into_server()), shutdown).await
}

/// Like [`serve`] with any set of gRPC services (SDS plus ADS and the access log service).
pub async fn serve_routes(
    path: &Path,
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        prepare_socket_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!("removed a stale SDS socket at {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the old socket {}", path.display())),
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("binding the SDS socket {}", path.display()))?;
    // The socket hands out the workload's private key: owner and group only, whatever the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("restricting the SDS socket {}", path.display()))?;
    tracing::info!("SDS listening on {}", path.display());
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
        .await
        .context("SDS server")?;
    let _ = std::fs::remove_file(path);
    Ok(())
}
