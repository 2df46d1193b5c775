//! `/healthz` (200 while the primary workload's certificate is valid),
//! `/readyz`, `/metrics` and `/status` (every workload's certificate) on the
//! agent's HTTP port.

use crate::caclient::Identity;
use crate::manager::{CertManager, CertState, Clock};
use crate::metrics::Metrics;
use crate::workloads::WorkloadSet;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    /// Run-time log levels, when the binary manages logging.
    pub log: Option<LogControl>,
    pub manager: CertManager,
    pub identity: Identity,
    /// Every workload served (for `/status`).
    pub workloads: Arc<WorkloadSet>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Policy delivery, when on.
    pub policy: Option<Arc<crate::policy::PolicyHandle>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/logging", get(logging_get).post(logging_set))
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> Response {
    let state = s.manager.subscribe(&s.identity).borrow().clone();
    match state {
        CertState::Available(c) if c.valid_at(s.clock.now()) => {
            (StatusCode::OK, format!("ok {} serial {}\n", c.spiffe_id, c.serial)).into_response()
        }
        CertState::Available(_) => (StatusCode::SERVICE_UNAVAILABLE, "certificate expired\n").into_response(),
        CertState::Initializing => {
            (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first certificate\n").into_response()
        }
        CertState::Unavailable(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("no certificate: {e}\n")).into_response()
        }
    }
}

/// At most this many workloads are listed by `/status`.
pub const STATUS_MAX_WORKLOADS: usize = 1000;

fn cert_json(state: Option<&CertState>, now: std::time::SystemTime) -> serde_json::Value {
    match state {
        Some(CertState::Available(c)) => serde_json::json!({
            "state": "available",
            "identity": c.spiffe_id,
            "serial": c.serial,
            "valid": c.valid_at(now),
            "expires_unix": c.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }),
        Some(CertState::Initializing) => serde_json::json!({ "state": "initializing" }),
        Some(CertState::Unavailable(e)) => serde_json::json!({ "state": "unavailable", "error": e.to_string() }),
        // Not requested over SDS yet: extra workloads are fetched at their first request.
        None => serde_json::json!({ "state": "idle" }),
    }
}

/// `/status`: the primary certificate, every workload's (at most
/// [`STATUS_MAX_WORKLOADS`]) and, with policies on, the three hops of policy delivery.
async fn status(State(s): State<HttpState>) -> Response {
    let now = s.clock.now();
    let cert = cert_json(Some(&s.manager.subscribe(&s.identity).borrow().clone()), now);
    let workloads: Vec<serde_json::Value> = s
        .workloads
        .iter()
        .take(STATUS_MAX_WORKLOADS)
        .map(|id| {
            let mut v = cert_json(s.manager.peek(id).as_ref(), now);
            v["name"] = serde_json::Value::String(id.name.clone());
            v
        })
        .collect();
    let policy = s.policy.as_ref().map(|p| p.status_json()).unwrap_or(serde_json::Value::Null);
    axum::Json(serde_json::json!({
        "certificate": cert,
        "workloads": workloads,
        "workloads_total": s.workloads.len(),
        "workloads_truncated": s.workloads.len() > STATUS_MAX_WORKLOADS,
        "policy": policy,
    }))
    .into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render(s.clock.now()))
        .into_response()
}

/// `level=L` or `SCOPE=L` pairs in, the new filter (or why not) out.
pub type SetLevels = fn(&[(String, String)]) -> Result<String, String>;

/// How the binary lets the agent read and change its log filter at run time.
#[derive(Debug, Clone, Copy)]
pub struct LogControl {
    pub get: fn() -> Option<String>,
    pub set: SetLevels,
}

/// `GET /logging`: the log filter in force.
async fn logging_get(State(s): State<HttpState>) -> Response {
    match s.log.and_then(|l| (l.get)()) {
        Some(f) => (StatusCode::OK, format!("{f}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "run-time log levels are not available\n").into_response(),
    }
}

/// `POST /logging?level=debug` or `?meshca_agent::sds=debug`.
async fn logging_set(State(s): State<HttpState>, Query(changes): Query<Vec<(String, String)>>) -> Response {
    let Some(log) = s.log else {
        return (StatusCode::NOT_FOUND, "run-time log levels are not available\n").into_response();
    };
    match (log.set)(&changes) {
        Ok(f) => (StatusCode::OK, format!("{f}\n")).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
