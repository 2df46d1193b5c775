//! Live rotation of plug-in CA material against the real binary: 20
//! intermediate swaps under continuous load (Kubernetes secret updates,
//! editor renames and plain overwrites), the three-step root rotation
//! A -> A+B -> B, the refusal of a direct A -> B, and the switch from the
//! self-signed root to a plugged set, all without a restart.

mod rotation_support;

use meshca_testkit::{openssl, Server, ServerOptions};
use rotation_support::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The load test measures latency: keep the other tests of this file off the CPU meanwhile.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CLIENTS: usize = 8;
const SWAPS: usize = 20;
const INTERS: usize = 4;
const PACE: Duration = Duration::from_millis(15);

fn style_of(swap: usize) -> Style {
    match swap {
        0..=7 => Style::Kube,
        8..=13 => Style::Editor,
        _ => Style::InPlace,
    }
}

/// One issued certificate: when its request was sent and answered, and which intermediate signed it.
struct Sample {
    sent: Instant,
    recv: Instant,
    inter: usize,
    leaf: String,
}

struct Rotation {
    style: Style,
    written: Written,
    seen: Instant,
    refused: f64,
}

/// Which known intermediate a response chain carries, checking its shape and bundle.
fn classify(chain: &[String], inters: &[String], root: &str) -> Result<usize, String> {
    if chain.len() != 3 || chain[2] != root {
        return Err(format!("unexpected chain (want leaf, intermediate, root A): {chain:#?}"));
    }
    inters
        .iter()
        .position(|i| *i == chain[1])
        .ok_or_else(|| format!("chain[1] is no known intermediate:\n{}", chain[1]))
}

async fn load(
    mut w: Issuer,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    inters: Arc<Vec<String>>,
    root: Arc<String>,
) -> (Vec<Sample>, Vec<String>) {
    let (mut samples, mut errors) = (Vec::new(), Vec::new());
    // A request every 15 ms per client (or back to back if slower): continuous, and few enough
    // leaves for openssl to check them all on two cores.
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let sent = Instant::now();
        let r = w.try_issue().await;
        let recv = Instant::now();
        match r.map_err(|e| format!("{e}")).and_then(|c| Ok((classify(&c, &inters, &root)?, c))) {
            Ok((inter, chain)) => samples.push(Sample { sent, recv, inter, leaf: chain[0].clone() }),
            Err(e) => errors.push(e),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (samples, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_rotation_under_load_is_seamless() {
    let _serial = SERIAL.lock().await;
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root_a = make_root(w, "a");
    let ttls = ["8000h", "7000h", "6000h", "5000h"];
    let sets: Vec<CaSet> = (0..INTERS).map(|i| make_inter(w, &root_a, &format!("a{i}"), ttls[i])).collect();
    let inters: Arc<Vec<String>> = Arc::new(sets.iter().map(|s| s.cert.clone()).collect());
    let root = Arc::new(sets[0].root.clone());
    let ca = w.join("cacerts");
    let mut dir = CaDir::kube(&ca, &sets[0]);
    let opts = ServerOptions { ca_dir: Some(ca), ..Default::default() };
    let server = Server::start(&bin(), w, opts).unwrap();
    assert_eq!(server.root_pem(), *root);
    let token = server.token("default", "rot");

    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicUsize>> = (0..CLIENTS).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut tasks = Vec::new();
    for c in &counters {
        let issuer = Issuer::new(&server, &root, &token).await;
        tasks.push(tokio::spawn(load(issuer, stop.clone(), c.clone(), inters.clone(), root.clone())));
    }
    let mut poller = Issuer::new(&server, &root, &token).await;
    let (mut samples, mut errors) = (Vec::new(), Vec::new());
    let mut rotations = Vec::new();
    let t_begin = Instant::now();
    for i in 0..SWAPS {
        let next = (i + 1) % INTERS;
        let style = style_of(i);
        let failures_before = metric(&server, FAILURES);
        let written = dir.write(style, &sets[next]).await;
        // Poll as fast as one client can until a leaf from the new intermediate comes back.
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let sent = Instant::now();
            let r = poller.try_issue().await;
            let recv = Instant::now();
            match r.map_err(|e| format!("{e}")).and_then(|c| classify(&c, &inters, &root).map(|k| (k, c))) {
                Ok((k, c)) => {
                    samples.push(Sample { sent, recv, inter: k, leaf: c[0].clone() });
                    if k == next {
                        break recv;
                    }
                }
                Err(e) => errors.push(e),
            }
            assert!(recv < deadline, "swap {i} ({style:?}) to a{next}: not in use after 10s\n{}", server.logs());
        };
        // The expiry gauge follows the new intermediate at once.
        assert_eq!(metric(&server, CHAIN_EXPIRY), sets[next].not_after() as f64, "swap {i}");
        // Mixed states are never swapped in: exactly one reload per swap.
        expect_counter(&server, RELOADS, (i + 1) as f64).await;
        let refused = metric(&server, FAILURES) - failures_before;
        rotations.push(Rotation { style, written, seen, refused });
        // Let every load client complete two more requests (so one was sent after the swap) before the next.
        let marks: Vec<usize> = counters.iter().map(|c| c.load(Ordering::Relaxed) + 2).collect();
        poll("every load client to issue after the swap", Duration::from_secs(10), || {
            counters.iter().zip(&marks).all(|(c, m)| c.load(Ordering::Relaxed) >= *m).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let (s, e) = t.await.unwrap();
        samples.extend(s);
        errors.extend(e);
    }
    let load_secs = t_begin.elapsed().as_secs_f64();

    let mut lat: Vec<f64> = rotations
        .iter()
        .map(|r| r.seen.saturating_duration_since(r.written.final_end).as_secs_f64() * 1000.0)
        .collect();
    let detail: Vec<String> = rotations.iter().zip(&lat).map(|(r, l)| format!("{:?}:{l:.0}", r.style)).collect();
    let in_place_refusals: f64 = rotations.iter().filter(|r| r.style == Style::InPlace).map(|r| r.refused).sum();
    lat.sort_by(f64::total_cmp);
    let (median, worst) = ((lat[SWAPS / 2 - 1] + lat[SWAPS / 2]) / 2.0, lat[SWAPS - 1]);
    println!("ROTATION_LATENCY median_ms={median:.1} worst_ms={worst:.1} failed_requests={}", errors.len());
    println!(
        "ROTATION_DETAIL swaps={SWAPS} requests={} load_secs={load_secs:.1} in_place_refused_mixed_states={in_place_refusals} per_swap_ms=[{}]",
        samples.len() + errors.len(),
        detail.join(" ")
    );
    assert!(errors.is_empty(), "{} failed requests, first: {}", errors.len(), errors[0]);
    assert!(worst < 5000.0, "worst rotation latency {worst:.0} ms (goal < 1 s, limit 5 s)");
    let in_place = rotations.iter().filter(|r| r.style == Style::InPlace).count();
    assert!(
        in_place_refusals >= in_place as f64,
        "the in-place overwrites should expose mixed sets that are refused; refused {in_place_refusals}"
    );

    // Each leaf came from a material generation that existed while its request was in flight:
    // at least the one seen before it was sent, at most the last whose final write had begun
    // before it was answered. So no leaf predates its set's final write (mixed sets are never
    // used) and every leaf requested after a swap was seen comes from the new intermediate.
    for s in &samples {
        let min_gen = rotations.iter().filter(|r| r.seen <= s.sent).count();
        let max_gen = rotations.iter().filter(|r| r.written.final_start < s.recv).count();
        assert!(
            (min_gen..=max_gen).any(|g| g % INTERS == s.inter),
            "a leaf from a{} answered {:?} after the start is outside generations {min_gen}..={max_gen}",
            s.inter,
            s.recv - t_begin
        );
    }
    // Every chain verifies with openssl against root A (the bundle throughout), grouped by intermediate.
    let t_verify = Instant::now();
    std::thread::scope(|scope| {
        let checks: Vec<_> = (0..INTERS)
            .map(|k| {
                let leaves: Vec<String> = samples.iter().filter(|s| s.inter == k).map(|s| s.leaf.clone()).collect();
                assert!(!leaves.is_empty(), "no leaf from a{k}");
                let (dir, root, inter) = (w.join(format!("verify-a{k}")), &root, &inters[k]);
                scope.spawn(move || verify_batch(&dir, root, Some(inter), &leaves))
            })
            .collect();
        for (k, c) in checks.into_iter().enumerate() {
            c.join().unwrap().unwrap_or_else(|e| panic!("leaves from a{k}: {e}"));
        }
    });
    println!("ROTATION_VERIFY leaves={} openssl_secs={:.1}", samples.len(), t_verify.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_in_three_steps_is_taken_live() {
    let _serial = SERIAL.lock().await;
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root_a, root_b) = (make_root(w, "a"), make_root(w, "b"));
    let (a1, a2, b1) = (
        make_inter(w, &root_a, "a1", "8000h"),
        make_inter(w, &root_a, "a2", "7000h"),
        make_inter(w, &root_b, "b1", "6000h"),
    );
    let (pem_a, pem_b) = (a1.root.clone(), b1.root.clone());
    let both = make_bundle(&w.join("ab.pem"), &[&root_a.join("root-cert.pem"), &root_b.join("root-cert.pem")]);
    assert_eq!(cert_count(&both), 2);
    let ca = w.join("cacerts");
    let mut dir = CaDir::kube(&ca, &a1);
    // No agent follows the change stream here, so a new root waits for the propagation delay.
    let args = vec!["--root-propagation-delay".to_string(), "3s".to_string()];
    let server = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca), args, ..Default::default() }).unwrap();
    let token = server.token("default", "rot");
    let mut wl = Issuer::new(&server, &format!("{pem_a}{pem_b}"), &token).await;
    let t = Duration::from_secs(10);
    assert_eq!(metric(&server, ROOTS), 1.0);

    // Step 0: an intermediate rotation A1 -> A2, with istiod's log lines in order.
    let log_at = server.logs().len();
    dir.kube_write(&a2.files());
    let (chain, _) = wl.issue_until("a leaf from A2", t, |c| c[1] == a2.cert).await;
    assert_eq!(metric(&server, CHAIN_EXPIRY), a2.not_after() as f64);
    verify_chain_against(&w.join("v0"), &chain, &pem_a).unwrap();
    let log = server.logs();
    let after = assert_in_order(
        &log,
        log_at,
        &[
            "Update meshca cacerts",
            "Using istiod file format for signing ca files",
            "Istiod has detected the newly added intermediate CA and updated its key and certs accordingly",
            "x509 cert - Issuer: \"CN=Root a,O=Istio\", Subject: \"CN=Intermediate CA - a2,O=Istio,L=a2\"",
            "x509 cert - Issuer: \"CN=Root a,O=Istio\", Subject: \"CN=Root a,O=Istio\"",
        ],
    );
    assert!(!log[log_at..].contains("spiffe  Added"), "the bundle did not change:\n{}", &log[log_at..]);
    assert!(!log[after..].contains("ERROR"), "{}", &log[after..]);

    // Step 1: root-cert.pem = A+B, signer still A2; a long-poll started before returns the new bundle.
    let etag = root_etag(&server);
    let addr = server.http;
    let poll_etag = etag.clone();
    let long_poll = std::thread::spawn(move || {
        let r = http(addr, "/root-cert.pem?wait=30", &[("If-None-Match", &poll_etag)]);
        (r, Instant::now())
    });
    let (status, _, _) = http(server.http, "/root-cert.pem?wait=1", &[("If-None-Match", &etag)]);
    assert_eq!(status, 304, "an unchanged bundle long-polls to 304");
    assert!(!long_poll.is_finished(), "the long-poll must wait for a change");
    let log_at = server.logs().len();
    let written = dir.kube_write(&a2.with_root(&both).files());
    let (chain, _) = wl.issue_until("a leaf carrying the A+B bundle", t, |c| c.last() == Some(&both)).await;
    assert_eq!(chain[1], a2.cert, "the signer is still A2");
    let ((status, headers, body), answered) = long_poll.join().unwrap();
    let waited = answered.saturating_duration_since(written.final_end);
    assert_eq!((status, body.as_str()), (200, both.as_str()), "the long-poll returns the new bundle");
    assert!(waited < Duration::from_secs(3), "long-poll answered {waited:?} after the change");
    let etag2 = header(&headers, "etag");
    assert_ne!(etag2, etag);
    assert_eq!(root_etag(&server), etag2);
    assert_eq!(metric(&server, ROOTS), 2.0);
    verify_chain_against(&w.join("v1"), &chain, &both).unwrap();
    verify_chain_against(&w.join("v1a"), &chain, &pem_a).unwrap();
    assert_in_order(
        &server.logs(),
        log_at,
        &[
            "Update meshca cacerts",
            "Istiod has detected",
            "spiffe  Added 2 certs to trust domain cluster.local in peer cert verifier",
        ],
    );

    // Step 2, taken too early: signer B1, root-cert.pem = B only. B was published a moment ago, so B1 is
    // prepared and A2 keeps signing (with A kept in the bundle) until B has been served for the delay.
    let published = std::time::Instant::now();
    dir.kube_write(&b1.files());
    let prepared = poll("B1 prepared", t, || {
        let st = server.status();
        (!st["rotation"]["prepared"].is_null()).then_some(st)
    })
    .await;
    assert!(prepared["rotation"]["prepared"]["signer_subject"].as_str().unwrap().contains("b1"), "{prepared}");
    assert_eq!(metric(&server, "meshca_ca_root_prepared_total"), 1.0);
    let chain = wl.issue().await;
    if published.elapsed() < Duration::from_secs(3) {
        assert_eq!(chain[1], a2.cert, "the signer stays A2 while B1 is prepared");
        assert_eq!(cert_count(chain.last().unwrap()), 2, "the bundle keeps A (the current signer's root) and B");
    }
    let (chain, _) = wl.issue_until("a leaf from B1", t, |c| c[1] == b1.cert).await;
    assert!(published.elapsed() >= Duration::from_secs(3), "B1 signed before the propagation delay");
    assert_eq!(metric(&server, "meshca_ca_root_activations_total"), 1.0);
    assert!(server.status()["rotation"]["prepared"].is_null());
    assert_eq!(chain.last(), Some(&pem_b), "the bundle is B alone");
    assert_eq!(metric(&server, ROOTS), 1.0);
    assert_eq!(metric(&server, CHAIN_EXPIRY), b1.not_after() as f64);
    assert_ne!(root_etag(&server), etag2);
    verify_chain_against(&w.join("v2b"), &chain, &pem_b).unwrap();
    let err = verify_chain_against(&w.join("v2a"), &chain, &pem_a).unwrap_err();
    assert!(err.contains("unable to get local issuer certificate"), "{err}");
    let status = server.status();
    assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
    assert_eq!(metric(&server, FAILURES), 0.0, "no step of the rotation was refused");
    expect_counter(&server, RELOADS, 3.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_root_replacement_needs_the_flag() {
    let _serial = SERIAL.lock().await;
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root_a, root_b) = (make_root(w, "a"), make_root(w, "b"));
    let (a1, b1) = (make_inter(w, &root_a, "a1", "8000h"), make_inter(w, &root_b, "b1", "6000h"));
    let trust = format!("{}{}", a1.root, b1.root);
    let t = Duration::from_secs(10);
    for allow in [false, true] {
        let sub = w.join(format!("allow-{allow}"));
        let ca = sub.join("cacerts");
        let mut dir = CaDir::kube(&ca, &a1);
        let args = if allow { vec!["--allow-root-replace".to_string()] } else { vec![] };
        let server =
            Server::start(&bin(), &sub, ServerOptions { ca_dir: Some(ca), args, ..Default::default() }).unwrap();
        let token = server.token("default", "rot");
        let mut wl = Issuer::new(&server, &trust, &token).await;
        dir.kube_write(&b1.files());
        if allow {
            let (chain, _) = wl.issue_until("a leaf from B1", t, |c| c[1] == b1.cert).await;
            verify_chain_against(&sub.join("v"), &chain, &b1.root).unwrap();
            assert_eq!(metric(&server, FAILURES), 0.0);
        } else {
            let e = wait_last_error(&server, &["root-cert.pem", "shares no root", "Rotate in three steps"]).await;
            assert!(e.contains("--allow-root-replace"), "{e}");
            assert_eq!(metric(&server, FAILURES), 1.0);
            let chain = wl.issue().await;
            assert_eq!((&chain[1], &chain[2]), (&a1.cert, &a1.root), "the old material keeps signing");
            verify_chain_against(&sub.join("v"), &chain, &a1.root).unwrap();
            assert!(server.logs().contains("CA material reload refused, the current material stays active"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_switches_to_plugged_without_restart() {
    let _serial = SERIAL.lock().await;
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root_p = make_root(w, "p");
    let p1 = make_inter(w, &root_p, "p1", "8000h");
    let t = Duration::from_secs(10);
    for with_self_signed_root in [true, false] {
        let sub = w.join(format!("keep-{with_self_signed_root}"));
        let ca = sub.join("cacerts");
        std::fs::create_dir_all(&sub).unwrap();
        let args = vec!["--root-propagation-delay".to_string(), "1s".to_string()];
        let server =
            Server::start(&bin(), &sub, ServerOptions { ca_dir: Some(ca.clone()), args, ..Default::default() })
                .unwrap();
        assert_eq!(server.status()["source"], "self-signed");
        let self_root = server.root_pem();
        let token = server.token("default", "rot");
        let mut wl = Issuer::new(&server, &format!("{self_root}{}", p1.root), &token).await;
        let before = wl.issue().await;
        assert_eq!(before.len(), 2);
        let set = if with_self_signed_root { p1.with_root(&format!("{}{self_root}", p1.root)) } else { p1.clone() };
        // Create the directory, then the files in it.
        CaDir::plain(&ca, &set);
        if with_self_signed_root {
            let (chain, _) =
                wl.issue_until("a leaf from the plugged set", t, |c| c.len() == 3 && c[1] == p1.cert).await;
            assert_eq!(server.status()["source"], "plugged");
            assert_eq!(chain[2], set.root);
            assert_eq!(server.root_pem(), set.root);
            verify_chain_against(&sub.join("v"), &chain, &p1.root).unwrap();
            // Workloads still holding a self-signed leaf are trusted by the new bundle.
            verify_chain_against(&sub.join("v-old"), &before, &set.root).unwrap();
            assert_eq!(metric(&server, ROOTS), 2.0);
        } else {
            let e = wait_last_error(&server, &["root-cert.pem", "Rotate in three steps"]).await;
            assert!(e.contains("--allow-root-replace"), "{e}");
            assert_eq!(server.status()["source"], "self-signed");
            let chain = wl.issue().await;
            assert_eq!(chain, [chain[0].clone(), self_root.clone()], "still signed by the self-signed root");
            verify_chain_against(&sub.join("v"), &chain, &self_root).unwrap();
        }
    }
}
