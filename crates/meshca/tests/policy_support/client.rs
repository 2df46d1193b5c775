//! The test's side of the wire: a root and per-identity client certificates minted with
//! meshca-pki, and one connection per request (from a chosen 127.0.0.x source address, over mTLS
//! when the request has a peer principal, plaintext otherwise).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshca_pki::leaf::LeafProfile;
use meshca_pki::{AuthorityOptions, KeyKind, PrivateKey, Signer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// HTTP status, or for TCP 200 when the echo came back and 0 when the connection was closed.
    pub status: u16,
    /// The client's address (to find Envoy's log lines for this connection).
    pub addr: String,
    /// Response body (HTTP).
    pub body: String,
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Root CA (files for Envoy in `dir`) and cached client configurations per SPIFFE ID.
pub struct Pki {
    signer: Signer,
    /// PEM appended to every client leaf (the issuing intermediates).
    chain_tail: String,
    clients: HashMap<String, Arc<ClientConfig>>,
    rt: tokio::runtime::Runtime,
    /// Next source port: every connection of a run gets its own, so Envoy's log lines
    /// (`directRemoteIP: ip:port`) name exactly one request.
    next_port: u16,
}

fn leaf(signer: &Signer, uri: &str, dns: &[&str]) -> (String, PrivateKey) {
    let key = PrivateKey::generate(KeyKind::EcP256).unwrap();
    let profile = LeafProfile {
        uris: vec![uri.to_string()],
        dns_names: dns.iter().map(|s| s.to_string()).collect(),
        ttl: Duration::from_secs(3600),
    };
    let cert = signer.sign_leaf(&key.public_key_spki(), &profile, SystemTime::now()).unwrap();
    (meshca_pki::pem::cert_to_pem(&cert), key)
}

impl Pki {
    pub fn new_in(dir: &Path) -> Pki {
        let opts = AuthorityOptions {
            common_name: "policy-judge root".into(),
            organization: "meshca-test".into(),
            locality: None,
            ttl: Duration::from_secs(86_400),
            key: KeyKind::EcP256,
            path_len: None,
        };
        let root = meshca_pki::authority::new_root(&opts, SystemTime::now()).unwrap();
        std::fs::write(dir.join("root.pem"), meshca_pki::pem::cert_to_pem(&root.cert)).unwrap();
        let signer = Signer::new(root.cert, root.key).unwrap();
        let (pem, key) = leaf(&signer, "spiffe://cluster.local/ns/foo/sa/httpbin", &["localhost"]);
        std::fs::write(dir.join("server.pem"), pem).unwrap();
        std::fs::write(dir.join("server.key"), key.to_pkcs8_pem().as_bytes()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let next_port = 30_000 + (std::process::id() % 25_000) as u16;
        Pki { signer, chain_tail: String::new(), clients: HashMap::new(), rt, next_port }
    }

    /// Client certificates issued by an existing CA (e.g. `meshca serve`'s plug-in intermediate:
    /// `ca-cert.pem` and `ca-key.pem` in `ca_dir`), so the mesh's Envoys trust them.
    pub fn from_ca(ca_dir: &Path) -> Pki {
        let cert_pem = std::fs::read_to_string(ca_dir.join("ca-cert.pem")).unwrap();
        let key = PrivateKey::from_pem(&std::fs::read(ca_dir.join("ca-key.pem")).unwrap()).unwrap();
        let cert = meshca_pki::pem::parse_certs(cert_pem.as_bytes()).unwrap().remove(0);
        let signer = Signer::new(cert, key).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let next_port = 30_000 + (std::process::id() % 25_000) as u16;
        Pki { signer, chain_tail: cert_pem, clients: HashMap::new(), rt, next_port }
    }

    fn client(&mut self, principal: Option<&str>) -> Arc<ClientConfig> {
        let key = principal.unwrap_or("").to_string();
        if let Some(c) = self.clients.get(&key) {
            return c.clone();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
        let cfg = match principal {
            Some(p) => {
                let uri = if p.starts_with("spiffe://") { p.to_string() } else { format!("spiffe://{p}") };
                let (mut pem, k) = leaf(&self.signer, &uri, &[]);
                pem.push_str(&self.chain_tail);
                let chain = meshca_pki::pem::parse_certs(pem.as_bytes()).unwrap();
                let chain: Vec<CertificateDer<'static>> =
                    chain.iter().map(|c| CertificateDer::from(c.as_ref().to_vec())).collect();
                let key = PrivateKeyDer::try_from(pkcs8_der(&k.to_pkcs8_pem())).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        let cfg = Arc::new(cfg);
        self.clients.insert(key, cfg.clone());
        cfg
    }

    fn connect(&mut self, src: IpAddr, port: u16) -> TcpStream {
        let dst: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut attempts = 0;
        let s = loop {
            self.next_port = if self.next_port >= 60_000 { 30_000 } else { self.next_port + 1 };
            let local = SocketAddr::new(src, self.next_port);
            let r = self.rt.block_on(async {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(local)?;
                sock.connect(dst).await
            });
            match r {
                Ok(s) => break s,
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < 200, "cannot connect from {local} to {dst}: {e}");
                }
            }
        };
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Send one request (the `meshca policy check` request JSON) to the listener at `port`.
    pub fn send(&mut self, port: u16, req: &Value, tcp: bool) -> Seen {
        let principal = req.pointer("/source/principal").and_then(Value::as_str);
        let src: IpAddr = req.pointer("/source/ip").and_then(Value::as_str).unwrap_or("127.0.0.1").parse().unwrap();
        let sock = self.connect(src, port);
        let local = sock.local_addr().unwrap().to_string();
        let payload = if tcp { b"ping\n".to_vec() } else { http_bytes(req) };
        let raw = if principal.is_some() {
            let cfg = self.client(principal);
            let name = match req.get("sni").and_then(Value::as_str) {
                Some(sni) => ServerName::try_from(sni.to_string()).unwrap(),
                None => ServerName::IpAddress(rustls::pki_types::IpAddr::from(src)),
            };
            let conn = rustls::ClientConnection::new(cfg, name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            exchange(&mut tls, &payload, tcp)
        } else {
            let mut s = sock;
            exchange(&mut s, &payload, tcp)
        };
        if tcp {
            let status = if raw.starts_with(b"ping") { 200 } else { 0 };
            return Seen { status, addr: local, body: String::new() };
        }
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Seen { status, addr: local, body }
    }
}

fn pkcs8_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

fn exchange<S: Read + Write>(s: &mut S, payload: &[u8], tcp: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if s.write_all(payload).and_then(|()| s.flush()).is_err() {
        return out;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if (tcp && out.len() >= 5) || (!tcp && http_complete(&out)) {
                    break;
                }
            }
        }
    }
    out
}

/// Headers and `content-length` bytes of body received (Envoy would otherwise hold the
/// connection open for its delayed-close timeout).
fn http_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    body.len() >= len
}

fn http_bytes(req: &Value) -> Vec<u8> {
    let method = req.get("method").and_then(Value::as_str).unwrap_or("GET");
    let path = req.get("path").and_then(Value::as_str).unwrap_or("/");
    let mut s = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(h) = req.get("host").and_then(Value::as_str) {
        s.push_str(&format!("host: {h}\r\n"));
    }
    if let Some(m) = req.get("headers").and_then(Value::as_object) {
        for (k, v) in m {
            s.push_str(&format!("{k}: {}\r\n", v.as_str().unwrap_or("")));
        }
    }
    if let Some(ip) = req.pointer("/remote/ip").and_then(Value::as_str) {
        s.push_str(&format!("x-forwarded-for: {ip}\r\n"));
    }
    if let Some(t) = req.get("jwt").and_then(Value::as_str) {
        s.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    s.push_str("connection: close\r\n\r\n");
    s.into_bytes()
}
