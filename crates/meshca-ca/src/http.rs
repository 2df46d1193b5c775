//! The HTTP port: health, readiness, Prometheus metrics, the trust bundle
//! (with an ETag and a long-poll for agents) and a JSON status page.

use crate::active::{ActiveCa, Snapshot};
use crate::audit::AuditStatus;
use crate::clock::SharedClock;
use crate::limits::LimitCounters;
use crate::metrics::{MaterialFacts, Metrics};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meshca_pki::inspect::{cert_info, sha256_hex};
use meshca_pki::material::fmt_time;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

pub struct HttpState {
    pub active: Arc<ActiveCa>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub ready: AtomicBool,
    pub trust_domain: String,
    /// Readiness also requires a writable audit log.
    pub audit: Option<Arc<AuditStatus>>,
    /// Slots for concurrent `?wait=` long-polls (`--http-max-long-polls`).
    pub long_polls: Arc<Semaphore>,
    /// Longest `?wait=` honoured (`--http-long-poll-max-wait`).
    pub long_poll_max_wait: Duration,
    /// Policy delivery (`--policy-dir`), shown under `policy`.
    pub policy: Option<Arc<crate::policy::Policy>>,
    /// The shared store's health and replicas (`--store`), shown under `store`.
    pub store: Option<Arc<crate::ha::StoreStatus>>,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/root-cert.pem", get(root_cert))
        .route("/status", get(status))
        .route("/logging", get(logging_get).post(logging_set))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    if !s.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    if let Some(e) = s.audit.as_ref().and_then(|a| a.failure()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("audit log not writable: {e}\n")).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// NotAfter facts of a snapshot, for the expiry gauges.
pub fn material_facts(snap: &Snapshot) -> MaterialFacts {
    let not_after = |der: &[u8]| {
        cert_info(der)
            .map(|i| SystemTime::UNIX_EPOCH + Duration::from_secs(i.not_after_unix.max(0) as u64))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let m = &snap.material;
    let root_expiry = m.roots().iter().map(|r| not_after(r)).min().unwrap_or(SystemTime::UNIX_EPOCH);
    let chain_expiry = std::iter::once(m.signer().not_after())
        .chain(m.chain().iter().map(|c| not_after(c)))
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    MaterialFacts { roots: m.roots().len(), root_expiry, chain_expiry }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let snap = s.active.load();
    let mut body = s.metrics.render(Some(&material_facts(&snap)), s.clock.now());
    s.active.staging.render_metrics(&mut body);
    if let Some(p) = &s.policy {
        p.render_metrics(&mut body);
    }
    if let Some(st) = &s.store {
        st.render_metrics(&mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The ETag of a trust bundle.
pub fn bundle_etag(roots_pem: &str) -> String {
    format!("\"{}\"", &sha256_hex(roots_pem.as_bytes())[..32])
}

#[derive(serde::Deserialize)]
struct WaitQuery {
    /// Long-poll: with `If-None-Match` equal to the current ETag, wait up to
    /// this many seconds (at most `--http-long-poll-max-wait`) for the bundle to change.
    wait: Option<u64>,
}

async fn root_cert(State(s): State<Arc<HttpState>>, Query(q): Query<WaitQuery>, headers: HeaderMap) -> Response {
    let known = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut changes = s.active.subscribe();
    let mut snap = s.active.load();
    let mut etag = bundle_etag(snap.material.roots_pem());
    let mut _slot = None;
    if let (Some(wait), Some(known)) = (q.wait, known.as_deref()) {
        if known == etag && wait > 0 {
            match s.long_polls.clone().try_acquire_owned() {
                Ok(p) => _slot = Some(p),
                Err(_) => {
                    LimitCounters::inc(&s.metrics.limits.http_long_polls_refused);
                    return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], "too many long-polls\n")
                        .into_response();
                }
            }
        }
        let wait = Duration::from_secs(wait).min(s.long_poll_max_wait);
        let deadline = tokio::time::Instant::now() + wait;
        while known == etag {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {
                    snap = s.active.load();
                    etag = bundle_etag(snap.material.roots_pem());
                }
                _ => break,
            }
        }
    }
    let etag_header = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if known.as_deref() == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file")), (header::ETAG, etag_header)],
        snap.material.roots_pem().to_string(),
    )
        .into_response()
}

fn cert_summary(der: &[u8]) -> serde_json::Value {
    match cert_info(der) {
        Ok(i) => serde_json::json!({
            "subject": i.subject, "issuer": i.issuer, "serial": i.serial,
            "not_before": i.not_before, "not_after": i.not_after,
            "sha256": i.sha256_fingerprint, "key": i.key,
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

async fn status(State(s): State<Arc<HttpState>>) -> Json<serde_json::Value> {
    let snap = s.active.load();
    let m = &snap.material;
    let reload = s.active.reload_state();
    Json(serde_json::json!({
        "source": snap.source,
        "directory": snap.directory.display().to_string(),
        "trust_domain": s.trust_domain,
        "generation": snap.generation,
        "loaded_at": fmt_time(snap.loaded_at),
        "signer": cert_summary(m.signer().cert()),
        "chain": m.chain().iter().map(|c| cert_summary(c)).collect::<Vec<_>>(),
        "roots": m.roots().iter().map(|c| cert_summary(c)).collect::<Vec<_>>(),
        "root_bundle_etag": bundle_etag(m.roots_pem()),
        "last_reload": reload.last_reload,
        "last_error": reload.last_error,
        "last_error_at": reload.last_error_at,
        "rotation": {
            "prepared": s.active.staging.status(),
            "propagation_delay_s": s.active.staging.propagation_delay().as_secs(),
            "agents": s.active.staging.agents.list(),
        },
        "policy": s.policy.as_ref().map(|p| p.status_json()),
        "store": s.store.as_ref().map(|st| st.json()),
    }))
}

/// `GET /logging`: the log filter in force.
async fn logging_get() -> Response {
    match crate::logging::log_filter() {
        Some(f) => (StatusCode::OK, format!("{f}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "logging is not managed by meshca in this process\n").into_response(),
    }
}

/// `POST /logging?level=debug` or `?meshca_ca::reload=debug` (as Envoy's
/// `/logging?rbac=debug`): change log levels without a restart.
async fn logging_set(Query(changes): Query<Vec<(String, String)>>) -> Response {
    match crate::logging::set_log_levels(&changes) {
        Ok(f) => (StatusCode::OK, format!("{f}\n")).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
