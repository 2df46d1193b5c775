//! The seam between "get a certificate" and the CA: a [`Signer`] trait, and
//! its gRPC implementation speaking Istio's `CreateCertificate`.
//!
//! The CA may be several replicas: `--ca-addr` takes a comma-separated list
//! and `dns:///name:port` (every address the name resolves to). The client
//! holds one connection to one of them and moves to the next on a transport
//! failure; the caller's backoff spaces the retries.

use crate::error::AgentError;
use meshca_proto::{IstioCertificateRequest, IstioCertificateServiceClient};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Who a certificate is for. The CA derives the SPIFFE ID from the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The SDS resource name the certificate is served under (`default`).
    pub name: String,
    /// Bearer token file, re-read for every request.
    pub token_file: PathBuf,
}

/// Sends a CSR and returns the CA's chain `[leaf, intermediates..., roots]`.
pub trait Signer: Send + Sync + 'static {
    fn sign(
        &self,
        id: &Identity,
        csr_pem: String,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>, AgentError>> + Send;
}

/// How to reach the CA.
#[derive(Debug, Clone)]
pub struct CaEndpoint {
    /// host:port of the gRPC API, a comma-separated list of them, or
    /// `dns:///name:port` for every address of `name`.
    pub addr: String,
    /// `None`: plaintext. `Some`: TLS trusting this bundle file (plus roots
    /// learned from the CA's own authenticated responses).
    pub root_file: Option<PathBuf>,
    /// Name expected in the CA's serving certificate.
    pub server_name: String,
    /// Sent as the `clusterid` header.
    pub cluster_id: String,
}

/// The gRPC CA client. One HTTP/2 connection, rebuilt when it fails or when
/// the roots it must trust change (a root rotation also rotates the CA's
/// serving certificate).
pub struct GrpcSigner {
    ep: CaEndpoint,
    learned_roots: Mutex<String>,
    /// (trust PEM, target, channel) of the connection in use.
    cached: Mutex<Option<(String, String, Channel)>>,
    /// Which target to use next; advanced on every transport failure.
    next: AtomicUsize,
}

/// The `--ca-addr` entries: comma-separated `host:port` and `dns:///name:port`.
pub fn parse_targets(addr: &str) -> Vec<String> {
    addr.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect()
}

/// Expand `dns:///name:port` entries to every address the name resolves to now.
async fn resolve(targets: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for t in targets {
        match t.strip_prefix("dns:///") {
            Some(host_port) => match tokio::net::lookup_host(host_port).await {
                Ok(addrs) => {
                    let mut v: Vec<String> = addrs.map(|a| a.to_string()).collect();
                    v.sort();
                    v.dedup();
                    out.extend(v);
                }
                Err(e) => tracing::warn!(target = %t, "cannot resolve the CA address: {e}"),
            },
            None => out.push(t.clone()),
        }
    }
    out
}

impl GrpcSigner {
    pub fn new(ep: CaEndpoint) -> Arc<Self> {
        Arc::new(Self {
            ep,
            learned_roots: Mutex::new(String::new()),
            cached: Mutex::new(None),
            next: AtomicUsize::new(0),
        })
    }

    /// The CA address the current connection goes to (for logs and tests).
    pub fn current_target(&self) -> Option<String> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.1.clone())
    }

    fn trust_pem(&self) -> Result<String, AgentError> {
        let Some(file) = &self.ep.root_file else { return Ok(String::new()) };
        let mut pem = std::fs::read_to_string(file)
            .map_err(|e| AgentError::Connect(format!("reading --ca-root {}: {e}", file.display())))?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&self.learned_roots.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(pem)
    }

    /// The channel to the CA, rebuilt when the roots it must trust change or
    /// after a failure (then to the next address).
    pub async fn channel(&self) -> Result<Channel, AgentError> {
        let trust = self.trust_pem()?;
        if let Some((key, _, channel)) = self.cached.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *key == trust {
                return Ok(channel.clone());
            }
        }
        let targets = resolve(&parse_targets(&self.ep.addr)).await;
        if targets.is_empty() {
            return Err(AgentError::Connect(format!("no CA address in {:?}", self.ep.addr)));
        }
        let target = targets[self.next.load(Ordering::Relaxed) % targets.len()].clone();
        let conn = |e: tonic::transport::Error| AgentError::Connect(format!("{target}: {e}"));
        let endpoint = if self.ep.root_file.is_some() {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(trust.as_bytes()))
                .domain_name(self.ep.server_name.clone());
            Channel::from_shared(format!("https://{target}"))
                .map_err(|e| AgentError::Connect(e.to_string()))?
                .tls_config(tls)
                .map_err(conn)?
        } else {
            Channel::from_shared(format!("http://{target}")).map_err(|e| AgentError::Connect(e.to_string()))?
        };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect_lazy();
        if targets.len() > 1 {
            tracing::info!(ca = %target, of = targets.len(), "connecting to a CA replica");
        }
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((trust, target, channel.clone()));
        Ok(channel)
    }

    /// Forget the connection after a failure: the next call connects afresh, to the next address.
    pub fn reset(&self) {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.take().is_some() {
            self.next.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `authorization` value for `token_file`.
    pub fn bearer(
        token_file: &std::path::Path,
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, AgentError> {
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| AgentError::Token { path: token_file.display().to_string(), source: Arc::new(e) })?;
        format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| AgentError::Key("the token is not a valid header value".into()))
    }
}

impl Signer for GrpcSigner {
    async fn sign(&self, id: &Identity, csr_pem: String, ttl: Duration) -> Result<Vec<String>, AgentError> {
        let bearer = Self::bearer(&id.token_file)?;
        let mut client = IstioCertificateServiceClient::new(self.channel().await?);
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            validity_duration: ttl.as_secs() as i64,
            metadata: None,
        });
        req.set_timeout(Duration::from_secs(30));
        req.metadata_mut().insert("authorization", bearer);
        if let Ok(v) = self.ep.cluster_id.parse() {
            req.metadata_mut().insert("clusterid", v);
        }
        match client.create_certificate(req).await {
            Ok(resp) => {
                let chain = resp.into_inner().cert_chain;
                if let Some(roots) = chain.last() {
                    *self.learned_roots.lock().unwrap_or_else(|p| p.into_inner()) = roots.clone();
                }
                Ok(chain)
            }
            Err(s) => {
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded) {
                    // Start from a fresh connection, to the next CA address, next time.
                    let target = self.current_target().unwrap_or_else(|| self.ep.addr.clone());
                    self.reset();
                    return Err(AgentError::Connect(format!("{target}: {:?}: {}", s.code(), s.message())));
                }
                Err(AgentError::Refused { code: s.code(), message: s.message().to_string() })
            }
        }
    }
}

impl<S: Signer> Signer for Arc<S> {
    fn sign(
        &self,
        id: &Identity,
        csr_pem: String,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<String>, AgentError>> + Send {
        (**self).sign(id, csr_pem, ttl)
    }
}
