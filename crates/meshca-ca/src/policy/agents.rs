//! The agents connected to policy delivery and the last report of each:
//! what it received, what its Envoy runs, per-resource ACK/NACK. Bounded:
//! at most [`MAX_AGENTS`] streams, and every reported string and list capped.

use crate::sanitize;
use meshca_proto::PolicyReport;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most agents one CA process tracks; streams beyond it are refused.
pub const MAX_AGENTS: usize = crate::agents::MAX_AGENTS;
/// Largest PolicyReport accepted (gRPC decoding limit).
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Labels and resources kept per report.
const MAX_LABELS: usize = 64;
const MAX_RESOURCES: usize = 128;
/// Agents listed in `/status`.
const MAX_LISTED: usize = 1000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ResourceEntry {
    pub name: String,
    pub version: String,
    pub state: String,
    pub error: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentEntry {
    pub identity: String,
    pub namespace: String,
    pub peer: String,
    pub connected_at: String,
    pub reported_at: String,
    pub labels: BTreeMap<String, String>,
    /// The latest version sent to this agent (what it should run).
    pub version_sent: String,
    pub version_received: String,
    pub version_applied: String,
    /// `kind/namespace/name` of the objects in the latest update sent.
    pub objects: Vec<String>,
    pub resources: Vec<ResourceEntry>,
    pub error: String,
}

impl AgentEntry {
    /// `nacked` when Envoy refused a resource (or the agent reports an error),
    /// `current` when Envoy runs the latest version sent, else `stale`.
    pub fn state(&self) -> &'static str {
        if !self.error.is_empty() || self.resources.iter().any(|r| r.state == "nacked") {
            "nacked"
        } else if !self.version_sent.is_empty() && self.version_applied == self.version_sent {
            "current"
        } else {
            "stale"
        }
    }
}

#[derive(Default)]
pub struct AgentTable {
    agents: Mutex<HashMap<u64, AgentEntry>>,
    next: AtomicU64,
}

/// Removes the agent when its stream ends.
pub struct Registration {
    table: Arc<AgentTable>,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

fn short(s: &str) -> String {
    sanitize::clean(s, sanitize::SHORT)
}

impl AgentTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AgentEntry>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connected agent; `None` when the table is full.
    pub fn register(
        self: &Arc<Self>,
        identity: String,
        namespace: String,
        peer: String,
        now: String,
    ) -> Option<Registration> {
        let mut a = self.lock();
        if a.len() >= MAX_AGENTS {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        a.insert(
            id,
            AgentEntry {
                identity,
                namespace,
                peer,
                connected_at: now,
                reported_at: String::new(),
                labels: BTreeMap::new(),
                version_sent: String::new(),
                version_received: String::new(),
                version_applied: String::new(),
                objects: Vec::new(),
                resources: Vec::new(),
                error: String::new(),
            },
        );
        Some(Registration { table: self.clone(), id })
    }

    /// Record the update sent to agent `id`.
    pub fn sent(&self, id: u64, version: &str, objects: Vec<String>) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.version_sent = version.to_string();
            e.objects = objects;
        }
    }

    /// Record a report of agent `id` (strings sanitized and capped).
    pub fn report(&self, id: u64, r: &PolicyReport, now: String) {
        let labels: BTreeMap<String, String> =
            r.labels.iter().take(MAX_LABELS).map(|(k, v)| (short(k), short(v))).collect();
        let resources = r
            .resources
            .iter()
            .take(MAX_RESOURCES)
            .map(|s| ResourceEntry {
                name: short(&s.name),
                version: short(&s.version),
                state: short(&s.state),
                error: sanitize::clean(&s.error, sanitize::LONG),
            })
            .collect();
        if let Some(e) = self.lock().get_mut(&id) {
            e.reported_at = now;
            e.labels = labels;
            e.version_received = short(&r.version_received);
            e.version_applied = short(&r.version_applied);
            e.resources = resources;
            e.error = sanitize::clean(&r.error, sanitize::LONG);
        }
    }

    /// The connected agents, sorted, at most [`MAX_LISTED`].
    pub fn list(&self) -> Vec<AgentEntry> {
        let mut v: Vec<AgentEntry> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity).then(a.peer.cmp(&b.peer)));
        v.truncate(MAX_LISTED);
        v
    }

    /// Connected agents per state: (current, stale, nacked).
    pub fn counts(&self) -> (usize, usize, usize) {
        let a = self.lock();
        let n = |s: &str| a.values().filter(|e| e.state() == s).count();
        (n("current"), n("stale"), n("nacked"))
    }
}
