//! A root switch published in one step, with real agents and Envoys under
//! traffic. The operator swaps in a signer under a new root B together with
//! the bundle A+B, all at once. meshca must not sign with B before the
//! workloads hold B: it publishes A+B, keeps signing with the current A
//! signer, and activates B1 only when every connected agent has reported the
//! new bundle (the propagation delay is an hour here, so nothing else can
//! activate it). Agents get only `--ca-addr`: every change reaches them over
//! the CA's authenticated change stream. Zero failed requests throughout.

mod agent_support;
mod rotation_support;

use agent_support::envoy::{both_present, both_trust, start_mesh, Mesh, CLIENT_ID, SERVER_ID};
use agent_support::*;
use meshca_testkit::{Server, ServerOptions};
use rotation_support::{CaDir, CaSet};
use std::path::Path;
use std::time::{Duration, Instant};

const RATE: u32 = 40;

fn set(dir: &Path) -> CaSet {
    CaSet::read(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_root_switch_waits_for_every_agent_and_drops_no_request() {
    let envoy_bin = agent_support::envoy::envoy_bin();
    println!("using {}", envoy_bin.display());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root_a, root_b) = (make_root(w, "rootA"), make_root(w, "rootB"));
    let (a1, a2) = (set(&make_inter(w, &root_a, "a1")), set(&make_inter(w, &root_a, "a2")));
    let (b1, b2) = (set(&make_inter(w, &root_b, "b1")), set(&make_inter(w, &root_b, "b2")));
    let ab = make_bundle(&w.join("ab.pem"), &[&root_a.join("root-cert.pem"), &root_b.join("root-cert.pem")]);
    let ca_dir = w.join("cacerts");
    let mut dir = CaDir::kube(&ca_dir, &a1);
    let args = vec!["--root-propagation-delay".to_string(), "1h".to_string()];
    let ca = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca_dir), args, ..Default::default() }).unwrap();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();

    // Agents know only the CA's gRPC address (and the root to verify it).
    let Mesh { client_agent, server_agent, intruder_agent, server_envoy, client_envoy, client_addr, .. } =
        start_mesh(w, &ca, &ca_root).await;
    for a in [&client_agent, &server_agent, &intruder_agent] {
        assert!(!a.proc.logs().contains("--ca-http-addr"), "no plain-HTTP watch");
    }
    poll("first mTLS request", Duration::from_secs(30), || {
        http_get(client_addr, "/hello").ok().filter(|r| r.0 == 200).map(|_| ())
    })
    .await;
    poll("three agents on the change stream", Duration::from_secs(20), || {
        (ca.status()["rotation"]["agents"].as_array().map_or(0, |a| a.len()) == 3).then_some(())
    })
    .await;

    let phases = ["warm-up", "intermediate A1->A2", "one-step switch to B1 with A+B", "intermediate B1->B2"];
    let mut load = Load::start(client_addr, RATE, &format!("URI={CLIENT_ID}"), phases.len());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pairs = [(&client_envoy, &client_agent, CLIENT_ID), (&server_envoy, &server_agent, SERVER_ID)];
    let mut figures = Vec::new();

    // 1. Intermediate rotation: pushed over the change stream, no HTTP polling.
    load.next_phase();
    let t0 = Instant::now();
    dir.kube_write(&a2.files());
    let d = both_present("both Envoys presenting A2 certificates", &pairs, &a2.cert, t0).await;
    figures.push(format!("intermediate A1->A2 reached both Envoys after {d:?}"));
    assert!(d < Duration::from_secs(5), "intermediate rotation took {d:?} to reach the Envoys");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 2. One step: signer B1 and bundle A+B in a single swap.
    load.next_phase();
    let log_at = ca.logs().len();
    let t0 = Instant::now();
    dir.kube_write(&b1.with_root(&ab).files());
    let trust = both_trust("both Envoys trusting A+B", &[&client_envoy, &server_envoy], &ab, t0).await;
    let d = both_present("both Envoys presenting B1 certificates", &pairs, &b1.cert, t0).await;
    let log = ca.logs()[log_at..].to_string();
    let prepared = log.find("the new signer chains to a root that workloads may not hold yet").expect(&log);
    let activated = log.find("activating the prepared signer").unwrap_or_else(|| panic!("no activation:\n{log}"));
    assert!(prepared < activated, "{log}");
    let line = log[activated..].lines().next().unwrap();
    assert!(line.contains("every connected agent confirmed the new bundle"), "{line}");
    let waited: u64 =
        line.split("waited_ms=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    figures.push(format!(
        "one-step root switch: both Envoys trust A+B after {trust:?}; B1 activated {waited} ms after the publish \
         (all 3 agents confirmed); both Envoys present B1 certificates after {d:?}"
    ));
    assert_eq!(metric(&ca.get("/metrics").unwrap(), "meshca_ca_root_prepared_total"), 1.0);
    assert_eq!(metric(&ca.get("/metrics").unwrap(), "meshca_ca_root_activations_total"), 1.0);
    assert_eq!(metric(&ca.get("/metrics").unwrap(), "meshca_ca_reload_failures_total"), 0.0);
    assert!(ca.status()["rotation"]["prepared"].is_null());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 3. Intermediate rotation under the new root: B is settled now, B2 signs at once.
    load.next_phase();
    let t0 = Instant::now();
    dir.kube_write(&b2.with_root(&ab).files());
    let d = both_present("both Envoys presenting B2 certificates", &pairs, &b2.cert, t0).await;
    figures.push(format!("intermediate B1->B2 reached both Envoys after {d:?}"));
    assert!(d < Duration::from_secs(5), "intermediate rotation took {d:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;

    for f in &figures {
        println!("figure: {f}");
    }
    let mut total = 0;
    for (i, name) in phases.iter().enumerate() {
        let (ok, failed) = load.counts(i);
        total += ok;
        println!("figure: phase {i} {name}: {ok} ok, {failed} failed");
    }
    let errors = load.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "failed requests: {errors:#?}");
    assert!(total > 100, "traffic ran: {total} requests");
    for a in [&client_agent, &server_agent] {
        let m = a.metrics();
        assert_eq!(metric(&m, "meshca_agent_sds_nacks_total"), 0.0, "{m}");
        assert!(metric(&m, "meshca_agent_trust_reports_total") >= 1.0, "{m}");
        // The agent confirms a bundle only after its Envoy ACKed it over SDS.
        assert!(a.proc.logs().contains("every Envoy took the new trust bundle"), "{}", a.proc.logs());
    }
}
