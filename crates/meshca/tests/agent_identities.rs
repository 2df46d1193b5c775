//! One `meshca agent` serving 100 workloads (distinct service accounts, so
//! distinct SPIFFE IDs) from a workloads file, against the real `meshca
//! serve`: 100 SDS streams on their own connections (like 100 Envoys) and a
//! FetchSecrets each get the certificate of their own workload, a name that
//! is not configured gets nothing, a malformed workloads file is refused with
//! its file and line, and the agent's resident memory is reported.

mod agent_support;

use agent_support::*;
use meshca_agent::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use meshca_agent::envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshca_agent::sds_client::{self, SdsStream};
use meshca_testkit::{Server, ServerOptions};
use std::path::Path;
use std::time::{Duration, SystemTime};

const WORKLOADS: usize = 100;
const NS: &str = "fleet";
/// Generous: a debug build of the agent holding 100 certificates and 100 streams.
const RSS_LIMIT_KIB: u64 = 96 * 1024;

fn name(i: usize) -> String {
    format!("wl-{i:03}")
}

fn spiffe(i: usize) -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/sa-{i:03}")
}

/// (name, certificate chain PEM) of each TLS certificate in a response.
fn tls_secrets(resp: &DiscoveryResponse) -> Vec<(String, String)> {
    sds_client::secrets(resp).expect("secrets").iter().filter_map(tls_chain).collect()
}

fn tls_chain(s: &Secret) -> Option<(String, String)> {
    sds_client::tls_chain(s).unwrap().map(|chain| (s.name.clone(), chain))
}

/// The URI SAN (SPIFFE ID) of a chain's leaf.
fn uri_san(chain: &str) -> String {
    meshca_pki::inspect::cert_info(&ders(chain)[0]).unwrap().spiffe_id.expect("the leaf has a URI SAN")
}

/// A token per workload (its own service account) and the workloads file naming them.
fn write_workloads(w: &Path, ca: &Server) -> std::path::PathBuf {
    let key = meshca_ca::tokens::load_or_create_key(&ca.data_dir).unwrap();
    let dir = w.join("tokens");
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = String::from("# 100 workloads, one service account each\n");
    for i in 0..WORKLOADS {
        let sa = format!("sa-{i:03}");
        let token =
            meshca_ca::tokens::mint(&key, NS, &sa, "istio-ca", Duration::from_secs(3600), SystemTime::now()).unwrap();
        std::fs::write(dir.join(&sa), token).unwrap();
        toml.push_str(&format!("\n[[workload]]\nname = \"{}\"\ntoken_file = \"tokens/{sa}\"\n", name(i)));
    }
    let path = w.join("workloads.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_workloads_each_get_their_own_certificate() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca = Server::start(&bin(), w, ServerOptions::default()).unwrap();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();
    let file = write_workloads(w, &ca);
    let agent = Agent::start(
        w,
        "node",
        &ca,
        &ca_root,
        &ca.token(NS, "primary"),
        &["--workloads-file", &file.to_string_lossy()],
    );
    let pid = agent.proc.pid();
    let rss_idle = rss_kib(pid);

    // Lazy: only the primary certificate is fetched until an SDS request names a workload.
    let m = agent.metrics();
    assert_eq!(metric(&m, "meshca_agent_csr_total"), 1.0, "{m}");
    let status = status_json(&agent);
    assert_eq!(status["workloads_total"], WORKLOADS + 1, "{status}");
    assert_eq!(status["workloads"][1]["name"], "wl-000", "{status}");
    assert_eq!(status["workloads"][1]["state"], "idle", "{status}");

    // 100 Envoys: one stream (own connection) per workload, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WORKLOADS {
        let socket = agent.socket.clone();
        tasks.spawn(async move {
            let mut s = SdsStream::open(&socket).await.expect("open an SDS stream");
            let n = name(i);
            s.send(&[n.as_str()], "", "", None).await.unwrap();
            let r = s.recv(Duration::from_secs(30)).await.unwrap().unwrap_or_else(|| panic!("{n}: no response"));
            s.send(&[n.as_str()], &r.version_info, &r.nonce, None).await.unwrap();
            (i, tls_secrets(&r), s)
        });
    }
    let mut streams = Vec::new();
    let mut serials = vec![String::new(); WORKLOADS];
    while let Some(done) = tasks.join_next().await {
        let (i, got, s) = done.expect("stream task");
        assert_eq!(got.len(), 1, "{}: {got:?}", name(i));
        assert_eq!(got[0].0, name(i));
        assert_eq!(uri_san(&got[0].1), spiffe(i), "{} got another workload's certificate", name(i));
        serials[i] = serial(&got[0].1);
        streams.push(s);
    }
    let mut distinct = serials.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), WORKLOADS, "every workload has its own certificate");

    // FetchSecrets: the same certificate the stream got, with the bundle; nothing for unknown names.
    let mut client = sds_client::connect(&agent.socket).await.unwrap();
    let req = |names: &[&str]| DiscoveryRequest {
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: meshca_agent::sds::secret_type_url(),
        ..Default::default()
    };
    let fetched = client.fetch_secrets(req(&["wl-042", "ROOTCA"])).await.unwrap().into_inner();
    assert_eq!(fetched.resources.len(), 2);
    let got = tls_secrets(&fetched);
    assert_eq!((got[0].0.as_str(), uri_san(&got[0].1)), ("wl-042", spiffe(42)));
    assert_eq!(serial(&got[0].1), serials[42]);
    let err = client.fetch_secrets(req(&["not-configured"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    // A name that is not configured: nothing, and one warning for the stream however often it asks.
    let mut u = SdsStream::open(&agent.socket).await.unwrap();
    u.send(&["not-configured"], "", "", None).await.unwrap();
    assert!(u.recv(Duration::from_millis(700)).await.unwrap().is_none(), "an unknown name gets nothing");
    u.send(&["not-configured", "also-not"], "", "", None).await.unwrap();
    assert!(u.recv(Duration::from_millis(500)).await.unwrap().is_none(), "an unknown name gets nothing");
    let warned = || agent.proc.logs().lines().filter(|l| l.contains("not configured as workloads")).count();
    poll("the unknown-name warning", Duration::from_secs(5), || (warned() >= 1).then_some(())).await;
    assert_eq!(warned(), 1, "one warning per stream");

    // /status lists every workload with its identity; metrics count 101 certificates.
    let status = status_json(&agent);
    let list = status["workloads"].as_array().unwrap();
    assert_eq!(list.len(), WORKLOADS + 1);
    for (i, wl) in list[1..].iter().enumerate() {
        assert_eq!((wl["name"].as_str(), wl["state"].as_str()), (Some(name(i).as_str()), Some("available")), "{wl}");
        assert_eq!(wl["identity"], spiffe(i), "{wl}");
        assert!(wl["expires_unix"].as_u64().unwrap() > 0, "{wl}");
    }
    assert_eq!(metric(&agent.metrics(), "meshca_agent_csr_total"), (WORKLOADS + 1) as f64);

    let rss_all = rss_kib(pid);
    println!(
        "figure: agent RSS {rss_idle} KiB with 1 certificate, {rss_all} KiB with {} certificates and {} SDS streams \
         (debug build, VmRSS)",
        WORKLOADS + 1,
        streams.len() + 1
    );
    assert!(rss_all > 0 && rss_all < RSS_LIMIT_KIB, "agent RSS {rss_all} KiB with {WORKLOADS} workloads");
    drop(streams);
}

fn status_json(agent: &Agent) -> serde_json::Value {
    let (code, body) = http_get(agent.http, "/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `meshca agent` with `args`; it must refuse to start (within 20 s). Returns its output.
fn refused(work: &Path, args: &[&str]) -> String {
    refused_env(work, args, &[])
}

fn refused_env(work: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let log = work.join("refused.log");
    let sock = work.join("sds.sock").to_string_lossy().to_string();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["agent", "--plaintext", "--token-file", "/nonexistent/token", "--sds-socket", &sock]).args(args);
    let _ = std::fs::remove_file(&log);
    cmd.envs(env.iter().copied());
    let mut p = Proc::spawn("agent (bad configuration)", cmd.env("NO_COLOR", "1"), log);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.alive() {
        assert!(std::time::Instant::now() < deadline, "meshca agent {args:?} did not refuse: {}", p.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).and_then(|s| s.code());
    assert_ne!(code, Some(0), "meshca agent {args:?} exited 0: {}", p.logs());
    p.logs()
}

#[test]
fn bad_workload_configuration_is_refused_with_file_line_and_field() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("workloads.toml");
    let f = file.to_string_lossy().to_string();
    let at = |line: usize| format!("{f}:{line}:");

    std::fs::write(&file, "[[workload]]\nname = \"a\"\ntoken_file = \"ta\"\n[[workload]]\nname = \"b\"\n").unwrap();
    let err = refused(work.path(), &["--workloads-file", &f]);
    assert!(err.contains(&at(4)) && err.contains("token_file"), "{err}");

    std::fs::write(&file, "[[workload]]\nname = \"a\"\ntoken_file = \"ta\"\nfile = \"x\"\n").unwrap();
    let err = refused(work.path(), &["--workloads-file", &f]);
    assert!(err.contains(&at(4)) && err.contains("file"), "{err}");

    std::fs::write(
        &file,
        "[[workload]]\nname = \"a\"\ntoken_file = \"ta\"\n\n[[workload]]\nname = \"a\"\ntoken_file = \"tb\"\n",
    )
    .unwrap();
    let err = refused(work.path(), &["--workloads-file", &f]);
    assert!(err.contains(&format!("{} workload.name: \"a\" is already configured at {f}:2", at(6))), "{err}");

    std::fs::write(&file, "[[workload]]\nname = \"ROOTCA\"\ntoken_file = \"t\"\n").unwrap();
    let err = refused(work.path(), &["--workloads-file", &f]);
    assert!(err.contains(&at(2)) && err.contains("reserved"), "{err}");

    let err = refused(work.path(), &["--workload", "default=/t"]);
    assert!(err.contains("reserved"), "{err}");
    let err = refused(work.path(), &["--workload", "a=/t/a", "--workload", "a=/t/b"]);
    assert!(err.contains("\"a\" is already configured"), "{err}");
    let err = refused_env(work.path(), &[], &[("MESHCA_AGENT_WORKLOADS", "a=/t/a ROOTCA=/t/r")]);
    assert!(err.contains("\"ROOTCA\" is reserved"), "{err}");
    let err = refused(work.path(), &["--workloads-file", &work.path().join("missing.toml").to_string_lossy()]);
    assert!(err.contains("missing.toml"), "{err}");
}
