//! A minimal SDS client over the agent's unix socket, for tests and
//! debugging (what Envoy does, without Envoy).

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

pub type SdsClient = SecretDiscoveryServiceClient<Channel>;

/// Connect to the SDS server listening on `socket`.
pub async fn connect(socket: &Path) -> anyhow::Result<SdsClient> {
    let path: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://sds.local")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await?;
    Ok(SecretDiscoveryServiceClient::new(channel))
}

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// One state-of-the-world `StreamSecrets` stream.
pub struct SdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl SdsStream {
    pub async fn open(socket: &Path) -> anyhow::Result<Self> {
        let mut client = connect(socket).await?;
        let (tx, rx) = mpsc::channel(8);
        let rx = client.stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { tx, rx })
    }

    /// Send a request: a subscription (empty nonce), an ACK (the last
    /// response's version and nonce) or, with `error`, a NACK.
    pub async fn send(&self, names: &[&str], version: &str, nonce: &str, error: Option<&str>) -> anyhow::Result<()> {
        let req = DiscoveryRequest {
            version_info: version.into(),
            node: Some(Node { id: "sds-client".into(), ..Default::default() }),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: crate::sds::secret_type_url(),
            response_nonce: nonce.into(),
            error_detail: error.map(|m| RpcStatus { code: 3, message: m.into(), details: vec![] }),
            ..Default::default()
        };
        self.tx.send(req).await.map_err(|_| anyhow::anyhow!("the SDS stream is closed"))
    }

    /// The next response, `Ok(None)` when none arrives `within`.
    pub async fn recv(&mut self, within: Duration) -> anyhow::Result<Option<DiscoveryResponse>> {
        match tokio::time::timeout(within, self.rx.next()).await {
            Ok(Some(r)) => Ok(Some(r?)),
            Ok(None) => anyhow::bail!("the SDS stream ended"),
            Err(_) => Ok(None),
        }
    }
}

/// The secrets of a response.
pub fn secrets(resp: &DiscoveryResponse) -> anyhow::Result<Vec<Secret>> {
    anyhow::ensure!(resp.type_url == crate::sds::secret_type_url(), "unexpected type URL {}", resp.type_url);
    resp.resources.iter().map(|a| Ok(Secret::decode(a.value.as_slice())?)).collect()
}

/// The certificate chain (PEM) of a TLS-certificate secret; `None` for another kind of secret
/// (the trust bundle), an error when the chain is not inline.
pub fn tls_chain(s: &Secret) -> anyhow::Result<Option<String>> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    let Some(Type::TlsCertificate(t)) = &s.r#type else { return Ok(None) };
    match t.certificate_chain.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => Ok(Some(String::from_utf8(b.clone())?)),
        other => anyhow::bail!("{}: expected an inline certificate chain, got {other:?}", s.name),
    }
}
