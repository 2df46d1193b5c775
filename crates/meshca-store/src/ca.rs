//! The CA's typed records in the shared store: the self-signed root (its key
//! sealed) and the registry of replicas.

use crate::error::{Result, StoreError};
use crate::handles::Registration;
use crate::seal::StoreKey;
use crate::{Created, Entry, Store, Swap};
use meshca_pki::authority::{new_root, AuthorityOptions};
use meshca_pki::KeyKind;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Store key of the self-signed root.
pub const ROOT_KEY: &str = "ca/root";
/// Prefix of the replica registry.
pub const REPLICAS: &str = "replicas/";

/// The record under [`ROOT_KEY`]: the certificate in clear, the key sealed.
#[derive(Serialize, Deserialize)]
struct RootRecord {
    cert_pem: String,
    key_sealed: String,
    created_by: String,
    created_unix: u64,
}

/// A root a replica offers when the store holds none yet.
pub struct RootCandidate {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// The root every replica uses.
pub struct SharedRoot {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    /// Replica that created it.
    pub created_by: String,
    /// True if this call's candidate became the root.
    pub created_here: bool,
    /// `mod_revision` of the record (for a later compare-and-swap, e.g. renewal).
    pub revision: i64,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for SharedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRoot")
            .field("fingerprint", &self.fingerprint)
            .field("created_by", &self.created_by)
            .field("created_here", &self.created_here)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// SHA-256 (hex) of the first certificate in `pem`.
pub fn fingerprint(pem: &str) -> Result<String> {
    let certs = meshca_pki::pem::parse_certs(pem.as_bytes())
        .map_err(|e| StoreError::Record { key: ROOT_KEY.into(), problem: format!("certificate: {e}") })?;
    let first = certs
        .first()
        .ok_or_else(|| StoreError::Record { key: ROOT_KEY.into(), problem: "holds no certificate".into() })?;
    Ok(hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, first.as_ref()).as_ref()))
}

/// A new self-signed root with the subject meshca uses for a single replica
/// (`CN=meshca self-signed root, O=<organization>`).
pub fn self_signed_candidate(
    organization: &str,
    key: KeyKind,
    ttl: Duration,
    now: SystemTime,
) -> Result<RootCandidate> {
    let root = new_root(
        &AuthorityOptions {
            common_name: "meshca self-signed root".into(),
            organization: organization.to_string(),
            locality: None,
            ttl,
            key,
            path_len: None,
        },
        now,
    )
    .map_err(|e| StoreError::Config(format!("could not create a self-signed root: {e}")))?;
    Ok(RootCandidate { cert_pem: meshca_pki::pem::cert_to_pem(&root.cert), key_pem: root.key.to_pkcs8_pem() })
}

fn decode(key: &StoreKey, value: &[u8], revision: i64, created_here: bool) -> Result<SharedRoot> {
    let rec: RootRecord = serde_json::from_slice(value).map_err(|e| StoreError::Record {
        key: ROOT_KEY.into(),
        problem: format!("is not a meshca root record: {e}"),
    })?;
    let key_pem = key.open(ROOT_KEY, &rec.key_sealed)?;
    let key_pem =
        Zeroizing::new(String::from_utf8(key_pem.to_vec()).map_err(|_| StoreError::Record {
            key: ROOT_KEY.into(),
            problem: "the sealed key is not PEM text".into(),
        })?);
    Ok(SharedRoot {
        fingerprint: fingerprint(&rec.cert_pem)?,
        cert_pem: rec.cert_pem,
        key_pem,
        created_by: rec.created_by,
        created_here,
        revision,
    })
}

/// Decode the root record `entry` (read or watched under [`ROOT_KEY`]).
pub fn decode_root(key: &StoreKey, entry: &Entry) -> Result<SharedRoot> {
    decode(key, &entry.value, entry.mod_revision, false)
}

/// The shared root in the store, if there is one.
pub async fn read_root<S: Store>(store: &S, key: &StoreKey) -> Result<Option<SharedRoot>> {
    store.get(ROOT_KEY).await?.map(|e| decode_root(key, &e)).transpose()
}

/// Replace the shared root by `renewed` (the same key re-signed), only if the
/// record is still at `revision` (compare on `mod_revision`): a replica that
/// renewed from a stale read loses and adopts the winner's root.
pub async fn renew_root<S: Store>(
    store: &S,
    key: &StoreKey,
    replica_id: &str,
    revision: i64,
    renewed: &RootCandidate,
) -> Result<Swap> {
    let rec = RootRecord {
        cert_pem: renewed.cert_pem.clone(),
        key_sealed: key.seal(ROOT_KEY, renewed.key_pem.as_bytes())?,
        created_by: replica_id.to_string(),
        created_unix: now_unix(),
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| StoreError::Config(format!("encoding the root record: {e}")))?;
    store.compare_and_swap(ROOT_KEY, revision, bytes).await
}

/// The shared root: adopt the one in the store, or offer `make()`'s candidate
/// with a create-if-absent; if another replica won the race, adopt its root
/// and discard the candidate (its key is zeroized on drop).
pub async fn bootstrap_root<S: Store>(
    store: &S,
    key: &StoreKey,
    replica_id: &str,
    make: impl FnOnce() -> Result<RootCandidate>,
) -> Result<SharedRoot> {
    if let Some(e) = store.get(ROOT_KEY).await? {
        return decode(key, &e.value, e.mod_revision, false);
    }
    let candidate = make()?;
    let rec = RootRecord {
        cert_pem: candidate.cert_pem.clone(),
        key_sealed: key.seal(ROOT_KEY, candidate.key_pem.as_bytes())?,
        created_by: replica_id.to_string(),
        created_unix: now_unix(),
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| StoreError::Config(format!("encoding the root record: {e}")))?;
    match store.create(ROOT_KEY, bytes).await? {
        Created::Won { revision } => {
            tracing::info!(store = %store.describe(), "stored a new self-signed root");
            Ok(SharedRoot {
                fingerprint: fingerprint(&candidate.cert_pem)?,
                cert_pem: candidate.cert_pem,
                key_pem: candidate.key_pem,
                created_by: replica_id.to_string(),
                created_here: true,
                revision,
            })
        }
        Created::Exists(e) => {
            tracing::info!(store = %store.describe(), "another replica stored the root first; adopting it");
            decode(key, &e.value, e.mod_revision, false)
        }
    }
}

/// Put the shared root where the single-replica code path reads it
/// (`<data_dir>/ca/root-cert.pem`, `root-key.pem` with mode 0600). A
/// different root already there is an error: replacing it silently would cut
/// off the workloads that trust it.
pub fn write_root_files(data_dir: &Path, root: &SharedRoot) -> Result<()> {
    let dir = data_dir.join("ca");
    let cert = dir.join("root-cert.pem");
    let keyp = dir.join("root-key.pem");
    let io = |p: &Path, e: std::io::Error| StoreError::Io { path: p.to_path_buf(), problem: e.to_string() };
    if cert.exists() {
        let existing = std::fs::read_to_string(&cert).map_err(|e| io(&cert, e))?;
        let fp = fingerprint(&existing).unwrap_or_else(|_| "unreadable".into());
        // A renewal re-signs the same key: the files then follow the store.
        let same_key = std::fs::read(&keyp).is_ok_and(|k| k == root.key_pem.as_bytes());
        if fp != root.fingerprint && !same_key {
            return Err(StoreError::Config(format!(
                "{} holds a root (sha256 {fp}) that differs from the store's (sha256 {}): move the data directory's \
                 ca/ away to adopt the shared root, or seed the store from this one",
                cert.display(),
                root.fingerprint
            )));
        }
    }
    meshca_files::ensure_private_dir(&dir).map_err(|e| io(&dir, e))?;
    meshca_files::write_secret(&keyp, root.key_pem.as_bytes()).map_err(|e| io(&keyp, e))?;
    meshca_files::write_public(&cert, root.cert_pem.as_bytes()).map_err(|e| io(&cert, e))?;
    Ok(())
}

/// A replica's entry in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub id: String,
    /// Where it serves (gRPC address).
    pub address: String,
    pub version: String,
    /// SHA-256 fingerprints of the certificates it signs with (signer and roots).
    pub signer_fingerprints: Vec<String>,
    /// Unix seconds of the last update.
    pub updated: u64,
}

impl ReplicaRecord {
    pub fn new(id: &str, address: &str, version: &str, signer_fingerprints: Vec<String>) -> Self {
        Self {
            id: id.into(),
            address: address.into(),
            version: version.into(),
            signer_fingerprints,
            updated: now_unix(),
        }
    }
}

fn replica_key(id: &str) -> Result<String> {
    let key = format!("{REPLICAS}{id}");
    crate::check_key(&key)?;
    Ok(key)
}

/// Register a replica; the entry lives while the handle keeps its lease (TTL) alive.
pub async fn register_replica<S: Store>(store: &S, rec: &ReplicaRecord, ttl: Duration) -> Result<Registration> {
    let key = replica_key(&rec.id)?;
    let value = serde_json::to_vec(rec).map_err(|e| StoreError::Config(format!("encoding {key}: {e}")))?;
    store.register(&key, value, ttl).await
}

/// Every registered replica (entries that do not parse are reported in the log and skipped).
pub async fn list_replicas<S: Store>(store: &S) -> Result<Vec<ReplicaRecord>> {
    let mut out = Vec::new();
    for e in store.list(REPLICAS).await? {
        match serde_json::from_slice::<ReplicaRecord>(&e.value) {
            Ok(r) => out.push(r),
            Err(err) => tracing::warn!(key = %e.key, error = %err, "unreadable replica record"),
        }
    }
    Ok(out)
}
