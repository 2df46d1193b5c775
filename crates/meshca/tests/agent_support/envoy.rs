//! Real Envoy 1.40 processes configured like Istio sidecars: secrets over SDS
//! from the agent's unix socket, mTLS with SPIFFE SAN matching.

use super::{ders, echo_server, http_get, issuer_der, norm_serial, poll, serial, subject_der, Agent, Proc};
use meshca_testkit::{free_port, Server};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use meshca_testkit::envoy::bin as envoy_bin;

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A --base-id no other Envoy on this machine uses (process id + counter).
fn base_id() -> u32 {
    (std::process::id() % 100_000) * 16 + NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 16 + 1_000
}

pub fn sds_config(cluster: &str) -> String {
    format!(
        "{{ resource_api_version: V3, api_config_source: {{ api_type: GRPC, transport_api_version: V3, \
         grpc_services: [{{ envoy_grpc: {{ cluster_name: {cluster} }} }}] }} }}"
    )
}

/// A static cluster reaching the agent's socket over HTTP/2.
pub fn sds_cluster(name: &str, socket: &Path) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ pipe: {{ path: "{}" }} }} }} }}] }}]"#,
        socket.display()
    )
}

/// `common_tls_context` with `default` and `ROOTCA` from `sds_cluster`, and
/// the peer's URI SAN matched exactly.
pub fn tls_context(sds_cluster: &str, peer_id: &str) -> String {
    let sds = sds_config(sds_cluster);
    format!(
        r#"
          tls_certificate_sds_secret_configs: [{{ name: default, sds_config: {sds} }}]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: "{peer_id}" }} }}]
            validation_context_sds_secret_config: {{ name: ROOTCA, sds_config: {sds} }}"#
    )
}

fn hcm(prefix: &str, cluster: &str, extra: &str) -> String {
    format!(
        r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}{extra}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}"#
    )
}

fn listener(name: &str, port: u16, transport: &str, filters: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - {transport}filters:{filters}"#
    )
}

fn cluster(name: &str, addr: SocketAddr, transport: &str) -> String {
    // A fresh upstream connection every 20 requests keeps TLS handshakes
    // (with whatever certificates are current) happening under traffic.
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{ max_requests_per_connection: 20 }}
        explicit_http_config: {{ http_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]{transport}"#,
        addr.port()
    )
}

fn config(node: &str, admin: u16, listeners: &[String], clusters: &[String]) -> String {
    format!(
        "node: {{ id: {node}, cluster: {node} }}\nadmin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:{}\n  clusters:{}\n",
        listeners.concat(),
        clusters.concat()
    )
}

/// The server side: requires a client certificate whose SAN is `client_id`,
/// forwards to `upstream` with XFCC (URI) set.
pub fn server_config(admin: u16, port: u16, socket: &Path, client_id: &str, upstream: SocketAddr) -> String {
    let transport = format!(
        r#"transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:{}
      "#,
        tls_context("sds-grpc", client_id).replace("\n          ", "\n            ")
    );
    let xfcc = "\n          forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: { uri: true }";
    let l = listener("inbound", port, &transport, &hcm("inbound", "echo", xfcc));
    config("server", admin, &[l], &[sds_cluster("sds-grpc", socket), cluster("echo", upstream, "")])
}

fn upstream_tls(sds_cluster: &str, server_id: &str) -> String {
    format!(
        r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:{}"#,
        tls_context(sds_cluster, server_id)
    )
}

/// The client side: `port` originates mTLS to `server` with the identity
/// from `socket`; `intruder` (port, socket) does the same with another identity.
pub fn client_config(
    admin: u16,
    port: u16,
    socket: &Path,
    server: SocketAddr,
    server_id: &str,
    intruder: (u16, &Path),
) -> String {
    let listeners = [
        listener("outbound", port, "", &hcm("outbound", "server", "")),
        listener("intruder", intruder.0, "", &hcm("intruder", "server-as-intruder", "")),
    ];
    let clusters = [
        sds_cluster("sds-grpc", socket),
        sds_cluster("sds-grpc-intruder", intruder.1),
        cluster("server", server, &upstream_tls("sds-grpc", server_id)),
        cluster("server-as-intruder", server, &upstream_tls("sds-grpc-intruder", server_id)),
    ];
    config("client", admin, &listeners, &clusters)
}

pub struct Envoy {
    pub proc: Proc,
    pub admin: SocketAddr,
}

impl Envoy {
    pub fn start(work: &Path, name: &str, yaml: &str, admin: u16) -> Self {
        let cfg = work.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let mut cmd = Command::new(envoy_bin());
        cmd.args(["-c", cfg.to_str().unwrap(), "--base-id", &base_id().to_string()]).args([
            "--concurrency",
            "1",
            "--log-level",
            "info",
            "--component-log-level",
            "upstream:warn,main:warn",
        ]);
        let mut proc = Proc::spawn(&format!("envoy {name}"), &mut cmd, work.join(format!("{name}.envoy.log")));
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(proc.alive(), "{} exited; config:\n{yaml}\nlog:\n{}", proc.name, proc.logs());
            if matches!(http_get(admin, "/ready"), Ok((200, _))) {
                break;
            }
            assert!(Instant::now() < deadline, "{} not ready in 30s; log:\n{}", proc.name, proc.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { proc, admin }
    }

    pub fn certs(&self) -> serde_json::Value {
        let (_, body) = http_get(self.admin, "/certs").expect("GET /certs");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// (leaf serials presented for `spiffe_id`, CA serials of all validation contexts).
    pub fn presented(&self, spiffe_id: &str) -> (Vec<String>, Vec<String>) {
        let certs = self.certs();
        let mut leaves = Vec::new();
        let mut cas = Vec::new();
        for c in certs["certificates"].as_array().cloned().unwrap_or_default() {
            if let Some(leaf) = c["cert_chain"].as_array().and_then(|a| a.first()) {
                let uri_match = leaf["subject_alt_names"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|n| n["uri"].as_str() == Some(spiffe_id)));
                if uri_match {
                    leaves.push(super::norm_serial(leaf["serial_number"].as_str().unwrap_or("")));
                }
            }
            for ca in c["ca_cert"].as_array().cloned().unwrap_or_default() {
                cas.push(super::norm_serial(ca["serial_number"].as_str().unwrap_or("")));
            }
        }
        (leaves, cas)
    }

    pub fn stat(&self, name: &str) -> u64 {
        let (_, body) = http_get(self.admin, &format!("/stats?filter=^{name}$")).unwrap_or((0, String::new()));
        body.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    }
}

// --- Waiting for both sides of an mTLS pair to take new material ---

/// The leaf serial an agent wrote, if it was issued by the CA certificate `issuer_pem`.
pub fn agent_serial_under(agent: &Agent, issuer_pem: &str) -> Option<String> {
    let chain = agent.out_chain();
    if chain.is_empty() || issuer_der(&chain) != subject_der(issuer_pem) {
        return None;
    }
    Some(norm_serial(&serial(&chain)))
}

/// Wait until both Envoys present the certificates their agents obtained
/// under `issuer_pem`; returns the elapsed time.
pub async fn both_present(what: &str, pairs: &[(&Envoy, &Agent, &str)], issuer_pem: &str, t0: Instant) -> Duration {
    let ok = |(envoy, agent, id): &(&Envoy, &Agent, &str)| {
        agent_serial_under(agent, issuer_pem).is_some_and(|s| envoy.presented(id).0.contains(&s))
    };
    while !pairs.iter().all(ok) {
        if t0.elapsed() > Duration::from_secs(30) {
            let detail: Vec<String> = pairs
                .iter()
                .map(|(e, a, id)| {
                    format!(
                        "{id}: agent wrote {:?} (under the expected issuer: {:?}), Envoy presents {:?}\nagent log:\n{}",
                        serial(&a.out_chain()),
                        agent_serial_under(a, issuer_pem),
                        e.presented(id).0,
                        &e.certs().to_string()[..2000.min(e.certs().to_string().len())]
                    )
                })
                .collect();
            panic!("timed out waiting for {what}:\n{}", detail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// Wait until every Envoy's validation contexts hold exactly the roots in `bundle_pem`.
pub async fn both_trust(what: &str, envoys: &[&Envoy], bundle_pem: &str, t0: Instant) -> Duration {
    let mut want: Vec<String> =
        ders(bundle_pem).iter().map(|d| norm_serial(&meshca_pki::inspect::cert_info(d).unwrap().serial)).collect();
    want.sort();
    poll(what, Duration::from_secs(30), || {
        envoys
            .iter()
            .all(|e| {
                let mut cas = e.presented("").1;
                cas.sort();
                cas.dedup();
                !cas.is_empty() && cas == want
            })
            .then_some(())
    })
    .await;
    t0.elapsed()
}

// --- A client and a server sidecar doing mTLS, plus an intruder identity ---

pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/frontend/sa/web";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/backend/sa/api";
pub const INTRUDER_ID: &str = "spiffe://cluster.local/ns/frontend/sa/intruder";

/// Three agents (web, api, intruder) of `ca` and two Envoys: `client_addr`
/// originates mTLS as web to the server Envoy, which requires web and
/// forwards to an echo upstream; `intruder_addr` does the same as intruder.
pub struct Mesh {
    pub client_agent: Agent,
    pub server_agent: Agent,
    pub intruder_agent: Agent,
    pub server_envoy: Envoy,
    pub client_envoy: Envoy,
    pub client_addr: SocketAddr,
    pub intruder_addr: SocketAddr,
    pub server_port: u16,
    /// Requests that reached the upstream.
    pub echo_count: Arc<AtomicU64>,
}

/// Start [`Mesh`] against `ca`, the agents trusting `ca_root`.
pub async fn start_mesh(w: &Path, ca: &Server, ca_root: &Path) -> Mesh {
    let client_agent = Agent::start(w, "web", ca, ca_root, &ca.token("frontend", "web"), &[]);
    let server_agent = Agent::start(w, "api", ca, ca_root, &ca.token("backend", "api"), &[]);
    let intruder_agent = Agent::start(w, "bad", ca, ca_root, &ca.token("frontend", "intruder"), &[]);
    let (echo, echo_count) = echo_server().await;
    let (server_port, client_port, intruder_port) = (free_port(), free_port(), free_port());
    let (server_admin, client_admin) = (free_port(), free_port());
    let server_yaml = server_config(server_admin, server_port, &server_agent.socket, CLIENT_ID, echo);
    let server_envoy = Envoy::start(w, "server", &server_yaml, server_admin);
    let server_addr: SocketAddr = format!("127.0.0.1:{server_port}").parse().unwrap();
    let client_yaml = client_config(
        client_admin,
        client_port,
        &client_agent.socket,
        server_addr,
        SERVER_ID,
        (intruder_port, &intruder_agent.socket),
    );
    let client_envoy = Envoy::start(w, "client", &client_yaml, client_admin);
    Mesh {
        client_agent,
        server_agent,
        intruder_agent,
        server_envoy,
        client_envoy,
        client_addr: format!("127.0.0.1:{client_port}").parse().unwrap(),
        intruder_addr: format!("127.0.0.1:{intruder_port}").parse().unwrap(),
        server_port,
        echo_count,
    }
}
