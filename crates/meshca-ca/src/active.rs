//! The active CA: one immutable snapshot of validated material behind an
//! atomic swap. Requests load the snapshot once and use it throughout, so a
//! request never mixes a new key with an old chain.

use arc_swap::ArcSwap;
use meshca_pki::CaMaterial;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where the active material came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Plugged,
    SelfSigned,
    /// Vault/OpenBao, either mode.
    Vault,
}

/// One generation of CA material.
pub struct Snapshot {
    pub material: CaMaterial,
    pub source: SourceKind,
    pub directory: PathBuf,
    pub loaded_at: SystemTime,
    pub generation: u64,
}

/// Outcome of the most recent reload attempt, for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadState {
    pub last_reload: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

pub struct ActiveCa {
    current: ArcSwap<Snapshot>,
    /// Roots being published ahead of their signer, and the agents that confirm them.
    pub staging: crate::rotation::Staging,
    reload: Mutex<ReloadState>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl ActiveCa {
    pub fn new(material: CaMaterial, source: SourceKind, directory: PathBuf, now: SystemTime) -> Self {
        let staging = crate::rotation::Staging::new(material.roots());
        let snap = Snapshot { material, source, directory, loaded_at: now, generation: 1 };
        let (changed, _) = tokio::sync::watch::channel(1);
        Self {
            current: ArcSwap::from_pointee(snap),
            staging,
            reload: Mutex::new(ReloadState {
                last_reload: Some(meshca_pki::material::fmt_time(now)),
                ..Default::default()
            }),
            changed,
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swap in new, already validated material.
    pub fn replace(
        &self,
        material: CaMaterial,
        source: SourceKind,
        directory: PathBuf,
        now: SystemTime,
    ) -> Arc<Snapshot> {
        let generation = self.current.load().generation + 1;
        self.staging.served(material.roots(), now);
        let snap = Arc::new(Snapshot { material, source, directory, loaded_at: now, generation });
        self.current.store(snap.clone());
        {
            let mut r = self.reload.lock().unwrap_or_else(|p| p.into_inner());
            r.last_reload = Some(meshca_pki::material::fmt_time(now));
            r.last_error = None;
            r.last_error_at = None;
        }
        self.changed.send_replace(generation);
        snap
    }

    /// Record a refused reload; the current material stays active.
    pub fn reload_failed(&self, error: String, now: SystemTime) {
        let mut r = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        r.last_error = Some(error);
        r.last_error_at = Some(meshca_pki::material::fmt_time(now));
    }

    /// Clear a previous error: the source answered again with unchanged material.
    pub fn reload_ok(&self, now: SystemTime) {
        let mut r = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        r.last_reload = Some(meshca_pki::material::fmt_time(now));
        r.last_error = None;
        r.last_error_at = None;
    }

    pub fn reload_state(&self) -> ReloadState {
        self.reload.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notified with the generation number whenever material is swapped.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
