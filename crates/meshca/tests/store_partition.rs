//! Three replicas on a 3-member etcd cluster when the store is not all there:
//! (b) the majority is lost for 30 s: signing goes on with zero failed
//! requests, `/status` and `/metrics` say degraded, `/readyz` stays ready, a
//! requested root renewal (SIGUSR2) waits and happens once the store is back,
//! and every replica installs the renewed root through the staged path;
//! (c) plug-in intermediates rotated in every replica's directory converge,
//! and a replica left on the old set is flagged by the others within 5 s.

mod agent_support;
mod doctor_support;
mod store_support;

use std::time::{Duration, Instant};
use store_support::load::CsrLoad;
use store_support::*;

const TD: &str = "partition.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_lost_signing_continues_and_a_requested_renewal_waits() {
    let mut cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let key = key_file(work.path(), "store.key", 3);
    let url = cluster.store_url();
    let rs = three_replicas(work.path(), &url, &key, TD, &["--root-propagation-delay", "2s"], None);
    let root0 = rs[0].root_pem();
    let signer0 = signer_sha(&rs[0]);
    wait_for("every replica to see three healthy registered replicas", Duration::from_secs(20), || {
        rs.iter()
            .all(|r| {
                let st = store_status(r);
                st["healthy"] == true && st["replicas"].as_array().map_or(0, |a| a.len()) == 3
            })
            .then_some(())
    });
    assert_eq!(metric(&rs[0], "meshca_store_healthy"), 1.0);
    let token = rs[0].token("shop", "load");
    let load = CsrLoad::start(
        rs.iter().map(|r| r.grpc).collect(),
        root0.clone(),
        token,
        format!("spiffe://{TD}/ns/shop/sa/load"),
        20,
    );
    std::thread::sleep(Duration::from_secs(2));

    // Two of three members down: no majority.
    let lost_at = Instant::now();
    cluster.stop(0);
    cluster.stop(1);
    wait_for("every replica to report the store degraded", Duration::from_secs(20), || {
        rs.iter().all(|r| store_status(r)["healthy"] == false).then_some(())
    });
    let detected = lost_at.elapsed();
    let st = store_status(&rs[0]);
    assert!(st["degraded_since"].is_string() && st["last_error"].is_string(), "{st}");
    assert_eq!(metric(&rs[0], "meshca_store_healthy"), 0.0);
    for r in &rs {
        assert_eq!(r.get("/readyz").unwrap().trim(), "ready", "signing needs no agreement: /readyz stays ready");
    }
    // A renewal requested now must wait for the store.
    signal(rs[0].pid().unwrap(), "USR2");
    wait_for("the requested renewal to wait for the store", Duration::from_secs(10), || {
        let st = store_status(&rs[0]);
        (st["renewal"]["requested"] == true && st["renewal"]["waiting_for"].is_string()).then_some(())
    });
    let doctor = doctor_support::doctor(&["--ca-http-addr", &rs[0].http.to_string()]);
    doctor.expect("ha.store-healthy", "error", &["etcd", "majority"]);
    doctor.expect("ha.root-renewal", "warning", &["waiting", "store"]);
    let remaining = Duration::from_secs(30).saturating_sub(lost_at.elapsed());
    std::thread::sleep(remaining);
    assert_eq!(signer_sha(&rs[0]), signer0, "no renewal without the store");
    assert_eq!(store_status(&rs[0])["renewal"]["count"], 0);

    // The store returns: the replicas recover by themselves and the renewal happens.
    let back_at = Instant::now();
    cluster.restart(0);
    cluster.restart(1);
    wait_for("every replica to report the store healthy again", Duration::from_secs(30), || {
        rs.iter().all(|r| store_status(r)["healthy"] == true).then_some(())
    });
    let recovered = back_at.elapsed();
    wait_for("the requested renewal after the store returned", Duration::from_secs(30), || {
        (store_status(&rs[0])["renewal"]["count"] == 1).then_some(())
    });
    let renewed_after = back_at.elapsed();
    // Every replica installs the renewed root: published first, then signing (propagation delay 2 s).
    let signer1 = wait_for("every replica signing with the renewed root", Duration::from_secs(30), || {
        let s: Vec<String> = rs.iter().map(signer_sha).collect();
        (s[0] != signer0 && s.iter().all(|x| x == &s[0])).then(|| s[0].clone())
    });
    for r in &rs {
        let status = r.status();
        assert!(r.logs().contains("installed the shared root from the store"), "{}", r.logs());
        let roots: Vec<&str> =
            status["roots"].as_array().unwrap().iter().map(|c| c["sha256"].as_str().unwrap()).collect();
        assert!(roots.len() == 2 && roots.contains(&signer1.as_str()), "old and renewed roots are served: {status}");
        assert_eq!(status["signer"]["subject"], rs[0].status()["roots"][1]["subject"], "same subject");
    }
    // Same key: the renewed root in etcd verifies what the old one issued (same subject and public key).
    let raw = cluster.etcdctl(&["get", "--print-value-only", &format!("/meshca/{TD}/ca/root")]);
    let rec: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let spki = |pem: &str| {
        let der = meshca_pki::pem::parse_certs(pem.as_bytes()).unwrap().remove(0);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.public_key().raw.to_vec()
    };
    assert_eq!(spki(rec["cert_pem"].as_str().unwrap()), spki(&root0), "the renewal re-signs the same key");
    assert_ne!(rec["cert_pem"].as_str().unwrap().trim(), root0.trim());
    let report = load.stop();
    eprintln!(
        "STORE_PARTITION outage_s=30 detected_ms={} csr_ok={} csr_failed={} longest_gap_ms={} store_recovered_ms={} \
         renewed_after_return_ms={}",
        detected.as_millis(),
        report.ok,
        report.failed,
        report.longest_gap.as_millis(),
        recovered.as_millis(),
        renewed_after.as_millis()
    );
    assert_eq!(report.failed, 0, "signing failed while the store was away: {:?}", report.errors);
    assert!(report.ok > 300, "the load ran: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_left_on_the_old_plug_in_set_is_flagged() {
    let cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let key = key_file(w, "store.key", 4);
    let root = meshca_testkit::cli::make_root(&bin(), w, "root");
    let i1 = meshca_testkit::cli::make_intermediate(&bin(), w, &root, "i1", "30d");
    let i2 = meshca_testkit::cli::make_intermediate(&bin(), w, &root, "i2", "30d");
    let dirs: Vec<std::path::PathBuf> = (0..3).map(|i| w.join(format!("cacerts{i}"))).collect();
    for d in &dirs {
        agent_support::install_set(d, &i1, None);
    }
    let rs = three_replicas(w, &cluster.store_url(), &key, TD, &["--reload-poll-interval", "1s"], Some(&dirs));
    let old = signer_sha(&rs[0]);
    wait_for("three replicas registered with the same material", Duration::from_secs(20), || {
        rs.iter()
            .all(|r| {
                let st = store_status(r);
                let reps = st["replicas"].as_array().cloned().unwrap_or_default();
                reps.len() == 3 && reps.iter().all(|x| x["same_as_me"] == true)
            })
            .then_some(())
    });
    assert!(
        rs[0].status()["store"]["replicas"][0]["fingerprints"][0].is_string(),
        "plug-in mode registers fingerprints too"
    );

    // i2 in r0's and r1's directories only.
    agent_support::install_set(&dirs[0], &i2, None);
    agent_support::install_set(&dirs[1], &i2, None);
    let new = wait_for("r0 and r1 to reload the new intermediate", Duration::from_secs(20), || {
        let (a, b) = (signer_sha(&rs[0]), signer_sha(&rs[1]));
        (a != old && a == b).then_some(a)
    });
    let converged = Instant::now();
    let flagged = wait_for("r2 flagged as mismatched by r0", Duration::from_secs(20), || {
        let st = store_status(&rs[0]);
        (st["material_mismatch"] == serde_json::json!(["r2"])).then(|| converged.elapsed())
    });
    assert_eq!(metric(&rs[0], "meshca_store_material_mismatch"), 1.0);
    let st = store_status(&rs[0]);
    let r2 = st["replicas"].as_array().unwrap().iter().find(|r| r["id"] == "r2").unwrap().clone();
    assert_eq!(r2["same_as_me"], false, "{st}");
    assert_eq!(r2["material_mismatch"], true, "{st}");
    let http = rs[0].http.to_string();
    doctor_support::doctor(&["--ca-http-addr", &http]).expect("ha.replicas-agree", "error", &["r2", "cacerts"]);
    assert!(flagged < Duration::from_secs(5) + Duration::from_secs(4), "flagged after {flagged:?}");

    // r2 catches up: everyone converges and the flag clears.
    agent_support::install_set(&dirs[2], &i2, None);
    wait_for("every replica on the new set and no mismatch left", Duration::from_secs(20), || {
        let all = rs.iter().all(|r| signer_sha(r) == new);
        let st = store_status(&rs[0]);
        (all && st["material_mismatch"] == serde_json::json!([])).then_some(())
    });
    assert_eq!(metric(&rs[0], "meshca_store_material_mismatch"), 0.0);
    doctor_support::doctor(&["--ca-http-addr", &http]).expect("ha.replicas-agree", "ok", &[]);
    eprintln!("STORE_MISMATCH flagged_after_ms={}", flagged.as_millis());
}
