//! The listening ports' kernel accept queue: `--listen-backlog` (default
//! 4096, capped by net.core.somaxconn) rather than tokio's 1024, which a
//! restart storm of thousands of agents overflows while the server is busy
//! (the kernel then drops connection attempts and clients wait a SYN
//! retransmit, 1 s then 3 s). `ss` reports a listening socket's queue size.

mod support;

use meshca_testkit::{Server, ServerOptions};
use std::net::SocketAddr;
use std::process::Command;
use support::*;

/// The accept queue size of the socket listening on `addr` (`ss -ltn`: Send-Q).
fn listen_queue(addr: SocketAddr) -> u32 {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("`ss` (iproute2) is required by this test: apt-get install -y iproute2");
    assert!(out.status.success(), "ss failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line =
        text.lines().find(|l| l.contains(&addr.to_string())).unwrap_or_else(|| panic!("{addr} not listening:\n{text}"));
    // State Recv-Q Send-Q Local Peer
    let send_q = line.split_whitespace().nth(2).unwrap_or_else(|| panic!("unexpected ss line: {line}"));
    send_q.parse().unwrap_or_else(|e| panic!("Send-Q {send_q:?} in {line:?}: {e}"))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap()
}

#[test]
fn listening_ports_use_the_configured_accept_queue() {
    let cap = somaxconn();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&bin(), dir.path(), ServerOptions::default()).unwrap();
    let expected = 4096.min(cap);
    assert_eq!(listen_queue(server.grpc), expected, "gRPC port, default backlog (somaxconn {cap})");
    assert_eq!(listen_queue(server.http), expected, "HTTP port, default backlog (somaxconn {cap})");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions { args: vec!["--listen-backlog".into(), "300".into()], ..Default::default() };
    let server = Server::start(&bin(), dir.path(), opts).unwrap();
    assert_eq!(listen_queue(server.grpc), 300.min(cap), "gRPC port with --listen-backlog 300");
    assert_eq!(listen_queue(server.http), 300.min(cap), "HTTP port with --listen-backlog 300");
    drop(server);

    let out = Command::new(bin()).args(["serve", "--listen-backlog", "0"]).output().unwrap();
    assert!(!out.status.success(), "--listen-backlog 0 must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen-backlog"), "the error names the flag: {err}");
}
