//! `meshca serve`: load the CA material, then run the gRPC and HTTP ports
//! until asked to stop.

use crate::active::{ActiveCa, SourceKind};
use crate::audit::AuditLog;
use crate::authn::{Authenticator, JwksSource};
use crate::clock::{self, SharedClock};
use crate::config::ServeConfig;
use crate::grpc_guard::{accept_plain, accept_tls, AcceptOptions, ConnRegistry, Guard, GuardLayer};
use crate::http::{router, HttpState};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::service::{CaService, IssuancePolicy};
use crate::source::{self, SelfSignedOptions};
use crate::tls::{self, ServingCert};
use crate::{fsutil, tokens};
use anyhow::Context;
use meshca_pki::{CaMaterial, KeyKind, LeafProfile, PrivateKey};
use meshca_proto::IstioCertificateServiceServer;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Log the material the way istiod does: one `x509 cert - ...` line per certificate.
pub fn log_material(material: &CaMaterial) {
    for der in material.certs_for_log() {
        match meshca_pki::inspect::istiod_line(der) {
            Ok(line) => tracing::info!("{line}"),
            Err(e) => tracing::warn!("x509 cert - unparsable: {e}"),
        }
    }
}

/// Load the initial CA material: plugged if `ca_dir` holds a set, else the persisted self-signed root.
pub fn initial_material(cfg: &ServeConfig, clock: &SharedClock) -> anyhow::Result<(CaMaterial, SourceKind)> {
    let layout = source::detect(&cfg.ca_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key_path = source::key_path(&cfg.ca_dir, layout);
    match layout {
        Some(layout) => {
            let m = source::load_plugged(&cfg.ca_dir, layout, clock.now()).map_err(|e| {
                anyhow::anyhow!("refusing to start with the plug-in CA set in {}: {e}", cfg.ca_dir.display())
            })?;
            tracing::info!("Use plugged-in cert at {}", key_path.display());
            log_material(&m);
            Ok((m, SourceKind::Plugged))
        }
        None => {
            let opts = SelfSignedOptions {
                key: cfg.self_signed_key,
                ttl: cfg.self_signed_ttl,
                organization: cfg.trust_domain.clone(),
            };
            let (m, created) = source::load_or_create_self_signed(&cfg.data_dir, &opts, clock.now())
                .map_err(|e| anyhow::anyhow!("self-signed root: {e}"))?;
            tracing::info!("No plugged-in cert at {}; self-signed cert is used", key_path.display());
            if created {
                tracing::info!(dir = %cfg.data_dir.join("ca").display(), "generated a new self-signed root");
            }
            log_material(&m);
            Ok((m, SourceKind::SelfSigned))
        }
    }
}

/// Issue the gRPC serving certificate from the active material.
fn issue_serving(
    active: &ActiveCa,
    dns: &[String],
    ttl: Duration,
    clock: &SharedClock,
) -> anyhow::Result<(rustls::sign::CertifiedKey, Duration)> {
    let snap = active.load();
    let key = PrivateKey::generate(KeyKind::EcP256)?;
    let profile = LeafProfile { uris: Vec::new(), dns_names: dns.to_vec(), ttl };
    let now = clock.now();
    let issued = snap.material.signer().issue(&key.public_key_spki(), &profile, now)?;
    let mut chain = vec![issued.cert];
    chain.extend(snap.material.chain().iter().cloned());
    let lifetime = issued.not_after.duration_since(now).unwrap_or_default();
    let pkcs8 = zeroize::Zeroizing::new(key.key_pair().serialize_der());
    Ok((tls::certified_key(chain, &pkcs8, &tls::provider())?, lifetime))
}

/// Keep the serving certificate fresh: renew at half-life, and at once when the CA material changes.
fn spawn_serving_renewal(
    active: Arc<ActiveCa>,
    serving: Arc<ServingCert>,
    dns: Vec<String>,
    ttl: Duration,
    clock: SharedClock,
    first_lifetime: Duration,
) {
    tokio::spawn(async move {
        let mut changes = active.subscribe();
        let mut wait = first_lifetime / 2;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = changes.changed() => if r.is_err() { return },
            }
            match issue_serving(&active, &dns, ttl, &clock) {
                Ok((ck, lifetime)) => {
                    serving.set(ck);
                    wait = (lifetime / 2).max(Duration::from_secs(1));
                    tracing::info!(valid_for_s = lifetime.as_secs(), "renewed the gRPC serving certificate");
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not renew the gRPC serving certificate; retrying in 10s");
                    wait = Duration::from_secs(10);
                }
            }
        }
    });
}

/// Run the CA until `shutdown` completes.
pub async fn run(cfg: ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let clock = clock::system();
    let limits = effective_limits(&cfg.limits);
    fsutil::ensure_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    // --- Several replicas on a shared store (ha/): the shared root lands in the data directory first ---
    let replica = match &cfg.store {
        Some(sc) => Some(crate::ha::Replica::prepare(sc, &cfg).await?),
        None => None,
    };
    // --- Vault/OpenBao source (vault/) ---
    let (material, kind, vault_source) = match &cfg.vault {
        Some(v) => {
            let (m, src) = crate::vault::start(v, &clock).await?;
            (m, SourceKind::Vault, Some(src))
        }
        None => {
            let (m, k) = initial_material(&cfg, &clock)?;
            (m, k, None)
        }
    };
    let location = cfg.vault.as_ref().map_or_else(|| cfg.ca_dir.clone(), |v| v.location());
    // --- end Vault ---
    let roots = material.roots().len();
    let active = Arc::new(ActiveCa::new(material, kind, location, clock.now()));
    tracing::info!("spiffe  Added {roots} certs to trust domain {} in peer cert verifier", cfg.trust_domain);

    let metrics = Arc::new(Metrics::default());
    active.staging.configure(crate::rotation::RotationOptions {
        propagation_delay: cfg.root_propagation_delay,
        max_ttl: cfg.max_ttl,
    });
    let swapper = crate::swap::Swapper {
        active: active.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        trust_domain: cfg.trust_domain.clone(),
        allow_root_replace: cfg.allow_root_replace,
    };
    crate::swap::spawn_activation(swapper.clone());
    let store_status = replica.as_ref().map(|r| r.status());
    let policy_store = replica.as_ref().map(|r| r.policy_store());
    if let Some(r) = replica {
        r.start(crate::ha::Runtime {
            active: active.clone(),
            swapper,
            clock: clock.clone(),
            data_dir: cfg.data_dir.clone(),
            grpc_addr: cfg.grpc_addr.to_string(),
        });
    }
    if let Some(src) = vault_source {
        // Vault replaces the plug-in directory as the source; its refresh task takes the reloader's place.
        src.spawn(crate::reload::Swapper {
            active: active.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            trust_domain: cfg.trust_domain.clone(),
            allow_root_replace: cfg.allow_root_replace,
        });
    } else {
        crate::reload::spawn(crate::reload::Reloader::new(
            active.clone(),
            metrics.clone(),
            clock.clone(),
            crate::reload::ReloadOptions {
                ca_dir: cfg.ca_dir.clone(),
                trust_domain: cfg.trust_domain.clone(),
                allow_root_replace: cfg.allow_root_replace,
                poll_interval: cfg.reload_poll_interval,
            },
        ))?;
    }
    let audit_path = cfg.data_dir.join("audit.jsonl");
    let (audit, audit_writer) = AuditLog::open(
        &audit_path,
        metrics.clone(),
        crate::audit::AuditOptions {
            max_file_bytes: limits.audit_max_file_bytes,
            keep_files: limits.audit_keep_files,
            queue_bytes: limits.audit_queue_bytes,
        },
    )
    .with_context(|| format!("opening {}", audit_path.display()))?;
    let audit_status = audit.status();
    let guard_audit = audit.clone();

    let local_key = tokens::load_or_create_key(&cfg.data_dir)?;
    let local_keys = meshca_jwt::KeySet::from_jwks(&meshca_jwt::Jwks { keys: vec![local_key.public_jwk()] })?;
    let mut issuers = vec![(tokens::LOCAL_ISSUER.to_string(), JwksSource::Static(local_keys))];
    issuers.extend(cfg.jwt_issuers.iter().map(|(i, s)| (i.clone(), JwksSource::parse(s))));
    let auth = Authenticator::new(
        issuers,
        cfg.token_audience.clone(),
        cfg.trust_domain.clone(),
        cfg.trusted_node_accounts.iter().cloned().collect(),
        clock.clone(),
        cfg.jwt_allow_http,
    )
    .await?;

    let auth = Arc::new(auth);
    let events = crate::events::EventsService { active: active.clone(), auth: auth.clone(), clock: clock.clone() };
    let svc = CaService {
        active: active.clone(),
        auth: auth.clone(),
        policy: IssuancePolicy { default_ttl: cfg.default_ttl, max_ttl: cfg.max_ttl, ..Default::default() },
        metrics: metrics.clone(),
        audit,
        clock: clock.clone(),
    };

    let policy = match &cfg.policy {
        Some(p) => {
            let prefix = meshca_store::spec::prefix_for(&cfg.trust_domain);
            let shared = policy_store.map(|(store, id)| crate::policy::shared::SharedSet::new(store, id, &prefix));
            Some(crate::policy::Policy::start(p.clone(), cfg.trust_domain.clone(), clock.clone(), shared).await?)
        }
        None => None,
    };
    let http_state = Arc::new(HttpState {
        active: active.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        ready: false.into(),
        trust_domain: cfg.trust_domain.clone(),
        audit: Some(audit_status),
        long_polls: Arc::new(tokio::sync::Semaphore::new(limits.http_max_long_polls)),
        long_poll_max_wait: limits.http_long_poll_max_wait,
        policy: policy.clone(),
        store: store_status,
    });
    let http_listener =
        listen(cfg.http_addr, limits.listen_backlog).with_context(|| format!("binding HTTP {}", cfg.http_addr))?;
    let grpc_listener =
        listen(cfg.grpc_addr, limits.listen_backlog).with_context(|| format!("binding gRPC {}", cfg.grpc_addr))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let http = crate::http_serve::serve(
        http_listener,
        router(http_state.clone()),
        limits.clone(),
        metrics.clone(),
        stopped(stop_rx.clone()),
    );
    let registry = Arc::new(ConnRegistry::default());
    let guard = GuardLayer(Arc::new(Guard {
        auth: auth.clone(),
        audit: guard_audit,
        metrics: metrics.clone(),
        clock: clock.clone(),
        limits: limits.clone(),
        registry: registry.clone(),
        inflight: Arc::new(tokio::sync::Semaphore::new(limits.grpc_max_inflight)),
        peers: crate::peer_slots::PeerSlots::new(limits.grpc_max_inflight_per_peer),
    }));
    let accept_opts = AcceptOptions { limits: limits.clone(), registry, metrics: metrics.clone() };
    let grpc_service = IstioCertificateServiceServer::new(svc).max_decoding_message_size(limits.grpc_max_message_size);
    let events_service =
        meshca_proto::CaEventsServer::new(events).max_decoding_message_size(crate::events::MAX_REPORT_BYTES);
    let policy_service = policy.clone().map(|policy| {
        let svc = crate::policy::service::PolicyService { policy, active: active.clone(), auth: auth.clone() };
        meshca_proto::PolicyDeliveryServer::new(svc)
            .max_decoding_message_size(crate::policy::agents::MAX_REPORT_BYTES)
            .max_encoding_message_size(usize::MAX)
    });
    let grpc_router = grpc_builder(&limits)
        .layer(guard)
        .add_service(grpc_service)
        .add_service(events_service)
        .add_optional_service(policy_service);

    let grpc: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = if cfg.plaintext {
        tracing::warn!(addr = %cfg.grpc_addr, "gRPC without TLS (--plaintext): for local use only");
        let incoming = accept_plain(grpc_listener, accept_opts);
        Box::pin(async move { Ok(grpc_router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())).await?) })
    } else {
        let (ck, lifetime) = issue_serving(&active, &cfg.serving_dns, cfg.serving_ttl, &clock)?;
        let serving = Arc::new(ServingCert::new(ck));
        spawn_serving_renewal(
            active.clone(),
            serving.clone(),
            cfg.serving_dns.clone(),
            cfg.serving_ttl,
            clock.clone(),
            lifetime,
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(serving)?));
        let incoming = accept_tls(grpc_listener, acceptor, accept_opts);
        Box::pin(async move { Ok(grpc_router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())).await?) })
    };
    crate::logging::spawn_summary(Duration::from_secs(10));
    http_state.ready.store(true, Ordering::Relaxed);
    tracing::info!(grpc = %cfg.grpc_addr, http = %cfg.http_addr, tls = !cfg.plaintext, trust_domain = %cfg.trust_domain, "meshca CA serving");
    let (g, h) = tokio::join!(grpc, async { http.await.map_err(anyhow::Error::from) });
    audit_writer.finish(Duration::from_secs(2));
    g?;
    h?;
    tracing::info!("meshca CA stopped");
    Ok(())
}

/// Raise the open-file limit and fit the connection caps into it.
fn effective_limits(configured: &Limits) -> Limits {
    let mut limits = configured.clone();
    let (before, now) = crate::limits::raise_nofile();
    if now != before {
        tracing::info!(from = before, to = now, "raised the open-file soft limit to the hard limit");
    }
    if let Some(w) = limits.fit_descriptors(now) {
        tracing::warn!("{w}");
    }
    limits
}

/// The gRPC server with the HTTP/2 limits.
fn grpc_builder(l: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(l.grpc_max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(l.grpc_max_pending_accept_reset_streams))
        .http2_max_local_error_reset_streams(Some(l.grpc_max_local_reset_streams))
        .http2_keepalive_interval(Some(l.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(l.grpc_keepalive_timeout))
        // No max_connection_age_grace: with one, tonic 0.14 sends no GOAWAY at the age and instead cuts the
        // connection at age + grace. Without it, a GOAWAY at the age moves new requests to a new connection
        // (as gRPC-Go's MaxConnectionAge with its default, unbounded grace); open streams finish.
        .max_connection_age(l.grpc_max_connection_age)
        .initial_stream_window_size(Some(256 * 1024))
        .initial_connection_window_size(Some(1024 * 1024))
        .http2_max_header_list_size(Some(64 * 1024))
}

/// Bind and listen with an accept queue of `backlog` (the kernel caps it at
/// `net.core.somaxconn`); `TcpListener::bind` would use 1024, which a restart
/// storm of thousands of agents overflows while the accept loop is busy.
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
