//! `meshca serve --store etcd://... --policy-dir DIR` on a real 3-member etcd
//! cluster: the policy set lives in the store. A set written to one replica's
//! directory is served by all three (also to a PolicyDelivery stream on
//! another replica); an older set restored in another replica's directory
//! never overwrites the shared one and that replica reports the difference.

#[path = "policy_serve_support/mod.rs"]
mod pss;
mod store_support;
mod support;

use meshca_testkit::{Server, ServerOptions};
use pss::{agent, ap, names, put};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use store_support::{etcd, key_file, replica_with, wait_for};

fn policy(s: &Server) -> serde_json::Value {
    s.status()["policy"].clone()
}

/// Set the mtime of `dir` and of every file in it to `t`.
fn age(dir: &Path, t: SystemTime) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::File::options().write(true).open(e.unwrap().path()).unwrap().set_modified(t).unwrap();
    }
    std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_set_lives_in_the_store() {
    let cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let key = key_file(work.path(), "store.key", 9);
    let url = cluster.store_url();
    let td = "policies.example";
    let dirs: Vec<PathBuf> = (0..3).map(|i| work.path().join(format!("policies{i}"))).collect();
    // r2's directory starts with an old set: written, then aged.
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    put(&dirs[2], "old.yaml", &ap("a", "old", "DENY"));
    let past = SystemTime::now() - Duration::from_secs(3600);
    age(&dirs[2], past);
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let args = ["--plaintext", "--policy-dir", &dirs[i].display().to_string()];
            let opts = ServerOptions { args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
            replica_with(&work.path().join(format!("r{i}")), &url, &key, td, &format!("r{i}"), opts).expect("replica")
        })
        .collect();

    // A valid set written only to r0's directory (newer than the others) is served by all three.
    put(&dirs[0], "allow.yaml", &ap("a", "allow-a", "ALLOW"));
    let version = wait_for("r0 loads its directory", Duration::from_secs(15), || {
        let p = policy(&servers[0]);
        (p["object_count"] == 1 && p["objects"][0]["name"] == "allow-a").then(|| p["version"].clone())
    });
    for s in &servers {
        let p = wait_for("the shared set on every replica", Duration::from_secs(15), || {
            let p = policy(s);
            (p["version"] == version).then_some(p)
        });
        assert_eq!(p["shared"]["from_store"], true, "{p}");
        assert_eq!(p["shared"]["published_by"], "r0", "{p}");
    }
    let raw = cluster.etcdctl(&["get", "--print-value-only", &format!("/meshca/{td}/policy/set")]);
    let rec: serde_json::Value = serde_json::from_slice(&raw).expect("policy record is JSON");
    assert_eq!(rec["published_by"], "r0");
    assert_eq!(rec["objects"][0]["name"], "allow-a");

    // A PolicyDelivery stream on r1 receives r0's object.
    let (_c, _t, mut w) = agent(&servers[1], "a", "web").await;
    let u = w.until("r0's object", |u| names(u) == ["a/allow-a"]).await;
    assert_eq!(u.objects[0].source, "allow.yaml:1");

    // r2 has its older directory: it serves the shared set and says its directory differs.
    let p = wait_for("r2 reports its directory differs", Duration::from_secs(15), || {
        let p = policy(&servers[2]);
        (p["shared"]["local_differs"] == true).then_some(p)
    });
    assert_eq!(p["shared"]["message"], "local policy directory differs from the shared set");
    // Restoring an older set in r2's directory again does not change the record.
    put(&dirs[2], "old.yaml", &ap("a", "older", "DENY"));
    age(&dirs[2], past);
    std::thread::sleep(Duration::from_secs(3));
    let again = cluster.etcdctl(&["get", "--print-value-only", &format!("/meshca/{td}/policy/set")]);
    assert_eq!(again, raw, "an older directory overwrote the shared set");
    assert_eq!(policy(&servers[2])["version"], version);
    assert_eq!(policy(&servers[2])["shared"]["local_differs"], true);
    assert_eq!(policy(&servers[0])["shared"]["local_differs"], false);
}
