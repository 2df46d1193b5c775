//! Envoy as the judge of `meshca policy check`: one real Envoy 1.40 with one listener per
//! compiled policy set (mTLS and plaintext filter chains side by side, like Istio's PERMISSIVE
//! inbound), client certificates minted by meshca-pki for each peer identity, and the RBAC debug
//! log parsed per connection.
#![allow(dead_code)]

pub mod client;
pub mod gen;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use meshca_testkit::envoy::bin as envoy_bin;

pub fn meshca_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

/// One listener: a compiled chain (`{"http_filters": [...]}` or `{"network_filters": [...]}`).
pub struct Case {
    pub name: String,
    pub chain: Value,
    pub port: u16,
}

impl Case {
    pub fn is_tcp(&self) -> bool {
        self.chain.get("network_filters").is_some()
    }
}

fn tls_socket(dir: &Path) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": dir.join("server.pem").display().to_string()},
                    "private_key": {"filename": dir.join("server.key").display().to_string()}
                }],
                "validation_context": {"trusted_ca": {"filename": dir.join("root.pem").display().to_string()}}
            }
        }
    })
}

fn hcm(name: &str, filters: &[Value]) -> Value {
    let mut http_filters: Vec<Value> = filters.to_vec();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "normalize_path": true,
            "use_remote_address": false,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
            ]}]},
            "http_filters": http_filters
        }
    })
}

fn tcp_filters(case: &Case) -> Vec<Value> {
    let mut f: Vec<Value> = case.chain["network_filters"].as_array().cloned().unwrap_or_default();
    f.push(json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": case.name, "cluster": "echo"
        }
    }));
    f
}

fn listener(dir: &Path, case: &Case) -> Value {
    let filters = if case.is_tcp() {
        tcp_filters(case)
    } else {
        vec![hcm(&case.name, case.chain["http_filters"].as_array().map(Vec::as_slice).unwrap_or(&[]))]
    };
    json!({
        "name": case.name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": case.port}},
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}
        }],
        "filter_chains": [
            {"filter_chain_match": {"transport_protocol": "tls"}, "transport_socket": tls_socket(dir), "filters": filters},
            {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters}
        ]
    })
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Option<Child>,
    pub log: PathBuf,
    pub admin: u16,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Envoy {
    /// Start Envoy with one listener per case, plus the TCP echo upstream at `echo`.
    pub fn start(dir: &Path, cases: &[Case], echo: SocketAddr) -> Envoy {
        let admin = meshca_testkit::free_port();
        let cfg = json!({
            "node": {"id": "policy-judge", "cluster": "policy-judge"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": cases.iter().map(|c| listener(dir, c)).collect::<Vec<_>>(),
                "clusters": [{
                    "name": "echo", "type": "STATIC", "connect_timeout": "2s",
                    "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                        {"socket_address": {"address": "127.0.0.1", "port_value": echo.port()}}}}]}]}
                }]
            }
        });
        let path = dir.join("envoy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let log = dir.join("envoy.log");
        let f = std::fs::File::create(&log).unwrap();
        let base_id = (std::process::id() % 100_000) * 16 + 7 + 2_000_000;
        let child = Command::new(envoy_bin())
            .args(["-c", path.to_str().unwrap(), "--base-id", &base_id.to_string(), "--concurrency", "1"])
            .args(["--log-level", "warning", "--component-log-level", "rbac:debug,jwt:debug", "--log-format", "%v"])
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting envoy");
        let mut e = Envoy { child: Some(child), log, admin };
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        loop {
            let exited = e.child.as_mut().map(|c| matches!(c.try_wait(), Ok(Some(_)))).unwrap_or(true);
            assert!(!exited, "envoy exited; log:\n{}", e.logs());
            if matches!(meshca_testkit::http::try_http(addr, "/ready", &[]), Ok((200, _, _))) {
                break;
            }
            assert!(Instant::now() < deadline, "envoy not ready in 60s; log:\n{}", e.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// RBAC `enforced ...` lines grouped by the client's address (`ip:port`). Envoy runs with one worker
/// and requests are sent one after the other, so every line after a `checking request` /
/// `checking connection` line (which names `directRemoteIP: ip:port`) belongs to that connection.
pub fn rbac_log_by_client(log: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(i) = line.find("directRemoteIP: ") {
            current = line[i + 16..].split([',', ' ']).next().map(str::to_string);
        }
        if let (Some(a), Some(i)) = (&current, line.find("enforced ")) {
            out.entry(a.clone()).or_default().push(line[i..].trim().to_string());
        }
    }
    out
}

/// `n` distinct free loopback ports below the kernel's ephemeral range (so outgoing connections
/// of other processes cannot take them before Envoy binds them), probed by binding.
pub fn free_ports(n: usize) -> Vec<u16> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut p = 10_000 + ((std::process::id() ^ nanos) % 15_000) as u16;
    let mut held = Vec::new();
    while held.len() < n {
        p = if p >= 29_999 { 10_000 } else { p + 1 };
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", p)) {
            held.push(l);
        }
    }
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A TCP echo server on loopback (threads; lives as long as the test process).
pub fn echo_server() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

/// Run `meshca ARGS`, returning stdout; panics with the output when it fails.
pub fn meshca(args: &[&str]) -> String {
    let out = Command::new(meshca_bin()).args(args).output().expect("running meshca");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "meshca {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `meshca policy check --output json` for `requests`; `source` is `--filters FILE` or `--policies FILE ...`.
pub fn check(dir: &Path, name: &str, port: u16, requests: &[Value], source: &[&str]) -> Vec<Value> {
    let reqs = dir.join(format!("{name}.requests.json"));
    std::fs::write(&reqs, serde_json::to_vec(requests).unwrap()).unwrap();
    let port = port.to_string();
    let mut args = vec!["policy", "check", "--requests", reqs.to_str().unwrap(), "--port", &port, "--output", "json"];
    args.extend(source);
    let out = meshca(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("meshca {args:?}: {e}\n{out}"))
}

/// `check` on precompiled filters (a golden chain).
pub fn check_filters(dir: &Path, case: &Case, requests: &[Value]) -> Vec<Value> {
    let chain = dir.join(format!("{}.chain.json", case.name));
    std::fs::write(&chain, serde_json::to_vec(&case.chain).unwrap()).unwrap();
    check(dir, &case.name, case.port, requests, &["--filters", chain.to_str().unwrap()])
}
