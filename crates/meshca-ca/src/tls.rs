//! TLS for the gRPC port: a serving certificate issued by the CA itself and
//! swapped live when renewed, and optional client certificates whose chains
//! are checked by the application (so a bad certificate yields a gRPC
//! Unauthenticated with an audit line, not an anonymous handshake failure).

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The current serving certificate, replaced atomically on renewal.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ServingCert {
    pub fn new(ck: CertifiedKey) -> Self {
        Self { current: ArcSwap::from_pointee(ck) }
    }
    pub fn set(&self, ck: CertifiedKey) {
        self.current.store(Arc::new(ck));
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Build a rustls certified key from a chain and a PKCS#8 key.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    pkcs8: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let key = PrivateKeyDer::try_from(pkcs8.to_vec()).map_err(|e| anyhow::anyhow!("serving key: {e}"))?;
    let signing = provider.key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Asks for a client certificate, checks the handshake signature made with
/// it (proof of possession), and leaves chain validation to the application.
#[derive(Debug)]
pub struct DeferredClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for DeferredClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server config for the gRPC port (HTTP/2 only).
pub fn server_config(serving: Arc<ServingCert>) -> anyhow::Result<rustls::ServerConfig> {
    let provider = provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(DeferredClientCert { provider }))
        .with_cert_resolver(serving);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: callers (agents, istio-agent) keep one long-lived connection
    // and do not cache sessions, so tickets would be two extra records per handshake.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(cfg)
}
