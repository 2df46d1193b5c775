//! Two CA replicas with the same plug-in material, one agent given both
//! addresses. Killing the replica the agent uses must not stop it: the next
//! renewal goes to the other replica (and back again when roles swap), and
//! the change stream follows.

mod agent_support;

use agent_support::*;
use meshca_testkit::{Server, ServerOptions};
use std::path::Path;
use std::time::Duration;

fn start_replica(work: &Path, ca_dir: &Path, token_key: Option<&Path>) -> Server {
    std::fs::create_dir_all(work).unwrap();
    if let Some(key) = token_key {
        // Both replicas trust the same local token issuer (in production: the cluster's OIDC issuer).
        let dir = work.join("data").join("token");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(key, dir.join("token-key.pem")).unwrap();
    }
    Server::start(&bin(), work, ServerOptions { ca_dir: Some(ca_dir.to_path_buf()), ..Default::default() }).unwrap()
}

/// Issuances for `identity` in a replica's audit log.
fn issued_by(server: &Server, identity: &str) -> usize {
    server.audit().iter().filter(|r| r["outcome"] == "issued" && r["identity"] == identity).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_over_between_ca_replicas() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = make_root(w, "root");
    let inter = make_inter(w, &root, "i1");
    let ca_dir = w.join("cacerts");
    install_set(&ca_dir, &inter, None);
    let mut r1 = start_replica(&w.join("r1"), &ca_dir, None);
    let mut r2 = start_replica(&w.join("r2"), &ca_dir, Some(&r1.data_dir.join("token").join("token-key.pem")));
    assert_eq!(r1.root_pem(), r2.root_pem(), "both replicas serve the same root");
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, r1.root_pem()).unwrap();
    let id = "spiffe://cluster.local/ns/shop/sa/cart";
    let addrs = format!("{},{}", r1.grpc, r2.grpc);
    // Short certificates so renewals happen every few seconds.
    let agent = Agent::start_at(w, "app", &addrs, &ca_root, &r1.token("shop", "cart"), &["--ttl", "4s"]);
    poll("a first certificate from r1", Duration::from_secs(20), || (issued_by(&r1, id) >= 1).then_some(())).await;
    assert_eq!(issued_by(&r2, id), 0, "the first address is used first");

    // r1 goes away: renewals continue at r2.
    r1.stop();
    let serial0 = serial(&agent.out_chain());
    poll("a certificate from r2", Duration::from_secs(30), || (issued_by(&r2, id) >= 1).then_some(())).await;
    poll("a renewed certificate on disk", Duration::from_secs(20), || {
        (serial(&agent.out_chain()) != serial0).then_some(())
    })
    .await;
    assert!(agent.proc.logs().contains(&format!("ca={}", r2.grpc)), "{}", agent.proc.logs());

    // r1 back, r2 gone: back to r1.
    r1.restart().unwrap();
    let before = issued_by(&r1, id);
    r2.stop();
    poll("a certificate from r1 again", Duration::from_secs(30), || (issued_by(&r1, id) > before).then_some(())).await;
    let m = agent.metrics();
    assert!(metric(&m, "meshca_agent_renewals_total") >= 3.0, "{m}");
    assert!(matches!(http_get(agent.http, "/healthz"), Ok((200, _))), "the agent stayed healthy");
}
