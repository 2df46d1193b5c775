//! Leases, elections and etcd failures against a real 3-member cluster:
//! registry entries expire with their lease, leadership moves when the
//! leader's lease ends, a lost majority fails writes in bounded time, and
//! everything recovers when members come back.

mod support;

use meshca_store::ca::{list_replicas, register_replica, ReplicaRecord};
use meshca_store::{Created, Store, StoreError};
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;

/// Poll `cond` up to `max`.
async fn eventually<F, Fut>(max: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < max, "{what}: not true after {max:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_entries_vanish_when_their_lease_expires() {
    let cluster = EtcdCluster::start(3).await;
    let store = support::client(&cluster, "/reg/").await;
    let ttl = Duration::from_secs(3);
    let a = register_replica(&store, &ReplicaRecord::new("a", "127.0.0.1:1", "0.1.0", vec!["aa".into()]), ttl)
        .await
        .unwrap();
    let b = register_replica(&store, &ReplicaRecord::new("b", "127.0.0.1:2", "0.1.0", vec!["bb".into()]), ttl)
        .await
        .unwrap();
    let ids = |v: Vec<ReplicaRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(list_replicas(&store).await.unwrap()), ["a", "b"]);
    // Kept alive well past the TTL (3 s: generous for renewals on a loaded CI machine).
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(ids(list_replicas(&store).await.unwrap()), ["a", "b"]);
    assert!(a.is_alive());
    // a stops renewing (as a crash would): its entry goes when the lease runs out.
    a.abandon();
    let took = eventually(Duration::from_secs(20), "a's entry expires", || async {
        ids(list_replicas(&store).await.unwrap()) == ["b"]
    })
    .await;
    eprintln!("abandoned registry entry vanished after {took:?} (TTL {ttl:?})");
    // An update keeps the lease; closing removes the entry at once.
    let mut rec = ReplicaRecord::new("b", "127.0.0.1:2", "0.1.1", vec!["cc".into()]);
    rec.updated += 1;
    b.update(serde_json::to_vec(&rec).unwrap()).await.unwrap();
    assert_eq!(list_replicas(&store).await.unwrap(), vec![rec]);
    b.close().await.unwrap();
    assert!(list_replicas(&store).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_when_the_leaders_lease_ends() {
    let cluster = EtcdCluster::start(3).await;
    let a_store = support::client(&cluster, "/elect/").await;
    let b_store = support::client(&cluster, "/elect/").await;
    let ttl = Duration::from_secs(3);
    let a = a_store.campaign("root-renewal", "replica-a", ttl).await.unwrap();
    assert!(a.is_leader());
    assert_eq!(b_store.leader("root-renewal").await.unwrap().as_deref(), Some("replica-a"));
    let b_task = tokio::spawn(async move { b_store.campaign("root-renewal", "replica-b", ttl).await });
    // b waits while a keeps its lease alive.
    tokio::time::sleep(ttl * 2).await;
    assert!(!b_task.is_finished(), "b became leader while a held the lease");
    assert!(a.is_leader());
    // a crashes (stops renewing): b takes over once a's lease has expired.
    let crashed = Instant::now();
    a.abandon();
    let b = tokio::time::timeout(Duration::from_secs(20), b_task).await.expect("b leads within 20s").unwrap().unwrap();
    eprintln!("leadership moved {:?} after the leader stopped renewing (TTL {ttl:?})", crashed.elapsed());
    assert!(b.is_leader());
    assert_eq!(a_store.leader("root-renewal").await.unwrap().as_deref(), Some("replica-b"));
    // A resignation hands over at once.
    let c_store = a_store.clone();
    let c_task = tokio::spawn(async move { c_store.campaign("root-renewal", "replica-c", ttl).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.resign().await.unwrap();
    let c = tokio::time::timeout(Duration::from_secs(10), c_task).await.expect("c leads").unwrap().unwrap();
    assert!(c.is_leader());
    assert_eq!(a_store.leader("root-renewal").await.unwrap().as_deref(), Some("replica-c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_majority_fails_writes_in_bounded_time_and_recovers() {
    let mut cluster = EtcdCluster::start(3).await;
    let store = support::client(&cluster, "/quorum/").await;
    let reg =
        register_replica(&store, &ReplicaRecord::new("a", "127.0.0.1:1", "0.1.0", vec![]), Duration::from_secs(3))
            .await
            .unwrap();
    assert!(matches!(store.create("k1", b"v".to_vec()).await.unwrap(), Created::Won { .. }));

    // One member down (the leader): writes resume after an election.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.stop(leader);
    let took = eventually(Duration::from_secs(30), "writes after losing the leader", || async {
        store.create("k2", b"v".to_vec()).await.is_ok()
    })
    .await;
    eprintln!("writes resumed {took:?} after the etcd leader was killed");

    // Two of three down: no quorum. Writes fail within the request deadline, with a clear error.
    let other = (0..3).find(|i| *i != leader).unwrap();
    cluster.stop(other);
    let start = Instant::now();
    let err = store.create("k3", b"v".to_vec()).await.expect_err("a write without quorum must fail");
    let took = start.elapsed();
    eprintln!("write without quorum failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Timeout { .. }), "{msg}");
    assert!(msg.contains("majority"), "the error points at the likely cause: {msg}");
    assert!(msg.contains("/quorum/k3") && msg.contains("etcd http://127.0.0.1:"), "{msg}");
    // Reads that need the leader fail the same way; nothing hangs or panics.
    let start = Instant::now();
    assert!(store.get("k1").await.is_err());
    assert!(start.elapsed() < Duration::from_secs(10));

    // Members come back: writes work again and the registration is renewed or re-created.
    cluster.restart(leader);
    cluster.restart(other);
    cluster.wait_leader(Duration::from_secs(30)).await;
    let took = eventually(Duration::from_secs(30), "writes after the majority returned", || async {
        store.create("k4", b"v".to_vec()).await.is_ok()
    })
    .await;
    eprintln!("writes resumed {took:?} after the members restarted");
    eventually(Duration::from_secs(20), "registry entry back", || async {
        list_replicas(&store).await.map(|v| v.len() == 1).unwrap_or(false)
    })
    .await;
    eventually(Duration::from_secs(20), "registration renewed", || async { reg.is_alive() }).await;
    assert_eq!(store.get("k1").await.unwrap().unwrap().value, b"v");
}
