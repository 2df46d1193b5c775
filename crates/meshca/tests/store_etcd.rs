//! `meshca serve --store etcd://...` against a real 3-member etcd cluster:
//! replicas started at the same instant on an empty store (20 times) all
//! serve the one root that won the create-if-absent and share one local token
//! issuer key (a token from any replica works on the others), each registers
//! itself, the keys are sealed in etcd, and a replica with another
//! --store-key-file refuses to start.

mod store_support;

use meshca_testkit::{Server, ServerOptions};
use store_support::{
    assert_token_key_sealed, assert_tokens_accepted_everywhere, base64_32, bin, etcd, key_file, replica, signer_sha,
    store_status, three_replicas, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_at_once_serve_one_shared_root() {
    let mut cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let key = key_file(work.path(), "store.key", 7);
    let url = cluster.store_url();
    let mut raced = 0;
    let mut last_round = Vec::new();
    for round in 0..20 {
        // A trust domain per round: each round starts on an empty prefix.
        let td = format!("round{round}.example");
        let servers: Vec<Server> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let dir = work.path().join(format!("r{round}-{i}"));
                    let (url, key, td) = (&url, &key, &td);
                    s.spawn(move || replica(&dir, url, key, td, &format!("replica-{i}")).expect("replica starts"))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let roots: Vec<String> = servers.iter().map(|s| s.root_pem()).collect();
        assert!(roots[0].contains("BEGIN CERTIFICATE"));
        assert!(roots.iter().all(|r| r == &roots[0]), "round {round}: replicas serve different roots");
        // The root in etcd is the one they serve; its key is sealed.
        let raw = cluster.etcdctl(&["get", "--print-value-only", &format!("/meshca/{td}/ca/root")]);
        let rec: serde_json::Value = serde_json::from_slice(&raw).expect("root record is JSON");
        assert_eq!(rec["cert_pem"].as_str().unwrap().trim(), roots[0].trim());
        assert!(!String::from_utf8_lossy(&raw).contains("PRIVATE KEY"));
        let won = servers.iter().filter(|s| s.logs().contains("created_here=true")).count();
        assert_eq!(won, 1, "round {round}: exactly one replica created the root");
        if servers.iter().any(|s| s.logs().contains("another replica stored the root first")) {
            raced += 1;
        }
        for s in &servers {
            let log = s.logs();
            assert!(!log.contains("PRIVATE KEY") && !log.contains(&base64_32(7)), "key material in a log:\n{log}");
        }
        // One local token issuer key too, sealed in etcd, the same in every data directory.
        let stored = servers.iter().filter(|s| s.logs().contains("stored a new local token issuer key")).count();
        assert_eq!(stored, 1, "round {round}: exactly one replica stored the token issuer key");
        assert_token_key_sealed(&cluster, &td, &servers);
        assert_tokens_accepted_everywhere(&servers, &td).await;
        // Every replica registered itself.
        let keys = cluster.etcdctl(&["get", "--prefix", "--keys-only", &format!("/meshca/{td}/replicas/")]);
        let keys = String::from_utf8_lossy(&keys);
        for i in 0..3 {
            assert!(keys.contains(&format!("replicas/replica-{i}")), "round {round}: {keys}");
        }
        last_round = servers;
    }
    eprintln!("20 cold starts of 3 replicas: one root each time; {raced} rounds had a replica lose the create race");
    // A replica with a different store key refuses to start and says why.
    let wrong = key_file(work.path(), "wrong.key", 8);
    let err = replica(&work.path().join("wrong"), &url, &wrong, "round0.example", "replica-x")
        .err()
        .expect("a replica with the wrong --store-key-file must not start")
        .to_string();
    assert!(err.contains("was sealed with store key") && err.contains("wrong.key"), "{err}");
    assert!(!err.contains("PRIVATE KEY"));
    // Without --store-key-file, --store is refused with the fix in the message.
    let err = Server::start(
        &bin(),
        &{
            let d = work.path().join("nokey");
            std::fs::create_dir_all(&d).unwrap();
            d
        },
        ServerOptions { args: vec!["--store".into(), url.clone()], ..Default::default() },
    )
    .err()
    .expect("--store without --store-key-file must not start")
    .to_string();
    assert!(err.contains("--store needs --store-key-file"), "{err}");

    // The store loses its majority: a replica that adopted the root earlier
    // restarts and keeps serving it (signing needs no agreement).
    let root = last_round[0].root_pem();
    cluster.stop(0);
    cluster.stop(1);
    let r = &mut last_round[0];
    r.restart().expect("a replica restarts with the adopted root while etcd has no quorum");
    assert_eq!(r.root_pem(), root);
    assert!(r.logs().contains("store unavailable; starting with the root adopted earlier"), "{}", r.logs());
    cluster.restart(0);
    cluster.restart(1);
    // Once the store is back, the replica registers itself again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !r.logs().contains("registered this replica") {
        assert!(std::time::Instant::now() < deadline, "no registration after etcd returned:\n{}", r.logs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The store options are TOML keys too (same names as the flags); unknown ones are refused.
#[test]
fn store_options_are_read_from_the_config_file() {
    let work = tempfile::tempdir().unwrap();
    let start = |toml: &str| {
        let cfg = work.path().join("meshca.toml");
        std::fs::write(&cfg, toml).unwrap();
        let opts = ServerOptions { args: vec!["--config".into(), cfg.display().to_string()], ..Default::default() };
        Server::start(&bin(), work.path(), opts).err().expect("must not start").to_string()
    };
    let err = start("store = \"etcd://127.0.0.1:1\"\n");
    assert!(err.contains("--store needs --store-key-file"), "the store key is read from the file: {err}");
    let missing = work.path().join("absent.key");
    let err = start(&format!("store = \"etcd://127.0.0.1:1\"\nstore_key_file = \"{}\"\n", missing.display()));
    assert!(err.contains("absent.key"), "store_key_file is read from the file: {err}");
    let err = start("store_bogus = 1\n");
    assert!(err.contains("store_bogus"), "an unknown store key is refused: {err}");
}

/// A root is re-signed at 80% of its life (here 20 s) by exactly one
/// replica, from the same key, and every replica then signs with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_is_renewed_at_80_percent_by_one_replica() {
    let cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let key = key_file(work.path(), "store.key", 9);
    let td = "renew.example";
    let extra = ["--self-signed-ttl", "20s", "--root-propagation-delay", "1s"];
    let rs = three_replicas(work.path(), &cluster.store_url(), &key, td, &extra, None);
    let started = std::time::Instant::now();
    let first = signer_sha(&rs[0]);
    let stored = || {
        let raw = cluster.etcdctl(&["get", "--print-value-only", &format!("/meshca/{td}/ca/root")]);
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["cert_pem"].as_str().unwrap().to_string()
    };
    let before = stored();
    let renewed = wait_for("the root renewed in the store", std::time::Duration::from_secs(30), || {
        let now = stored();
        (now != before).then_some(now)
    });
    let after = started.elapsed();
    let counts: Vec<u64> = rs.iter().map(|r| store_status(r)["renewal"]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 1, "exactly one replica renewed: {counts:?}");
    let spki = |pem: &str| {
        let der = meshca_pki::pem::parse_certs(pem.as_bytes()).unwrap().remove(0);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        (c.public_key().raw.to_vec(), c.subject().as_raw().to_vec())
    };
    assert_eq!(spki(&renewed), spki(&before), "same key and subject");
    let new = wait_for("every replica signing with the renewed root", std::time::Duration::from_secs(10), || {
        let s: Vec<String> = rs.iter().map(signer_sha).collect();
        (s[0] != first && s.iter().all(|x| x == &s[0])).then(|| s[0].clone())
    });
    assert!(!new.is_empty());
    eprintln!("STORE_RENEWAL ttl_s=20 renewed_after_ms={} renewals_by_replica={counts:?}", after.as_millis());
}
