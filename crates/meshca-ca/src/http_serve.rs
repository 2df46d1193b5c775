//! Serving the HTTP port with explicit limits: a connection cap (more are
//! closed at accept), a header-read timeout (which also closes idle
//! keep-alive connections) and a request timeout (long-polls get their wait
//! on top).

use crate::limits::{LimitCounters, Limits};
use crate::metrics::Metrics;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Serve `router` on `listener` until `shutdown`, then let open requests finish (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.http_max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.http_header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            LimitCounters::inc(&metrics.limits.http_connections_refused);
            tracing::debug!(%peer, "HTTP connection refused: --http-max-connections reached");
            drop(sock);
            continue;
        };
        let (router, metrics) = (router.clone(), metrics.clone());
        let (request_timeout, long_poll) = (limits.http_request_timeout, limits.http_long_poll_max_wait);
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (router, metrics) = (router.clone(), metrics.clone());
            let limit =
                if req.uri().path() == "/root-cert.pem" { request_timeout + long_poll } else { request_timeout };
            async move {
                match tokio::time::timeout(limit, router.oneshot(req)).await {
                    Ok(r) => r,
                    Err(_) => {
                        LimitCounters::inc(&metrics.limits.http_requests_timed_out);
                        Ok((StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response())
                    }
                }
            }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(sock), service));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}
