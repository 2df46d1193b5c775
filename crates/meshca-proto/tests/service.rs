//! Serves a trivial `IstioCertificateService` over real TCP with tonic and
//! calls it with the generated client, plus a raw call on the literal method
//! path Istio clients use.

use std::net::SocketAddr;

use meshca_proto::prost_types::{value::Kind, Struct, Value};
use meshca_proto::{
    IstioCertificateRequest, IstioCertificateResponse, IstioCertificateService, IstioCertificateServiceClient,
    IstioCertificateServiceServer, CREATE_CERTIFICATE_PATH, IMPERSONATED_IDENTITY_KEY,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// Echoes the CSR back as the "leaf" and reports the requested lifetime and
/// impersonated identity in the chain so the test can check what arrived.
struct EchoCa;

#[tonic::async_trait]
impl IstioCertificateService for EchoCa {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let req = request.into_inner();
        if req.csr.is_empty() {
            return Err(Status::invalid_argument("empty csr"));
        }
        let identity = req
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY_KEY))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: vec![req.csr, format!("ttl={}", req.validity_duration), format!("identity={identity}")],
        }))
    }
}

struct TestServer {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(
            Server::builder().add_service(IstioCertificateServiceServer::new(EchoCa)).serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
        );
        Self { addr, shutdown, handle }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).expect("endpoint uri").connect().await.expect("connect")
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.handle.await.expect("server task panicked").expect("server error");
    }
}

fn request() -> IstioCertificateRequest {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        IMPERSONATED_IDENTITY_KEY.to_owned(),
        Value { kind: Some(Kind::StringValue("spiffe://cluster.local/ns/default/sa/app".to_owned())) },
    );
    IstioCertificateRequest { csr: "CSR-PEM".to_owned(), validity_duration: 3600, metadata: Some(metadata) }
}

fn expected_chain() -> Vec<String> {
    vec!["CSR-PEM".to_owned(), "ttl=3600".to_owned(), "identity=spiffe://cluster.local/ns/default/sa/app".to_owned()]
}

#[tokio::test]
async fn generated_client_calls_generated_server() {
    let server = TestServer::start().await;

    let mut client =
        IstioCertificateServiceClient::connect(format!("http://{}", server.addr)).await.expect("connect client");
    let resp = client.create_certificate(request()).await.expect("CreateCertificate").into_inner();
    assert_eq!(resp.cert_chain, expected_chain());

    let err =
        client.create_certificate(IstioCertificateRequest::default()).await.expect_err("empty csr must be rejected");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    server.stop().await;
}

#[tokio::test]
async fn literal_istio_method_path_is_served() {
    let server = TestServer::start().await;
    let channel = server.channel().await;

    // A raw unary call on the exact path Istio's Go client uses, independent
    // of the path string baked into the generated client.
    assert_eq!(CREATE_CERTIFICATE_PATH, "/istio.v1.auth.IstioCertificateService/CreateCertificate");
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let resp: Response<IstioCertificateResponse> = grpc
        .unary(
            Request::new(request()),
            tonic::codegen::http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("raw CreateCertificate");
    assert_eq!(resp.into_inner().cert_chain, expected_chain());

    // A wrong path is answered with UNIMPLEMENTED.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let status = grpc
        .unary::<_, IstioCertificateResponse, _>(
            Request::new(request()),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/istio.v1alpha1.IstioCertificateService/CreateCertificate",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("unknown service path");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    server.stop().await;
}
