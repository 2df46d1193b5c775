//! The local token issuer's key shared through the store (every mode: the
//! local issuer is always trusted): adopted or created before the server
//! starts and written into the data directory (`token/token-key.pem`, 0600,
//! atomically), where `meshca token create` and the server's JWKS read it. A
//! token minted against any replica then verifies on all of them.

use super::StoreStatus;
use crate::tokens;
use anyhow::Context as _;
use meshca_store::issuer::bootstrap_token_key;
use meshca_store::{AnyStore, StoreError, StoreKey};
use std::path::Path;
use zeroize::Zeroizing;

/// The key already in the data directory, if it parses: offered to an empty
/// store so a single replica grows into several without changing its issuer.
fn local_key(data_dir: &Path) -> Option<Zeroizing<String>> {
    let path = tokens::key_path(data_dir);
    let text = Zeroizing::new(std::fs::read_to_string(&path).ok()?);
    tokens::parse_key(text.as_bytes(), &path.display().to_string()).ok()?;
    Some(text)
}

fn candidate(data_dir: &Path) -> meshca_store::Result<Zeroizing<String>> {
    if let Some(k) = local_key(data_dir) {
        return Ok(k);
    }
    let key = meshca_jwt::SigningKey::generate_es256()
        .map_err(|e| StoreError::Config(format!("could not create a token issuer key: {e}")))?;
    Ok(tokens::key_to_pem(&key))
}

/// Adopt or create the shared token issuer key and put it in `data_dir`.
/// A store that does not answer is tolerated when the data directory holds a
/// key (adopted earlier): tokens keep verifying with it.
pub(super) async fn prepare(
    store: &AnyStore,
    key: &StoreKey,
    replica_id: &str,
    data_dir: &Path,
    status: &StoreStatus,
) -> anyhow::Result<()> {
    if !status.healthy() && local_key(data_dir).is_some() {
        // The root bootstrap just found the store down: do not wait for it twice.
        tracing::warn!("store unavailable; starting with the token issuer key adopted earlier");
        return Ok(());
    }
    match bootstrap_token_key(store, key, replica_id, || candidate(data_dir)).await {
        Ok(shared) => {
            let origin = format!("store value {}", meshca_store::issuer::TOKEN_KEY);
            tokens::parse_key(shared.key_pem.as_bytes(), &origin)?;
            let local = local_key(data_dir);
            if local.as_deref() != Some(&*shared.key_pem) {
                if local.is_some() {
                    tracing::warn!(
                        file = %tokens::key_path(data_dir).display(),
                        "the data directory's token issuer key differs from the store's; replacing it (tokens \
                         minted with the old key stop verifying)"
                    );
                }
                tokens::write_key_file(data_dir, &shared.key_pem)?;
            }
            tracing::info!(
                replica = %replica_id,
                stored_here = shared.created_here,
                created_by = %shared.created_by,
                "using the shared local token issuer key"
            );
            Ok(())
        }
        Err(e @ (StoreError::Timeout { .. } | StoreError::Backend { .. })) if local_key(data_dir).is_some() => {
            tracing::warn!(error = %e, "store unavailable; starting with the token issuer key adopted earlier");
            status.set_unhealthy(e.to_string());
            Ok(())
        }
        Err(e) => Err(e).context("shared local token issuer key"),
    }
}
