//! Start the real `meshca serve` binary on free ports and stop it on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub ca_dir: Option<PathBuf>,
    pub plaintext: bool,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

pub struct Server {
    child: Option<Child>,
    pub bin: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Start `bin serve` with a data directory under `work` and wait until ready.
    pub fn start(bin: &Path, work: &Path, opts: ServerOptions) -> anyhow::Result<Self> {
        let data_dir = work.join("data");
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut args = vec![
            "serve".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--grpc-addr".into(),
            grpc.to_string(),
            "--http-addr".into(),
            http.to_string(),
            "--ca-dir".into(),
            opts.ca_dir.unwrap_or_else(|| work.join("no-cacerts")).display().to_string(),
        ];
        if opts.plaintext {
            args.push("--plaintext".into());
        }
        args.extend(opts.args);
        let mut s = Self {
            child: None,
            bin: bin.to_path_buf(),
            grpc,
            http,
            data_dir,
            log: work.join("meshca.log"),
            args,
            env: opts.env,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log)).env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("meshca serve exited with {status} before becoming ready; log:\n{}", self.logs());
                }
            }
            if let Ok(body) = http_get(self.http, "/readyz") {
                if body.starts_with("ready") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("meshca serve did not become ready in 30s; log:\n{}", self.logs())
    }

    /// Stop and start again with the same arguments and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        http_get(self.http, path)
    }

    pub fn root_pem(&self) -> String {
        self.get("/root-cert.pem").expect("GET /root-cert.pem")
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").expect("GET /status")).expect("status JSON")
    }

    /// Lines of the audit log.
    ///
    /// The server writes audit records in small batches, so this waits until
    /// the file has stopped growing (two reads 30 ms apart agree).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let read = || std::fs::read_to_string(self.data_dir.join("audit.jsonl")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut text = read();
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let again = read();
            if again == text || Instant::now() > deadline {
                text = again;
                break;
            }
            text = again;
        }
        text.lines().map(|l| serde_json::from_str(l).expect("audit line is JSON")).collect()
    }

    /// Mint a token with `meshca token create` against this server's data dir.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        let out = Command::new(&self.bin)
            .args(["token", "create", "--data-dir", &self.data_dir.display().to_string(), "--ns", ns, "--sa", sa])
            .output()
            .expect("meshca token create");
        assert!(out.status.success(), "token create failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking GET on loopback; the body of a 200 response, else an error.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, _, body) = crate::http::try_http(addr, path, &[])?;
    anyhow::ensure!(status == 200, "GET {path}: HTTP {status}");
    Ok(body)
}
