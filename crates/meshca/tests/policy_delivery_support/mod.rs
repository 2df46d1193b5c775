//! The whole policy path with real processes: `meshca serve --policy-dir`, a
//! `meshca agent` for the server workload with declared ports, Envoy 1.40
//! started from `meshca agent envoy-bootstrap`, an HTTP app and a TCP echo
//! behind it, a second agent in another namespace, and clients holding
//! certificates issued by the same CA (any SPIFFE identity) or none.
#![allow(dead_code)]

use crate::agent_support::envoy::Envoy;
use crate::agent_support::{bin, echo_server, http_get, install_set, make_inter, make_root, Agent};
use crate::policy_support::client::{Pki, Seen};
use crate::policy_support::{echo_server as tcp_echo_server, free_ports};
use meshca_testkit::{Server, ServerOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SERVER_NS: &str = "backend";
pub const WEB: &str = "spiffe://cluster.local/ns/frontend/sa/web";
pub const INTRUDER: &str = "spiffe://cluster.local/ns/frontend/sa/intruder";
pub const OPS: &str = "spiffe://cluster.local/ns/ops/sa/tool";

pub struct World {
    pub tmp: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub ca: Server,
    pub policy_dir: PathBuf,
    pub agent: Agent,
    /// An agent of another namespace (frontend/web).
    pub other: Agent,
    pub envoy: Envoy,
    pub http_port: u16,
    pub tcp_port: u16,
    pub pki: std::cell::RefCell<Pki>,
}

/// Poll `f` every 20 ms until it returns `Some`, panicking with `what` (and `detail()`) after `timeout`.
pub fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>, detail: impl Fn() -> String) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}\n{}", detail());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Write `text` to `dir/name` atomically (the server must never see half a file).
pub fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

impl World {
    /// Start everything with `policies` (file name, YAML) in the policy directory.
    pub fn start(policies: &[(&str, &str)]) -> World {
        Self::start_with(policies, &[])
    }

    /// [`World::start`] with `extra_bootstrap_ports` (`PORT/PROTO=APP`) in Envoy's bootstrap but
    /// not declared to the agent (an operator's mistake the agent must report).
    pub fn start_with(policies: &[(&str, &str)], extra_bootstrap_ports: &[&str]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path().to_path_buf();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let root = make_root(&w, "root");
        let inter = make_inter(&w, &root, "inter");
        let ca_dir = w.join("cacerts");
        install_set(&ca_dir, &inter, None);
        let ports = free_ports(3);
        let (http_port, tcp_port, admin) = (ports[0], ports[1], ports[2]);
        let policy_dir = w.join("policies");
        std::fs::create_dir_all(&policy_dir).unwrap();
        for (name, text) in policies {
            write_atomic(&policy_dir, name, &fill_ports(text, http_port, tcp_port));
        }
        let ca = Server::start(
            &bin(),
            &w,
            ServerOptions {
                ca_dir: Some(ca_dir.clone()),
                // The test's OIDC issuer serves plain HTTP.
                args: vec!["--policy-dir".into(), policy_dir.display().to_string(), "--jwt-allow-http".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let ca_root = w.join("ca-root.pem");
        std::fs::write(&ca_root, ca.root_pem()).unwrap();

        let (app, _) = rt.block_on(echo_server());
        let tcp_app = tcp_echo_server();
        let http_spec = format!("{http_port}/http={app}");
        let tcp_spec = format!("{tcp_port}/tcp={tcp_app}");
        let labels = "app=api,version=v1";
        let token = ca.token(SERVER_NS, "api");
        let agent = Agent::start(
            &w,
            "api",
            &ca,
            &ca_root,
            &token,
            &["--port", &http_spec, "--port", &tcp_spec, "--workload-labels", labels],
        );
        let other_spec = format!("{}/http={app}", free_ports(1)[0]);
        let other = Agent::start(
            &w,
            "web",
            &ca,
            &ca_root,
            &ca.token("frontend", "web"),
            &["--port", &other_spec, "--workload-labels", "app=web"],
        );
        let admin_addr = format!("127.0.0.1:{admin}");
        let mut args = vec!["agent", "envoy-bootstrap", "--port", &http_spec, "--port", &tcp_spec];
        for p in extra_bootstrap_ports {
            args.extend(["--port", p]);
        }
        let socket = agent.socket.display().to_string();
        args.extend(["--socket", &socket, "--admin", &admin_addr, "--node-id", "api", "--output", "json"]);
        let bootstrap = crate::agent_support::meshca(&args);
        let envoy = Envoy::start(&w, "api", &bootstrap, admin);
        let pki = std::cell::RefCell::new(Pki::from_ca(&inter));
        World { tmp, rt, ca, policy_dir, agent, other, envoy, http_port, tcp_port, pki }
    }

    pub fn work(&self) -> &Path {
        self.tmp.path()
    }

    /// Write a policy file (`{HTTP_PORT}` and `{TCP_PORT}` replaced by the ports).
    pub fn write_policy(&self, name: &str, text: &str) {
        write_atomic(&self.policy_dir, name, &fill_ports(text, self.http_port, self.tcp_port));
    }

    /// One HTTP request on its own connection: mTLS as `principal`, plaintext with `None`.
    pub fn http(&self, principal: Option<&str>, method: &str, path: &str, jwt: Option<&str>) -> Seen {
        self.http_with(principal, method, path, None, jwt)
    }

    /// [`World::http`] with one extra request header.
    pub fn http_with(
        &self,
        principal: Option<&str>,
        method: &str,
        path: &str,
        header: Option<(&str, &str)>,
        jwt: Option<&str>,
    ) -> Seen {
        let mut req = json!({ "method": method, "path": path, "host": "api.backend" });
        if let Some((k, v)) = header {
            req["headers"] = json!({ k: v });
        }
        if let Some(p) = principal {
            req["source"] = json!({ "principal": p });
        }
        if let Some(t) = jwt {
            req["jwt"] = json!(t);
        }
        self.pki.borrow_mut().send(self.http_port, &req, false)
    }

    /// A TCP connection to the TCP port: 200 when the echo came back, 0 when it was closed.
    pub fn tcp(&self, principal: Option<&str>) -> u16 {
        let mut req = json!({});
        if let Some(p) = principal {
            req["source"] = json!({ "principal": p });
        }
        self.pki.borrow_mut().send(self.tcp_port, &req, true).status
    }

    pub fn agent_status(&self) -> Value {
        status_of(&self.agent)
    }

    /// Wait until Envoy ACKed the server's current policy version as a whole; returns it.
    pub fn wait_applied(&self, what: &str) -> String {
        wait(
            what,
            Duration::from_secs(30),
            || {
                let p = self.agent_status()["policy"].clone();
                let v = p["version_acked"].as_str().unwrap_or("").to_string();
                (!v.is_empty() && p["up_to_date"] == true).then_some(v)
            },
            || self.detail(),
        )
    }

    pub fn detail(&self) -> String {
        let tail = |s: String| s.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect::<String>();
        std::thread::sleep(Duration::from_millis(1500)); // Envoy flushes its access log every second
        let stats =
            http_get(self.envoy.admin, "/stats?filter=rbac|meshca_inbound|jwt").map(|r| r.1).unwrap_or_default();
        let stats: String = stats.lines().filter(|l| !l.ends_with(": 0")).map(|l| format!("{l}\n")).collect();
        format!(
            "agent status: {}\nenvoy stats (non-zero):\n{stats}\nagent log (tail):\n{}\nenvoy log (tail):\n{}\nserver log (tail):\n{}",
            self.agent_status(),
            tail(self.agent.proc.logs()),
            tail(self.envoy.proc.logs()),
            tail(self.ca.logs())
        )
    }
}

/// `{HTTP_PORT}` and `{TCP_PORT}` in a policy text replaced by the workload's ports.
pub fn fill_ports(text: &str, http: u16, tcp: u16) -> String {
    text.replace("{HTTP_PORT}", &http.to_string()).replace("{TCP_PORT}", &tcp.to_string())
}

pub fn status_of(agent: &Agent) -> Value {
    http_get(agent.http, "/status").ok().and_then(|(_, b)| serde_json::from_str(&b).ok()).unwrap_or(Value::Null)
}
