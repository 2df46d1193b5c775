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
//! `local_differs` in `/status`. Losing the store keeps the last set taken;
//! the last valid local set is offered again on every read of the record, so
//! a set changed while the store was away is published once it returns.
//!
//! A record that is not a valid set (not JSON, or its `version` does not
//! match its objects) is reported as `store_error` and the last set taken
//! stays served; a replica holding a valid local set replaces it (compare on
//! the `mod_revision` it read), logged at warn with the reason.

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
/// Attempts at publishing before giving up until the next read.
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
    /// The record's full key in the store (for an operator's `etcdctl get`).
    pub record_key: String,
    pub from_store: bool,
    pub version: String,
    pub published_by: String,
    pub local_version: String,
    pub local_differs: bool,
    pub message: String,
    pub store_error: String,
    #[serde(skip)]
    pub mod_revision: i64,
    /// `source_mtime_unix_ms` of the record taken.
    #[serde(skip)]
    pub record_mtime: u64,
}

/// The last valid set of this replica's directory.
#[derive(Debug, Clone)]
struct Local {
    objects: Vec<ServedObject>,
    version: String,
    mtime: u64,
}

/// The record as read.
enum Current {
    Absent,
    Valid(Entry, SetRecord),
    /// Present but not a valid set: the reason.
    Corrupt(Entry, String),
}

/// The store side of the policy set of one replica.
pub struct SharedSet {
    pub store: AnyStore,
    pub replica_id: String,
    pub info: Mutex<SharedInfo>,
    local: Mutex<Option<Local>>,
}

/// Is replica `me`'s directory (newest `mtime`) newer than the one `by` published from `rec_mtime`?
/// A tie goes to the higher replica id.
fn is_newer(mtime: u64, me: &str, rec_mtime: u64, by: &str) -> bool {
    mtime > rec_mtime || (mtime == rec_mtime && me > by)
}

/// Should a replica with (`mtime`, `version`) overwrite `rec`?
pub fn should_publish(mtime: u64, version: &str, me: &str, rec: Option<&SetRecord>) -> bool {
    match rec {
        None => true,
        Some(r) if r.version == version => false,
        Some(r) => is_newer(mtime, me, r.source_mtime_unix_ms, &r.published_by),
    }
}

/// The record in `value`, or why it is not a valid policy set record.
pub fn decode(value: &[u8]) -> Result<SetRecord, String> {
    let bad = |why: String| format!("{SET_KEY} in the store is not a valid policy set record: {why}");
    let rec: SetRecord = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
    let digest = objects_version(&rec.objects);
    if rec.version != digest {
        return Err(bad(format!("version {:?} does not match its objects (digest {digest})", rec.version)));
    }
    if let Some(o) = rec.objects.iter().find(|o| serde_json::from_str::<serde_json::Value>(&o.json).is_err()) {
        return Err(bad(format!("object {}/{} ({}) is not JSON", o.namespace, o.name, o.source)));
    }
    Ok(rec)
}

async fn timed<T, E: std::fmt::Display>(
    store: &AnyStore,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Err(_) => Err(format!("store {}: no answer within {CALL_TIMEOUT:?}", store.describe())),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

impl SharedSet {
    /// `key_prefix`: the store's prefix for this trust domain, shown with the record's key.
    pub fn new(store: AnyStore, replica_id: String, key_prefix: &str) -> Self {
        let info = SharedInfo { record_key: format!("{key_prefix}{SET_KEY}"), ..Default::default() };
        Self { store, replica_id, info: Mutex::new(info), local: Mutex::default() }
    }

    pub fn info(&self) -> SharedInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_info(&self, f: impl FnOnce(&mut SharedInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn local(&self) -> Option<Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn read(&self) -> Result<Current, String> {
        Ok(match timed(&self.store, self.store.get(SET_KEY)).await? {
            None => Current::Absent,
            Some(e) => match decode(&e.value) {
                Ok(r) => Current::Valid(e, r),
                Err(why) => Current::Corrupt(e, why),
            },
        })
    }

    /// Remember this replica's valid local set: every later [`SharedSet::fetch`]
    /// offers it (writes it over the record when the rule says so).
    pub fn offer(&self, objects: &[ServedObject], mtime: u64) {
        let version = objects_version(objects);
        self.set_info(|i| i.local_version = version.clone());
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Local { objects: objects.to_vec(), version, mtime });
    }

    /// The directory was refused: this replica no longer has a local set to
    /// offer (its last valid one is not what the operator has now), so it
    /// neither publishes nor repairs the record with it until the directory is valid again.
    pub fn forget_local(&self) {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.set_info(|i| {
            i.local_version.clear();
            i.local_differs = false;
        });
    }

    /// Read the record; write the local set over it when the rule says so or
    /// when it is corrupt. The record as last read.
    async fn reconcile(&self) -> Result<Current, String> {
        for _ in 0..ATTEMPTS {
            let current = self.read().await?;
            let Some(local) = self.local() else { return Ok(current) };
            let write = match &current {
                Current::Absent => true,
                Current::Valid(_, r) => should_publish(local.mtime, &local.version, &self.replica_id, Some(r)),
                Current::Corrupt(_, why) => {
                    tracing::warn!(reason = %why, version = %local.version, "the shared policy set record is corrupt; replacing it with this replica's valid set");
                    self.set_info(|i| i.store_error = why.clone());
                    true
                }
            };
            if !write {
                return Ok(current);
            }
            let rec = SetRecord {
                objects: local.objects.clone(),
                version: local.version.clone(),
                source_mtime_unix_ms: local.mtime,
                published_by: self.replica_id.clone(),
                published_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            };
            let value = serde_json::to_vec(&rec).map_err(|e| format!("encoding the policy set record: {e}"))?;
            let won = match &current {
                Current::Absent => {
                    matches!(timed(&self.store, self.store.create(SET_KEY, value)).await?, Created::Won { .. })
                }
                Current::Valid(e, _) | Current::Corrupt(e, _) => matches!(
                    timed(&self.store, self.store.compare_and_swap(SET_KEY, e.mod_revision, value)).await?,
                    Swap::Swapped { .. }
                ),
            };
            if won {
                let what = if matches!(current, Current::Corrupt(..)) { "replaced the corrupt" } else { "published" };
                tracing::info!(version = %local.version, objects = local.objects.len(), "{what} shared policy set with the local one");
            }
        }
        self.read().await
    }

    /// The store's set when it changed since the last call (`None`: unchanged,
    /// absent, unreadable or corrupt). Offers the local set first.
    pub async fn fetch(&self) -> Option<SetRecord> {
        match self.reconcile().await {
            Err(e) => {
                if self.info().store_error != e {
                    tracing::warn!(error = %e, "could not read the shared policy set; the last set taken stays served");
                }
                self.set_info(|i| i.store_error = e);
                None
            }
            Ok(Current::Absent) => {
                self.set_info(|i| i.store_error.clear());
                None
            }
            Ok(Current::Corrupt(_, why)) => {
                if self.info().store_error != why {
                    tracing::warn!(reason = %why, "the shared policy set record is corrupt and this replica has no valid set to replace it; the last set taken stays served");
                }
                self.set_info(|i| i.store_error = why);
                None
            }
            Ok(Current::Valid(e, rec)) => {
                let changed = e.mod_revision != self.info().mod_revision;
                self.set_info(|i| {
                    i.store_error.clear();
                    i.from_store = true;
                    i.mod_revision = e.mod_revision;
                    i.record_mtime = rec.source_mtime_unix_ms;
                    i.version = rec.version.clone();
                    i.published_by = rec.published_by.clone();
                });
                changed.then_some(rec)
            }
        }
    }

    /// Refresh `local_differs` and its message after a load or a fetch:
    /// the local set differs from the shared one and is older (not published).
    pub fn compare_local(&self) {
        let local = self.local();
        self.set_info(|i| {
            i.local_differs = match &local {
                Some(l) if i.from_store && l.version != i.version => {
                    !is_newer(l.mtime, &self.replica_id, i.record_mtime, &i.published_by)
                }
                _ => false,
            };
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

    #[test]
    fn a_record_that_is_not_a_valid_set_is_refused_with_the_reason() {
        let obj = ServedObject {
            source: "a.yaml:1".into(),
            kind: "AuthorizationPolicy".into(),
            namespace: "a".into(),
            name: "x".into(),
            json: "{}".into(),
            jwks_keys: Vec::new(),
        };
        let mut good = rec(1, "", "r0");
        good.objects = vec![obj];
        good.version = objects_version(&good.objects);
        let raw = serde_json::to_vec(&good).unwrap();
        assert_eq!(decode(&raw).unwrap().version, good.version);

        let e = decode(b"garbage{").unwrap_err();
        assert!(e.contains("policy/set") && e.contains("not a valid policy set record"), "{e}");
        let mut forged = good.clone();
        forged.version = "0000000000000000".into();
        let e = decode(&serde_json::to_vec(&forged).unwrap()).unwrap_err();
        assert!(e.contains("does not match its objects"), "{e}");
        let mut broken = good.clone();
        broken.objects[0].json = "{not json".into();
        broken.version = objects_version(&broken.objects);
        let e = decode(&serde_json::to_vec(&broken).unwrap()).unwrap_err();
        assert!(e.contains("a/x (a.yaml:1) is not JSON"), "{e}");
    }
}
