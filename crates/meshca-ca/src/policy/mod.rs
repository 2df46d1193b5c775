//! Policy delivery (`meshca serve --policy-dir DIR`): the CA holds the
//! validated, versioned set of Istio security policies and streams to each
//! agent the objects its namespace may see (`meshca.v1.PolicyDelivery`).
//!
//! * [`files`]: reading policy files (shared with the `meshca policy` verbs);
//! * [`load`]: the directory to a validated set, all or nothing;
//! * [`store`]: the published snapshot and each caller's view and version;
//! * [`jwks`]: JWKS of RequestAuthentications, fetched by the server;
//! * [`agents`]: what each connected agent reports;
//! * [`service`]: the gRPC service; [`status`]: `/status` and metrics.
//! * [`shared`]: HA mode (`--store`): the set lives in the store, every replica serves it.
//!
//! The directory is watched with the plug-in directory's watcher
//! ([`crate::watch::watch_dir`]): debounced, blind to unrelated files, and
//! following Kubernetes `..data` symlink swaps. A load that fails (a parse
//! or validation error anywhere) keeps the previous set served and is
//! reported in the log, `/status`, `meshca_policy_refused_total` /
//! `meshca_policy_set_ok`, and `PolicyUpdate.refused`.

pub mod agents;
pub mod files;
pub mod jwks;
pub mod load;
pub mod service;
pub mod shared;
pub mod status;
pub mod store;

use crate::clock::SharedClock;
use load::JwksKey;
use meshca_store::Store as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use store::{JwksEntry, PolicyState};

/// Istio's default root namespace: its objects apply to every namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
/// Default period of the JWKS refresh (`--policy-jwks-refresh`).
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct PolicyOptions {
    pub dir: PathBuf,
    pub root_namespace: String,
    pub jwks_refresh: Duration,
    /// Poll of the directory backing up file-change events.
    pub poll_interval: Duration,
    /// Fetch JWKS over plain HTTP (`--jwt-allow-http`).
    pub allow_http: bool,
}

/// The policy set, its JWKS and the tasks that keep them current.
pub struct Policy {
    pub state: Arc<PolicyState>,
    pub fetcher: Arc<jwks::Fetcher>,
    pub opts: PolicyOptions,
    /// HA mode: the set lives in the store ([`shared`]).
    pub shared: Option<Arc<shared::SharedSet>>,
    wake: Arc<tokio::sync::Notify>,
}

/// Does `path` (from a file event) concern the policy set in `dir`?
pub fn concerns(dir: &Path, path: &Path) -> bool {
    crate::watch::concerns_names(dir, path, files::is_policy_file)
}

impl Policy {
    /// Load the directory once (a broken set is reported, and nothing is
    /// served until a valid one loads), then watch it and refresh JWKS.
    pub async fn start(
        opts: PolicyOptions,
        trust_domain: String,
        clock: SharedClock,
        shared: Option<shared::SharedSet>,
    ) -> anyhow::Result<Arc<Self>> {
        let state = Arc::new(PolicyState::new(opts.dir.clone(), trust_domain, opts.root_namespace.clone(), clock));
        let policy = Arc::new(Self {
            state,
            fetcher: Arc::new(jwks::Fetcher::new(opts.allow_http)?),
            opts,
            shared: shared.map(Arc::new),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        policy.reload().await;
        let wake = policy.wake.clone();
        crate::watch::watch_dir(&policy.opts.dir, policy.opts.poll_interval, concerns, move || wake.notify_one())?;
        let p = policy.clone();
        tokio::spawn(async move { p.run().await });
        Ok(policy)
    }

    /// Reload on every settled change of the directory; refresh every JWKS
    /// each `jwks_refresh` in a task of its own (a slow IdP never delays a reload).
    async fn run(self: Arc<Self>) {
        let p = self.clone();
        tokio::spawn(async move {
            let period = p.opts.jwks_refresh.max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(period).await;
                let keys: Vec<JwksKey> = p.state.load().needed_keys().into_iter().collect();
                let fetched = p.fetch_all(keys).await;
                p.store_jwks(fetched);
            }
        });
        let Some(sh) = self.shared.clone() else {
            loop {
                self.wake.notified().await;
                self.reload().await;
            }
        };
        // HA mode: also follow the store's record (watch, and a periodic read as a backstop).
        let mut watch = sh
            .store
            .watch("policy/", 0)
            .await
            .map_err(|e| tracing::warn!(error = %e, "no watch on the shared policy set; polling it"))
            .ok();
        loop {
            tokio::select! {
                _ = self.wake.notified() => self.reload().await,
                Some(_) = async { match watch.as_mut() { Some(w) => w.next().await, None => std::future::pending().await } } => self.sync_shared(&sh).await,
                _ = tokio::time::sleep(self.opts.poll_interval.min(Duration::from_secs(1))) => self.sync_shared(&sh).await,
            }
        }
    }

    /// Serve the store's set if it changed.
    async fn sync_shared(&self, sh: &shared::SharedSet) {
        if let Some(rec) = sh.fetch().await {
            tracing::info!(version = %rec.version, published_by = %rec.published_by, "taking the shared policy set from the store");
            self.take(rec.objects, false).await;
        }
        sh.compare_local();
    }

    /// Read the directory; take the set if it is valid and new. The files
    /// are read every time (no size/mtime shortcut: two same-size writes in
    /// one timestamp tick must not leave the first one served).
    pub async fn reload(&self) {
        let dir = self.opts.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || load::load_dir(&dir))
            .await
            .unwrap_or_else(|e| Err(format!("loading the policy directory failed: {e}")));
        let st = &self.state;
        let objects = match loaded {
            Ok(o) => o,
            Err(e) if e == st.load().refused => return, // the same refusal as before: counted and logged once
            Err(e) => {
                st.counters.refused_total.fetch_add(1, Ordering::Relaxed);
                let line = crate::sanitize::clean(&e, 4 * crate::sanitize::LONG);
                tracing::warn!(dir = %self.opts.dir.display(), error = %line, "policy directory refused; the previous policy set stays served");
                let now = st.now();
                st.modify(|n| {
                    n.refused = e;
                    n.refused_at = now;
                });
                if let Some(sh) = &self.shared {
                    sh.forget_local();
                }
                return;
            }
        };
        if let Some(sh) = &self.shared {
            let mtime = shared::source_mtime_ms(&self.opts.dir);
            sh.offer(&objects, mtime);
            if !st.load().refused.is_empty() {
                st.modify(|n| n.refused.clear());
            }
            self.sync_shared(sh).await;
            // The store could not be read before anything was served: serve the local set meanwhile.
            if !sh.info().from_store && !st.load().loaded {
                self.take(objects, true).await;
            }
            return;
        }
        self.take(objects, true).await;
    }

    /// Serve `objects` (from the directory, `from_dir`, or the store) if they
    /// differ from the served set. Only a valid directory clears its refusal:
    /// a replica serving the store's set still shows that its own directory is broken.
    async fn take(&self, objects: Vec<load::ServedObject>, from_dir: bool) {
        let st = &self.state;
        let snap = st.load();
        if snap.loaded && *snap.objects == objects {
            if from_dir && !snap.refused.is_empty() {
                tracing::info!(dir = %self.opts.dir.display(), "policy directory valid again (same set as served)");
                st.modify(|n| n.refused.clear());
            }
            return;
        }
        // Fetch the keys a new RequestAuthentication needs before publishing, so no agent gets the rule without them.
        let needed = load::needed_keys(objects.iter());
        let missing: Vec<JwksKey> = needed.iter().filter(|k| !snap.jwks.contains_key(&k.key)).cloned().collect();
        let fetched = self.fetch_all(missing).await;
        let now = st.now();
        let count = objects.len();
        st.modify(|n| {
            n.loaded = true;
            n.objects = Arc::new(objects);
            n.loaded_at = now;
            if from_dir {
                n.refused.clear();
            }
            n.jwks.retain(|k, _| needed.iter().any(|x| &x.key == k));
            n.jwks.extend(fetched);
        });
        st.counters.reloads_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dir = %self.opts.dir.display(), objects = count, version = %st.set_version(&st.load()), "policy set loaded");
    }

    async fn fetch_all(&self, keys: Vec<JwksKey>) -> BTreeMap<String, JwksEntry> {
        let mut set = tokio::task::JoinSet::new();
        for k in keys {
            let f = self.fetcher.clone();
            set.spawn(async move {
                let r = f.fetch(&k).await;
                (k, r)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(Ok((k, result))) = set.join_next().await {
            let c = &self.state.counters;
            c.jwks_fetches_total.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = &result {
                c.jwks_failures_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %k.key, issuer = %k.issuer, error = %e, "JWKS fetch failed; requests with tokens of this issuer are refused until it succeeds");
            }
            out.insert(k.key, JwksEntry { result, fetched_at: self.state.now() });
        }
        out
    }

    /// Store fetched keys that the set still needs, logging what changed.
    fn store_jwks(&self, fetched: BTreeMap<String, JwksEntry>) {
        let snap = self.state.load();
        let needed = snap.needed_keys();
        let mut fresh = BTreeMap::new();
        for (k, e) in fetched {
            if !needed.iter().any(|x| x.key == k) {
                continue;
            }
            if snap.jwks.get(&k).map(|old| &old.result) != Some(&e.result) && e.result.is_ok() {
                tracing::info!(key = %k, "JWKS changed");
            }
            fresh.insert(k, e);
        }
        if !fresh.is_empty() {
            self.state.modify(|n| n.jwks.extend(fresh));
        }
    }

    /// An agent asks for `key` to be fetched again now. `Err(reason)` when it is rate limited.
    pub fn refresh_now(self: &Arc<Self>, key: JwksKey) -> Result<(), &'static str> {
        if !self.fetcher.admit(&key.key) {
            return Err("rate limited");
        }
        let p = self.clone();
        tokio::spawn(async move {
            let fetched = p.fetch_all(vec![key]).await;
            p.store_jwks(fetched);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_files_and_kubernetes_links_concern_the_set() {
        let d = Path::new("/etc/policies");
        assert!(concerns(d, Path::new("/etc/policies")));
        assert!(concerns(d, Path::new("/etc/policies/a.yaml")));
        assert!(concerns(d, Path::new("/etc/policies/b.json")));
        assert!(concerns(d, Path::new("/etc/policies/..data")));
        assert!(!concerns(d, Path::new("/etc/policies/busy.log")));
        assert!(!concerns(d, Path::new("/etc/policies/.a.yaml.swp")));
        assert!(!concerns(d, Path::new("/etc/other.yaml")));
    }
}
