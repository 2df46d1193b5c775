//! The `policy` section of `/status` and the `meshca_policy_*` metrics.

use super::Policy;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Objects listed in `/status`.
const MAX_LISTED: usize = 1000;

impl Policy {
    /// The `policy` section of `/status`.
    pub fn status_json(&self) -> serde_json::Value {
        let st = &self.state;
        let snap = st.load();
        let objects: Vec<serde_json::Value> = snap
            .objects
            .iter()
            .take(MAX_LISTED)
            .map(|o| serde_json::json!({"kind": o.kind, "namespace": o.namespace, "name": o.name, "source": o.source}))
            .collect();
        let needed = snap.needed_keys();
        let jwks: Vec<serde_json::Value> = needed
            .iter()
            .map(|k| {
                let e = snap.jwks.get(&k.key);
                let (ok, error, kids) = match e.map(|e| &e.result) {
                    Some(Ok(doc)) => {
                        let kids =
                            meshca_jwt::KeySet::from_jwks_json(doc.as_bytes()).map(|s| s.kids()).unwrap_or_default();
                        (true, String::new(), kids)
                    }
                    Some(Err(err)) => (false, err.clone(), Vec::new()),
                    None => (false, "not fetched yet".to_string(), Vec::new()),
                };
                serde_json::json!({
                    "key": k.key, "issuer": k.issuer, "discovery": k.discovery, "ok": ok, "error": error,
                    "kids": kids, "fetched_at": e.map(|e| e.fetched_at.clone()).unwrap_or_default(),
                })
            })
            .collect();
        let agents: Vec<serde_json::Value> = st
            .agents
            .list()
            .into_iter()
            .map(|a| {
                let state = a.state();
                let mut v = serde_json::to_value(&a).unwrap_or_default();
                v["state"] = state.into();
                v
            })
            .collect();
        serde_json::json!({
            "directory": self.opts.dir.display().to_string(),
            "root_namespace": st.root_namespace,
            "trust_domain": st.trust_domain,
            "loaded": snap.loaded,
            "version": st.set_version(&snap),
            "loaded_at": snap.loaded_at,
            "object_count": snap.objects.len(),
            "objects": objects,
            "refused": snap.refused,
            "refused_at": snap.refused_at,
            "jwks": jwks,
            "agents": agents,
            "shared": self.shared.as_ref().map(|s| s.info()),
        })
    }

    /// Append the `meshca_policy_*` series to a Prometheus exposition.
    pub fn render_metrics(&self, out: &mut String) {
        let st = &self.state;
        let snap = st.load();
        let c = &st.counters;
        let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 5] = [
            (
                "meshca_policy_refused_total",
                "Loads of the policy directory refused (parse or validation error); the previous set stayed served.",
                &c.refused_total,
            ),
            ("meshca_policy_reloads_total", "New policy sets taken from the policy directory.", &c.reloads_total),
            ("meshca_policy_jwks_fetches_total", "JWKS fetches for RequestAuthentications.", &c.jwks_fetches_total),
            (
                "meshca_policy_jwks_fetch_failures_total",
                "JWKS fetches for RequestAuthentications that failed.",
                &c.jwks_failures_total,
            ),
            ("meshca_policy_updates_sent_total", "Policy updates sent to agents.", &c.updates_sent_total),
        ];
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let jwks_errors = snap
            .needed_keys()
            .iter()
            .filter(|k| !matches!(snap.jwks.get(&k.key).map(|e| &e.result), Some(Ok(_))))
            .count();
        let (current, stale, nacked) = st.agents.counts();
        let ok = snap.loaded && snap.refused.is_empty();
        let _ = writeln!(
            out,
            "# HELP meshca_policy_set_ok 1 when the served policy set is the latest on disk, 0 when the last load was refused.\n\
             # TYPE meshca_policy_set_ok gauge\nmeshca_policy_set_ok {}\n\
             # HELP meshca_policy_objects Objects in the served policy set.\n# TYPE meshca_policy_objects gauge\nmeshca_policy_objects {}\n\
             # HELP meshca_policy_jwks_errors JWKS keys of the served set without keys (last fetch failed).\n\
             # TYPE meshca_policy_jwks_errors gauge\nmeshca_policy_jwks_errors {jwks_errors}\n\
             # HELP meshca_policy_agents Agents connected to policy delivery, by what their Envoy runs.\n\
             # TYPE meshca_policy_agents gauge\n\
             meshca_policy_agents{{state=\"current\"}} {current}\n\
             meshca_policy_agents{{state=\"stale\"}} {stale}\n\
             meshca_policy_agents{{state=\"nacked\"}} {nacked}",
            u8::from(ok),
            snap.objects.len(),
        );
        if let Some(sh) = &self.shared {
            let i = sh.info();
            let _ = writeln!(
                out,
                "# HELP meshca_policy_local_differs 1 when this replica's policy directory holds a valid set that differs from the shared set and is older (not published).\n\
                 # TYPE meshca_policy_local_differs gauge\nmeshca_policy_local_differs {}\n\
                 # HELP meshca_policy_shared_store_error 1 while the shared policy set record cannot be read or is not a valid set; the last set taken stays served.\n\
                 # TYPE meshca_policy_shared_store_error gauge\nmeshca_policy_shared_store_error {}",
                u8::from(i.local_differs),
                u8::from(!i.store_error.is_empty()),
            );
        }
    }
}
