//! The single-replica store on files: same semantics as etcd for one process,
//! secrets 0600, and the root written where `meshca serve` reads it.

use meshca_pki::KeyKind;
use meshca_store::ca::{bootstrap_root, self_signed_candidate, write_root_files, ROOT_KEY};
use meshca_store::{Created, LocalStore, Store, StoreKey, Swap, WatchEvent};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn key(b: u8) -> StoreKey {
    StoreKey::from_bytes(&[b; 32], Path::new("k")).unwrap()
}

#[tokio::test]
async fn create_swap_watch_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let mut w = store.watch("ca/", 0).await.unwrap();
    assert!(matches!(store.create("ca/root", b"one".to_vec()).await.unwrap(), Created::Won { .. }));
    match store.create("ca/root", b"two".to_vec()).await.unwrap() {
        Created::Exists(e) => assert_eq!(e.value, b"one"),
        other => panic!("{other:?}"),
    }
    let e = store.get("ca/root").await.unwrap().unwrap();
    assert!(matches!(
        store.compare_and_swap("ca/root", e.mod_revision, b"2".to_vec()).await.unwrap(),
        Swap::Swapped { .. }
    ));
    assert!(matches!(
        store.compare_and_swap("ca/root", e.mod_revision, b"3".to_vec()).await.unwrap(),
        Swap::Conflict(Some(_))
    ));
    assert_eq!(mode(&dir.path().join("store/ca/root")), 0o600);
    assert_eq!(mode(&dir.path().join("store/ca")), 0o700);
    let first = w.next().await.unwrap();
    assert!(matches!(first, WatchEvent::Put(ref e) if e.value == b"one"), "{first:?}");
    assert!(matches!(w.next().await.unwrap(), WatchEvent::Put(ref e) if e.value == b"2"));
    assert!(store.get("../etc/passwd").await.is_err(), "keys cannot leave the store directory");
    // The state survives a restart of the process (a new store on the same directory).
    let again = LocalStore::open(&dir.path().join("store")).unwrap();
    assert_eq!(again.get("ca/root").await.unwrap().unwrap().value, b"2");
}

#[tokio::test]
async fn registration_and_election_are_local() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let reg = store.register("replicas/a", b"{}".to_vec(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.list("replicas/").await.unwrap().len(), 1);
    reg.close().await.unwrap();
    assert!(store.list("replicas/").await.unwrap().is_empty());
    let a = store.campaign("renewal", "a", Duration::from_secs(5)).await.unwrap();
    let s2 = store.clone();
    let b = tokio::spawn(async move { s2.campaign("renewal", "b", Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.is_finished());
    assert_eq!(store.leader("renewal").await.unwrap().as_deref(), Some("a"));
    a.resign().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), b).await.unwrap().unwrap().unwrap();
    assert!(b.is_leader());
    assert_eq!(store.leader("renewal").await.unwrap().as_deref(), Some("b"));
}

#[tokio::test]
async fn shared_root_is_written_where_serve_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store")).unwrap();
    let make = || self_signed_candidate("example.org", KeyKind::EcP256, Duration::from_secs(3600), SystemTime::now());
    let root = bootstrap_root(&store, &key(1), "a", make).await.unwrap();
    assert!(root.created_here);
    let raw = store.get(ROOT_KEY).await.unwrap().unwrap().value;
    assert!(!String::from_utf8_lossy(&raw).contains("PRIVATE KEY"));
    let data = dir.path().join("data");
    write_root_files(&data, &root).unwrap();
    assert_eq!(mode(&data.join("ca/root-key.pem")), 0o600);
    assert_eq!(std::fs::read_to_string(data.join("ca/root-cert.pem")).unwrap(), root.cert_pem);
    write_root_files(&data, &root).unwrap();
    // A data directory holding another root is not silently overwritten.
    let other_store = LocalStore::open(&dir.path().join("other")).unwrap();
    let other = bootstrap_root(&other_store, &key(1), "b", make).await.unwrap();
    let err = write_root_files(&data, &other).unwrap_err().to_string();
    assert!(err.contains("root-cert.pem") && err.contains("differs from the store"), "{err}");
    let wrong = bootstrap_root(&store, &key(9), "c", make).await.unwrap_err().to_string();
    assert!(wrong.contains("was sealed with store key"), "{wrong}");
}
