//! The seam between "get a certificate" and the CA: a [`Signer`] trait, and
//! its gRPC implementation speaking Istio's `CreateCertificate`.

use crate::error::AgentError;
use meshca_proto::{IstioCertificateRequest, IstioCertificateServiceClient};
use std::future::Future;
use std::path::PathBuf;
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
    /// host:port of the gRPC API.
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
    cached: Mutex<Option<(String, IstioCertificateServiceClient<Channel>)>>,
}

impl GrpcSigner {
    pub fn new(ep: CaEndpoint) -> Arc<Self> {
        Arc::new(Self { ep, learned_roots: Mutex::new(String::new()), cached: Mutex::new(None) })
    }

    fn trust_pem(&self) -> Result<String, AgentError> {
        let Some(file) = &self.ep.root_file else { return Ok(String::new()) };
        let mut pem = std::fs::read_to_string(file)
            .map_err(|e| AgentError::Connect(format!("reading --ca-root {}: {e}", file.display())))?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&self.learned_roots.lock().expect("lock"));
        Ok(pem)
    }

    fn client(&self) -> Result<IstioCertificateServiceClient<Channel>, AgentError> {
        let trust = self.trust_pem()?;
        let mut cached = self.cached.lock().expect("lock");
        if let Some((key, client)) = cached.as_ref() {
            if *key == trust {
                return Ok(client.clone());
            }
        }
        let conn = |e: tonic::transport::Error| AgentError::Connect(format!("{}: {e}", self.ep.addr));
        let endpoint = if self.ep.root_file.is_some() {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(trust.as_bytes()))
                .domain_name(self.ep.server_name.clone());
            Channel::from_shared(format!("https://{}", self.ep.addr))
                .map_err(|e| AgentError::Connect(e.to_string()))?
                .tls_config(tls)
                .map_err(conn)?
        } else {
            Channel::from_shared(format!("http://{}", self.ep.addr)).map_err(|e| AgentError::Connect(e.to_string()))?
        };
        let channel = endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)).connect_lazy();
        let client = IstioCertificateServiceClient::new(channel);
        *cached = Some((trust, client.clone()));
        Ok(client)
    }
}

impl Signer for GrpcSigner {
    async fn sign(&self, id: &Identity, csr_pem: String, ttl: Duration) -> Result<Vec<String>, AgentError> {
        let token = std::fs::read_to_string(&id.token_file)
            .map_err(|e| AgentError::Token { path: id.token_file.display().to_string(), source: Arc::new(e) })?;
        let mut client = self.client()?;
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            validity_duration: ttl.as_secs() as i64,
            metadata: None,
        });
        let bearer = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| AgentError::Key("the token is not a valid header value".into()))?;
        req.metadata_mut().insert("authorization", bearer);
        if let Ok(v) = self.ep.cluster_id.parse() {
            req.metadata_mut().insert("clusterid", v);
        }
        match client.create_certificate(req).await {
            Ok(resp) => {
                let chain = resp.into_inner().cert_chain;
                if let Some(roots) = chain.last() {
                    *self.learned_roots.lock().expect("lock") = roots.clone();
                }
                Ok(chain)
            }
            Err(s) => {
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded) {
                    // Start from a fresh connection next time.
                    *self.cached.lock().expect("lock") = None;
                    return Err(AgentError::Connect(format!("{}: {:?}: {}", self.ep.addr, s.code(), s.message())));
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
