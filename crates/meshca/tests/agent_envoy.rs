//! Two real Envoy 1.40 sidecars doing mTLS with certificates from two
//! `meshca agent`s over SDS, under continuous traffic through an intermediate
//! rotation, a root rotation A -> A+B -> B, an agent restart and a CA outage.
//! Envoy is required: a missing binary is a loud failure.

mod agent_support;

use agent_support::envoy::{both_present, both_trust, start_mesh, Mesh, CLIENT_ID, INTRUDER_ID, SERVER_ID};
use agent_support::*;
use meshca_testkit::{Server, ServerOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const RATE: u32 = 40;

/// Let traffic run on the new material for a while (several new upstream connections).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

fn openssl_verify(dir: &Path, roots_pem: &str, chain_pem: &str) -> bool {
    let (r, c) = (dir.join("verify-roots.pem"), dir.join("verify-chain.pem"));
    std::fs::write(&r, roots_pem).unwrap();
    std::fs::write(&c, chain_pem).unwrap();
    let (r, c) = (r.to_str().unwrap(), c.to_str().unwrap());
    meshca_testkit::openssl::run(&["verify", "-CAfile", r, "-untrusted", c, c]).is_ok_and(|o| o.contains(": OK"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_mtls_through_sds_survives_rotations_restarts_and_ca_outage() {
    let envoy_bin = agent_support::envoy::envoy_bin();
    println!("using {}", envoy_bin.display());
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // CA material: root A with intermediates A1, A2; root B with B1.
    let root_a = make_root(w, "rootA");
    let root_b = make_root(w, "rootB");
    let (a1, a2, b1) = (make_inter(w, &root_a, "a1"), make_inter(w, &root_a, "a2"), make_inter(w, &root_b, "b1"));
    let pem = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let (root_a_pem, root_b_pem) = (pem(&root_a, "root-cert.pem"), pem(&root_b, "root-cert.pem"));
    let ca_dir = w.join("cacerts");
    install_set(&ca_dir, &a1, None);
    let mut ca =
        Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca_dir.clone()), ..Default::default() }).unwrap();
    // What a pod would have mounted (Istio's istio-ca-root-cert config map).
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();

    let Mesh {
        mut client_agent,
        server_agent,
        intruder_agent: _intruder_agent, // kept alive: the intruder listener uses its SDS socket
        server_envoy,
        client_envoy,
        client_addr,
        intruder_addr: intruder,
        server_port,
        echo_count,
    } = start_mesh(w, &ca, &ca_root).await;

    // First request: the server Envoy verified the caller and says who it is.
    let t_start = Instant::now();
    let (code, body) = poll("first mTLS request", Duration::from_secs(30), || {
        let r = http_get(client_addr, "/hello").ok()?;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(code, 200);
    assert!(body.contains(&format!("URI={CLIENT_ID}")), "XFCC must carry the caller's SPIFFE ID: {body}");
    println!("figure: first mTLS request succeeded {:?} after Envoys were ready", t_start.elapsed());

    // The wrong identity (SAN matcher mismatch) is refused by the server Envoy.
    let before = echo_count.load(std::sync::atomic::Ordering::Relaxed);
    let (code, body) = http_get(intruder, "/hello").unwrap();
    assert_eq!(code, 503, "a client with the wrong SPIFFE ID must be refused: {body}");
    assert!(!body.contains(INTRUDER_ID));
    assert_eq!(echo_count.load(std::sync::atomic::Ordering::Relaxed), before, "nothing reached the upstream");

    // Continuous traffic from here on.
    let phases =
        ["warm-up", "intermediate A1->A2", "bundle A+B", "signer B1", "bundle B only", "agent restart", "CA down"];
    let handshakes0 = server_envoy.stat(&format!("listener.127.0.0.1_{server_port}.ssl.handshake"));
    let mut load = Load::start(client_addr, RATE, &format!("URI={CLIENT_ID}"), phases.len());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pairs = [(&client_envoy, &client_agent, CLIENT_ID), (&server_envoy, &server_agent, SERVER_ID)];
    let mut figures = Vec::new();

    // 1. Intermediate rotation A1 -> A2 (same root).
    load.next_phase();
    let t0 = Instant::now();
    install_set(&ca_dir, &a2, None);
    let d = both_present("both Envoys presenting A2 certificates", &pairs, &pem(&a2, "ca-cert.pem"), t0).await;
    figures.push(format!("intermediate A1->A2: both Envoys present the new certificate after {d:?}"));
    settle().await;

    // 2. Bundle A+B (still signing with A2): ROOTCA reaches both Envoys.
    load.next_phase();
    let ab = make_bundle(&w.join("ab.pem"), &[&root_a.join("root-cert.pem"), &root_b.join("root-cert.pem")]);
    let t0 = Instant::now();
    install_set(&ca_dir, &a2, Some(&ab));
    let d = both_trust("both Envoys trusting A+B", &[&client_envoy, &server_envoy], &ab, t0).await;
    figures.push(format!("bundle A+B: both Envoys trust A and B after {d:?}"));
    both_present("renewal after the bundle change", &pairs, &pem(&a2, "ca-cert.pem"), t0).await;
    settle().await;

    // 3. Sign with B1 (bundle A+B).
    load.next_phase();
    let t0 = Instant::now();
    install_set(&ca_dir, &b1, Some(&ab));
    let d = both_present("both Envoys presenting B1 certificates", &pairs, &pem(&b1, "ca-cert.pem"), t0).await;
    figures.push(format!("signer A2->B1: both Envoys present the new certificate after {d:?}"));
    settle().await;

    // 4. Bundle B only.
    load.next_phase();
    let t0 = Instant::now();
    install_set(&ca_dir, &b1, Some(&root_b_pem));
    let d = both_trust("both Envoys trusting B only", &[&client_envoy, &server_envoy], &root_b_pem, t0).await;
    figures.push(format!("bundle B only: both Envoys trust only B after {d:?}"));
    both_present("renewal after B-only", &pairs, &pem(&b1, "ca-cert.pem"), t0).await;
    settle().await;
    // Both Envoys present certificates that chain to B only.
    for (envoy, agent, id) in pairs {
        let chain = agent.out_chain();
        let s = norm_serial(&serial(&chain));
        assert_eq!(envoy.presented(id).0, vec![s.clone()], "{id}: Envoy presents the agent's current certificate");
        assert!(openssl_verify(w, &root_b_pem, &chain), "{id}: chains to B");
        assert!(!openssl_verify(w, &root_a_pem, &chain), "{id}: must not chain to A");
    }

    // 5. Agent restart while Envoy stays up: Envoy reconnects, traffic keeps working.
    load.next_phase();
    std::fs::write(&ca_root, ca.root_pem()).unwrap(); // the mounted bundle follows the CA (config map update)
    let old = norm_serial(&serial(&client_agent.out_chain()));
    let t0 = Instant::now();
    client_agent.restart();
    poll("client Envoy presenting the restarted agent's certificate", Duration::from_secs(30), || {
        let s = norm_serial(&serial(&client_agent.out_chain()));
        (s != old && client_envoy.presented(CLIENT_ID).0.contains(&s)).then_some(())
    })
    .await;
    figures.push(format!(
        "agent restart: Envoy reconnected and presents the new agent's certificate after {:?}",
        t0.elapsed()
    ));
    poll("client Envoy's default and ROOTCA streams back on the new agent", Duration::from_secs(30), || {
        (metric(&client_agent.metrics(), "meshca_agent_sds_connections") == 2.0).then_some(())
    })
    .await;
    settle().await;

    // 6. CA down for a while: traffic continues on the valid certificates.
    load.next_phase();
    ca.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(matches!(http_get(client_agent.http, "/healthz"), Ok((200, _))), "healthy on its valid certificate");
    ca.restart().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop().await;

    // Zero failed requests in every phase.
    let mut total = 0;
    println!("figures (rate {RATE} req/s through the client Envoy):");
    for f in &figures {
        println!("figure: {f}");
    }
    for (i, name) in phases.iter().enumerate() {
        let (ok, failed) = load.counts(i);
        total += ok;
        println!("figure: phase {i} {name}: {ok} ok, {failed} failed");
    }
    let errors = load.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "failed requests: {errors:#?}");
    let elapsed = t_start.elapsed().as_secs_f64();
    println!("figure: {total} requests in {elapsed:.1}s ({:.1} req/s)", total as f64 / elapsed);
    assert!(total as f64 / elapsed >= 20.0, "at least 20 req/s for the whole test");
    println!("figure: agent RSS with one identity: {} KiB", rss_kib(client_agent.proc.pid()));

    let handshakes = server_envoy.stat(&format!("listener.127.0.0.1_{server_port}.ssl.handshake")) - handshakes0;
    println!(
        "figure: {handshakes} mTLS handshakes at the server Envoy under traffic (new connection every 20 requests)"
    );
    assert!(handshakes >= 10, "connections were re-established with the rotated certificates");
    let m = server_agent.metrics();
    assert_eq!(metric(&m, "meshca_agent_sds_nacks_total"), 0.0, "{m}");
    let mut client_envoy = client_envoy;
    let mut server_envoy = server_envoy;
    assert!(client_envoy.proc.alive() && server_envoy.proc.alive(), "Envoys stayed up");
}
