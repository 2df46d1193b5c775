//! Shared helpers of the `store_*` tests: the 3-member etcd cluster (the one
//! the store crate's tests use), replicas of `meshca serve --store`, and
//! readers of their `/status` store section.
#![allow(dead_code)]

#[path = "../../../meshca-store/tests/support/etcd.rs"]
pub mod etcd;
pub mod load;

use meshca_testkit::{Server, ServerOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// 32 bytes of `byte`, base64: a test needs keys that differ, not random ones.
pub fn base64_32(byte: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

pub fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", base64_32(byte))).unwrap();
    p
}

/// Start `meshca serve --store ...` in `work` (plus `extra` arguments).
pub fn replica_with(
    work: &Path,
    store: &str,
    key: &Path,
    td: &str,
    id: &str,
    opts: ServerOptions,
) -> anyhow::Result<Server> {
    std::fs::create_dir_all(work)?;
    let mut args: Vec<String> =
        ["--store", store, "--store-key-file", &key.display().to_string(), "--trust-domain", td]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--replica-id".to_string(), id.to_string()]);
    args.extend(opts.args.iter().cloned());
    let opts = ServerOptions { args, ..opts };
    // The testkit picks free ports by binding port 0 and releasing it; another
    // process can take such a port before meshca binds it: try again.
    for _ in 0..2 {
        match Server::start(&bin(), work, opts.clone()) {
            Err(e) if e.to_string().contains("Address already in use") => continue,
            other => return other,
        }
    }
    Server::start(&bin(), work, opts)
}

pub fn replica(work: &Path, store: &str, key: &Path, td: &str, id: &str) -> anyhow::Result<Server> {
    replica_with(work, store, key, td, id, ServerOptions::default())
}

/// The `store` section of a replica's `/status`.
pub fn store_status(s: &Server) -> serde_json::Value {
    s.status()["store"].clone()
}

/// Wait (polling every 100 ms, up to `max`) until `f` returns `Some`.
pub fn wait_for<T>(what: &str, max: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + max;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {max:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Send `sig` (e.g. "USR2", "STOP", "CONT") to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// Start three replicas `r0..r2` under `work` on `url` (plug-in CA
/// directories `ca_dirs`, else self-signed); they share the local token
/// issuer's key through the store, so one token works on all three.
pub fn three_replicas(
    work: &Path,
    url: &str,
    key: &Path,
    td: &str,
    extra: &[&str],
    ca_dirs: Option<&[PathBuf]>,
) -> Vec<Server> {
    let dir_of = |i: usize| ca_dirs.map(|d| d[i].clone());
    let opts = |dir: Option<PathBuf>| ServerOptions {
        args: extra.iter().map(|s| s.to_string()).collect(),
        ca_dir: dir,
        ..Default::default()
    };
    let r0 = replica_with(&work.join("r0"), url, key, td, "r0", opts(dir_of(0))).expect("r0 starts");
    let mut out = vec![r0];
    for i in 1..3 {
        let dir = work.join(format!("r{i}"));
        out.push(replica_with(&dir, url, key, td, &format!("r{i}"), opts(dir_of(i))).expect("replica starts"));
    }
    out
}

/// A token minted by each replica's local issuer (`meshca token create`
/// against its data directory) gets a certificate from every other replica.
pub async fn assert_tokens_accepted_everywhere(servers: &[Server], td: &str) {
    use meshca_testkit::{connect, make_csr, request, KeyType};
    let (csr, _key) = make_csr(KeyType::EcP256, Some(&format!("spiffe://{td}/ns/shop/sa/cart")));
    for (i, minter) in servers.iter().enumerate() {
        let token = minter.token("shop", "cart");
        for (j, verifier) in servers.iter().enumerate().filter(|(j, _)| *j != i) {
            let mut client = connect(verifier.grpc, &verifier.root_pem(), None).await.expect("connect");
            let resp = client.create_certificate(request(&csr, 600, Some(&token), None)).await;
            let chain = resp.unwrap_or_else(|e| panic!("a token of replica {i} is refused by replica {j}: {e}"));
            assert!(!chain.into_inner().cert_chain.is_empty(), "replica {j} returned no chain");
        }
    }
}

/// The raw etcd value of the token issuer key under trust domain `td`: sealed, not the PEM.
pub fn assert_token_key_sealed(cluster: &etcd::EtcdCluster, td: &str, servers: &[Server]) {
    let raw = cluster.etcdctl(&["get", "--print-value-only", &format!("/meshca/{td}/token/issuer-key")]);
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("meshca-sealed-v1"), "the token key record is not sealed: {raw}");
    assert!(!raw.contains("PRIVATE KEY"), "the token key is in clear in etcd");
    for s in servers {
        let pem = std::fs::read_to_string(s.data_dir.join("token").join("token-key.pem")).expect("token key file");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!body.is_empty() && !raw.contains(&body), "the token key's PEM body is readable in etcd");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(s.data_dir.join("token").join("token-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "token-key.pem mode");
    }
}

/// A Prometheus sample (first line starting with `name`), NaN when absent.
pub fn metric(s: &Server, name: &str) -> f64 {
    let text = s.get("/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// SHA-256 of the signer a replica reports in `/status`.
pub fn signer_sha(s: &Server) -> String {
    s.status()["signer"]["sha256"].as_str().unwrap_or_default().to_string()
}
