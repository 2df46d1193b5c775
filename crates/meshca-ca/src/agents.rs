//! The meshca agents connected to the change stream, and the trust bundle
//! each one reports holding. A root switch waits on this (see `rotation`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Most agents one CA process tracks; streams beyond it are refused.
pub const MAX_AGENTS: usize = 50_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentEntry {
    pub identity: String,
    pub peer: String,
    pub bundle_sha256: String,
    pub connected_at: String,
}

#[derive(Default)]
pub struct AgentRegistry {
    agents: Mutex<HashMap<u64, AgentEntry>>,
    next: AtomicU64,
    /// Woken on every report, so activation does not wait for a timer.
    pub reported: tokio::sync::Notify,
}

/// Removes the agent when its stream ends.
pub struct Registration {
    reg: Arc<AgentRegistry>,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.reg.lock().remove(&self.id);
        self.reg.reported.notify_waiters();
    }
}

impl AgentRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AgentEntry>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connected agent; `None` when the registry is full.
    pub fn register(&self, identity: String, peer: String, now: SystemTime) -> Option<u64> {
        let mut a = self.lock();
        if a.len() >= MAX_AGENTS {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connected_at = meshca_pki::material::fmt_time(now);
        a.insert(id, AgentEntry { identity, peer, bundle_sha256: String::new(), connected_at });
        Some(id)
    }

    pub fn guard(self: &Arc<Self>, id: u64) -> Registration {
        Registration { reg: self.clone(), id }
    }

    /// Record the bundle an agent reports holding.
    pub fn report(&self, id: u64, bundle_sha256: &str) {
        // A SHA-256 in hex is 64 characters; anything else is not a bundle hash.
        let v: String = bundle_sha256.chars().take(64).filter(char::is_ascii_hexdigit).collect();
        if let Some(e) = self.lock().get_mut(&id) {
            e.bundle_sha256 = v;
        }
        self.reported.notify_waiters();
    }

    /// At least one agent is connected and every connected agent holds `bundle_sha256`.
    pub fn all_confirmed(&self, bundle_sha256: &str) -> bool {
        let a = self.lock();
        !a.is_empty() && a.values().all(|e| e.bundle_sha256 == bundle_sha256)
    }

    /// (connected, holding `bundle_sha256`).
    pub fn counts(&self, bundle_sha256: &str) -> (usize, usize) {
        let a = self.lock();
        (a.len(), a.values().filter(|e| e.bundle_sha256 == bundle_sha256).count())
    }

    pub fn list(&self) -> Vec<AgentEntry> {
        let mut v: Vec<AgentEntry> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity).then(a.peer.cmp(&b.peer)));
        v.truncate(1000);
        v
    }
}
