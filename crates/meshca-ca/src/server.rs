//! `meshca serve`: load the CA material, then run the gRPC and HTTP ports
//! until asked to stop.

use crate::active::{ActiveCa, SourceKind};
use crate::audit::AuditLog;
use crate::authn::{Authenticator, JwksSource};
use crate::clock::{self, SharedClock};
use crate::config::ServeConfig;
use crate::http::{router, HttpState};
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
    fsutil::ensure_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
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
    let (audit, audit_writer) =
        AuditLog::open(&audit_path, metrics.clone()).with_context(|| format!("opening {}", audit_path.display()))?;

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
    )
    .await?;

    let svc = CaService {
        active: active.clone(),
        auth: Arc::new(auth),
        policy: IssuancePolicy { default_ttl: cfg.default_ttl, max_ttl: cfg.max_ttl, ..Default::default() },
        metrics: metrics.clone(),
        audit,
        clock: clock.clone(),
    };

    let http_state = Arc::new(HttpState {
        active: active.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        ready: false.into(),
        trust_domain: cfg.trust_domain.clone(),
    });
    let http_listener =
        TcpListener::bind(cfg.http_addr).await.with_context(|| format!("binding HTTP {}", cfg.http_addr))?;
    let grpc_listener =
        TcpListener::bind(cfg.grpc_addr).await.with_context(|| format!("binding gRPC {}", cfg.grpc_addr))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let http = axum::serve(http_listener, router(http_state.clone())).with_graceful_shutdown(stopped(stop_rx.clone()));
    let grpc_service = IstioCertificateServiceServer::new(svc).max_decoding_message_size(4 * 1024 * 1024);
    let grpc_router = tonic::transport::Server::builder().add_service(grpc_service);

    let grpc: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = if cfg.plaintext {
        tracing::warn!(addr = %cfg.grpc_addr, "gRPC without TLS (--plaintext): for local use only");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
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
        let incoming = tls_incoming(grpc_listener, acceptor);
        Box::pin(async move { Ok(grpc_router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())).await?) })
    };
    http_state.ready.store(true, Ordering::Relaxed);
    tracing::info!(grpc = %cfg.grpc_addr, http = %cfg.http_addr, tls = !cfg.plaintext, trust_domain = %cfg.trust_domain, "meshca CA serving");
    let (g, h) = tokio::join!(grpc, async { http.await.map_err(anyhow::Error::from) });
    audit_writer.finish(Duration::from_secs(2));
    g?;
    h?;
    tracing::info!("meshca CA stopped");
    Ok(())
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accept TCP connections and complete TLS handshakes concurrently, yielding finished streams.
fn tls_incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
