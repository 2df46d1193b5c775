//! One AuthorizationPolicy rule to an Envoy RBAC `Policy` (Istio's `authz/model`).

use serde_json::{json, Value};

use super::matchers as m;
use crate::model::{Condition, MeshSettings, Protocol, Rule};

/// What a condition matches on; the Istio generator behind each key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gen {
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcPrincipal,
    SrcServiceAccount,
    SrcTrustDomain,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestClaims(Vec<String>),
    RequestHeader(String),
    DestIp,
    DestPort,
    Sni,
    EnvoyFilter { filter: String, key: String },
    Host,
    Method,
    Path,
}

impl Gen {
    fn http_only(&self) -> bool {
        matches!(
            self,
            Gen::RequestPrincipal
                | Gen::RequestAudiences
                | Gen::RequestPresenter
                | Gen::RequestClaims(_)
                | Gen::RequestHeader(_)
                | Gen::Host
                | Gen::Method
                | Gen::Path
        )
    }

    fn is_permission(&self) -> bool {
        matches!(
            self,
            Gen::DestIp | Gen::DestPort | Gen::Sni | Gen::EnvoyFilter { .. } | Gen::Host | Gen::Method | Gen::Path
        )
    }

    /// Generators that combine all values into one matcher instead of an OR list.
    fn extended(&self) -> bool {
        matches!(self, Gen::RequestAudiences | Gen::RequestPresenter | Gen::RequestClaims(_) | Gen::EnvoyFilter { .. })
    }
}

/// Parses a `when` key; `Err` with Istio's message for unknown keys.
fn when_gen(key: &str) -> Result<Gen, String> {
    let inner =
        |prefix: &str| key.strip_prefix(prefix).and_then(|r| r.strip_prefix('[')).and_then(|r| r.strip_suffix(']'));
    Ok(match key {
        "source.ip" => Gen::SrcIp,
        "remote.ip" => Gen::RemoteIp,
        "source.namespace" => Gen::SrcNamespace,
        "source.principal" => Gen::SrcPrincipal,
        "source.serviceAccount" => Gen::SrcServiceAccount,
        "source.trustDomain" => Gen::SrcTrustDomain,
        "request.auth.principal" => Gen::RequestPrincipal,
        "request.auth.audiences" => Gen::RequestAudiences,
        "request.auth.presenter" => Gen::RequestPresenter,
        "destination.ip" => Gen::DestIp,
        "destination.port" => Gen::DestPort,
        "connection.sni" => Gen::Sni,
        _ => {
            if let Some(h) = inner("request.headers") {
                Gen::RequestHeader(h.to_string())
            } else if let Some(c) = inner("request.auth.claims") {
                Gen::RequestClaims(c.split("][").map(str::to_string).collect())
            } else if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
                let (f, k) = rest.split_once('[').ok_or_else(|| format!("invalid key: {key}"))?;
                let k = k.strip_suffix(']').ok_or_else(|| format!("invalid key: {key}"))?;
                Gen::EnvoyFilter { filter: format!("envoy.filters.{f}"), key: k.to_string() }
            } else {
                return Err(format!("unknown attribute: {key}"));
            }
        }
    })
}

struct Term {
    key: String,
    gen: Gen,
    values: Vec<String>,
    not_values: Vec<String>,
}

/// Context for generating one rule.
pub struct RuleCtx<'a> {
    pub mesh: &'a MeshSettings,
    pub policy_namespace: &'a str,
    pub protocol: Protocol,
    /// ALLOW skips the whole rule when an HTTP-only field reaches a TCP chain; the others drop the field.
    pub skip_rule_on_http_only: bool,
}

/// Why a rule produced no Envoy policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub reason: String,
}

/// Builds `{permissions, principals}` for one rule, or why it was skipped. `dropped` receives the
/// keys of HTTP-only conditions dropped on TCP chains (DENY/AUDIT/CUSTOM).
pub fn build_rule(rule: &Rule, ctx: &RuleCtx<'_>, dropped: &mut Vec<String>) -> Result<Value, Skipped> {
    let mut base_perm: Vec<Term> = Vec::new();
    let mut base_princ: Vec<Term> = Vec::new();
    for Condition { key, values, not_values } in &rule.when {
        let gen = when_gen(key).map_err(|reason| Skipped { reason })?;
        let t = Term { key: key.clone(), gen, values: values.clone(), not_values: not_values.clone() };
        if t.gen.is_permission() {
            base_perm.push(t);
        } else {
            base_princ.push(t);
        }
    }
    let mut principals = Vec::new();
    if rule.from().is_empty() {
        principals.push(and_list(&base_princ, false, ctx, dropped)?);
    }
    for from in rule.from() {
        let mut terms = Vec::new();
        if let Some(s) = &from.source {
            let mut add = |key: &str, gen: Gen, v: &Vec<String>, nv: &Vec<String>| {
                if !v.is_empty() || !nv.is_empty() {
                    terms.push(Term { key: key.to_string(), gen, values: v.clone(), not_values: nv.clone() });
                }
            };
            add("source.principal", Gen::SrcPrincipal, &s.principals, &s.not_principals);
            add("request.auth.principal", Gen::RequestPrincipal, &s.request_principals, &s.not_request_principals);
            add("source.serviceAccount", Gen::SrcServiceAccount, &s.service_accounts, &s.not_service_accounts);
            add("source.trustDomain", Gen::SrcTrustDomain, &s.trust_domains, &s.not_trust_domains);
            add("source.namespace", Gen::SrcNamespace, &s.namespaces, &s.not_namespaces);
            add("remote.ip", Gen::RemoteIp, &s.remote_ip_blocks, &s.not_remote_ip_blocks);
            add("source.ip", Gen::SrcIp, &s.ip_blocks, &s.not_ip_blocks);
        }
        terms.extend(base_princ.iter().map(|t| Term {
            key: t.key.clone(),
            gen: t.gen.clone(),
            values: t.values.clone(),
            not_values: t.not_values.clone(),
        }));
        principals.push(and_list(&terms, false, ctx, dropped)?);
    }
    let mut permissions = Vec::new();
    if rule.to().is_empty() {
        permissions.push(and_list(&base_perm, true, ctx, dropped)?);
    }
    for to in rule.to() {
        let mut terms = Vec::new();
        if let Some(o) = &to.operation {
            let mut add = |key: &str, gen: Gen, v: &Vec<String>, nv: &Vec<String>| {
                if !v.is_empty() || !nv.is_empty() {
                    terms.push(Term { key: key.to_string(), gen, values: v.clone(), not_values: nv.clone() });
                }
            };
            add(":authority", Gen::Host, &o.hosts, &o.not_hosts);
            add(":method", Gen::Method, &o.methods, &o.not_methods);
            add("path-matcher", Gen::Path, &o.paths, &o.not_paths);
            add("destination.port", Gen::DestPort, &o.ports, &o.not_ports);
        }
        terms.extend(base_perm.iter().map(|t| Term {
            key: t.key.clone(),
            gen: t.gen.clone(),
            values: t.values.clone(),
            not_values: t.not_values.clone(),
        }));
        permissions.push(and_list(&terms, true, ctx, dropped)?);
    }
    Ok(m::obj([("permissions", Value::Array(permissions)), ("principals", Value::Array(principals))]))
}

fn and_list(terms: &[Term], permission: bool, ctx: &RuleCtx<'_>, dropped: &mut Vec<String>) -> Result<Value, Skipped> {
    let mut items = Vec::new();
    for t in terms {
        if ctx.protocol == Protocol::Tcp && t.gen.http_only() {
            if ctx.skip_rule_on_http_only {
                return Err(Skipped { reason: format!("{:?} is HTTP only", t.key) });
            }
            if !dropped.contains(&t.key) {
                dropped.push(t.key.clone());
            }
            continue;
        }
        for (values, negate) in [(&t.values, false), (&t.not_values, true)] {
            if values.is_empty() {
                continue;
            }
            let item = if t.gen.extended() {
                extended(&t.gen, values)
            } else {
                let list: Result<Vec<Value>, Skipped> =
                    expand(&t.gen, values, ctx).iter().map(|v| one(&t.gen, v, ctx)).collect();
                if permission {
                    m::obj([("orRules", m::obj([("rules", Value::Array(list?))]))])
                } else {
                    m::obj([("orIds", m::obj([("ids", Value::Array(list?))]))])
                }
            };
            items.push(match (negate, permission) {
                (false, _) => item,
                (true, true) => m::obj([("notRule", item)]),
                (true, false) => m::obj([("notId", item)]),
            });
        }
    }
    if items.is_empty() {
        items.push(json!({"any": true}));
    }
    Ok(if permission {
        m::obj([("andRules", m::obj([("rules", Value::Array(items))]))])
    } else {
        m::obj([("andIds", m::obj([("ids", Value::Array(items))]))])
    })
}

/// Values after trust-domain alias handling (principals and trust domains only).
fn expand(gen: &Gen, values: &[String], ctx: &RuleCtx<'_>) -> Vec<String> {
    match gen {
        Gen::SrcPrincipal => replace_trust_domain_aliases(values, ctx.mesh),
        Gen::SrcTrustDomain => expand_trust_domain_aliases(values, ctx.mesh),
        _ => values.to_vec(),
    }
}

fn one(gen: &Gen, v: &str, ctx: &RuleCtx<'_>) -> Result<Value, Skipped> {
    let bad_ip = || Skipped { reason: format!("invalid IP address or CIDR range: {v}") };
    let bad_port = || Skipped { reason: format!("invalid port: {v}") };
    Ok(match gen {
        Gen::SrcIp => json!({"directRemoteIp": m::cidr(v).ok_or_else(bad_ip)?}),
        Gen::RemoteIp => json!({"remoteIp": m::cidr(v).ok_or_else(bad_ip)?}),
        Gen::DestIp => json!({"destinationIp": m::cidr(v).ok_or_else(bad_ip)?}),
        Gen::DestPort => json!({"destinationPort": v.parse::<u16>().map_err(|_| bad_port())?}),
        Gen::SrcNamespace => m::authenticated(json!({"safeRegex": {"regex": m::namespace_regex(v)}})),
        Gen::SrcPrincipal => m::authenticated(m::string_with_prefix(v, "spiffe://")),
        Gen::SrcServiceAccount => {
            m::authenticated(json!({"safeRegex": {"regex": m::service_account_regex(v, ctx.policy_namespace)}}))
        }
        Gen::SrcTrustDomain => m::authenticated(m::trust_domain(v)),
        Gen::RequestPrincipal => m::request_principal(v),
        Gen::RequestHeader(name) => json!({"header": m::header(name, v)}),
        Gen::Host => json!({"header": m::host(v)}),
        Gen::Method => json!({"header": m::header(":method", v)}),
        Gen::Path => m::path(v),
        Gen::Sni => json!({"requestedServerName": m::string(v)}),
        Gen::RequestAudiences | Gen::RequestPresenter | Gen::RequestClaims(_) | Gen::EnvoyFilter { .. } => {
            extended(gen, &[v.to_string()])
        }
    })
}

fn extended(gen: &Gen, values: &[String]) -> Value {
    match gen {
        Gen::RequestAudiences => json!({"metadata": m::jwt_metadata(&["aud"], m::list_or_string(values))}),
        Gen::RequestPresenter => json!({"metadata": m::jwt_metadata(&["azp"], m::list_or_string(values))}),
        Gen::RequestClaims(path) => {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            json!({"metadata": m::jwt_metadata(&p, m::list_or_string(values))})
        }
        Gen::EnvoyFilter { filter, key } => {
            let ms: Vec<Value> = values
                .iter()
                .map(|v| match v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                    Some(inner) => json!({"listMatch": {"oneOf": {"stringMatch": m::string(inner)}}}),
                    None => json!({"stringMatch": m::string(v)}),
                })
                .collect();
            let value = if ms.len() == 1 { ms[0].clone() } else { json!({"orMatch": {"valueMatchers": ms}}) };
            json!({"metadata": {"filter": filter, "path": [{"key": key}], "value": value}})
        }
        _ => Value::Null,
    }
}

fn bundle(mesh: &MeshSettings) -> Vec<&str> {
    let mut b = vec![mesh.trust_domain.as_str()];
    for a in &mesh.trust_domain_aliases {
        if !b.contains(&a.as_str()) {
            b.push(a);
        }
    }
    b
}

/// True when `pattern` (a trust domain from a principal, possibly with a leading or trailing `*`)
/// matches the trust domain `td`.
fn td_match(td: &str, pattern: &str) -> bool {
    if pattern == td || pattern == "*" {
        return true;
    }
    if let Some(s) = pattern.strip_prefix('*') {
        return td.ends_with(s);
    }
    if let Some(p) = pattern.strip_suffix('*') {
        return td.starts_with(p);
    }
    false
}

/// Istio's `ReplaceTrustDomainAliases`: principals in the local trust domain, an alias, or the
/// literal `cluster.local` are expanded to every trust domain of the bundle.
pub fn replace_trust_domain_aliases(values: &[String], mesh: &MeshSettings) -> Vec<String> {
    let tds = bundle(mesh);
    let mut out = Vec::new();
    for v in values {
        let parts: Vec<&str> = v.split('/').collect();
        if parts.len() != 5 || parts[0] == "*" {
            out.push(v.clone());
            continue;
        }
        let from = parts[0];
        if !(tds.iter().any(|td| td_match(td, from)) || from == "cluster.local") {
            out.push(v.clone());
            continue;
        }
        let mut expanded: Vec<String> = Vec::new();
        for td in &tds {
            let nv = if from.starts_with('*') && td_match(td, from) {
                v.clone()
            } else {
                format!("{td}/{}", parts[1..].join("/"))
            };
            if !expanded.contains(&nv) {
                expanded.push(nv);
            }
        }
        out.extend(expanded);
    }
    out
}

/// Istio's `ExpandTrustDomainAliases` for `trustDomains` values.
pub fn expand_trust_domain_aliases(values: &[String], mesh: &MeshSettings) -> Vec<String> {
    let tds = bundle(mesh);
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let list: Vec<String> =
            if tds.contains(&v.as_str()) { tds.iter().map(|s| s.to_string()).collect() } else { vec![v.clone()] };
        for x in list {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    out
}
