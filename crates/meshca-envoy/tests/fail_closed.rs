//! A real Envoy 1.40 started from the generated bootstrap with no agent behind the socket: every
//! slot holds its deny-all `default_config`, so plaintext HTTP and TCP connections are refused and
//! the application never receives a byte.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meshca_envoy::{bootstrap, BootstrapOptions, PortProtocol, PortSpec};
use meshca_testkit::free_port;
use support::{app, exchange, Envoy};

fn admin_stats(admin: u16, filter: &str) -> String {
    let resp = exchange(
        admin,
        format!("GET /stats?filter={filter} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        Instant::now() + Duration::from_secs(30),
    );
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn without_an_agent_every_listener_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app_addr, received) = app();
    let (http_port, tcp_port, admin_port) = (free_port(), free_port(), free_port());
    let config = bootstrap(&BootstrapOptions {
        node_id: "fail-closed".into(),
        cluster: "test".into(),
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        agent_socket: dir.path().join("no-agent.sock"),
        ports: vec![
            PortSpec { port: http_port, protocol: PortProtocol::Http, app: app_addr },
            PortSpec { port: tcp_port, protocol: PortProtocol::Tcp, app: app_addr },
        ],
    });
    let envoy = Envoy::start(dir.path(), &config);

    // Envoy waits up to 15 s (SDS initial fetch timeout) for the missing agent before listening.
    let deadline = Instant::now() + Duration::from_secs(45);
    let http = exchange(http_port, b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n", deadline);
    let tcp = exchange(tcp_port, b"hello\n", deadline);
    let log = envoy.logs();
    assert!(http.is_empty(), "plaintext HTTP must be refused, got {:?}\n{log}", String::from_utf8_lossy(&http));
    assert!(tcp.is_empty(), "plaintext TCP must be refused, got {:?}", String::from_utf8_lossy(&tcp));
    let stats = admin_stats(admin_port, "peer_plaintext");
    for port in [http_port, tcp_port] {
        let denied = format!("meshca.{port}.peer_plaintext.rbac.denied: 1");
        assert!(
            stats.contains(&denied),
            "the default config of the peer_plaintext slot refused it ({denied}):\n{stats}"
        );
    }
    assert_eq!(received.load(Ordering::SeqCst), 0, "no byte reached the application");
}
