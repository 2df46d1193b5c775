//! Compiles the policies that apply to a workload into the Envoy 1.40 filters istiod would generate.
//!
//! [`compile`] returns `{"http_filters": [...]}` or `{"network_filters": [...]}`; each element is
//! `{name, typed_config}` with the typed config in protobuf-JSON shape (camelCase, `@type` URLs),
//! ready to paste into a listener (router and `tcp_proxy` excluded). Order, as in Istio:
//!
//! * HTTP: CUSTOM (a shadow RBAC filter + ext_authz per provider), `jwt_authn` (from the
//!   RequestAuthentications), then RBAC for AUDIT (action LOG), DENY and ALLOW.
//! * TCP: CUSTOM (network RBAC + network ext_authz, gRPC providers only), then network RBAC for
//!   AUDIT, DENY and ALLOW.
//!
//! Policy names are Istio's (`ns[foo]-policy[httpbin]-rule[0]`); dry-run policies go to
//! `shadow_rules`; request principals and `request.auth.*` match `envoy.filters.http.jwt_authn`
//! metadata so a stock Envoy enforces them. On TCP chains, ALLOW rules that use an HTTP-only field
//! are skipped whole while DENY/AUDIT/CUSTOM rules only lose the HTTP-only conditions (so they
//! match more). [`compile_report`] also returns notes on every rule skipped or broadened.

mod extauthz;
mod jwt;
pub mod matchers;
pub mod rules;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::model::{Action, AuthorizationPolicy, MeshSettings, Object, PolicySet, Protocol, Spec, Workload};
use rules::{build_rule, RuleCtx};

/// Options beyond Istio's inputs.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// JWKS documents (JSON text) to inline for RequestAuthentication rules that use `jwksUri`,
    /// keyed by the jwksUri or by the issuer. Without one, `remote_jwks` pointing at the
    /// `outbound|<port>||<host>` cluster is generated (istiod's `envoy` JWKS mode).
    pub jwks: BTreeMap<String, String>,
}

/// Errors from [`compile`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The mesh settings cannot be used (e.g. an empty trust domain).
    #[error("invalid mesh settings: {0}")]
    Mesh(String),
}

/// A compiled chain and what happened on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// `{"http_filters": [...]}` or `{"network_filters": [...]}`.
    pub filters: Value,
    /// Human-readable notes: skipped rules, dropped HTTP-only conditions, bad CUSTOM providers.
    pub notes: Vec<String>,
}

/// The filters for `workload` on a `protocol` chain. `port` is the chain's port; Istio does not
/// filter policies by port (ports are matched inside the rules), so it only appears in notes.
pub fn compile(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshSettings,
    protocol: Protocol,
    port: Option<u16>,
) -> Result<Value, CompileError> {
    compile_report(set, workload, mesh, protocol, port, &CompileOptions::default()).map(|c| c.filters)
}

/// [`compile`] with options, returning notes as well.
pub fn compile_report(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshSettings,
    protocol: Protocol,
    port: Option<u16>,
    options: &CompileOptions,
) -> Result<Compiled, CompileError> {
    if mesh.trust_domain.is_empty() {
        return Err(CompileError::Mesh("trust domain must not be empty".to_string()));
    }
    let applicable = set.applicable(workload, mesh);
    let mut notes = Vec::new();
    if let Some(p) = port {
        notes.push(format!("compiled for port {p} ({protocol:?})"));
    }
    let by_action = |a: Action| -> Vec<(&Object, &AuthorizationPolicy)> {
        applicable
            .authorization
            .iter()
            .filter_map(|o| match &o.spec {
                Spec::AuthorizationPolicy(p) if p.action == a => Some((*o, p)),
                _ => None,
            })
            .collect()
    };
    let mut filters = Vec::new();
    filters.extend(extauthz::custom_filters(&by_action(Action::Custom), mesh, protocol, &mut notes));
    if protocol == Protocol::Http {
        if let Some(f) = jwt::jwt_authn_filter(&applicable.request_authentication, options, &mut notes) {
            filters.push(f);
        }
    }
    for action in [Action::Audit, Action::Deny, Action::Allow] {
        let policies = by_action(action);
        if policies.is_empty() {
            continue;
        }
        filters.push(rbac_filter(&policies, action, mesh, protocol, &mut notes));
    }
    let key = match protocol {
        Protocol::Http => "http_filters",
        Protocol::Tcp => "network_filters",
    };
    Ok(Compiled { filters: matchers::obj([(key, Value::Array(filters))]), notes })
}

/// The Istio name of rule `index` of a policy.
pub fn policy_name(namespace: &str, name: &str, index: usize) -> String {
    format!("ns[{namespace}]-policy[{name}]-rule[{index}]")
}

/// The match-never policy Istio emits for a policy without rules (`spec: {}` allows nothing).
fn match_never() -> Value {
    json!({"permissions": [{"notRule": {"any": true}}], "principals": [{"notId": {"any": true}}]})
}

/// The Envoy policies (name → policy) of a list of policies for one action.
pub(crate) fn build_policies(
    policies: &[(&Object, &AuthorizationPolicy)],
    action: Action,
    mesh: &MeshSettings,
    protocol: Protocol,
    name_prefix: &str,
    notes: &mut Vec<String>,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut enforced = Map::new();
    let mut shadow = Map::new();
    for (obj, p) in policies {
        let target = if obj.is_dry_run() && action != Action::Custom { &mut shadow } else { &mut enforced };
        let ns = obj.namespace();
        if p.rules().is_empty() {
            target.insert(format!("{name_prefix}{}", policy_name(ns, &obj.meta.name, 0)), match_never());
            continue;
        }
        let ctx = RuleCtx { mesh, policy_namespace: ns, protocol, skip_rule_on_http_only: action == Action::Allow };
        for (i, rule) in p.rules().iter().enumerate() {
            let name = format!("{name_prefix}{}", policy_name(ns, &obj.meta.name, i));
            let mut dropped = Vec::new();
            match build_rule(rule, &ctx, &mut dropped) {
                Ok(v) => {
                    if !dropped.is_empty() {
                        notes.push(format!(
                            "{name} ({}): HTTP-only conditions {} dropped on the TCP filter chain; the rule matches more",
                            obj.source,
                            dropped.join(", ")
                        ));
                    }
                    target.insert(name, v);
                }
                Err(s) if protocol == Protocol::Tcp && action == Action::Allow => {
                    notes.push(format!("skipped rule {name} ({}) on TCP filter chain: {}", obj.source, s.reason));
                }
                Err(s) => notes.push(format!("skipped invalid rule {name} ({}): {}", obj.source, s.reason)),
            }
        }
    }
    (enforced, shadow)
}

fn rbac_type(protocol: Protocol) -> (&'static str, &'static str) {
    match protocol {
        Protocol::Http => ("envoy.filters.http.rbac", "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"),
        Protocol::Tcp => {
            ("envoy.filters.network.rbac", "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC")
        }
    }
}

/// `RBAC` config with `action` and `policies`, omitting protobuf defaults (ALLOW, empty map).
pub(crate) fn rbac_rules(action: &str, policies: Map<String, Value>) -> Value {
    let mut r = Map::new();
    if action != "ALLOW" {
        r.insert("action".to_string(), json!(action));
    }
    if !policies.is_empty() {
        r.insert("policies".to_string(), Value::Object(policies));
    }
    Value::Object(r)
}

/// Wraps a typed RBAC config as a filter for `protocol`.
pub(crate) fn rbac_wrap(protocol: Protocol, mut config: Map<String, Value>) -> Value {
    let (name, type_url) = rbac_type(protocol);
    config.insert("@type".to_string(), json!(type_url));
    if protocol == Protocol::Tcp {
        config.insert("statPrefix".to_string(), json!("tcp."));
    }
    matchers::obj([("name", json!(name)), ("typed_config", Value::Object(config))])
}

fn rbac_filter(
    policies: &[(&Object, &AuthorizationPolicy)],
    action: Action,
    mesh: &MeshSettings,
    protocol: Protocol,
    notes: &mut Vec<String>,
) -> Value {
    let envoy_action = match action {
        Action::Audit => "LOG",
        Action::Deny => "DENY",
        _ => "ALLOW",
    };
    let (enforced, shadow) = build_policies(policies, action, mesh, protocol, "", notes);
    let any_enforced = policies.iter().any(|(o, _)| !o.is_dry_run());
    let any_shadow = policies.iter().any(|(o, _)| o.is_dry_run());
    let mut config = Map::new();
    if any_enforced {
        config.insert("rules".to_string(), rbac_rules(envoy_action, enforced));
    }
    let shadow_prefix = if any_shadow {
        config.insert("shadowRules".to_string(), rbac_rules(envoy_action, shadow));
        match action {
            Action::Allow => Some("istio_dry_run_allow_"),
            Action::Deny => Some("istio_dry_run_deny_"),
            _ => None,
        }
    } else {
        // Istio's quirk: the prefix of a nil shadow RBAC is the ALLOW one.
        Some("istio_dry_run_allow_")
    };
    if let Some(p) = shadow_prefix {
        config.insert("shadowRulesStatPrefix".to_string(), json!(p));
    }
    rbac_wrap(protocol, config)
}
