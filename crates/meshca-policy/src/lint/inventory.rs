//! Checks that need to know the cluster: an inventory of namespaces and workloads (labels,
//! service account, ports with their protocol), like `istioctl analyze` has from the API server.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Ctx, Severity};
use crate::model::{Action, AuthorizationPolicy, Object, PolicySet, Spec, WorkloadSelector};

/// `--inventory FILE`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    /// Namespaces that exist (workload namespaces are added).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Workloads (pods or deployments).
    #[serde(default)]
    pub workloads: Vec<InventoryWorkload>,
}

/// One workload of the inventory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryWorkload {
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Service account.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Container ports and their protocol (`http`, `http2`, `grpc`, `tcp`...).
    #[serde(default)]
    pub ports: Vec<InventoryPort>,
}

/// A port and its protocol (from the Service port name or appProtocol).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryPort {
    /// Container port.
    pub port: u16,
    /// Protocol; anything but http/http2/grpc/grpc-web is a TCP filter chain.
    #[serde(default)]
    pub protocol: String,
}

fn glob(pattern: &str, v: &str) -> bool {
    let (p, v) = (pattern.to_ascii_lowercase(), v.to_ascii_lowercase());
    if p == "*" {
        true
    } else if let Some(s) = p.strip_prefix('*') {
        v.ends_with(s)
    } else if let Some(s) = p.strip_suffix('*') {
        v.starts_with(s)
    } else {
        p == v
    }
}

fn is_http(protocol: &str) -> bool {
    matches!(protocol.to_ascii_lowercase().as_str(), "http" | "http2" | "grpc" | "grpc-web" | "https")
}

fn selected<'a>(
    inv: &'a Inventory,
    o: &Object,
    sel: Option<&WorkloadSelector>,
    root: &str,
) -> Vec<&'a InventoryWorkload> {
    let ns = o.namespace();
    inv.workloads
        .iter()
        .filter(|w| ns == root || w.namespace == ns)
        .filter(|w| sel.is_none_or(|s| s.match_labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))))
        .collect()
}

fn namespace_refs(p: &AuthorizationPolicy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (ri, r) in p.rules().iter().enumerate() {
        for (fi, s) in r.from().iter().enumerate().filter_map(|(i, f)| f.source.as_ref().map(|s| (i, s))) {
            let base = format!("spec.rules[{ri}].from[{fi}].source");
            for (field, list) in [("namespaces", &s.namespaces), ("notNamespaces", &s.not_namespaces)] {
                out.extend(list.iter().enumerate().map(|(i, v)| (format!("{base}.{field}[{i}]"), v.clone())));
            }
        }
        for (wi, c) in r.when.iter().enumerate().filter(|(_, c)| c.key == "source.namespace") {
            let vals = c.values.iter().chain(&c.not_values);
            out.extend(vals.map(|v| (format!("spec.rules[{ri}].when[{wi}]"), v.clone())));
        }
    }
    out
}

fn http_only_rule(p: &AuthorizationPolicy) -> Option<usize> {
    p.rules().iter().position(|r| {
        r.from()
            .iter()
            .filter_map(|f| f.source.as_ref())
            .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty())
            || r.to().iter().filter_map(|t| t.operation.as_ref()).any(|o| {
                [&o.hosts, &o.not_hosts, &o.methods, &o.not_methods, &o.paths, &o.not_paths]
                    .iter()
                    .any(|l| !l.is_empty())
            })
            || r.when.iter().any(|c| c.key.starts_with("request."))
    })
}

/// POL017 (namespace not found), POL018 (no matching workload), POL019 (HTTP-only ALLOW rule on a TCP port).
pub(super) fn check(set: &PolicySet, inv: &Inventory, root: &str, out: &mut Vec<super::Finding>) {
    let mut namespaces: BTreeSet<&str> = inv.namespaces.iter().map(String::as_str).collect();
    namespaces.extend(inv.workloads.iter().map(|w| w.namespace.as_str()));
    for o in &set.objects {
        let sel = match &o.spec {
            Spec::AuthorizationPolicy(p) => p.selector.as_ref(),
            Spec::RequestAuthentication(p) => p.selector.as_ref(),
            Spec::PeerAuthentication(p) => p.selector.as_ref(),
            _ => continue,
        };
        let mut c = Ctx { o, out };
        let targets = selected(inv, o, sel, root);
        if targets.is_empty() {
            let labels = sel.map(|s| format!("{:?}", s.match_labels)).unwrap_or_else(|| "{}".into());
            c.add(
                "POL018",
                Severity::Warning,
                if sel.is_some() { "spec.selector" } else { "" },
                format!("no matching workloads for this resource with the labels {labels} (istioctl analyze IST0127)"),
                "fix the selector or the namespace, or delete the policy",
            );
        }
        let Spec::AuthorizationPolicy(p) = &o.spec else { continue };
        for (path, v) in namespace_refs(p) {
            if !namespaces.iter().any(|n| glob(&v, n)) {
                c.add(
                    "POL017",
                    Severity::Error,
                    &path,
                    format!("referenced namespace {v:?} not found (istioctl analyze IST0101)"),
                    "check the spelling, or create the namespace",
                );
            }
        }
        if p.action == Action::Allow {
            if let Some(ri) = http_only_rule(p) {
                let tcp: Vec<String> = targets
                    .iter()
                    .flat_map(|w| {
                        w.ports
                            .iter()
                            .filter(|pt| !is_http(&pt.protocol))
                            .map(move |pt| format!("{}/{:?}:{}", w.namespace, w.labels, pt.port))
                    })
                    .collect();
                if let Some(first) = tcp.first() {
                    c.add("POL019", Severity::Error, &format!("spec.rules[{ri}]"), format!("rule[{ri}] uses HTTP-only fields and the policy reaches TCP port {first}: there the rule is skipped and connections are denied"), "name the port http-* (or set appProtocol), or give TCP traffic its own rule with ports/principals");
                }
            }
        }
    }
}
