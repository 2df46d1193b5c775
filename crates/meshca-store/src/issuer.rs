//! The local token issuer's signing key in the shared store, so a token
//! minted by `meshca token create` against any replica's data directory
//! verifies on every replica.
//!
//! The record under [`TOKEN_KEY`] is created once, with a create-if-absent
//! in one transaction (compare `create_revision == 0`), and never rewritten:
//! the key has no rotation (nor does a single replica's `token-key.pem`). The
//! private key is sealed with the store key (AES-256-GCM, bound to the record
//! name), so the raw etcd value holds no PEM. A replica that loses the race
//! adopts the winner's key and discards its own candidate (zeroized on drop).

use crate::error::{Result, StoreError};
use crate::seal::StoreKey;
use crate::{Created, Entry, Store};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Store key of the local token issuer's signing key.
pub const TOKEN_KEY: &str = "token/issuer-key";

/// The record under [`TOKEN_KEY`]: the PKCS#8 PEM key, sealed.
#[derive(Serialize, Deserialize)]
struct TokenKeyRecord {
    key_sealed: String,
    created_by: String,
    created_unix: u64,
}

/// The issuer key every replica signs and verifies local tokens with.
pub struct SharedTokenKey {
    /// PKCS#8 PEM (`PRIVATE KEY`).
    pub key_pem: Zeroizing<String>,
    /// Replica that stored it.
    pub created_by: String,
    /// True if this call's candidate became the shared key.
    pub created_here: bool,
    /// `mod_revision` of the record.
    pub revision: i64,
}

impl std::fmt::Debug for SharedTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTokenKey")
            .field("created_by", &self.created_by)
            .field("created_here", &self.created_here)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

fn decode(key: &StoreKey, e: &Entry, created_here: bool) -> Result<SharedTokenKey> {
    let rec: TokenKeyRecord = serde_json::from_slice(&e.value).map_err(|err| StoreError::Record {
        key: TOKEN_KEY.into(),
        problem: format!("is not a meshca token key record: {err}"),
    })?;
    let pem = key.open(TOKEN_KEY, &rec.key_sealed)?;
    let key_pem =
        Zeroizing::new(String::from_utf8(pem.to_vec()).map_err(|_| StoreError::Record {
            key: TOKEN_KEY.into(),
            problem: "the sealed key is not PEM text".into(),
        })?);
    Ok(SharedTokenKey { key_pem, created_by: rec.created_by, created_here, revision: e.mod_revision })
}

/// The shared token issuer key: adopt the one in the store, or offer
/// `make()`'s candidate (PKCS#8 PEM) with a create-if-absent; if another
/// replica won the race, adopt its key and discard the candidate.
pub async fn bootstrap_token_key<S: Store>(
    store: &S,
    key: &StoreKey,
    replica_id: &str,
    make: impl FnOnce() -> Result<Zeroizing<String>>,
) -> Result<SharedTokenKey> {
    if let Some(e) = store.get(TOKEN_KEY).await? {
        return decode(key, &e, false);
    }
    let candidate = make()?;
    let rec = TokenKeyRecord {
        key_sealed: key.seal(TOKEN_KEY, candidate.as_bytes())?,
        created_by: replica_id.to_string(),
        created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    };
    let bytes =
        serde_json::to_vec(&rec).map_err(|e| StoreError::Config(format!("encoding the token key record: {e}")))?;
    match store.create(TOKEN_KEY, bytes).await? {
        Created::Won { revision } => {
            tracing::info!(store = %store.describe(), "stored a new local token issuer key");
            Ok(SharedTokenKey { key_pem: candidate, created_by: replica_id.to_string(), created_here: true, revision })
        }
        Created::Exists(e) => {
            tracing::info!(store = %store.describe(), "another replica stored the token issuer key first; adopting it");
            decode(key, &e, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use std::path::Path;

    fn pem(tag: &str) -> Result<Zeroizing<String>> {
        Ok(Zeroizing::new(format!("-----BEGIN PRIVATE KEY-----\n{tag}\n-----END PRIVATE KEY-----\n")))
    }

    #[tokio::test]
    async fn first_candidate_wins_and_the_value_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let key = StoreKey::from_bytes(&[3; 32], Path::new("k")).unwrap();
        let a = bootstrap_token_key(&store, &key, "a", || pem("AAAA")).await.unwrap();
        assert!(a.created_here && a.key_pem.contains("AAAA"));
        let b = bootstrap_token_key(&store, &key, "b", || pem("BBBB")).await.unwrap();
        assert!(!b.created_here && b.key_pem.contains("AAAA") && b.created_by == "a");
        let raw = store.get(TOKEN_KEY).await.unwrap().unwrap().value;
        let raw = String::from_utf8_lossy(&raw);
        assert!(!raw.contains("PRIVATE KEY") && !raw.contains("AAAA"), "{raw}");
        assert!(!format!("{a:?}").contains("AAAA"));
        let other = StoreKey::from_bytes(&[4; 32], Path::new("other.key")).unwrap();
        let e = bootstrap_token_key(&store, &other, "c", || pem("CCCC")).await.unwrap_err().to_string();
        assert!(e.contains("was sealed with store key") && e.contains("other.key"), "{e}");
    }
}
