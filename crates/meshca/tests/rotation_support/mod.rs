//! Helpers shared by rotation.rs and rotation_broken.rs: CA material made with
//! the `meshca certs` CLI, a plug-in directory written the ways real systems
//! write it (Kubernetes secret volume, editor rename, plain overwrite), raw
//! HTTP with headers, metrics, polling with deadlines, and batch verification
//! with the openssl CLI. Every missing tool is a loud panic.
#![allow(dead_code)]

use meshca_testkit::{connect, make_csr, openssl, request, CaClient, KeyType, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// Run `meshca ARGS`; panics with its output on failure.
pub fn meshca(args: &[&str]) -> String {
    meshca_testkit::cli::meshca(&bin(), args)
}

/// `meshca certs root` into `work/NAME`; returns the directory.
pub fn make_root(work: &Path, name: &str) -> PathBuf {
    meshca_testkit::cli::make_root(&bin(), work, name)
}

/// `meshca certs intermediate` under `root` into `work/NAME`.
pub fn make_inter(work: &Path, root: &Path, name: &str, ttl: &str) -> CaSet {
    CaSet::read(&meshca_testkit::cli::make_intermediate(&bin(), work, root, name, ttl))
}

/// `meshca certs bundle` of the given PEM files; returns the bundle PEM.
pub fn make_bundle(out: &Path, inputs: &[&Path]) -> String {
    meshca_testkit::cli::make_bundle(&bin(), out, inputs)
}

/// The order the files of a set are written in: the key last, so that every
/// state before the last write pairs a certificate with the wrong key.
pub const WRITE_ORDER: [&str; 4] = ["ca-cert.pem", "cert-chain.pem", "root-cert.pem", "ca-key.pem"];

/// The four files of an Istio plug-in set.
#[derive(Clone, Debug)]
pub struct CaSet {
    pub cert: String,
    pub key: String,
    pub chain: String,
    pub root: String,
}

impl CaSet {
    pub fn read(dir: &Path) -> Self {
        let r = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_else(|e| panic!("{}: {e}", n));
        Self { cert: r("ca-cert.pem"), key: r("ca-key.pem"), chain: r("cert-chain.pem"), root: r("root-cert.pem") }
    }

    pub fn with_root(&self, root: &str) -> Self {
        Self { root: root.to_string(), ..self.clone() }
    }

    /// (file name, contents) in `WRITE_ORDER`.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        WRITE_ORDER
            .iter()
            .map(|n| {
                let c = match *n {
                    "ca-cert.pem" => &self.cert,
                    "cert-chain.pem" => &self.chain,
                    "root-cert.pem" => &self.root,
                    _ => &self.key,
                };
                (*n, c.clone())
            })
            .collect()
    }

    /// NotAfter (unix seconds) of ca-cert.pem.
    pub fn not_after(&self) -> i64 {
        not_after(&self.cert)
    }
}

pub fn not_after(pem: &str) -> i64 {
    let der = meshca_pki::pem::parse_certs(pem.as_bytes()).expect("PEM certificate").remove(0);
    meshca_pki::inspect::cert_info(&der).expect("certificate").not_after_unix
}

/// How a new set is put in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// kubelet's AtomicWriter: `..<ts>` directory, `..data_tmp` renamed over `..data`.
    Kube,
    /// Each file written to a temporary name, then renamed over the old one.
    Editor,
    /// Each file truncated and rewritten in place, `gap` apart.
    InPlace,
}

/// The plug-in directory a test writes into.
pub struct CaDir {
    pub path: PathBuf,
    seq: u32,
}

/// When the final operation of a write started and ended.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub final_start: Instant,
    pub final_end: Instant,
}

impl CaDir {
    /// Regular files, written directly.
    pub fn plain(path: &Path, set: &CaSet) -> Self {
        std::fs::create_dir_all(path).unwrap();
        for (n, c) in set.files() {
            std::fs::write(path.join(n), c).unwrap();
        }
        Self { path: path.to_path_buf(), seq: 0 }
    }

    /// The layout of a mounted Kubernetes secret: `NAME -> ..data/NAME`, set up once.
    pub fn kube(path: &Path, set: &CaSet) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let mut d = Self { path: path.to_path_buf(), seq: 0 };
        let ts = d.ts_dir(&set.files());
        std::os::unix::fs::symlink(&ts, path.join("..data")).unwrap();
        for n in WRITE_ORDER {
            std::os::unix::fs::symlink(Path::new("..data").join(n), path.join(n)).unwrap();
        }
        d
    }

    fn ts_dir(&mut self, files: &[(&str, String)]) -> String {
        self.seq += 1;
        let name = format!("..2026_01_02_03_04_05.{:09}", self.seq);
        let dir = self.path.join(&name);
        std::fs::create_dir(&dir).unwrap();
        for (n, c) in files {
            std::fs::write(dir.join(n), c).unwrap();
        }
        name
    }

    /// One kubelet update: new `..<ts>` dir, `..data_tmp` symlink renamed over `..data`, old dir removed.
    pub fn kube_write(&mut self, files: &[(&str, String)]) -> Written {
        let old = std::fs::read_link(self.path.join("..data")).expect("..data symlink");
        let ts = self.ts_dir(files);
        let tmp = self.path.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        let final_start = Instant::now();
        std::fs::rename(&tmp, self.path.join("..data")).unwrap();
        let final_end = Instant::now();
        std::fs::remove_dir_all(self.path.join(old)).unwrap();
        Written { final_start, final_end }
    }

    /// Editor style: write `.NAME.tmp`, rename over `NAME`, one file after another.
    pub fn editor_write(&self, files: &[(&str, String)]) -> Written {
        let mut w = None;
        for (n, c) in files {
            let tmp = self.path.join(format!(".{n}.tmp"));
            std::fs::write(&tmp, c).unwrap();
            let final_start = Instant::now();
            std::fs::rename(&tmp, self.path.join(n)).unwrap();
            w = Some(Written { final_start, final_end: Instant::now() });
        }
        w.expect("at least one file")
    }

    /// Plain overwrites, `gap` apart so the server sees each mixed state.
    pub async fn in_place_write(&self, files: &[(&str, String)], gap: Duration) -> Written {
        let mut w = None;
        for (i, (n, c)) in files.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let final_start = Instant::now();
            std::fs::write(self.path.join(n), c).unwrap();
            w = Some(Written { final_start, final_end: Instant::now() });
        }
        w.expect("at least one file")
    }

    pub async fn write(&mut self, style: Style, set: &CaSet) -> Written {
        let files = set.files();
        match style {
            Style::Kube => self.kube_write(&files),
            Style::Editor => self.editor_write(&files),
            Style::InPlace => self.in_place_write(&files, Duration::from_millis(200)).await,
        }
    }
}

/// A workload: a TLS connection, a token and a CSR, issuing on demand.
pub struct Issuer {
    client: CaClient,
    token: String,
    csr: String,
    pub key: String,
}

impl Issuer {
    /// `trust` is the PEM of every root the serving certificate may chain to during the test.
    pub async fn new(server: &Server, trust: &str, token: &str) -> Self {
        let client = connect(server.grpc, trust, None).await.expect("connect to the CA");
        let (csr, key) = make_csr(KeyType::EcP256, Some("spiffe://cluster.local/ns/default/sa/rot"));
        Self { client, token: token.to_string(), csr, key }
    }

    pub async fn try_issue(&mut self) -> Result<Vec<String>, tonic::Status> {
        let req = request(&self.csr, 3600, Some(&self.token), None);
        self.client.create_certificate(req).await.map(|r| r.into_inner().cert_chain)
    }

    pub async fn issue(&mut self) -> Vec<String> {
        self.try_issue().await.expect("CreateCertificate")
    }

    /// Issue until `done(chain)` holds; returns that chain and when it arrived.
    pub async fn issue_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> (Vec<String>, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            let chain = self.issue().await;
            let at = Instant::now();
            if done(&chain) {
                return (chain, at);
            }
            assert!(at < deadline, "{what}: not seen within {timeout:?}; last chain: {chain:#?}");
        }
    }
}

/// Poll `f` every 20 ms until it returns `Some`, panicking after `timeout`.
pub async fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    meshca_testkit::http::poll_every(what, timeout, Duration::from_millis(20), f).await
}

/// Raw HTTP/1.1 GET with extra headers: (status, lower-cased headers, body).
pub fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    meshca_testkit::http::http(addr, path, headers)
}

pub fn header(headers: &[(String, String)], name: &str) -> String {
    meshca_testkit::http::header(headers, name).map(str::to_string).unwrap_or_else(|| panic!("no {name} header"))
}

/// The current ETag of /root-cert.pem.
pub fn root_etag(server: &Server) -> String {
    let (status, h, _) = http(server.http, "/root-cert.pem", &[]);
    assert_eq!(status, 200);
    header(&h, "etag")
}

/// The value of an unlabelled sample in the /metrics exposition.
pub fn metric(server: &Server, name: &str) -> f64 {
    meshca_testkit::http::metric(&server.get("/metrics").expect("GET /metrics"), name)
}

/// Wait (up to 2 s) for a counter to reach `want`, then check it did not pass it. Counters are
/// bumped just after the snapshot swap, so a scrape right after the first new leaf may lag.
pub async fn expect_counter(server: &Server, name: &str, want: f64) {
    let got = poll(&format!("{name} >= {want}"), Duration::from_secs(2), || {
        let v = metric(server, name);
        (v >= want).then_some(v)
    })
    .await;
    assert_eq!(got, want, "{name}");
}

pub const FAILURES: &str = "meshca_ca_reload_failures_total";
pub const RELOADS: &str = "meshca_ca_reload_total";
pub const ROOTS: &str = "meshca_trust_roots";
pub const CHAIN_EXPIRY: &str = "citadel_server_cert_chain_expiry_timestamp";

/// `openssl verify -CAfile roots [-untrusted inter] leaf...`, in batches; Err
/// names the first leaf openssl did not accept.
pub fn verify_batch(dir: &Path, roots: &str, inter: Option<&str>, leaves: &[String]) -> Result<(), String> {
    openssl::require();
    std::fs::create_dir_all(dir).unwrap();
    let roots_file = dir.join("roots.pem");
    std::fs::write(&roots_file, roots).unwrap();
    let inter_file = dir.join("untrusted.pem");
    if let Some(i) = inter {
        std::fs::write(&inter_file, i).unwrap();
    }
    for (b, batch) in leaves.chunks(400).enumerate() {
        // Only the given roots: no system store.
        let mut args: Vec<String> = ["verify", "-no-CApath", "-no-CAstore", "-CAfile"].map(String::from).into();
        args.push(roots_file.display().to_string());
        if inter.is_some() {
            args.extend(["-untrusted".to_string(), inter_file.display().to_string()]);
        }
        for (i, leaf) in batch.iter().enumerate() {
            let p = dir.join(format!("leaf-{b}-{i}.pem"));
            std::fs::write(&p, leaf).unwrap();
            args.push(p.display().to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = openssl::run(&refs)?;
        let ok = out.lines().filter(|l| l.ends_with(": OK")).count();
        if ok != batch.len() {
            return Err(format!("openssl accepted {ok} of {} leaves:\n{out}", batch.len()));
        }
    }
    Ok(())
}

/// Verify one issued chain (leaf, intermediates..., bundle) against `roots` alone.
pub fn verify_chain_against(dir: &Path, chain: &[String], roots: &str) -> Result<(), String> {
    let middle = chain[1..chain.len() - 1].concat();
    verify_batch(dir, roots, (!middle.is_empty()).then_some(middle.as_str()), &chain[..1])
}

/// Every needle appears in `log` after the previous one; returns the offset after the last.
pub fn assert_in_order(log: &str, mut from: usize, needles: &[&str]) -> usize {
    for n in needles {
        match log[from..].find(n) {
            Some(i) => from += i + n.len(),
            None => panic!("log line {n:?} not found (in order) after offset {from}:\n{}", &log[from.min(log.len())..]),
        }
    }
    from
}

/// Wait until /status reports a refused reload whose message contains all of `parts`.
pub async fn wait_last_error(server: &Server, parts: &[&str]) -> String {
    poll(&format!("/status last_error containing {parts:?}"), Duration::from_secs(10), || {
        let s = server.status();
        let e = s["last_error"].as_str()?.to_string();
        parts.iter().all(|p| e.contains(p)).then_some(e)
    })
    .await
}

/// PEM of the first certificate of a chain element.
pub fn first_cert(pem: &str) -> String {
    let der = meshca_pki::pem::parse_certs(pem.as_bytes()).expect("PEM").remove(0);
    meshca_pki::pem::cert_to_pem(&der)
}

/// Number of certificates in a PEM bundle.
pub fn cert_count(pem: &str) -> usize {
    meshca_pki::pem::parse_certs(pem.as_bytes()).map(|v| v.len()).unwrap_or(0)
}
