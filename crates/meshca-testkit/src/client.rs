//! A real tonic client for the CA.

use meshca_proto::{IstioCertificateRequest, IstioCertificateServiceClient};
use std::net::SocketAddr;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub type CaClient = IstioCertificateServiceClient<Channel>;

/// Connect over TLS, trusting `roots_pem`, with an optional client identity (cert chain PEM, key PEM).
pub async fn connect(addr: SocketAddr, roots_pem: &str, identity: Option<(&str, &str)>) -> anyhow::Result<CaClient> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(roots_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?;
    Ok(IstioCertificateServiceClient::new(channel))
}

pub async fn connect_plaintext(addr: SocketAddr) -> anyhow::Result<CaClient> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    Ok(IstioCertificateServiceClient::new(channel))
}

/// A request with an optional bearer token and `ImpersonatedIdentity`.
pub fn request(
    csr: &str,
    ttl_secs: i64,
    token: Option<&str>,
    impersonate: Option<&str>,
) -> tonic::Request<IstioCertificateRequest> {
    use prost_types::{value::Kind, Struct, Value};
    let metadata = impersonate.map(|id| Struct {
        fields: [(
            meshca_proto::IMPERSONATED_IDENTITY_KEY.to_string(),
            Value { kind: Some(Kind::StringValue(id.to_string())) },
        )]
        .into_iter()
        .collect(),
    });
    let mut req =
        tonic::Request::new(IstioCertificateRequest { csr: csr.to_string(), validity_duration: ttl_secs, metadata });
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("header value"));
    }
    req.metadata_mut().insert("clusterid", "Kubernetes".parse().expect("header value"));
    req
}
