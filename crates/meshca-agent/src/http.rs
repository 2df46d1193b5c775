//! `/healthz` (200 while the workload certificate is valid), `/readyz` and
//! `/metrics` on the agent's HTTP port.

use crate::caclient::Identity;
use crate::manager::{CertManager, CertState, Clock};
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub manager: CertManager,
    pub identity: Identity,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .route("/metrics", get(metrics))
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

async fn metrics(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render(s.clock.now()))
        .into_response()
}
