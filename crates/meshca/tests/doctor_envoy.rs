//! `meshca doctor --envoy-admin`: real Envoy 1.40 sidecars fed over SDS by
//! real `meshca agent`s. Healthy (both sides accept each other), an intruder
//! whose SAN the server refuses (ssl.fail_verify_san), a root update an
//! Envoy never received because its agent stopped, and an Envoy whose SDS
//! never answered (secrets warming, connections reset).

mod agent_support;
mod doctor_support;

use agent_support::envoy::{client_config, server_config, Envoy};
use agent_support::{echo_server, http_get, poll, Agent};
use doctor_support::{doctor, install, make_set, wait_for};
use meshca_testkit::{free_port, Server, ServerOptions};
use std::net::SocketAddr;
use std::time::Duration;

const WEB: &str = "spiffe://cluster.local/ns/frontend/sa/web";
const API: &str = "spiffe://cluster.local/ns/backend/sa/api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_secrets_bundles_counters_and_mtls() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca_dir = w.join("cacerts");
    install(&make_set(w, "a", "9000h"), &ca_dir);
    let opts =
        ServerOptions { ca_dir: Some(ca_dir.clone()), args: vec!["--allow-root-replace".into()], ..Default::default() };
    let ca = Server::start(&agent_support::bin(), w, opts).unwrap();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();
    let web = Agent::start(w, "web", &ca, &ca_root, &ca.token("frontend", "web"), &[]);
    let mut api = Agent::start(w, "api", &ca, &ca_root, &ca.token("backend", "api"), &[]);
    let intruder = Agent::start(w, "bad", &ca, &ca_root, &ca.token("frontend", "intruder"), &[]);

    let (echo, _) = echo_server().await;
    // Envoy "api" serves mTLS and accepts only WEB; Envoy "web" accepts only API.
    let (api_admin, api_port, web_admin, web_port) = (free_port(), free_port(), free_port(), free_port());
    let api_envoy = Envoy::start(w, "api", &server_config(api_admin, api_port, &api.socket, WEB, echo), api_admin);
    let web_envoy = Envoy::start(w, "web", &server_config(web_admin, web_port, &web.socket, API, echo), web_admin);
    // A client sidecar calling "api" as WEB (outbound) and as the intruder.
    let (client_admin, client_port, intruder_port) = (free_port(), free_port(), free_port());
    let api_addr: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    let yaml = client_config(client_admin, client_port, &web.socket, api_addr, API, (intruder_port, &intruder.socket));
    let _client = Envoy::start(w, "client", &yaml, client_admin);
    let client_addr: SocketAddr = format!("127.0.0.1:{client_port}").parse().unwrap();
    poll("a request through mTLS", Duration::from_secs(30), || {
        http_get(client_addr, "/ok").ok().filter(|(s, body)| *s == 200 && body.contains(WEB))
    })
    .await;

    let (api_a, web_a, http) = (api_envoy.admin.to_string(), web_envoy.admin.to_string(), ca.http.to_string());
    let web_agent = web.http.to_string();
    let healthy = [
        "--envoy-admin",
        &web_a,
        "--envoy-admin",
        &api_a,
        "--expect-identity",
        WEB,
        "--expect-identity",
        API,
        "--agent",
        &web_agent,
        "--ca-http-addr",
        &http,
    ];
    let run = doctor(&healthy);
    run.expect_healthy();
    for id in [
        "envoy.secrets-active",
        "envoy.cert-matches-agent",
        "envoy.bundle-current",
        "mtls.first-accepts-second",
        "mtls.second-accepts-first",
        "ca-server.agent-bundles",
    ] {
        run.expect(id, "ok", &[]);
    }
    eprintln!("doctor against CA + agent + 2 Envoys took {:?}", run.elapsed);

    // The intruder's calls are refused by "api" for their SAN.
    let intruder_addr: SocketAddr = format!("127.0.0.1:{intruder_port}").parse().unwrap();
    for _ in 0..3 {
        let r = http_get(intruder_addr, "/steal");
        assert!(!matches!(r, Ok((200, _))), "the intruder got through: {r:?}");
    }
    let state = w.join("stats.json");
    let st = state.to_str().unwrap();
    let run = doctor(&["--envoy-admin", &api_a, "--expect-identity", API, "--stats-state", st]);
    run.expect(
        "envoy.tls-verify-failures",
        "warning",
        &["failed SAN verification", "ssl.fail_verify_san", "another identity"],
    );
    assert_eq!(run.code, 0, "counters are warnings");
    // Run again: no new failure since the previous run, so nothing to report.
    doctor(&["--envoy-admin", &api_a, "--stats-state", st]).expect("envoy.tls-verify-failures", "ok", &[]);
    let _ = http_get(intruder_addr, "/steal-again");
    doctor(&["--envoy-admin", &api_a, "--stats-state", st]).expect(
        "envoy.tls-verify-failures",
        "warning",
        &["since the previous run", "/min", "fail_verify_san"],
    );

    // Root update not detected: api's agent is gone when the CA switches root.
    api.proc.stop();
    let generation = ca.status()["generation"].clone();
    install(&make_set(w, "b", "9000h"), &ca_dir);
    wait_for("the CA to switch to root b", || ca.status()["generation"] != generation);
    let api_agent = api.http.to_string();
    let run = doctor(&["--envoy-admin", &api_a, "--agent", &api_agent, "--ca-http-addr", &http]);
    assert_eq!(run.code, 1);
    run.expect("envoy.bundle-current", "error", &["Root b", "Root a", "root update not detected", "restart the agent"]);
    run.expect("workload.agent-healthy", "error", &["unreachable", "nothing listens"]);
    run.expect("envoy.secrets-active", "ok", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_whose_sds_never_answered() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (echo, _) = echo_server().await;
    let (admin, port) = (free_port(), free_port());
    // No agent listens on this socket: Envoy waits out its initial fetch timeout, then runs with warming secrets.
    let envoy = Envoy::start(w, "lonely", &server_config(admin, port, &w.join("no-agent.sock"), WEB, echo), admin);
    // A connection to the listener is reset: the secret is not ready.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _ = http_get(addr, "/");
    let a = envoy.admin.to_string();
    let run = doctor(&["--envoy-admin", &a]);
    assert_eq!(run.code, 1);
    run.expect("envoy.secrets-active", "error", &["default is warming", "ROOTCA is warming", "SDS never answered"]);
    run.expect("envoy.cert-validity", "skipped", &["no default certificate"]);
    run.expect("envoy.sds-not-ready", "warning", &["secrets_not_ready", "SDS had not answered"]);
}

/// A plain-HTTP Envoy with a JWT filter on /jwt and an RBAC rule denying /admin.
fn policy_envoy_yaml(admin: u16, port: u16, jwks: &str) -> String {
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }} }}]
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                p: {{ issuer: "https://issuer.example", local_jwks: {{ inline_string: '{jwks}' }} }}
              rules: [{{ match: {{ prefix: "/jwt" }}, requires: {{ provider_name: p }} }}]
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  deny-admin:
                    permissions: [{{ url_path: {{ path: {{ prefix: "/admin" }} }} }}]
                    principals: [{{ any: true }}]
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

#[test]
fn requests_denied_by_rbac_and_jwt_authentication() {
    let work = tempfile::tempdir().unwrap();
    let key = meshca_jwt::SigningKey::generate_es256().unwrap();
    let jwks = serde_json::to_string(&meshca_jwt::Jwks { keys: vec![key.public_jwk()] }).unwrap();
    let (admin, port) = (free_port(), free_port());
    let envoy = Envoy::start(work.path(), "policy", &policy_envoy_yaml(admin, port, &jwks), admin);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(http_get(addr, "/admin").unwrap().0, 403, "RBAC denies /admin");
    assert_eq!(http_get(addr, "/jwt").unwrap().0, 401, "no token on /jwt");
    assert_eq!(http_get(addr, "/open").unwrap().0, 200);
    let a = envoy.admin.to_string();
    let run = doctor(&["--envoy-admin", &a]);
    run.expect(
        "envoy.rbac-denied",
        "warning",
        &["1 requests denied by RBAC", "http.inbound.rbac.denied", "authorization policy"],
    );
    run.expect("envoy.jwt-denied", "warning", &["denied by JWT authentication", "jwt_authn.denied", "expired"]);
    run.expect("envoy.secrets-active", "error", &["default is absent", "ROOTCA is absent"]);
}
