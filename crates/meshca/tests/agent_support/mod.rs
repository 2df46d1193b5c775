//! Helpers for the node agent tests: CA material via the `meshca certs` CLI,
//! the agent and real Envoy processes (killed on drop), a tiny upstream that
//! echoes `x-forwarded-client-cert`, a steady load generator, Envoy admin
//! `/certs`, metrics, and polling with deadlines. A missing Envoy is a loud
//! panic: these tests never skip.
#![allow(dead_code)]

pub mod envoy;

use meshca_testkit::Server;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// Run `meshca ARGS`; panics with its output on failure.
pub fn meshca(args: &[&str]) -> String {
    meshca_testkit::cli::meshca(&bin(), args)
}

pub fn make_root(work: &Path, name: &str) -> PathBuf {
    meshca_testkit::cli::make_root(&bin(), work, name)
}

/// An intermediate under `root` in `work/name` (Istio plug-in layout).
pub fn make_inter(work: &Path, root: &Path, name: &str) -> PathBuf {
    meshca_testkit::cli::make_intermediate(&bin(), work, root, name, "30d")
}

pub fn make_bundle(out: &Path, inputs: &[&Path]) -> String {
    meshca_testkit::cli::make_bundle(&bin(), out, inputs)
}

/// Put a plug-in set into the CA directory: each file renamed into place,
/// the key last. `root` overrides root-cert.pem.
pub fn install_set(ca_dir: &Path, set: &Path, root: Option<&str>) {
    std::fs::create_dir_all(ca_dir).unwrap();
    for name in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem", "ca-key.pem"] {
        let body = match (name, root) {
            ("root-cert.pem", Some(r)) => r.to_string(),
            _ => std::fs::read_to_string(set.join(name)).unwrap(),
        };
        let tmp = ca_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, ca_dir.join(name)).unwrap();
    }
}

/// The DER certificates of a PEM text.
pub fn ders(pem: &str) -> Vec<meshca_pki::CertDer> {
    meshca_pki::pem::parse_certs(pem.as_bytes()).expect("PEM certificates")
}

/// Subject of the first certificate in `pem` (raw DER), to match issuers.
pub fn subject_der(pem: &str) -> Vec<u8> {
    let d = ders(pem).remove(0);
    let (_, c) = x509_parser::parse_x509_certificate(&d).unwrap();
    c.subject().as_raw().to_vec()
}

pub fn issuer_der(pem: &str) -> Vec<u8> {
    let d = ders(pem).remove(0);
    let (_, c) = x509_parser::parse_x509_certificate(&d).unwrap();
    c.issuer().as_raw().to_vec()
}

/// Go-style hex serial of the first certificate.
pub fn serial(pem: &str) -> String {
    meshca_pki::inspect::cert_info(&ders(pem)[0]).unwrap().serial
}

/// Lowercase hex without leading zeros, for comparing serials across tools.
pub fn norm_serial(s: &str) -> String {
    let s = s.to_ascii_lowercase().replace(':', "");
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

pub async fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    meshca_testkit::http::poll_every(what, timeout, Duration::from_millis(50), f).await
}

/// A blocking HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    meshca_testkit::http::try_http(addr, path, &[]).map(|(status, _, body)| (status, body))
}

/// A Prometheus sample (first line starting with `name`), 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A child process killed (and reaped) on drop; output goes to `log`.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Self {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        cmd.stdout(Stdio::from(f.try_clone().unwrap())).stderr(Stdio::from(f)).stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Self { child: Some(child), log, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `meshca agent`.
pub struct Agent {
    pub proc: Proc,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub http: SocketAddr,
    pub out: PathBuf,
    args: Vec<String>,
}

impl Agent {
    /// An agent for `token` (written to `dir/token`) against `ca`, trusting `ca_root_file`, given
    /// only the CA's gRPC address (plus `extra`).
    pub fn start(work: &Path, name: &str, ca: &Server, ca_root_file: &Path, token: &str, extra: &[&str]) -> Self {
        Self::start_at(work, name, &ca.grpc.to_string(), ca_root_file, token, extra)
    }

    /// Like [`Agent::start`] with `--ca-addr` given as is (a list, `dns:///name:port`).
    pub fn start_at(work: &Path, name: &str, ca_addr: &str, ca_root_file: &Path, token: &str, extra: &[&str]) -> Self {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), token).unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", meshca_testkit::free_port()).parse().unwrap();
        // Keep the socket path short: sun_path holds 108 bytes.
        let socket = dir.join("sds.sock");
        let out = dir.join("out");
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--ca-addr".into(),
            ca_addr.to_string(),
            "--ca-root".into(),
            ca_root_file.display().to_string(),
            "--ca-server-name".into(),
            "localhost".into(),
            // No --ca-http-addr: CA changes arrive over the authenticated change stream on --ca-addr.
            "--rotation-jitter".into(),
            "200ms".into(),
            "--token-file".into(),
            dir.join("token").display().to_string(),
            "--sds-socket".into(),
            socket.display().to_string(),
            "--output-dir".into(),
            out.display().to_string(),
            "--http-addr".into(),
            http.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Self::spawn_proc(name, &dir, &args);
        let mut a = Self { proc, dir, socket, http, out, args };
        a.wait_healthy();
        a
    }

    fn spawn_proc(name: &str, dir: &Path, args: &[String]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args).env("NO_COLOR", "1").env("MESHCA_LOG", "info,meshca_agent=debug,h2=warn,hyper=warn");
        Proc::spawn(&format!("agent {name}"), &mut cmd, dir.join("agent.log"))
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(self.proc.alive(), "{} exited; log:\n{}", self.proc.name, self.proc.logs());
            if matches!(http_get(self.http, "/healthz"), Ok((200, _))) {
                return;
            }
            assert!(Instant::now() < deadline, "{} not healthy in 20s; log:\n{}", self.proc.name, self.proc.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.proc.stop();
        let name = self.proc.name.trim_start_matches("agent ").to_string();
        self.proc = Self::spawn_proc(&name, &self.dir, &self.args);
        self.wait_healthy();
    }

    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// The certificate chain the agent last wrote.
    pub fn out_chain(&self) -> String {
        std::fs::read_to_string(self.out.join("cert-chain.pem")).unwrap_or_default()
    }
}

/// An HTTP/1.1 upstream that answers every request with the
/// `x-forwarded-client-cert` header it received as the body.
pub async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let mut body_len = 0usize;
                        let mut xfcc = String::new();
                        for line in head.lines().skip(1) {
                            if let Some((k, v)) = line.split_once(':') {
                                match k.trim().to_ascii_lowercase().as_str() {
                                    "content-length" => body_len = v.trim().parse().unwrap_or(0),
                                    "x-forwarded-client-cert" => xfcc = v.trim().to_string(),
                                    _ => {}
                                }
                            }
                        }
                        if buf.len() < end + 4 + body_len {
                            break;
                        }
                        buf.drain(..end + 4 + body_len);
                        c.fetch_add(1, Ordering::Relaxed);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
                            xfcc.len(),
                            xfcc
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Steady traffic through the client Envoy, counted per phase.
pub struct Load {
    pub phase: Arc<AtomicUsize>,
    pub ok: Arc<Vec<AtomicU64>>,
    pub failed: Arc<Vec<AtomicU64>>,
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `rate` requests per second to `addr`, each answer must contain `expect`.
    pub fn start(addr: SocketAddr, rate: u32, expect: &str, phases: usize) -> Self {
        let phase = Arc::new(AtomicUsize::new(0));
        let ok: Arc<Vec<AtomicU64>> = Arc::new((0..phases).map(|_| AtomicU64::new(0)).collect());
        let failed: Arc<Vec<AtomicU64>> = Arc::new((0..phases).map(|_| AtomicU64::new(0)).collect());
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, o, f, e, s, expect) =
            (phase.clone(), ok.clone(), failed.clone(), errors.clone(), stop.clone(), expect.to_string());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let url = format!("http://{addr}/load");
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let i = p.load(Ordering::Relaxed);
                let res = match client.get(&url).send().await {
                    Ok(r) => {
                        let st = r.status();
                        let body = r.text().await.unwrap_or_default();
                        if st.is_success() && body.contains(&expect) {
                            Ok(())
                        } else {
                            Err(format!("HTTP {st}: {body}"))
                        }
                    }
                    Err(err) => Err(err.to_string()),
                };
                match res {
                    Ok(()) => o[i].fetch_add(1, Ordering::Relaxed),
                    Err(msg) => {
                        e.lock().unwrap().push(format!("phase {i}: {msg}"));
                        f[i].fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
        Self { phase, ok, failed, errors, stop, task: Some(task) }
    }

    pub fn next_phase(&self) -> usize {
        self.phase.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn counts(&self, i: usize) -> (u64, u64) {
        (self.ok[i].load(Ordering::Relaxed), self.failed[i].load(Ordering::Relaxed))
    }

    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
