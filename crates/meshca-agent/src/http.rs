//! `/healthz` (200 while the workload certificate is valid), `/readyz` and
//! `/metrics` on the agent's HTTP port.

use crate::caclient::Identity;
use crate::manager::{CertManager, CertState, Clock};
use crate::metrics::Metrics;
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

/// `/status`: the workload certificate and, with policies on, the three hops of policy delivery.
async fn status(State(s): State<HttpState>) -> Response {
    let cert = match &*s.manager.subscribe(&s.identity).borrow() {
        CertState::Available(c) => serde_json::json!({
            "state": "available",
            "identity": c.spiffe_id,
            "serial": c.serial,
            "valid": c.valid_at(s.clock.now()),
        }),
        CertState::Initializing => serde_json::json!({ "state": "initializing" }),
        CertState::Unavailable(e) => serde_json::json!({ "state": "unavailable", "error": e.to_string() }),
    };
    let policy = s.policy.as_ref().map(|p| p.status_json()).unwrap_or(serde_json::Value::Null);
    axum::Json(serde_json::json!({ "certificate": cert, "policy": policy })).into_response()
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
