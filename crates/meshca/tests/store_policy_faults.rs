//! Faults of the shared policy set (`meshca serve --store etcd://... --policy-dir DIR`)
//! on a real 3-member etcd cluster and three replicas:
//!
//! * the whole store down: a set changed in one replica's directory is not
//!   served by anyone (every replica keeps the last shared set), and is
//!   published and served by all once etcd returns;
//! * a corrupt `policy/set` record: replicas without a valid local set report
//!   the error (status, metric, doctor) and keep serving the last set; the
//!   replica holding a valid set replaces the record.

mod doctor_support;
#[path = "policy_serve_support/mod.rs"]
mod pss;
mod store_support;
mod support;

use meshca_testkit::{Server, ServerOptions};
use pss::{agent, ap, names, put};
use std::path::{Path, PathBuf};
use std::time::Duration;
use store_support::{etcd, key_file, metric, replica_with, signal, wait_for};

const TD: &str = "faults.example";
const WAIT: Duration = Duration::from_secs(30);

fn policy(s: &Server) -> serde_json::Value {
    s.status()["policy"].clone()
}

fn set_key() -> String {
    format!("/meshca/{TD}/policy/set")
}

/// Three replicas `r0..r2`, each with its own policy directory holding
/// `files[i]` (written after every directory exists, so a directory with
/// files is newer than an empty one).
fn replicas(work: &Path, url: &str, files: [&[(&str, String)]; 3]) -> (Vec<PathBuf>, Vec<Server>) {
    let key = key_file(work, "store.key", 7);
    let dirs: Vec<PathBuf> = (0..3).map(|i| work.join(format!("policies{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    for (dir, fs) in dirs.iter().zip(files) {
        for (name, text) in fs {
            put(dir, name, text);
        }
    }
    let servers = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let args = ["--plaintext", "--policy-dir", &dir.display().to_string()];
            let opts = ServerOptions { args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
            replica_with(&work.join(format!("r{i}")), url, &key, TD, &format!("r{i}"), opts).expect("replica")
        })
        .collect();
    (dirs, servers)
}

/// Wait until every replica serves one set whose objects are `objects` (by name); its version.
fn all_serve(servers: &[Server], objects: &[&str]) -> serde_json::Value {
    let version = wait_for("the first replica serves the set", WAIT, || {
        let p = policy(&servers[0]);
        let got: Vec<&str> = p["objects"].as_array()?.iter().filter_map(|o| o["name"].as_str()).collect();
        (p["shared"]["from_store"] == true && got == objects).then(|| p["version"].clone())
    });
    for (i, s) in servers.iter().enumerate() {
        wait_for(&format!("r{i} serves {objects:?}"), WAIT, || (policy(s)["version"] == version).then_some(()));
    }
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_changed_while_the_store_is_down_is_published_when_it_returns() {
    let mut cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let url = cluster.store_url();
    let a = [("allow.yaml", ap("a", "allow-a", "ALLOW"))];
    let (dirs, servers) = replicas(work.path(), &url, [&a, &[], &[]]);
    let v_a = all_serve(&servers, &["allow-a"]);
    let (_c, _t, mut w) = agent(&servers[2], "a", "web").await;
    w.until("the shared set", |u| names(u) == ["a/allow-a"]).await;

    // The whole store down: every replica notices, then r1's directory changes.
    for i in 0..3 {
        cluster.stop(i);
    }
    for (i, s) in servers.iter().enumerate() {
        wait_for(&format!("r{i} reports the store error"), WAIT, || {
            (metric(s, "meshca_policy_shared_store_error") == 1.0).then_some(())
        });
    }
    let before = policy(&servers[1])["shared"]["local_version"].clone();
    put(&dirs[1], "new.yaml", &ap("a", "allow-b", "ALLOW"));
    wait_for("r1 loads its changed directory", WAIT, || {
        let p = policy(&servers[1]);
        (p["shared"]["local_version"] != before && p["refused"] == "").then_some(())
    });
    // Well past the 1 s poll: nobody serves r1's set, the stream got nothing new.
    assert!(w.next_within(Duration::from_secs(3)).await.is_none(), "an update was sent while the store was down");
    for (i, s) in servers.iter().enumerate() {
        let p = policy(s);
        assert_eq!(p["version"], v_a, "r{i} stopped serving the last shared set: {p}");
        assert_ne!(p["shared"]["store_error"], "", "r{i}: {p}");
    }

    // etcd back: r1's newer set is published and served by all, down to the stream on r2.
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader(WAIT).await;
    let v_b = all_serve(&servers, &["allow-b"]);
    assert_ne!(v_b, v_a);
    w.until("r1's set", |u| names(u) == ["a/allow-b"]).await;
    let raw = cluster.etcdctl(&["get", "--print-value-only", &set_key()]);
    let rec: serde_json::Value = serde_json::from_slice(&raw).expect("policy record is JSON");
    assert_eq!(rec["published_by"], "r1");
    for (i, s) in servers.iter().enumerate() {
        wait_for(&format!("r{i} clears the store error"), WAIT, || {
            (metric(s, "meshca_policy_shared_store_error") == 0.0).then_some(())
        });
    }
    // r0's directory (allow-a) is older than the shared set now: it differs, and says so.
    wait_for("r0 reports its older directory", WAIT, || {
        (metric(&servers[0], "meshca_policy_local_differs") == 1.0).then_some(())
    });
    assert_eq!(metric(&servers[1], "meshca_policy_local_differs"), 0.0);
    doctor_support::doctor(&["--ca-http-addr", &servers[0].http.to_string()]).expect(
        "ha.policy-shared",
        "warning",
        &["r1", "touch"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_reported_then_replaced_by_a_replica_with_a_valid_set() {
    let cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let url = cluster.store_url();
    // Only r0's directory holds a valid set; r1's and r2's are refused.
    let a = [("allow.yaml", ap("a", "allow-a", "ALLOW"))];
    let broken = [("broken.yaml", "kind: [unclosed\n".to_string())];
    let (_dirs, servers) = replicas(work.path(), &url, [&a, &broken, &broken]);
    let v_a = all_serve(&servers, &["allow-a"]);
    for s in &servers[1..] {
        let p = policy(s);
        assert_eq!(p["shared"]["local_version"], "", "a refused directory has no valid set: {p}");
        // Serving the store's set does not hide that this replica's own directory is broken.
        let refused = p["refused"].as_str().unwrap_or_default();
        assert!(refused.contains("broken.yaml"), "the refusal stays in /status while the shared set is served: {p}");
        assert_eq!(metric(s, "meshca_policy_set_ok"), 0.0, "set_ok stays 0 while the directory is refused");
    }
    let good = cluster.etcdctl(&["get", "--print-value-only", &set_key()]);

    // r0 paused, garbage written: r1 and r2 report it and keep serving the last set.
    let r0 = servers[0].pid().expect("r0 runs");
    signal(r0, "STOP");
    cluster.etcdctl(&["put", &set_key(), "{not a policy set"]);
    for (i, s) in servers.iter().enumerate().skip(1) {
        wait_for(&format!("r{i} reports the corrupt record"), WAIT, || {
            (metric(s, "meshca_policy_shared_store_error") == 1.0).then_some(())
        });
        let p = policy(s);
        let err = p["shared"]["store_error"].as_str().unwrap_or_default();
        assert!(err.contains("not a valid policy set record"), "r{i}: {p}");
        assert_eq!(p["version"], v_a, "r{i} stopped serving the last set: {p}");
    }
    let doctor = doctor_support::doctor(&["--ca-http-addr", &servers[1].http.to_string()]);
    doctor.expect("ha.policy-shared", "error", &[&set_key(), "not a valid policy set record"]);
    let raw = cluster.etcdctl(&["get", "--print-value-only", &set_key()]);
    assert!(String::from_utf8_lossy(&raw).starts_with("{not a policy set"), "no replica could replace it");

    // r0 resumes: it replaces the record with its valid set, logged at warn with the reason.
    signal(r0, "CONT");
    let rec = wait_for("the record replaced by a valid set", WAIT, || {
        let raw = cluster.etcdctl(&["get", "--print-value-only", &set_key()]);
        serde_json::from_slice::<serde_json::Value>(&raw).ok()
    });
    assert_eq!(rec["published_by"], "r0");
    assert_eq!(rec["objects"][0]["name"], "allow-a");
    let good: serde_json::Value = serde_json::from_slice(&good).unwrap();
    assert_eq!(rec["version"], good["version"]);
    for (i, s) in servers.iter().enumerate() {
        wait_for(&format!("r{i} clears the error"), WAIT, || {
            (metric(s, "meshca_policy_shared_store_error") == 0.0 && policy(s)["shared"]["store_error"] == "")
                .then_some(())
        });
        assert_eq!(policy(s)["version"], v_a, "r{i}");
    }
    let logs = servers[0].logs();
    let line = logs.lines().find(|l| l.contains("corrupt") && l.contains("replacing it")).expect("the warn line");
    assert!(line.contains("WARN") && line.contains("not a valid policy set record"), "{line}");
}
