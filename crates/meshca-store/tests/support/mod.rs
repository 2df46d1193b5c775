//! Test support for the store tests.
#![allow(dead_code)]

pub mod etcd;

use meshca_store::{EtcdOptions, EtcdStore, StoreKey};
use std::path::Path;
use std::time::Duration;

/// A client of `cluster` under a fresh prefix, with a short request deadline.
pub async fn client(cluster: &etcd::EtcdCluster, prefix: &str) -> EtcdStore {
    let mut o = EtcdOptions::new(cluster.endpoints(), prefix);
    o.op_timeout = Duration::from_secs(4);
    o.connect_timeout = Duration::from_secs(2);
    EtcdStore::connect(o).await.expect("connect to the test etcd cluster")
}

/// A store key made of `byte` repeated.
pub fn key(byte: u8) -> StoreKey {
    StoreKey::from_bytes(&[byte; 32], Path::new("test-key")).expect("key")
}

/// The same connection under another prefix.
pub fn reprefix(store: &EtcdStore, prefix: &str) -> EtcdStore {
    store.with_prefix(prefix)
}
