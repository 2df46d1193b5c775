//! The policy set in HA mode (`--store` with `--policy-dir`): the set lives
//! in the store under `policy/set` (JSON, not sealed: policies are not
//! secrets) and every replica serves the store's set only.
//!
//! A replica publishes the valid set of its own directory when it differs
//! from the record and its directory is newer (newest mtime of the directory
//! and its policy files; on a tie, the higher replica id wins), with
//! create-if-absent or a compare on the `mod_revision` it read; on a
//! conflict it reads again and decides again. A replica with an older
//! directory never overwrites: it serves the store's set and reports
//! `local_differs` in `/status`. Losing the store keeps the last set taken.

use super::load::ServedObject;
use meshca_pki::inspect::sha256_hex;
use meshca_store::{AnyStore, Created, Entry, Store, Swap};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The record's key, relative to the trust domain's prefix.
pub const SET_KEY: &str = "policy/set";
/// A store call that takes longer counts as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts at publishing before giving up until the next reload.
const ATTEMPTS: usize = 5;

/// The shared set as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRecord {
    pub objects: Vec<ServedObject>,
    /// Digest of `objects` only.
    pub version: String,
    /// Newest mtime of the publisher's directory and policy files, in milliseconds.
    pub source_mtime_unix_ms: u64,
    pub published_by: String,
    pub published_unix: u64,
}

/// The version of a set of objects (the record's `version`).
pub fn objects_version(objects: &[ServedObject]) -> String {
    let canon = serde_json::to_vec(objects).unwrap_or_default();
    sha256_hex(&canon)[..16].to_string()
}

/// Newest mtime of `dir` (deletions) and its policy files, in ms since the epoch.
pub fn source_mtime_ms(dir: &Path) -> u64 {
    let ms = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    };
    let files = super::files::policy_files(&[dir.to_path_buf()]).unwrap_or_default();
    files.iter().map(|f| ms(f)).chain(std::iter::once(ms(dir))).max().unwrap_or(0)
}

/// What `/status.policy.shared` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SharedInfo {
    pub from_store: bool,
    pub version: String,
    pub published_by: String,
    pub local_version: String,
    pub local_differs: bool,
    pub message: String,
    pub store_error: String,
    #[serde(skip)]
    pub mod_revision: i64,
}

/// The store side of the policy set of one replica.
pub struct SharedSet {
    pub store: AnyStore,
    pub replica_id: String,
    pub info: Mutex<SharedInfo>,
}

/// Should a replica with (`mtime`, `version`) overwrite `rec`?
pub fn should_publish(mtime: u64, version: &str, me: &str, rec: Option<&SetRecord>) -> bool {
    match rec {
        None => true,
        Some(r) if r.version == version => false,
        Some(r) => mtime > r.source_mtime_unix_ms || (mtime == r.source_mtime_unix_ms && me > r.published_by.as_str()),
    }
}

fn decode(e: &Entry) -> Result<SetRecord, String> {
    serde_json::from_slice(&e.value).map_err(|err| format!("{SET_KEY} in the store is not a policy set record: {err}"))
}

impl SharedSet {
    pub fn new(store: AnyStore, replica_id: String) -> Self {
        Self { store, replica_id, info: Mutex::default() }
    }

    pub fn info(&self) -> SharedInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_info(&self, f: impl FnOnce(&mut SharedInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn read(&self) -> Result<Option<(Entry, SetRecord)>, String> {
        let got = tokio::time::timeout(CALL_TIMEOUT, self.store.get(SET_KEY)).await;
        match got {
            Err(_) => Err(format!("store {}: no answer within {CALL_TIMEOUT:?}", self.store.describe())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(e))) => decode(&e).map(|r| Some((e, r))),
        }
    }

    /// Offer this replica's valid local set; writes it when the rule says so.
    pub async fn publish(&self, objects: &[ServedObject], mtime: u64) {
        let version = objects_version(objects);
        self.set_info(|i| i.local_version = version.clone());
        for _ in 0..ATTEMPTS {
            let current = match self.read().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the shared policy set; the last set taken stays served");
                    self.set_info(|i| i.store_error = e);
                    return;
                }
            };
            if !should_publish(mtime, &version, &self.replica_id, current.as_ref().map(|(_, r)| r)) {
                return;
            }
            let rec = SetRecord {
                objects: objects.to_vec(),
                version: version.clone(),
                source_mtime_unix_ms: mtime,
                published_by: self.replica_id.clone(),
                published_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            };
            let Ok(value) = serde_json::to_vec(&rec) else { return };
            let won = match &current {
                None => match self.store.create(SET_KEY, value).await {
                    Ok(Created::Won { .. }) => true,
                    Ok(Created::Exists(_)) => false,
                    Err(e) => return self.set_info(|i| i.store_error = e.to_string()),
                },
                Some((e, _)) => match self.store.compare_and_swap(SET_KEY, e.mod_revision, value).await {
                    Ok(Swap::Swapped { .. }) => true,
                    Ok(Swap::Conflict(_)) => false,
                    Err(e) => return self.set_info(|i| i.store_error = e.to_string()),
                },
            };
            if won {
                tracing::info!(version = %version, objects = objects.len(), "published the local policy set to the store");
                return;
            }
        }
    }

    /// The store's set when it changed since the last call (`None`: unchanged or unreadable).
    pub async fn fetch(&self) -> Option<SetRecord> {
        match self.read().await {
            Err(e) => {
                self.set_info(|i| i.store_error = e);
                None
            }
            Ok(None) => {
                self.set_info(|i| i.store_error.clear());
                None
            }
            Ok(Some((e, rec))) => {
                let changed = e.mod_revision != self.info().mod_revision;
                self.set_info(|i| {
                    i.store_error.clear();
                    i.from_store = true;
                    i.mod_revision = e.mod_revision;
                    i.version = rec.version.clone();
                    i.published_by = rec.published_by.clone();
                });
                changed.then_some(rec)
            }
        }
    }

    /// Refresh `local_differs` and its message after a load or a fetch.
    pub fn compare_local(&self) {
        self.set_info(|i| {
            i.local_differs = i.from_store && !i.local_version.is_empty() && i.local_version != i.version;
            i.message = if i.local_differs {
                "local policy directory differs from the shared set".to_string()
            } else {
                String::new()
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(mtime: u64, version: &str, by: &str) -> SetRecord {
        SetRecord {
            objects: Vec::new(),
            version: version.into(),
            source_mtime_unix_ms: mtime,
            published_by: by.into(),
            published_unix: 0,
        }
    }

    #[test]
    fn only_a_newer_directory_overwrites_the_shared_set() {
        assert!(should_publish(5, "a", "r1", None));
        assert!(!should_publish(9, "a", "r1", Some(&rec(5, "a", "r2"))), "same set: nothing to write");
        assert!(should_publish(9, "b", "r1", Some(&rec(5, "a", "r2"))));
        assert!(!should_publish(4, "b", "r3", Some(&rec(5, "a", "r2"))), "an older directory never overwrites");
        assert!(should_publish(5, "b", "r3", Some(&rec(5, "a", "r2"))), "tie: the higher id wins");
        assert!(!should_publish(5, "b", "r1", Some(&rec(5, "a", "r2"))));
    }
}
