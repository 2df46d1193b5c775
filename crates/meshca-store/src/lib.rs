//! What meshca CA replicas share, under one prefix per trust domain: a
//! [`Store`] with create-if-absent, compare-and-swap, watches, lease-bound
//! registry entries and a simple leader election, implemented on local files
//! ([`LocalStore`], one replica) and on etcd v3 ([`EtcdStore`]). Secret values
//! are sealed with AES-256-GCM ([`StoreKey`]); [`ca`] holds the CA's typed
//! records (the shared self-signed root, the replica registry); [`issuer`]
//! the local token issuer's key.
#![forbid(unsafe_code)]

pub mod ca;
pub mod error;
pub mod etcd;
mod etcd_lease;
pub mod handles;
pub mod issuer;
pub mod local;
pub mod seal;
pub mod spec;

pub use error::{Result, StoreError};
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
pub use handles::{Leadership, Registration, Watch, WatchEvent};
pub use local::LocalStore;
pub use seal::StoreKey;
pub use spec::{AnyStore, StoreSpec};

use std::future::Future;
use std::time::Duration;

/// A value and its revisions (etcd semantics: `create_revision` is 0 for an
/// absent key; `mod_revision` changes on every write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the store's prefix.
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// Result of a create-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call wrote the value, at this revision.
    Won { revision: i64 },
    /// The key already existed: here is what it holds.
    Exists(Entry),
}

/// Result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    Swapped {
        mod_revision: i64,
    },
    /// Someone else wrote first: the current entry (`None`: deleted).
    Conflict(Option<Entry>),
}

/// The state CA replicas share. Keys are relative to the store's prefix
/// (`/meshca/<trust-domain>/`) and made of `[A-Za-z0-9._-]` segments joined by `/`.
pub trait Store: Send + Sync + 'static {
    /// Human-readable location, for messages.
    fn describe(&self) -> String;
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send;
    /// Every entry whose key starts with `prefix`, ordered by key.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<Entry>>> + Send;
    /// Write `value` only if `key` does not exist, in one transaction.
    fn create(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<Created>> + Send;
    /// Write `value` only if `key` is still at `mod_revision`.
    fn compare_and_swap(
        &self,
        key: &str,
        mod_revision: i64,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<Swap>> + Send;
    /// Delete `key`; true if it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Changes under `prefix` after `after_revision` (0: from now on).
    fn watch(&self, prefix: &str, after_revision: i64) -> impl Future<Output = Result<Watch>> + Send;
    /// A key that lives as long as the returned handle keeps its lease alive.
    fn register(&self, key: &str, value: Vec<u8>, ttl: Duration) -> impl Future<Output = Result<Registration>> + Send;
    /// Wait until this caller leads `election`; `id` is published as the leader's value.
    fn campaign(&self, election: &str, id: &str, ttl: Duration) -> impl Future<Output = Result<Leadership>> + Send;
    /// The current leader's id of `election`, if any.
    fn leader(&self, election: &str) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// Check a relative key: non-empty `[A-Za-z0-9._-]` segments separated by `/`, no `.`/`..`.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "store key {key:?}: expected segments of letters, digits, '.', '_' or '-' separated by '/'"
        )))
    }
}

/// Check a prefix: empty, or a key optionally followed by `/`.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_key(prefix.strip_suffix('/').unwrap_or(prefix))
}

/// The election key of `election`.
pub(crate) fn election_key(election: &str) -> String {
    format!("election/{election}")
}
