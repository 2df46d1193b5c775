//! Log levels changed at run time through the HTTP port, as Envoy's
//! `/logging?rbac=debug` which the seeds use: no restart, scoped to one
//! target, bad input refused.

mod agent_support;
mod rotation_support;

use meshca_testkit::{Server, ServerOptions};
use rotation_support::{make_inter, make_root, CaDir};
use std::time::Duration;

async fn post(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().post(url).send().await.expect("POST");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_levels_change_per_scope_without_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = make_root(w, "r");
    let (i1, i2, i3) =
        (make_inter(w, &root, "i1", "8000h"), make_inter(w, &root, "i2", "8000h"), make_inter(w, &root, "i3", "8000h"));
    let ca_dir = w.join("cacerts");
    let mut dir = CaDir::kube(&ca_dir, &i1);
    let server =
        Server::start(&agent_support::bin(), w, ServerOptions { ca_dir: Some(ca_dir), ..Default::default() }).unwrap();
    let base = format!("http://{}", server.http);
    assert!(server.get("/logging").unwrap().starts_with("info"), "{}", server.get("/logging").unwrap());

    // At info, a reload leaves no debug line.
    let gen = |s: &Server| s.status()["generation"].as_u64().unwrap();
    let g0 = gen(&server);
    dir.kube_write(&i2.files());
    agent_support::poll("swap to i2", Duration::from_secs(20), || (gen(&server) > g0).then_some(())).await;
    assert!(!server.logs().contains("reload check"));

    // Debug for the watch only.
    let (code, body) = post(&format!("{base}/logging?meshca_ca::watch=debug")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("meshca_ca::watch=debug"), "{body}");
    assert!(server.get("/logging").unwrap().contains("meshca_ca::watch=debug"));
    let g1 = gen(&server);
    dir.kube_write(&i3.files());
    agent_support::poll("a debug line from the watch", Duration::from_secs(20), || {
        (gen(&server) > g1 && server.logs().contains("reload check")).then_some(())
    })
    .await;
    assert!(server.logs().contains("log levels changed at run time"));
    assert!(!server.logs().contains("DEBUG meshca_ca::service"), "other scopes stay at info");

    // Bad input is refused and changes nothing.
    for bad in ["/logging?rbac=loud", "/logging?a%20b=debug", "/logging"] {
        let (code, body) = post(&format!("{base}{bad}")).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    assert!(server.get("/logging").unwrap().contains("meshca_ca::watch=debug"));

    // The agent's HTTP port has the same endpoint.
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, server.root_pem()).unwrap();
    let agent = agent_support::Agent::start(w, "app", &server, &ca_root, &server.token("shop", "cart"), &[]);
    let (code, body) = post(&format!("http://{}/logging?meshca_agent::sds=debug", agent.http)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = agent_support::http_get(agent.http, "/logging").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("meshca_agent::sds=debug"), "{body}");
}
