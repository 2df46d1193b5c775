//! The node agent's memory with many workloads: one `meshca agent` serving
//! 100 workloads (distinct service accounts) from a workloads file, against
//! its own `meshca serve` on the bench's CA. Its resident set is read from
//! `/proc/<pid>/status` after the primary certificate (the extra ones are
//! fetched lazily) and again once 100 SDS streams, one per workload (like
//! 100 Envoys), each received their own certificate.

use crate::prep;
use crate::procstat;
use crate::{KeyRun, Plan};
use anyhow::Context;
use meshca_agent::sds_client::{self, SdsStream};
use meshca_testkit::{Server, ServerOptions};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Workloads served by the one agent.
pub const WORKLOADS: usize = 100;

/// What was measured.
pub struct AgentMemory {
    pub workloads: usize,
    /// VmRSS with the primary certificate only, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with every certificate delivered and the streams open, KiB.
    pub rss_after_kib: u64,
    /// VmHWM at the end, KiB.
    pub peak_rss_kib: u64,
    /// From the first subscription to the last certificate received.
    pub delivered_in: Duration,
}

impl AgentMemory {
    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }

    /// The report's line (markdown).
    pub fn markdown(&self) -> String {
        format!(
            "\nNode agent memory: one `meshca agent` serving {} workloads (distinct service accounts) over {} SDS \
             streams: RSS {:.1} MiB with the primary certificate, {:.1} MiB with all {} certificates delivered \
             (in {:.2} s), peak {:.1} MiB.\n",
            self.workloads,
            self.workloads,
            Self::mib(self.rss_before_kib),
            Self::mib(self.rss_after_kib),
            self.workloads + 1,
            self.delivered_in.as_secs_f64(),
            Self::mib(self.peak_rss_kib),
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "workloads": self.workloads,
            "sds_streams": self.workloads,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "peak_rss_kib": self.peak_rss_kib,
            "delivered_s": (self.delivered_in.as_secs_f64() * 1000.0).round() / 1000.0,
        })
    }
}

/// The agent process, killed on drop.
struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the scenario with `run`'s CA (its own server and agent, stopped at the end).
pub async fn run(plan: &Plan, run: &KeyRun) -> anyhow::Result<AgentMemory> {
    let kind = run.kind;
    let work = run.dir.join("agent-identities");
    std::fs::create_dir_all(&work)?;
    // Tokens signed with the key the server in `work` will trust.
    let key = meshca_ca::tokens::load_or_create_key(&work.join("data"))?;
    let tokens = work.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let mint = |sa: &str| {
        meshca_ca::tokens::mint(&key, prep::NAMESPACE, sa, "istio-ca", Duration::from_secs(3600), SystemTime::now())
    };
    std::fs::write(tokens.join("primary"), mint("primary")?)?;
    let mut file = String::new();
    for i in 0..WORKLOADS {
        let sa = prep::service_account(i);
        std::fs::write(tokens.join(&sa), mint(&sa)?)?;
        file.push_str(&format!("[[workload]]\nname = \"{sa}\"\ntoken_file = \"tokens/{sa}\"\n\n"));
    }
    std::fs::write(work.join("workloads.toml"), file)?;

    let server = Server::start(
        &plan.meshca_bin,
        &work,
        ServerOptions { ca_dir: Some(run.ca.dir.clone()), ..Default::default() },
    )?;
    std::fs::write(work.join("ca-root.pem"), server.root_pem())?;
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", meshca_testkit::free_port()).parse()?;
    let socket = work.join("sds.sock");
    let path = |p: &str| work.join(p).display().to_string();
    let log = std::fs::File::create(work.join("agent.log"))?;
    let child = Command::new(&plan.meshca_bin)
        .args(["agent", "--ca-addr", &server.grpc.to_string(), "--ca-root", &path("ca-root.pem")])
        .args(["--ca-server-name", "localhost", "--token-file", &path("tokens/primary")])
        .args(["--workloads-file", &path("workloads.toml"), "--sds-socket", &socket.display().to_string()])
        .args(["--http-addr", &http.to_string()])
        .env("MESHCA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting meshca agent")?;
    let pid = child.id();
    let mut agent = AgentProc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(meshca_testkit::http::try_http(http, "/healthz", &[]), Ok((200, _, _))) {
        let log = || std::fs::read_to_string(work.join("agent.log")).unwrap_or_default();
        anyhow::ensure!(agent.0.try_wait()?.is_none(), "meshca agent exited: {}", log());
        anyhow::ensure!(Instant::now() < deadline, "meshca agent not healthy in 30s: {}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before_kib = procstat::rss_kib(pid)?;

    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WORKLOADS {
        let socket = socket.clone();
        tasks.spawn(async move { (i, subscribe(&socket, i).await) });
    }
    let mut streams = Vec::with_capacity(WORKLOADS);
    while let Some(done) = tasks.join_next().await {
        let (i, res) = done?;
        streams.push(res.with_context(|| format!("workload {}", prep::service_account(i)))?);
    }
    let delivered_in = t.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = AgentMemory {
        workloads: WORKLOADS,
        rss_before_kib,
        rss_after_kib: procstat::rss_kib(pid)?,
        peak_rss_kib: procstat::peak_rss_kib(pid)?,
        delivered_in,
    };
    eprintln!(
        "[{kind}] meshca agent with {WORKLOADS} workloads: RSS {} KiB with the primary certificate, {} KiB with {} \
         certificates on {WORKLOADS} SDS streams (delivered in {:.2}s), peak {} KiB",
        m.rss_before_kib,
        m.rss_after_kib,
        WORKLOADS + 1,
        m.delivered_in.as_secs_f64(),
        m.peak_rss_kib,
    );
    drop(streams);
    drop(agent);
    Ok(m)
}

/// Subscribe to workload `i` on its own connection; the stream (kept open) once
/// its certificate, for its own SPIFFE ID, arrived.
async fn subscribe(socket: &Path, i: usize) -> anyhow::Result<SdsStream> {
    let name = prep::service_account(i);
    let mut s = SdsStream::open(socket).await?;
    s.send(&[name.as_str()], "", "", None).await?;
    let r = s.recv(Duration::from_secs(30)).await?.context("no SDS response in 30s")?;
    let secrets = sds_client::secrets(&r)?;
    let first = secrets.first().context("an empty SDS response")?;
    let chain = sds_client::tls_chain(first)?.context("no TLS certificate in the response")?;
    let der = meshca_pki::pem::parse_certs(chain.as_bytes())?.into_iter().next().context("empty chain")?;
    let id = meshca_pki::inspect::cert_info(&der)?.spiffe_id;
    anyhow::ensure!(id.as_deref() == Some(prep::identity(i).as_str()), "got the certificate of {id:?}");
    s.send(&[name.as_str()], &r.version_info, &r.nonce, None).await?;
    Ok(s)
}
