//! Helpers for the security_*.rs tests (issue 15): start the real binary
//! (optionally under a shell that sets ulimit/umask first), read its RSS,
//! open raw TLS + HTTP/2 connections, and a tiny recording HTTP server.
#![allow(dead_code)]

use meshca_testkit::{Server, ServerOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// A script that runs `meshca` after `prelude` (e.g. `ulimit -n 1024`); `exec` keeps the pid.
pub fn wrapper(work: &Path, prelude: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = work.join("meshca-wrapped.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{prelude}\nexec '{}' \"$@\"\n", bin().display())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

pub fn start(work: &Path, args: &[&str]) -> Server {
    start_with(&bin(), work, args)
}

pub fn start_with(bin: &Path, work: &Path, args: &[&str]) -> Server {
    let opts = ServerOptions { args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    Server::start(bin, work, opts).unwrap_or_else(|e| panic!("meshca serve did not start: {e}"))
}

/// Run `meshca serve ARGS` expecting it to refuse to start; its output.
pub fn refuses_to_start(work: &Path, args: &[&str]) -> String {
    let grpc = format!("127.0.0.1:{}", meshca_testkit::free_port());
    let http = format!("127.0.0.1:{}", meshca_testkit::free_port());
    let data = work.join("data");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["serve", "--data-dir", &data.display().to_string(), "--grpc-addr", &grpc, "--http-addr", &http]);
    let mut child = cmd
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("meshca serve {args:?} kept running; log:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "meshca serve {args:?} exited 0");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TLS connection to the gRPC port, ALPN h2, trusting `roots_pem`.
pub async fn tls_connect(addr: SocketAddr, roots_pem: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap()
}

/// A CSR-sized legitimate request on a new connection: Ok(elapsed) when a certificate came back.
/// `roots_pem` is fetched beforehand (the HTTP port may be what is under attack).
pub async fn legit_request(server: &Server, roots_pem: &str, token: &str) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut client = meshca_testkit::connect(server.grpc, roots_pem, None).await.map_err(|e| e.to_string())?;
    let (csr, _) = meshca_testkit::make_csr(meshca_testkit::KeyType::EcP256, None);
    client
        .create_certificate(meshca_testkit::request(&csr, 3600, Some(token), None))
        .await
        .map_err(|s| format!("{s:?}"))?;
    Ok(t0.elapsed())
}

/// Poll `f` every 100 ms for up to `secs`; panics with `what`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One request a [`Recorder`] saw: the request line and the headers, lower-cased.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

/// A loopback HTTP/1.1 server that records every request and answers with `answer(request line)`.
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn start(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, answer) = (seen.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let (seen, answer) = (seen2.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let head = text.split("\r\n\r\n").next().unwrap_or("");
                    let mut lines = head.lines();
                    let line = lines.next().unwrap_or("").to_string();
                    let headers = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let reply = answer(&line);
                    seen.lock().unwrap().push(Seen { line, headers });
                    let _ = s.write_all(reply.as_bytes());
                });
            }
        });
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 response with a JSON body.
pub fn json_reply(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
