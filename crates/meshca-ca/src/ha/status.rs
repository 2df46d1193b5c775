//! What a replica knows about the shared store: its health, the registered
//! replicas and whether their material agrees, and the root renewal state.
//! Shown under `store` in `/status`, as `meshca_store_*` series in `/metrics`.

use meshca_pki::material::fmt_time;
use meshca_store::ca::ReplicaRecord;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[derive(Default)]
struct Inner {
    healthy: bool,
    degraded_since: Option<SystemTime>,
    last_error: Option<String>,
    replicas: Vec<ReplicaRecord>,
    mine: Vec<String>,
    /// Replica id → since when its material differs from the majority's.
    differ_since: HashMap<String, Instant>,
    renewal_requested: bool,
    renewal_waiting: Option<String>,
    last_renewal: Option<SystemTime>,
    renewals: u64,
}

pub struct StoreStatus {
    backend: String,
    me: String,
    grace: Duration,
    inner: Mutex<Inner>,
}

fn set_of(fps: &[String]) -> BTreeSet<&str> {
    fps.iter().map(String::as_str).collect()
}

impl StoreStatus {
    pub fn new(backend: &str, me: &str, grace: Duration) -> Self {
        Self {
            backend: backend.into(),
            me: me.into(),
            grace,
            inner: Mutex::new(Inner { healthy: true, ..Default::default() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn healthy(&self) -> bool {
        self.lock().healthy
    }

    /// The store answered.
    pub fn set_healthy(&self) {
        let mut i = self.lock();
        if !i.healthy {
            let since = i.degraded_since.map(fmt_time).unwrap_or_default();
            tracing::info!(degraded_since = %since, "the store answers again");
        }
        i.healthy = true;
        i.degraded_since = None;
    }

    /// The store did not answer (or answered with an error).
    pub fn set_unhealthy(&self, error: String) {
        let mut i = self.lock();
        if i.healthy {
            tracing::warn!(error = %error, "the store is unavailable: signing goes on with the material held here; \
                root bootstrap and renewal wait for it");
            i.degraded_since = Some(SystemTime::now());
        }
        i.healthy = false;
        i.last_error = Some(error);
    }

    /// Fingerprints of the material this replica signs with.
    pub fn set_mine(&self, fps: Vec<String>) {
        self.lock().mine = fps;
    }

    /// A fresh list of registered replicas.
    pub fn set_replicas(&self, replicas: Vec<ReplicaRecord>) {
        let mut i = self.lock();
        // The majority's set of fingerprints (ties: the one this replica has).
        let mut counts: HashMap<BTreeSet<&str>, usize> = HashMap::new();
        for r in &replicas {
            *counts.entry(set_of(&r.signer_fingerprints)).or_default() += 1;
        }
        let mine = set_of(&i.mine);
        let best = counts.values().copied().max().unwrap_or(0);
        let majority = if counts.get(&mine).copied().unwrap_or(0) == best {
            mine
        } else {
            counts.iter().find(|(_, n)| **n == best).map(|(s, _)| s.clone()).unwrap_or_default()
        };
        let now = Instant::now();
        let differing: Vec<String> =
            replicas.iter().filter(|r| set_of(&r.signer_fingerprints) != majority).map(|r| r.id.clone()).collect();
        i.differ_since.retain(|id, _| differing.contains(id));
        for id in differing {
            i.differ_since.entry(id).or_insert(now);
        }
        i.replicas = replicas;
    }

    fn mismatched(&self, i: &Inner) -> Vec<String> {
        let mut v: Vec<String> =
            i.differ_since.iter().filter(|(_, t)| t.elapsed() >= self.grace).map(|(id, _)| id.clone()).collect();
        v.sort();
        v
    }

    pub fn renewal_requested(&self) -> bool {
        self.lock().renewal_requested
    }

    pub fn request_renewal(&self) {
        self.lock().renewal_requested = true;
    }

    /// Why a due or requested renewal has not happened yet (`None`: it is not waiting).
    pub fn renewal_waiting(&self, why: Option<String>) {
        self.lock().renewal_waiting = why;
    }

    pub fn renewed(&self, at: SystemTime) {
        let mut i = self.lock();
        i.renewal_requested = false;
        i.renewal_waiting = None;
        i.last_renewal = Some(at);
        i.renewals += 1;
    }

    /// The `store` section of `/status`.
    pub fn json(&self) -> serde_json::Value {
        let i = self.lock();
        let mine = set_of(&i.mine);
        let mismatched = self.mismatched(&i);
        let replicas: Vec<serde_json::Value> = i
            .replicas
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "addr": r.address,
                    "version": r.version,
                    "fingerprints": r.signer_fingerprints,
                    "same_as_me": set_of(&r.signer_fingerprints) == mine,
                    "material_mismatch": mismatched.contains(&r.id),
                    "updated": r.updated,
                })
            })
            .collect();
        serde_json::json!({
            "backend": self.backend,
            "replica_id": self.me,
            "healthy": i.healthy,
            "degraded_since": i.degraded_since.map(fmt_time),
            "last_error": i.last_error,
            "fingerprints": i.mine,
            "replicas": replicas,
            "material_mismatch": mismatched,
            "renewal": {
                "requested": i.renewal_requested,
                "waiting_for": i.renewal_waiting,
                "last": i.last_renewal.map(fmt_time),
                "count": i.renewals,
            },
        })
    }

    /// `meshca_store_*` series.
    pub fn render_metrics(&self, out: &mut String) {
        let i = self.lock();
        let mismatched = self.mismatched(&i).len();
        let _ = writeln!(
            out,
            "# HELP meshca_store_healthy 1 while the shared store answers; 0: signing goes on, agreement waits.\n\
             # TYPE meshca_store_healthy gauge\nmeshca_store_healthy {}\n\
             # HELP meshca_store_replicas Replicas registered in the shared store.\n\
             # TYPE meshca_store_replicas gauge\nmeshca_store_replicas {}\n\
             # HELP meshca_store_material_mismatch Replicas whose material differs from the others' past the grace.\n\
             # TYPE meshca_store_material_mismatch gauge\nmeshca_store_material_mismatch {mismatched}\n\
             # HELP meshca_store_root_renewals_total Shared root renewals written by this replica.\n\
             # TYPE meshca_store_root_renewals_total counter\nmeshca_store_root_renewals_total {}",
            u8::from(i.healthy),
            i.replicas.len(),
            i.renewals,
        );
    }
}
