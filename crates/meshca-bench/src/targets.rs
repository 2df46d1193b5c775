//! The request of each system under test, prepared before the clock starts:
//! meshca's gRPC `CreateCertificate` over TLS with a bearer token, and the
//! HTTP/1.1 JSON signing APIs of cfssl and OpenBao.

use crate::load::Caller;
use crate::prep::Jobs;
use meshca_proto::IstioCertificateRequest;
use meshca_testkit::CaClient;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{OnceCell, Semaphore};
use tonic::metadata::{Ascii, MetadataValue};

/// meshca over gRPC: `connections` HTTP/2 channels, opened on first use.
pub struct GrpcCaller {
    addr: SocketAddr,
    roots_pem: String,
    conns: Vec<OnceCell<CaClient>>,
    csrs: Arc<Vec<String>>,
    auth: Vec<MetadataValue<Ascii>>,
}

impl GrpcCaller {
    pub fn new(addr: SocketAddr, roots_pem: String, connections: usize, jobs: &Jobs) -> anyhow::Result<Self> {
        let auth = jobs
            .tokens
            .iter()
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
            .collect::<Result<Vec<_>, _>>()?;
        let conns = (0..connections.max(1)).map(|_| OnceCell::new()).collect();
        Ok(Self { addr, roots_pem, conns, csrs: jobs.csrs.clone(), auth })
    }

    async fn client(&self, conn: usize) -> Result<CaClient, String> {
        let cell = &self.conns[conn % self.conns.len()];
        let c = cell
            .get_or_try_init(|| meshca_testkit::connect(self.addr, &self.roots_pem, None))
            .await
            .map_err(|e| format!("connect: {e:#}"))?;
        Ok(c.clone())
    }

    /// Open every channel now, so a steady-state run measures no handshakes.
    pub async fn connect_all(&self) -> anyhow::Result<()> {
        for i in 0..self.conns.len() {
            self.client(i).await.map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// One certificate chain (leaf first, root bundle last), to verify with openssl.
    pub async fn chain(&self, job: usize) -> anyhow::Result<Vec<String>> {
        let mut client = self.client(0).await.map_err(anyhow::Error::msg)?;
        let resp = client.create_certificate(self.request(job)).await?;
        Ok(resp.into_inner().cert_chain)
    }

    fn request(&self, job: usize) -> tonic::Request<IstioCertificateRequest> {
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: self.csrs[job].clone(),
            validity_duration: 0,
            metadata: None,
        });
        req.metadata_mut().insert("authorization", self.auth[job].clone());
        req.metadata_mut().insert("clusterid", MetadataValue::from_static("Kubernetes"));
        req
    }
}

impl Caller for GrpcCaller {
    async fn call(&self, conn: usize, job: usize) -> Result<(), String> {
        let mut client = self.client(conn).await?;
        let resp = client
            .create_certificate(self.request(job))
            .await
            .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))?;
        match resp.get_ref().cert_chain.len() {
            n if n >= 2 => Ok(()),
            n => Err(format!("response chain has {n} certificates")),
        }
    }
}

/// Which HTTP signing API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpApi {
    /// `POST /api/v1/cfssl/sign` `{"certificate_request": PEM}`.
    Cfssl,
    /// `POST /v1/<mount>/sign/<role>` `{"csr": PEM}` with `X-Vault-Token`.
    OpenBao,
}

/// cfssl or OpenBao over HTTP/1.1 keep-alive: at most `connections` requests
/// in flight, so the client pool holds at most that many connections.
pub struct HttpCaller {
    api: HttpApi,
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    bodies: Vec<String>,
    permits: Semaphore,
}

impl HttpCaller {
    pub fn new(api: HttpApi, url: String, token: Option<String>, connections: usize, jobs: &Jobs) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(connections)
            .build()
            .expect("HTTP client");
        let bodies = jobs
            .csrs
            .iter()
            .map(|csr| match api {
                HttpApi::Cfssl => serde_json::json!({ "certificate_request": csr }).to_string(),
                HttpApi::OpenBao => serde_json::json!({ "csr": csr }).to_string(),
            })
            .collect();
        Self { api, client, url, token, bodies, permits: Semaphore::new(connections.max(1)) }
    }

    async fn post(&self, job: usize) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        let mut req =
            self.client.post(&self.url).header("content-type", "application/json").body(self.bodies[job].clone());
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t);
        }
        let resp = req.send().await.map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("HTTP body: {e}"))?;
        Ok((status, body.to_vec()))
    }

    /// The issued certificate (PEM) of one request, to verify with openssl.
    pub async fn leaf(&self, job: usize) -> anyhow::Result<String> {
        let (status, body) = self.post(job).await.map_err(anyhow::Error::msg)?;
        let text = String::from_utf8_lossy(&body);
        anyhow::ensure!(status.is_success(), "{:?} answered {status}: {text}", self.api);
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let pointer = match self.api {
            HttpApi::Cfssl => "/result/certificate",
            HttpApi::OpenBao => "/data/certificate",
        };
        v.pointer(pointer)
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("{:?}: no certificate in {text}", self.api))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Caller for HttpCaller {
    async fn call(&self, _conn: usize, job: usize) -> Result<(), String> {
        let (status, body) = self.post(job).await?;
        let ok = status.is_success()
            && match self.api {
                HttpApi::Cfssl => contains(&body, b"\"success\":true"),
                HttpApi::OpenBao => contains(&body, b"BEGIN CERTIFICATE"),
            };
        if ok {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body);
            Err(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()))
        }
    }
}
