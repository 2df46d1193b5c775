//! meshca's node agent: a certificate manager that obtains workload
//! certificates from the CA (key generated here, never sent anywhere but to
//! Envoy over SDS and to the output directory) and serves them to Envoy.
#![forbid(unsafe_code)]

pub mod als;
pub mod caclient;
pub mod cert;
pub mod error;
pub mod events;
pub mod http;
pub mod manager;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod root_acks;
pub mod sds;
pub mod sds_client;
pub mod trust;
pub mod workloads;
pub mod xds;
pub mod xds_stages;

pub use caclient::{CaEndpoint, GrpcSigner, Identity, Signer};
pub use cert::Cert;
/// Envoy's protobuf types, for SDS clients in tests.
pub use envoy_types;
pub use error::AgentError;
pub use manager::{CertManager, CertState, Clock, ManagerConfig, SystemClock};
pub use metrics::Metrics;

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything `meshca agent` needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub ca: CaEndpoint,
    /// The primary workload's token, served as `default`.
    pub token_file: PathBuf,
    /// Extra workloads, each served under its own name (fetched at the first SDS request for it).
    pub workloads: Vec<workloads::Workload>,
    pub manager: ManagerConfig,
    pub sds_socket: PathBuf,
    pub output_dir: Option<PathBuf>,
    pub http_addr: Option<String>,
    /// The CA's HTTP port, for the trust bundle long-poll and `/status`
    /// (for CAs without meshca's change stream; off by default).
    pub ca_http_addr: Option<String>,
    /// Follow the CA's change stream over the gRPC channel (default on).
    pub ca_events: bool,
    /// Run-time log levels on the HTTP port (`/logging`).
    pub log_control: Option<http::LogControl>,
    pub status_interval: Duration,
    /// Policies from the CA server to Envoy over ECDS (`None`: off).
    pub policy: Option<policy::PolicyConfig>,
}

/// Run the agent until `shutdown` resolves.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let signer = GrpcSigner::new(cfg.ca.clone());
    let manager = CertManager::start(signer.clone(), cfg.manager.clone(), metrics.clone(), clock.clone());
    let set = Arc::new(workloads::WorkloadSet::new(cfg.token_file.clone(), cfg.workloads.clone())?);
    let identity = set.primary().clone();
    if set.len() > 1 {
        tracing::info!(
            workloads = set.len(),
            "serving several workloads (extra ones fetched at their first SDS request)"
        );
    }
    let mut first = manager.subscribe(&identity);
    let acks = Arc::new(root_acks::RootAcks::default());
    let xds_state = xds::XdsState::new(metrics.clone());
    let (policy_handle, refresh_rx) = policy::PolicyHandle::new(xds_state.clone());
    if let Some(pcfg) = &cfg.policy {
        let client = policy::client::Client {
            cfg: pcfg.clone(),
            signer: signer.clone(),
            token_file: cfg.token_file.clone(),
            identity: identity.clone(),
            manager: manager.clone(),
            handle: policy_handle.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(client.run(refresh_rx));
    }
    if cfg.ca_events {
        tokio::spawn(events::follow(
            signer,
            cfg.token_file.clone(),
            identity.clone(),
            manager.clone(),
            acks.clone(),
            metrics.clone(),
        ));
    }

    if let Some(addr) = &cfg.ca_http_addr {
        let w = trust::TrustWatchConfig {
            ca_http_addr: addr.clone(),
            long_poll: Duration::from_secs(60),
            status_interval: cfg.status_interval,
        };
        tokio::spawn(trust::watch_bundle(w.clone(), manager.clone(), metrics.clone()));
        tokio::spawn(trust::watch_signer(w, manager.clone(), metrics.clone()));
    }
    if let Some(dir) = &cfg.output_dir {
        tokio::spawn(output::write_files(dir.clone(), manager.subscribe(&identity), manager.trust()));
    }
    if let Some(addr) = &cfg.http_addr {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding --http-addr {addr}"))?;
        tracing::info!("agent HTTP (health, metrics) on {}", listener.local_addr()?);
        let app = http::router(http::HttpState {
            log: cfg.log_control,
            manager: manager.clone(),
            identity: identity.clone(),
            workloads: set.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            policy: cfg.policy.is_some().then(|| policy_handle.clone()),
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("agent HTTP server: {e}");
            }
        });
    }
    // Log the first outcome so an operator sees at once whether the CA answers.
    tokio::spawn(async move {
        loop {
            match &*first.borrow_and_update() {
                CertState::Available(c) => {
                    tracing::info!(identity = %c.spiffe_id, "first certificate ready");
                    return;
                }
                CertState::Unavailable(e) => tracing::warn!("no certificate yet: {e}"),
                CertState::Initializing => {}
            }
            if first.changed().await.is_err() {
                return;
            }
        }
    });
    let service = sds::SdsService::new(manager, identity, metrics).with_workloads(set).with_root_acks(acks);
    // One socket for SDS, ADS (secrets and policy filters) and the access log service.
    let mut routes = tonic::service::Routes::new(service.clone().into_server());
    routes = routes.add_service(xds::AdsService::new(service, xds_state).into_server());
    routes = routes.add_service(als::AlsService::new(policy_handle).into_server());
    sds::serve_routes(&cfg.sds_socket, routes, shutdown).await
}
