//! The resources of `policy_resources`, installed in the slots of the generated bootstrap, enforce
//! in a real Envoy 1.40: ALLOW/DENY by path on the HTTP port, network RBAC by port on a TCP port,
//! and a PeerAuthentication port-level STRICT that closes plaintext on another TCP port.
//! (The agent pushes these resources over ECDS; here they stand in the slots' `default_config`, so
//! the test needs no xDS server.)

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meshca_envoy::{bootstrap, policy_resources, BootstrapOptions, PolicyInputs, PortProtocol, PortSpec};
use meshca_policy::model::{MeshSettings, PolicySet, Workload};
use meshca_testkit::free_port;
use meshca_testkit::http::try_http;
use support::{app, exchange, install_resources, Envoy};

fn policies(http: u16, tcp_open: u16, tcp_strict: u16) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: wl, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: PERMISSIVE}}
  portLevelMtls: {{{tcp_strict}: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: foo}}
spec:
  rules:
  - to: [{{operation: {{paths: ["/public*"]}}}}]
  - to: [{{operation: {{ports: ["{tcp_open}", "{tcp_strict}"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{ports: ["{http}"], paths: ["/public/secret"]}}}}]
"#
    )
}

#[test]
fn installed_resources_enforce_http_tcp_and_peer_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app_addr, received) = app();
    let (http, tcp_open, tcp_strict) = (free_port(), free_port(), free_port());
    let ports = vec![
        PortSpec { port: http, protocol: PortProtocol::Http, app: app_addr },
        PortSpec { port: tcp_open, protocol: PortProtocol::Tcp, app: app_addr },
        PortSpec { port: tcp_strict, protocol: PortProtocol::Tcp, app: app_addr },
    ];
    let text = policies(http, tcp_open, tcp_strict);
    let set =
        PolicySet::from_objects(meshca_policy::load::load_str("p.yaml", &text).unwrap_or_else(|e| panic!("{e:?}")));
    let workload = Workload::new("foo", BTreeMap::from([("app".to_string(), "httpbin".to_string())]));
    let mesh = MeshSettings::default();
    let jwks = BTreeMap::new();
    let resources =
        policy_resources(&PolicyInputs { set: &set, workload: &workload, mesh: &mesh, ports: &ports, jwks: &jwks })
            .expect("resources");
    let mut config = bootstrap(&BootstrapOptions {
        node_id: "enforce".into(),
        cluster: "test".into(),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        agent_socket: dir.path().join("no-agent.sock"),
        ports,
    });
    assert_eq!(install_resources(&mut config, &resources), 2 * 5 + 2 * 2 * 4);
    let envoy = Envoy::start(dir.path(), &config);

    // Envoy waits up to 15 s (SDS initial fetch timeout) for the missing agent before listening.
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    let deadline = Instant::now() + Duration::from_secs(45);
    let first = loop {
        match try_http(addr, "/public", &[]) {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("Envoy never served {addr}: {e}\n{}", envoy.logs()),
        }
    };
    assert_eq!((first.0, first.2.as_str()), (200, "ok"), "ALLOW /public* lets /public through");
    let denied = try_http(addr, "/public/secret", &[]).expect("request");
    assert_eq!(denied.0, 403, "DENY /public/secret wins over ALLOW: {denied:?}");
    let unmatched = try_http(addr, "/other", &[]).expect("request");
    assert_eq!(unmatched.0, 403, "no ALLOW rule matches /other: {unmatched:?}");

    let before = received.load(Ordering::SeqCst);
    let echo = exchange(tcp_open, b"hello tcp\n", deadline);
    assert_eq!(echo, b"hello tcp\n", "the port rule allows plaintext TCP under PERMISSIVE");
    let refused = exchange(tcp_strict, b"plaintext under STRICT\n", deadline);
    assert!(refused.is_empty(), "port-level STRICT closes plaintext: {:?}", String::from_utf8_lossy(&refused));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.load(Ordering::SeqCst) - before, b"hello tcp\n".len(), "only the allowed TCP bytes arrived");
}
