//! The store's guarantees against a real 3-member etcd cluster: the cold-start
//! race for the root, compare-and-swap, watches, and keys sealed at rest.

mod support;

use meshca_pki::KeyKind;
use meshca_store::ca::{bootstrap_root, fingerprint, self_signed_candidate, ROOT_KEY};
use meshca_store::{Created, EtcdOptions, EtcdStore, Store, Swap, WatchEvent};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::etcd::EtcdCluster;
use tokio::sync::Barrier;

fn candidate() -> meshca_store::Result<meshca_store::ca::RootCandidate> {
    self_signed_candidate("cluster.local", KeyKind::EcP256, Duration::from_secs(3600), SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_race_elects_exactly_one_root_every_time() {
    let cluster = EtcdCluster::start(3).await;
    let key = Arc::new(support::key(1));
    // Three replicas, each with its own client connection.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Arc::new(support::client(&cluster, "/race/").await));
    }
    let mut contended = 0;
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(3));
        let made = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let (c, key, barrier, made) = (c.clone(), key.clone(), barrier.clone(), made.clone());
            let store = c.as_ref().clone();
            tasks.push(tokio::spawn(async move {
                // A prefix per round: each round starts from an empty store.
                let store = support::reprefix(&store, &format!("/race/{round}/"));
                barrier.wait().await;
                let make = || {
                    made.fetch_add(1, Ordering::SeqCst);
                    candidate()
                };
                bootstrap_root(&store, &key, &format!("replica-{i}"), make).await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task").expect("bootstrap_root"));
        }
        let winners = results.iter().filter(|r| r.created_here).count();
        assert_eq!(winners, 1, "round {round}: {winners} replicas think they created the root: {results:?}");
        let fp = &results[0].fingerprint;
        assert!(results.iter().all(|r| &r.fingerprint == fp), "round {round}: roots differ: {results:?}");
        assert!(results.iter().all(|r| r.key_pem == results[0].key_pem), "round {round}: keys differ");
        // The store holds that root.
        let stored = support::reprefix(&clients[0], &format!("/race/{round}/")).get(ROOT_KEY).await.unwrap().unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(&fingerprint(rec["cert_pem"].as_str().unwrap()).unwrap(), fp);
        // Rounds where several replicas found the store empty and raced in the transaction.
        if made.load(Ordering::SeqCst) > 1 {
            contended += 1;
        }
    }
    eprintln!("cold-start race: 20 rounds, exactly one root each time; {contended} rounds had several candidates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_detects_a_concurrent_writer() {
    let cluster = EtcdCluster::start(3).await;
    let a = support::client(&cluster, "/cas/").await;
    let b = support::client(&cluster, "/cas/").await;
    let Created::Won { .. } = a.create("ca/bundle", b"v1".to_vec()).await.unwrap() else { panic!("empty store") };
    match b.create("ca/bundle", b"other".to_vec()).await.unwrap() {
        Created::Exists(e) => assert_eq!(e.value, b"v1"),
        other => panic!("second create must find the first value, got {other:?}"),
    }
    let seen = a.get("ca/bundle").await.unwrap().unwrap();
    let Swap::Swapped { mod_revision } =
        a.compare_and_swap("ca/bundle", seen.mod_revision, b"v2".to_vec()).await.unwrap()
    else {
        panic!("first swap must succeed")
    };
    // b read the same revision before a's write: its swap must fail and show a's value.
    match b.compare_and_swap("ca/bundle", seen.mod_revision, b"v2-from-b".to_vec()).await.unwrap() {
        Swap::Conflict(Some(cur)) => {
            assert_eq!(cur.value, b"v2");
            assert_eq!(cur.mod_revision, mod_revision);
        }
        other => panic!("stale swap must conflict, got {other:?}"),
    }
    assert_eq!(b.get("ca/bundle").await.unwrap().unwrap().value, b"v2");
    assert!(matches!(b.compare_and_swap("ca/none", 1, b"x".to_vec()).await.unwrap(), Swap::Conflict(None)));
}

async fn next(w: &mut meshca_store::Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next()).await.expect("watch event within 20s").expect("watch open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_under_the_prefix() {
    let cluster = EtcdCluster::start(3).await;
    let watcher = support::client(&cluster, "/watch/").await;
    let writer = support::client(&cluster, "/watch/").await;
    let mut w = watcher.watch("ca/", 0).await.unwrap();
    writer.create("ca/root", b"r1".to_vec()).await.unwrap();
    writer.create("other/x", b"ignored".to_vec()).await.unwrap();
    let e = writer.get("ca/root").await.unwrap().unwrap();
    writer.compare_and_swap("ca/root", e.mod_revision, b"r2".to_vec()).await.unwrap();
    writer.delete("ca/root").await.unwrap();
    match next(&mut w).await {
        WatchEvent::Put(e) => assert_eq!((e.key.as_str(), e.value.as_slice()), ("ca/root", &b"r1"[..])),
        other => panic!("expected the create, got {other:?}"),
    }
    match next(&mut w).await {
        WatchEvent::Put(e) => assert_eq!(e.value, b"r2"),
        other => panic!("expected the swap, got {other:?}"),
    }
    assert_eq!(next(&mut w).await.key(), "ca/root");
    assert!(tokio::time::timeout(Duration::from_millis(500), w.next()).await.is_err(), "no event outside ca/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_is_sealed_at_rest_and_a_wrong_key_is_named() {
    let cluster = EtcdCluster::start(3).await;
    let store = support::client(&cluster, "/meshca/cluster.local/").await;
    let root = bootstrap_root(&store, &support::key(1), "replica-a", candidate).await.unwrap();
    assert!(root.created_here && root.key_pem.contains("PRIVATE KEY"));
    // Read the raw value with etcdctl, as anyone with access to etcd could.
    let raw = cluster.etcdctl(&["get", "--print-value-only", "/meshca/cluster.local/ca/root"]);
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("BEGIN CERTIFICATE"), "the certificate is public: {raw}");
    assert!(!raw.contains("PRIVATE KEY"), "private key PEM in etcd: {raw}");
    let key_body: String = root.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!raw.contains(&key_body[..20]), "key bytes visible in etcd");
    assert!(raw.contains("meshca-sealed-v1:"), "{raw}");
    // Another replica with the same key adopts it; one with another key is refused with a clear message.
    let same = bootstrap_root(&store, &support::key(1), "replica-b", candidate).await.unwrap();
    assert!(!same.created_here);
    assert_eq!(same.fingerprint, root.fingerprint);
    assert_eq!(*same.key_pem, *root.key_pem);
    let err = bootstrap_root(&store, &support::key(2), "replica-c", candidate).await.unwrap_err().to_string();
    assert!(err.contains("ca/root") && err.contains("was sealed with store key"), "{err}");
    assert!(err.contains("test-key") && err.contains("--store-key-file"), "{err}");
    assert!(!err.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_auth_is_used_and_a_bad_password_is_named() {
    let cluster = EtcdCluster::start(3).await;
    let _ = cluster.try_etcdctl(&["role", "add", "root"]);
    cluster.etcdctl(&["user", "add", "root:s3cret"]);
    let _ = cluster.try_etcdctl(&["user", "grant-role", "root", "root"]);
    cluster.etcdctl(&["auth", "enable"]);
    let opts = |user: Option<(&str, &str)>| {
        let mut o = EtcdOptions::new(cluster.endpoints(), "/auth/");
        o.op_timeout = Duration::from_secs(4);
        o.user = user.map(|(u, p)| (u.to_string(), p.to_string()));
        o
    };
    // Without credentials the cluster refuses, with a message saying so.
    let anon = EtcdStore::connect(opts(None)).await.unwrap();
    let err = anon.create("k", b"v".to_vec()).await.unwrap_err().to_string();
    assert!(err.contains("user name is empty") || err.contains("permission denied"), "{err}");
    // The right password works.
    let store = EtcdStore::connect(opts(Some(("root", "s3cret")))).await.unwrap();
    assert!(matches!(store.create("k", b"v".to_vec()).await.unwrap(), Created::Won { .. }));
    let bootstrap = bootstrap_root(&store, &support::key(1), "a", candidate).await.unwrap();
    assert!(bootstrap.created_here);
    // A wrong password is an error at connect time naming the cause, not a hang.
    let err = match EtcdStore::connect(opts(Some(("root", "wrong")))).await {
        Ok(s) => s.get("k").await.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "the password is not echoed: {err}");
}
