//! Guards of the gRPC port, in front of the service:
//!
//! * [`accept`]: a connection cap (TLS handshakes in progress included), a
//!   handshake timeout, and connections wrapped in [`Guarded`], which closes
//!   them after `--grpc-idle-timeout` without a request in flight;
//! * [`GuardLayer`]: before a CreateCertificate body is read, the request
//!   must carry a client certificate or a bearer token from a trusted issuer
//!   (else Unauthenticated, audited) and, with `--audit-required`, find the
//!   audit log writable (else UNAVAILABLE); it then waits for a slot under
//!   the in-flight cap and must finish, wait included, within
//!   `--grpc-request-timeout` (RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED).

use crate::audit::{AuditLog, Record};
use crate::authn::{AuthError, Authenticator};
use crate::clock::SharedClock;
use crate::limits::{LimitCounters, Limits};
use crate::metrics::{Metrics, Refusal};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
pub struct ConnState {
    active: AtomicUsize,
    last_ms: AtomicU64,
}

/// Connections by peer address, so a request can find its connection's state.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    map: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
}

impl ConnRegistry {
    fn register(&self, peer: SocketAddr) -> Arc<ConnState> {
        let st = Arc::new(ConnState { active: AtomicUsize::new(0), last_ms: AtomicU64::new(now_ms()) });
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(peer, st.clone());
        st
    }
    fn remove(&self, peer: &SocketAddr, st: &Arc<ConnState>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(peer).is_some_and(|s| Arc::ptr_eq(s, st)) {
            map.remove(peer);
        }
    }
    fn get(&self, peer: &SocketAddr) -> Option<Arc<ConnState>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(peer).cloned()
    }
}

/// Marks a request in flight on its connection until dropped.
struct InFlight(Option<Arc<ConnState>>);

impl InFlight {
    fn new(st: Option<Arc<ConnState>>) -> Self {
        if let Some(s) = &st {
            s.active.fetch_add(1, Ordering::Relaxed);
            s.last_ms.store(now_ms(), Ordering::Relaxed);
        }
        Self(st)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.last_ms.store(now_ms(), Ordering::Relaxed);
            s.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection holding its slot under the connection cap, closed (EOF) once
/// idle for `idle` with no request in flight.
pub struct Guarded<T> {
    inner: T,
    peer: SocketAddr,
    state: Arc<ConnState>,
    registry: Arc<ConnRegistry>,
    metrics: Arc<Metrics>,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    closed: bool,
    _permit: OwnedSemaphorePermit,
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        self.registry.remove(&self.peer, &self.state);
    }
}

impl<T> Guarded<T> {
    /// True once the connection has been idle too long; else re-arms the timer.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let last = self.state.last_ms.load(Ordering::Relaxed);
            let idle_ms = self.idle.as_millis() as u64;
            let now = now_ms();
            if self.state.active.load(Ordering::Relaxed) == 0 && now.saturating_sub(last) >= idle_ms {
                return true;
            }
            let next = if self.state.active.load(Ordering::Relaxed) > 0 { now + idle_ms } else { last + idle_ms };
            let at = tokio::time::Instant::from_std(epoch() + Duration::from_millis(next.max(now + 1)));
            self.timer.as_mut().reset(at);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if self.idle_expired(cx) {
                    self.closed = true;
                    LimitCounters::inc(&self.metrics.limits.grpc_idle_closed);
                    tracing::debug!(peer = %self.peer, "closing an idle gRPC connection");
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            r => r,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: Connected> Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// What the accept loop needs.
#[derive(Clone)]
pub struct AcceptOptions {
    pub limits: Limits,
    pub registry: Arc<ConnRegistry>,
    pub metrics: Arc<Metrics>,
}

pub type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Accept connections under the cap; `tls` completes handshakes concurrently (with a timeout).
pub fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    opts: AcceptOptions,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Guarded<TlsConn>>> {
    accept(listener, opts, move |sock, timeout| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            }
        }
    })
}

/// Plaintext (`--plaintext`): the same caps, no handshake.
pub fn accept_plain(
    listener: TcpListener,
    opts: AcceptOptions,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Guarded<TcpStream>>> {
    accept(listener, opts, |sock, _| async move { Ok(sock) })
}

fn accept<T, F, Fut>(
    listener: TcpListener,
    opts: AcceptOptions,
    handshake: F,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Guarded<T>>>
where
    T: Send + 'static,
    F: Fn(TcpStream, Duration) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let slots = Arc::new(Semaphore::new(opts.limits.grpc_max_connections));
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                LimitCounters::inc(&opts.metrics.limits.grpc_connections_refused);
                tracing::warn!(%peer, max = opts.limits.grpc_max_connections, "gRPC connection refused: --grpc-max-connections reached");
                drop(sock);
                continue;
            };
            let _ = sock.set_nodelay(true);
            let (tx, opts, fut) = (tx.clone(), opts.clone(), handshake(sock, opts.limits.tls_handshake_timeout));
            tokio::spawn(async move {
                match fut.await {
                    Ok(inner) => {
                        let state = opts.registry.register(peer);
                        let idle = opts.limits.grpc_idle_timeout;
                        let conn = Guarded {
                            inner,
                            peer,
                            state,
                            registry: opts.registry.clone(),
                            metrics: opts.metrics.clone(),
                            idle,
                            timer: Box::pin(tokio::time::sleep(idle)),
                            closed: false,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => {
                        LimitCounters::inc(&opts.metrics.limits.grpc_handshake_failures);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Shared state of [`GuardService`].
pub struct Guard {
    pub auth: Arc<Authenticator>,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub limits: Limits,
    pub registry: Arc<ConnRegistry>,
    pub inflight: Arc<Semaphore>,
    pub peers: Arc<crate::peer_slots::PeerSlots>,
}

#[derive(Clone)]
pub struct GuardLayer(pub Arc<Guard>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GuardService { inner, guard: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

/// A response body that keeps its request counted in flight until it is dropped.
struct TrackedBody {
    inner: tonic::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

fn peer_of(req: &Req) -> (Option<SocketAddr>, bool) {
    let ext = req.extensions();
    if let Some(i) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let certs = i.peer_certs().is_some_and(|c| !c.is_empty());
        (i.get_ref().remote_addr(), certs)
    } else {
        (ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()), false)
    }
}

fn bearer(req: &Req) -> Option<&str> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

impl Guard {
    /// Refused before the body was read: metrics, audit line, rate-limited log line.
    fn refuse_early(&self, peer: Option<SocketAddr>, e: AuthError) -> Resp {
        let m = &self.metrics;
        m.csr_count.fetch_add(1, Ordering::Relaxed);
        m.auth_failures.fetch_add(1, Ordering::Relaxed);
        m.refused(Refusal::Authentication);
        LimitCounters::inc(&m.limits.grpc_no_credential);
        let caller = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        let reason = e.to_string();
        tracing::info!(caller = %caller, reason = %reason, "certificate request refused before its body was read");
        self.audit.record(Record {
            time: meshca_pki::material::fmt_time(self.clock.now()),
            caller,
            identity: None,
            serial: None,
            not_after: None,
            outcome: "refused",
            reason: Some(reason),
            code: Some("Unauthenticated".into()),
        });
        tonic::Status::unauthenticated(crate::service::AUTH_FAILURE_MESSAGE).into_http()
    }

    /// `Err(response)` when the request must not reach the service.
    fn admit(&self, req: &Req, peer: Option<SocketAddr>, has_cert: bool) -> Result<(), Box<Resp>> {
        if self.limits.audit_required {
            if let Some(e) = self.audit.status().failure() {
                tracing::warn!(error = %e, "certificate request refused: the audit log cannot be written (--audit-required)");
                return Err(Box::new(tonic::Status::unavailable("the CA cannot write its audit log").into_http()));
            }
        }
        if !has_cert {
            let check = match bearer(req) {
                None => Err(AuthError::NoCredential),
                Some(t) => self.auth.precheck_token(t),
            };
            check.map_err(|e| Box::new(self.refuse_early(peer, e)))?;
        }
        Ok(())
    }

    /// A slot under `--grpc-max-inflight`, waited for until `deadline` (a burst
    /// of restarts queues briefly; the bodies of waiting requests stay unread,
    /// bounded by the HTTP/2 flow-control windows).
    async fn slot(&self, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit, Resp> {
        match tokio::time::timeout_at(deadline, self.inflight.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(self.shed("--grpc-max-inflight", self.limits.grpc_max_inflight)),
        }
    }

    fn shed(&self, flag: &str, max: usize) -> Resp {
        LimitCounters::inc(&self.metrics.limits.grpc_requests_shed);
        tracing::warn!(max, "certificate request shed: {flag} stayed reached for the whole request timeout");
        tonic::Status::resource_exhausted("the CA is at its limit of requests in progress; retry").into_http()
    }
}

/// tonic answers a message over `--grpc-max-message-size` with OUT_OF_RANGE;
/// gRPC's status-code guide (and grpc-go, which Istio's agents use) call a
/// message larger than the limit RESOURCE_EXHAUSTED.
fn oversize_as_resource_exhausted(mut resp: Resp) -> Resp {
    let h = resp.headers();
    let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("message length too large") || m.contains("message%20length%20too%20large"));
    if too_large {
        resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

impl<S> tower::Service<Req> for GuardService<S>
where
    S: tower::Service<Req, Response = Resp> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (peer, has_cert) = peer_of(&req);
        let in_flight = InFlight::new(peer.and_then(|p| self.guard.registry.get(&p)));
        if !req.uri().path().ends_with("/CreateCertificate") {
            // Streams (the events RPC) stay "in flight" until their body ends.
            return Box::pin(async move {
                let resp = inner.call(req).await?;
                Ok(resp.map(|body| tonic::body::Body::new(TrackedBody { inner: body, _in_flight: in_flight })))
            });
        }
        if let Err(resp) = self.guard.admit(&req, peer, has_cert) {
            return Box::pin(async move { Ok(*resp) });
        }
        let guard = self.guard.clone();
        Box::pin(async move {
            let mut req = req;
            let _in_flight = in_flight;
            let deadline = tokio::time::Instant::now() + guard.limits.grpc_request_timeout;
            // Verify the token now, before the body is read or a slot is taken: a forged token naming a
            // trusted issuer holds nothing. The service reuses the verified caller (one verification).
            if !has_cert {
                if let Some(token) = bearer(&req).map(str::to_string) {
                    match guard.auth.authenticate_token(&token).await {
                        Ok(caller) => {
                            req.extensions_mut().insert(crate::authn::Verified(caller));
                        }
                        Err(e) => return Ok(guard.refuse_early(peer, e)),
                    }
                }
            }
            let _peer_permit = match peer {
                Some(p) => match guard.peers.acquire(p.ip(), deadline).await {
                    Some(permit) => Some(permit),
                    None => {
                        return Ok(guard.shed("--grpc-max-inflight-per-peer", guard.limits.grpc_max_inflight_per_peer))
                    }
                },
                None => None,
            };
            let _permit = match guard.slot(deadline).await {
                Ok(p) => p,
                Err(resp) => return Ok(resp),
            };
            match tokio::time::timeout_at(deadline, inner.call(req)).await {
                Ok(r) => r.map(oversize_as_resource_exhausted),
                Err(_) => {
                    LimitCounters::inc(&guard.metrics.limits.grpc_requests_timed_out);
                    tracing::info!(?peer, "certificate request cut off by --grpc-request-timeout");
                    Ok(tonic::Status::deadline_exceeded("request timed out").into_http())
                }
            }
        })
    }
}
