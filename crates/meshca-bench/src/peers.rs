//! The peer CAs, started and stopped by the harness on loopback ports, with
//! the same CA certificate and key as meshca: `cfssl serve` and an OpenBao
//! dev server with the PKI engine (role with `no_store=true`).

use crate::prep::CaDir;
use anyhow::Context;
use meshca_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running peer; killed on drop.
pub struct Peer {
    pub name: &'static str,
    child: Child,
    pub pid: u32,
    /// The signing endpoint.
    pub url: String,
    /// OpenBao's token.
    pub token: Option<String>,
    log: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        Ok(Self { name, child, pid, url: String::new(), token: None, log })
    }

    fn logs(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(2000)..]).into_owned()
    }

    /// Wait until `port` accepts TCP connections (or the process dies).
    fn wait_port(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited with {status} before listening; log:\n{}", self.name, self.logs());
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("{} did not listen on {addr} in 30s; log:\n{}", self.name, self.logs())
    }
}

/// `cfssl serve` signing with the CA of `ca` (default profile: 24h,
/// digital signature, key encipherment, server auth, client auth: Istio's
/// workload profile). cfssl authenticates no caller.
pub fn start_cfssl(bin: &Path, work: &Path, ca: &CaDir) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(work)?;
    let config = work.join("cfssl-config.json");
    let cfg = serde_json::json!({
        "signing": { "default": {
            "expiry": "24h",
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"]
        }}
    });
    std::fs::write(&config, cfg.to_string())?;
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
        .arg("-ca")
        .arg(ca.file("ca-cert.pem"))
        .arg("-ca-key")
        .arg(ca.file("ca-key.pem"))
        .arg("-config")
        .arg(&config);
    let mut peer = Peer::spawn("cfssl", &mut cmd, work.join("cfssl.log"))?;
    peer.wait_port(port)?;
    peer.url = format!("http://127.0.0.1:{port}/api/v1/cfssl/sign");
    Ok(peer)
}

/// The OpenBao mount and role the benchmark signs with.
pub const BAO_MOUNT: &str = "pki";
pub const BAO_ROLE: &str = "bench";
const BAO_TOKEN: &str = "root";

/// An OpenBao dev server (in-memory storage) with the PKI engine at
/// [`BAO_MOUNT`], the CA of `ca` imported as its issuer, and role
/// [`BAO_ROLE`]: no_store, any name, the CSR's SANs (SPIFFE URIs), 24h.
pub async fn start_openbao(bin: &Path, work: &Path, ca: &CaDir) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(work)?;
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["server", "-dev", "-dev-root-token-id", BAO_TOKEN, "-log-level", "warn"])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("HOME", work)
        .env("BAO_ADDR", format!("http://127.0.0.1:{port}"));
    let mut peer = Peer::spawn("openbao", &mut cmd, work.join("openbao.log"))?;
    peer.wait_port(port)?;
    let base = format!("http://127.0.0.1:{port}/v1");
    let http = reqwest::Client::builder().no_proxy().build()?;
    let post = |path: String, body: serde_json::Value| {
        let req = http.post(format!("{base}/{path}")).header("X-Vault-Token", BAO_TOKEN).json(&body);
        async move {
            let resp = req.send().await.with_context(|| format!("POST {path}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "OpenBao POST {path}: {status}: {text}");
            anyhow::Ok(())
        }
    };
    // The dev server listens a moment before it is unsealed and ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mount = serde_json::json!({ "type": "pki", "config": { "max_lease_ttl": "87600h" } });
        match post(format!("sys/mounts/{BAO_MOUNT}"), mount).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e.context(peer.logs())),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let bundle = format!("{}{}", ca.read("ca-key.pem")?, ca.read("ca-cert.pem")?);
    post(format!("{BAO_MOUNT}/config/ca"), serde_json::json!({ "pem_bundle": bundle })).await?;
    let role = serde_json::json!({
        "allow_any_name": true,
        "enforce_hostnames": false,
        "require_cn": false,
        "use_csr_common_name": true,
        "use_csr_sans": true,
        "allowed_uri_sans": ["spiffe://*"],
        "key_type": "any",
        "server_flag": true,
        "client_flag": true,
        "no_store": true,
        "generate_lease": false,
        "ttl": "24h",
        "max_ttl": "48h",
    });
    post(format!("{BAO_MOUNT}/roles/{BAO_ROLE}"), role).await?;
    peer.url = format!("{base}/{BAO_MOUNT}/sign/{BAO_ROLE}");
    peer.token = Some(BAO_TOKEN.to_string());
    Ok(peer)
}
