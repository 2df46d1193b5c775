//! Network probes with short timeouts: HTTP(S) GETs and a TLS handshake.

use std::sync::Arc;
use std::time::Duration;

/// An HTTP client whose every call is bounded by the run's budget.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// Requests share the run's budget: each gets the time left until then.
    deadline: Option<std::time::Instant>,
}

/// The chain of causes of an error, joined (reqwest hides the useful part).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A plain-language cause for a failed connection.
pub fn explain(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    if d.contains("refused") {
        "nothing listens there (the process is not running, or the address/port is wrong)"
    } else if d.contains("timed out") || d.contains("timeout") || d.contains("deadline") {
        "no answer in time (a firewall/NetworkPolicy drops the traffic, or the host is overloaded)"
    } else if d.contains("unknownissuer") || d.contains("unknown issuer") || d.contains("unknown ca") {
        "the server's certificate is not signed by the root you trust (certificate signed by unknown authority)"
    } else if d.contains("notvalidforname") || d.contains("not valid for name") {
        "the server's certificate does not carry the expected name"
    } else if d.contains("expired") {
        "the server's certificate has expired"
    } else if d.contains("dns") || d.contains("resolve") {
        "the host name does not resolve"
    } else {
        "the connection failed"
    }
}

impl Http {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_millis(800)))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self { client, deadline: None }
    }

    /// Bound every request by `deadline` (the run's budget).
    pub fn until(mut self, deadline: std::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The time a request may still take.
    pub fn left(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(50)))
    }

    /// A client trusting only `ca_pem` (for Vault over HTTPS).
    pub fn with_roots(timeout: Duration, ca_pem: &[u8]) -> Result<Self, String> {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem).map_err(|e| format!("not a PEM bundle: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_millis(800)))
            .no_proxy()
            .tls_certs_only(certs)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client, deadline: None })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET `url`: (status, body), or the connection error in words.
    pub async fn get(&self, url: &str) -> Result<(u16, String), String> {
        self.get_dated(url).await.map(|(s, b, _)| (s, b))
    }

    /// GET `url`: (status, body, the server's `Date` header).
    pub async fn get_dated(&self, url: &str) -> Result<(u16, String, Option<String>), String> {
        let mut req = self.client.get(url);
        if let Some(t) = self.left() {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = resp.status().as_u16();
        let date = resp.headers().get("date").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.text().await.map_err(|e| format!("GET {url}: reading the body: {}", error_chain(&e)))?;
        Ok((status, body, date))
    }

    /// GET `url`, requiring 200.
    pub async fn get_ok(&self, url: &str) -> Result<String, String> {
        match self.get(url).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("GET {url}: HTTP {status}: {}", body.trim())),
        }
    }

    /// GET `url` as JSON, requiring 200.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let body = self.get_ok(url).await?;
        serde_json::from_str(&body).map_err(|e| format!("GET {url}: the answer is not JSON: {e}"))
    }
}

/// Handshake with `addr` over TLS, verifying its certificate against
/// `roots` for `server_name`; returns the presented chain.
pub async fn tls_handshake(
    addr: &str,
    server_name: &str,
    roots: &[meshca_pki::CertDer],
    timeout: Duration,
) -> Result<Vec<meshca_pki::CertDer>, String> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(|e| format!("a trusted root is unusable: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("{server_name:?} is not a valid TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        let (_, conn) = tls.get_ref();
        Ok(conn.peer_certificates().map(|c| c.iter().map(|d| d.clone().into_owned()).collect()).unwrap_or_default())
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("connect {addr}: timed out after {timeout:?}"))?
}
