//! Install a changed shared root (a renewal written by any replica) through
//! the one door new material goes through, `swap::Swapper::offer`: the new
//! root is published in the bundle first and its signer activated when agents
//! hold it or after the propagation delay.

use super::monitor::Shared;
use crate::active::SourceKind;
use meshca_pki::material::Part;
use meshca_pki::{CaMaterial, CertDer, MaterialInput};
use meshca_store::ca::{decode_root, write_root_files, SharedRoot, ROOT_KEY};
use meshca_store::{Entry, Store, WatchEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The material of `root`: it signs, and the bundle keeps the roots served
/// now (still valid, other than `root`) so certificates they issued keep verifying.
fn material_for(sh: &Shared, root: &SharedRoot, now: SystemTime) -> Result<CaMaterial, String> {
    let new: Vec<CertDer> = meshca_pki::pem::parse_certs(root.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let now_unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut roots = new.clone();
    for r in sh.rt.active.load().material.roots() {
        let valid = meshca_pki::inspect::cert_info(r).is_ok_and(|i| i.not_after_unix > now_unix);
        if valid && !roots.contains(r) {
            roots.push(r.clone());
        }
    }
    let roots_pem = meshca_pki::pem::certs_to_pem(&roots);
    let input = MaterialInput {
        cert: Part { name: "store ca/root (certificate)", pem: root.cert_pem.as_bytes() },
        key: Part { name: "store ca/root (key)", pem: root.key_pem.as_bytes() },
        chain: None,
        roots: Part { name: "store ca/root (bundle)", pem: roots_pem.as_bytes() },
    };
    CaMaterial::from_input(&input, now).map_err(|e| e.to_string())
}

/// Install the root record `e` if it is newer than the one installed here.
pub(super) fn install_entry(sh: &Shared, e: &Entry) {
    if e.key != ROOT_KEY || sh.root_revision.fetch_max(e.mod_revision, Ordering::Relaxed) >= e.mod_revision {
        return;
    }
    let root = match decode_root(&sh.key, e) {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(error = %err, "the shared root in the store cannot be used; keeping the current material");
            return;
        }
    };
    if sh.rt.active.load().source != SourceKind::SelfSigned {
        return;
    }
    let now = sh.rt.clock.now();
    let material = match material_for(sh, &root, now) {
        Ok(m) => m,
        Err(err) => {
            sh.rt.swapper.refuse(format!("the shared root in the store (revision {}): {err}", e.mod_revision));
            return;
        }
    };
    // The data directory follows, so a restart without the store serves this root.
    if let Err(err) = write_root_files(&sh.rt.data_dir, &root) {
        tracing::error!(error = %err, "could not write the shared root into the data directory");
    }
    let outcome = sh.rt.swapper.offer(material, SourceKind::SelfSigned, sh.rt.data_dir.join("ca"), "store ca/root");
    tracing::info!(
        revision = e.mod_revision,
        root_sha256 = %root.fingerprint,
        written_by = %root.created_by,
        outcome = ?outcome,
        "installed the shared root from the store"
    );
}

/// Watch `ca/` and install every new root record at once.
pub(super) fn spawn_watch(sh: Arc<Shared>) {
    tokio::spawn(async move {
        loop {
            match sh.store.watch("ca/", sh.root_revision.load(Ordering::Relaxed)).await {
                Ok(mut w) => {
                    while let Some(ev) = w.next().await {
                        if let WatchEvent::Put(e) = ev {
                            install_entry(&sh, &e);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot watch the store yet; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}
