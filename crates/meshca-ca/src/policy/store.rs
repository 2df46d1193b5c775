//! The served policy set: the last valid load of `--policy-dir`, the JWKS
//! fetched for it, the last refusal, and what each caller may see of it.
//!
//! Every change is published as a new [`Snapshot`] on a watch channel; each
//! agent stream computes its own view ([`PolicyState::update_for`]) and sends
//! it when that view's version (or the refusal) differs from what it sent.

use super::agents::AgentTable;
use super::load::{self, JwksKey, ServedObject};
use crate::clock::SharedClock;
use meshca_pki::inspect::sha256_hex;
use meshca_pki::material::fmt_time;
use meshca_proto::{PolicyObject, PolicyUpdate};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Hex characters of SHA-256 kept in a version.
const VERSION_LEN: usize = 16;

/// The result of the last fetch of one JWKS key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksEntry {
    /// The JWKS document, or why it could not be fetched.
    pub result: Result<String, String>,
    pub fetched_at: String,
}

/// One published state of the policy set.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// False until a valid set was loaded once: nothing is served before.
    pub loaded: bool,
    pub objects: Arc<Vec<ServedObject>>,
    pub loaded_at: String,
    /// The last refused load ("" when the served set is the latest on disk).
    pub refused: String,
    pub refused_at: String,
    pub jwks: BTreeMap<String, JwksEntry>,
}

impl Snapshot {
    pub fn needed_keys(&self) -> BTreeSet<JwksKey> {
        load::needed_keys(self.objects.iter())
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub refused_total: AtomicU64,
    pub reloads_total: AtomicU64,
    pub jwks_fetches_total: AtomicU64,
    pub jwks_failures_total: AtomicU64,
    pub updates_sent_total: AtomicU64,
}

pub struct PolicyState {
    pub dir: PathBuf,
    pub trust_domain: String,
    pub root_namespace: String,
    pub clock: SharedClock,
    pub counters: Counters,
    pub agents: Arc<AgentTable>,
    snap: tokio::sync::watch::Sender<Arc<Snapshot>>,
    /// Serializes read-modify-publish of the snapshot.
    write: Mutex<()>,
}

/// `version` over what `update` carries apart from the version and the refusal.
fn version_of(u: &PolicyUpdate) -> String {
    let objects: Vec<[&str; 5]> =
        u.objects.iter().map(|o| [&o.source, &o.kind, &o.namespace, &o.name, &o.json] as [&str; 5]).collect();
    let jwks: BTreeMap<_, _> = u.jwks.iter().collect();
    let errors: BTreeMap<_, _> = u.jwks_errors.iter().collect();
    let canon = serde_json::json!([u.trust_domain, u.root_namespace, objects, jwks, errors]).to_string();
    sha256_hex(canon.as_bytes())[..VERSION_LEN].to_string()
}

/// An object as sent to agents.
fn wire(o: &ServedObject) -> PolicyObject {
    PolicyObject {
        source: o.source.clone(),
        kind: o.kind.clone(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        json: o.json.clone(),
    }
}

impl PolicyState {
    pub fn new(dir: PathBuf, trust_domain: String, root_namespace: String, clock: SharedClock) -> Self {
        let (snap, _) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
        Self {
            dir,
            trust_domain,
            root_namespace,
            clock,
            counters: Counters::default(),
            agents: Arc::default(),
            snap,
            write: Mutex::new(()),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.snap.borrow().clone()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.snap.subscribe()
    }

    pub fn now(&self) -> String {
        fmt_time(self.clock.now())
    }

    /// Publish `f(current)` (under the write lock, so concurrent writers do not lose changes).
    pub fn modify(&self, f: impl FnOnce(&mut Snapshot)) {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*self.load()).clone();
        f(&mut next);
        self.snap.send_replace(Arc::new(next));
    }

    /// Does `namespace` see objects of `object_ns`?
    pub fn visible(&self, namespace: &str, object_ns: &str) -> bool {
        object_ns == namespace || object_ns == self.root_namespace
    }

    /// What a caller in `namespace` receives from `snap`: its namespace's and
    /// the root namespace's objects, and the JWKS those objects need.
    pub fn update_for(&self, snap: &Snapshot, namespace: &str) -> PolicyUpdate {
        let mine: Vec<&ServedObject> = snap.objects.iter().filter(|o| self.visible(namespace, &o.namespace)).collect();
        let mut u = PolicyUpdate {
            objects: mine.iter().copied().map(wire).collect(),
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.root_namespace.clone(),
            refused: snap.refused.clone(),
            ..Default::default()
        };
        for k in load::needed_keys(mine.into_iter()) {
            match snap.jwks.get(&k.key).map(|e| &e.result) {
                Some(Ok(doc)) => {
                    u.jwks.insert(k.key, doc.clone());
                }
                Some(Err(e)) => {
                    u.jwks_errors.insert(k.key, e.clone());
                }
                None => {
                    u.jwks_errors.insert(k.key, "not fetched yet".into());
                }
            }
        }
        u.version = version_of(&u);
        u
    }

    /// The version of the whole set (every namespace), "" before the first valid load.
    pub fn set_version(&self, snap: &Snapshot) -> String {
        if !snap.loaded {
            return String::new();
        }
        let mut u = PolicyUpdate {
            objects: snap.objects.iter().map(wire).collect(),
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.root_namespace.clone(),
            ..Default::default()
        };
        for (k, e) in &snap.jwks {
            match &e.result {
                Ok(d) => u.jwks.insert(k.clone(), d.clone()),
                Err(err) => u.jwks_errors.insert(k.clone(), err.clone()),
            };
        }
        version_of(&u)
    }

    pub fn count_sent(&self) {
        self.counters.updates_sent_total.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str) -> ServedObject {
        ServedObject {
            source: format!("{name}.yaml:1"),
            kind: "AuthorizationPolicy".into(),
            namespace: ns.into(),
            name: name.into(),
            json: "{}".into(),
            jwks_keys: Vec::new(),
        }
    }

    #[test]
    fn a_caller_sees_its_namespace_and_the_root_namespace_only() {
        let s = PolicyState::new("d".into(), "td".into(), "istio-system".into(), crate::clock::system());
        s.modify(|n| {
            n.loaded = true;
            n.objects = Arc::new(vec![obj("a", "x"), obj("b", "y"), obj("istio-system", "z")]);
        });
        let snap = s.load();
        let a = s.update_for(&snap, "a");
        let names: Vec<&str> = a.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["x", "z"]);
        let b = s.update_for(&snap, "b");
        assert_ne!(a.version, b.version);
        // A change in namespace b leaves a's view, and so its version, alone.
        s.modify(|n| n.objects = Arc::new(vec![obj("a", "x"), obj("b", "y2"), obj("istio-system", "z")]));
        assert_eq!(s.update_for(&s.load(), "a").version, a.version);
        assert_ne!(s.update_for(&s.load(), "b").version, b.version);
        assert_eq!(a.version.len(), VERSION_LEN);
    }
}
