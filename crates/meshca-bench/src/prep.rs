//! Everything made before the clock starts: the CA (with `meshca certs`),
//! distinct CSRs, one per simulated workload, and their tokens.

use anyhow::Context;
use meshca_pki::KeyKind;
use meshca_testkit::KeyType;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The trust domain and namespace of the simulated workloads.
pub const TRUST_DOMAIN: &str = "cluster.local";
pub const NAMESPACE: &str = "bench";

/// At most this many RSA keys sign the RSA CSRs, one per 500 CSRs (each CSR is
/// still distinct: its own SPIFFE ID and its own signature). RSA key
/// generation costs ~100 ms, so one key per CSR would take minutes.
const RSA_KEY_POOL: usize = 32;

/// The service account of workload `i`.
pub fn service_account(i: usize) -> String {
    format!("w{i:05}")
}

/// The SPIFFE ID of workload `i`.
pub fn identity(i: usize) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{}", service_account(i))
}

pub fn key_type(kind: KeyKind) -> anyhow::Result<KeyType> {
    Ok(match kind {
        KeyKind::EcP256 => KeyType::EcP256,
        KeyKind::EcP384 => KeyType::EcP384,
        KeyKind::Rsa2048 => KeyType::Rsa2048,
        other => anyhow::bail!("CSR key type {other} is not supported by the benchmark (ec-p256, ec-p384, rsa-2048)"),
    })
}

/// The prepared requests of one key type: workload `i` has `csrs[i]` and `tokens[i]`.
pub struct Jobs {
    pub csrs: Arc<Vec<String>>,
    pub tokens: Arc<Vec<String>>,
}

/// Run `f(i)` for `i in 0..n` on every core, keeping the order.
fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(n.max(1));
    let chunk = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let f = &f;
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<T>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("preparation thread")).collect()
    })
}

/// `n` distinct CSRs (PEM), CSR `i` asking for [`identity`]`(i)`.
pub fn csrs(kind: KeyKind, n: usize) -> anyhow::Result<Vec<String>> {
    let kt = key_type(kind)?;
    if kt == KeyType::Rsa2048 {
        let keys = parallel((n / 500).clamp(1, RSA_KEY_POOL), |_| meshca_testkit::csr::key(kt));
        return Ok(parallel(n, |i| meshca_testkit::csr::csr_for(&keys[i % keys.len()], Some(&identity(i)))));
    }
    Ok(parallel(n, |i| meshca_testkit::csr::csr_for(&meshca_testkit::csr::key(kt), Some(&identity(i)))))
}

/// `n` tokens for the workloads, minted with meshca's local token key in
/// `data_dir` (created if missing; the server started on that directory trusts it).
pub fn tokens(data_dir: &Path, n: usize, ttl: Duration) -> anyhow::Result<Vec<String>> {
    let key = meshca_ca::tokens::load_or_create_key(data_dir)?;
    let now = SystemTime::now();
    parallel(n, |i| meshca_ca::tokens::mint(&key, NAMESPACE, &service_account(i), "istio-ca", ttl, now))
        .into_iter()
        .collect()
}

/// A plug-in CA directory (Istio layout) made with `meshca certs root` and
/// `meshca certs intermediate`, both with key type `kind`.
pub struct CaDir {
    /// ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
    pub dir: PathBuf,
}

impl CaDir {
    pub fn create(meshca_bin: &Path, work: &Path, kind: KeyKind) -> anyhow::Result<Self> {
        let root = work.join("root");
        let dir = work.join("cacerts");
        let k = kind.as_str();
        run(meshca_bin, &["certs", "root", "--out", &path(&root), "--key", k, "--force"])?;
        let inter = ["certs", "intermediate", "--root", &path(&root), "--out", &path(&dir), "--cluster", "bench"];
        run(meshca_bin, &[&inter[..], &["--key", k, "--force"]].concat())?;
        Ok(Self { dir })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        let p = self.file(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn run(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin).args(args).output().with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} {} failed: {}",
        bin.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
