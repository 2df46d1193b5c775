//! Evaluate a request the way Envoy does it, on the filters Istio's translation produced
//! ([`crate::compile`]): jwt_authn, CUSTOM (ext_authz gate), AUDIT, DENY and ALLOW RBAC filters in
//! chain order, with dry-run (`shadow_rules`) results on the side. Because the evaluator runs the
//! compiled filters, everything the compiler does (trust-domain aliases, HTTP-only fields dropped
//! or broadened on TCP, allow-nothing for `spec: {}`, policy names) is reflected exactly.
//!
//! Pure: the caller gives the clock (`now`) and any JWKS Envoy would have fetched.

mod describe;
mod jwt;
mod mtls;
mod rbac;
mod request;

use serde::Serialize;
use serde_json::Value;

pub use describe::Condition;
pub use jwt::{JwksByIssuer, JwtOutcome};
pub use mtls::{effective_mtls, effective_mtls_source, refusal, EffectiveMtls, MtlsSource};
pub use request::{Decision, Destination, Remote, Request, Source};

use rbac::{field, str_field, Ctx};

/// Which filter chain: HTTP (`envoy.filters.http.*`) or TCP (`envoy.filters.network.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP connection manager filters.
    Http,
    /// Network filters; no status codes.
    Tcp,
}

/// The filters of one workload's inbound chain, in order.
#[derive(Debug, Clone)]
pub struct Chain {
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// Envoy filters (`name` + `typed_config`), protobuf JSON normalized to snake_case keys.
    filters: Vec<Value>,
}

impl Chain {
    /// A chain from Envoy filters (`name` + `typed_config`) in protobuf JSON, camelCase or snake_case.
    #[must_use]
    pub fn new(protocol: Protocol, filters: &[Value]) -> Chain {
        Chain { protocol, filters: filters.iter().map(rbac::normalize).collect() }
    }

    /// From `{"http_filters": [...]}` or `{"network_filters": [...]}` (the output of `meshca policy compile`).
    pub fn from_json(v: &Value) -> Result<Chain, String> {
        let v = rbac::normalize(v);
        if let Some(f) = field(&v, "http_filters").and_then(Value::as_array) {
            return Ok(Chain { protocol: Protocol::Http, filters: f.clone() });
        }
        if let Some(f) = field(&v, "network_filters").and_then(Value::as_array) {
            return Ok(Chain { protocol: Protocol::Tcp, filters: f.clone() });
        }
        Err("expected an object with \"http_filters\" or \"network_filters\"".into())
    }

    /// The filters (snake_case keys).
    #[must_use]
    pub fn filters(&self) -> &[Value] {
        &self.filters
    }
}

/// What decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// PeerAuthentication refused the connection (plaintext under STRICT, mTLS under DISABLE).
    Peer,
    /// jwt_authn rejected the token.
    Jwt,
    /// A CUSTOM rule matched: the external authorizer is asked.
    Custom,
    /// A DENY rule matched.
    Deny,
    /// An ALLOW rule matched.
    Allow,
    /// ALLOW policies apply and none matched.
    NoAllowMatch,
    /// No ALLOW policy applies.
    NoPolicy,
}

/// A rule that did not match: the first condition that failed, after the ones that held.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Miss {
    /// Envoy policy name of the rule.
    pub policy: String,
    /// The first failing condition, with the request value seen.
    pub failed: Condition,
    /// The conditions of the same permission/principal that held before it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<Condition>,
}

/// A dry-run (shadow) result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Shadow {
    /// ALLOW or DENY.
    pub action: String,
    /// What the dry-run policies would have done: `allowed` or `denied`.
    pub result: String,
    /// The shadow policy that matched, if any.
    pub policy: Option<String>,
}

/// Why.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Explanation {
    /// One sentence.
    pub summary: String,
    /// For `allow`/`deny`: the conditions of the deciding rule and the values that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<Condition>,
    /// For `no-allow-match`: every ALLOW rule and its nearest miss.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nearest_misses: Vec<Miss>,
    /// The jwt_authn outcome when a JWT filter runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtOutcome>,
    /// AUDIT rule that matched (Envoy marks the request for audit logging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
    /// Dry-run results (`istio.io/dry-run`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<Shadow>,
    /// CUSTOM rule that matched: the decision then depends on the external authorizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<String>,
    /// Compiler notes that explain a denial (rules skipped or broadened on a TCP chain...),
    /// filled by callers that compiled the chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The answer for one request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// Echo of the request's `name`.
    pub name: Option<String>,
    /// allow or deny.
    pub decision: Decision,
    /// 200, 401 or 403 for HTTP, `null` for TCP.
    pub status: Option<u16>,
    /// Envoy policy name that decided.
    pub policy: Option<String>,
    /// Which stage decided.
    pub stage: Stage,
    /// The request's `expect`, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Decision>,
    /// Why.
    pub explanation: Explanation,
}

impl Verdict {
    /// `expect` is absent or equal to the decision.
    #[must_use]
    pub fn meets_expectation(&self) -> bool {
        self.expect.is_none_or(|e| e == self.decision)
    }
}

/// Clock and keys.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Unix seconds used for `exp`/`nbf`.
    pub now: i64,
    /// JWKS for providers that fetch their keys.
    pub jwks: JwksByIssuer,
    /// Workload port used when a request has no `destination.port`.
    pub port: Option<u16>,
    /// Build the explanation (matched conditions, nearest misses); off for decisions only.
    pub explain: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { now: 0, jwks: JwksByIssuer::new(), port: None, explain: true }
    }
}

enum Kind<'a> {
    Rbac(&'a Value),
    Jwt(&'a Value),
    ExtAuthz,
    Other,
}

fn kind(filter: &Value) -> Kind<'_> {
    let Some(tc) = field(filter, "typed_config") else { return Kind::Other };
    let ty = str_field(tc, "@type").unwrap_or("");
    if ty.ends_with(".rbac.v3.RBAC") {
        Kind::Rbac(tc)
    } else if ty.ends_with("jwt_authn.v3.JwtAuthentication") {
        Kind::Jwt(tc)
    } else if ty.contains("ext_authz") {
        Kind::ExtAuthz
    } else {
        Kind::Other
    }
}

/// First matching policy (Envoy walks them in name order) and the per-policy traces.
fn engine(ctx: &Ctx<'_>, rules: &Value) -> (Option<String>, Vec<(String, bool)>) {
    let mut names: Vec<(&String, &Value)> =
        field(rules, "policies").and_then(Value::as_object).map(|m| m.iter().collect()).unwrap_or_default();
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut first = None;
    let mut all = Vec::new();
    for (name, p) in names {
        let m = policy_matches(ctx, p);
        if m && first.is_none() {
            first = Some(name.clone());
        }
        all.push((name.clone(), m));
    }
    (first, all)
}

fn policy_matches(ctx: &Ctx<'_>, p: &Value) -> bool {
    rbac::list(p, "permissions").iter().any(|x| ctx.permission(x))
        && rbac::list(p, "principals").iter().any(|x| ctx.principal(x))
}

fn action(rules: &Value) -> String {
    str_field(rules, "action").unwrap_or("ALLOW").to_string()
}

/// The matched conditions of a matching policy (leaves that are `any` left out).
fn matched_conditions(ctx: &Ctx<'_>, p: &Value) -> Vec<Condition> {
    let mut out = Vec::new();
    if let Some(perm) = rbac::list(p, "permissions").iter().find(|x| ctx.permission(x)) {
        out.extend(ctx.terms(perm, false));
    }
    if let Some(pr) = rbac::list(p, "principals").iter().find(|x| ctx.principal(x)) {
        out.extend(ctx.terms(pr, true));
    }
    out.retain(|c| c.field != "any");
    out
}

/// The nearest miss of a non-matching policy.
fn nearest_miss(ctx: &Ctx<'_>, name: &str, p: &Value) -> Miss {
    let best = |items: &[Value], principal: bool| -> Option<Vec<Condition>> {
        let mut best: Option<(usize, Vec<Condition>)> = None;
        for it in items {
            let terms = ctx.terms(it, principal);
            let held = terms.iter().take_while(|c| c.matched).count();
            if held == terms.len() {
                return None;
            }
            if best.as_ref().is_none_or(|(h, _)| held > *h) {
                best = Some((held, terms));
            }
        }
        best.map(|(_, t)| t)
    };
    let perms = rbac::list(p, "permissions");
    let prins = rbac::list(p, "principals");
    let terms = best(perms, false).or_else(|| best(prins, true)).unwrap_or_default();
    let held: Vec<Condition> = terms.iter().take_while(|c| c.matched).filter(|c| c.field != "any").cloned().collect();
    let failed = terms.into_iter().find(|c| !c.matched).unwrap_or(Condition {
        field: "(rule)".into(),
        expected: "never matches".into(),
        actual: "-".into(),
        matched: false,
    });
    let failed = if failed.field == "not any" {
        Condition { field: "(rule)".into(), expected: "nothing (allow-nothing policy)".into(), ..failed }
    } else {
        failed
    };
    Miss { policy: name.to_string(), failed, passed: held }
}

fn policy_by_name<'a>(rules: &'a Value, name: &str) -> Option<&'a Value> {
    field(rules, "policies").and_then(|p| p.get(name))
}

/// Envoy's RBAC policy name that closes plaintext connections under STRICT (`peer_plaintext` slot).
pub const MTLS_STRICT_POLICY: &str = "meshca-mtls-strict";
/// Envoy's RBAC policy name that closes mTLS connections under DISABLE (`peer_tls` slot).
pub const MTLS_DISABLED_POLICY: &str = "meshca-mtls-disabled";

/// The PeerAuthentication gate in front of the filters: a request without a peer identity
/// (plaintext) under STRICT, or with one (mTLS) under DISABLE, never reaches them: the connection
/// is closed, so there is no status code. `None` when `mtls` lets the request through.
#[must_use]
pub fn peer_gate(mtls: &EffectiveMtls, req: &Request) -> Option<Verdict> {
    let tls = req.source.as_ref().is_some_and(|s| s.principal.is_some());
    let summary = refusal(mtls, tls)?;
    let policy = if tls { MTLS_DISABLED_POLICY } else { MTLS_STRICT_POLICY };
    Some(Verdict {
        name: req.name.clone(),
        decision: Decision::Deny,
        status: None,
        policy: Some(policy.to_string()),
        stage: Stage::Peer,
        expect: req.expect,
        explanation: Explanation { summary, ..Explanation::default() },
    })
}

/// Evaluate `req` on `chain`. Errors name the request field that is invalid.
pub fn evaluate(chain: &Chain, req: &Request, opts: &EvalOptions) -> Result<Verdict, String> {
    let mut attrs = req.attrs(opts.port)?;
    let http = chain.protocol == Protocol::Http;
    if !http {
        // Network filters see no HTTP request, and the remote address is the peer's (no XFF).
        attrs.headers.clear();
        attrs.url_path = None;
        attrs.remote_ip = attrs.direct_remote_ip;
    }
    let status_for = |s: u16| http.then_some(s);
    let mut ex = Explanation::default();
    let mut metadata = Value::Null;
    let mut custom_hit: Option<String> = None;
    let mut allow_hit: Option<(String, Vec<Condition>)> = None;
    let mut allow_engine = false;
    let verdict = |decision, status, policy, stage, ex| Verdict {
        name: req.name.clone(),
        decision,
        status,
        policy,
        stage,
        expect: req.expect,
        explanation: ex,
    };
    for f in &chain.filters {
        match kind(f) {
            Kind::Jwt(cfg) if http => {
                let r = jwt::run(cfg, &attrs, opts.now, &opts.jwks);
                for h in &r.strip {
                    attrs.headers.remove(h);
                }
                metadata = r.metadata;
                let failed = r.outcome.status;
                ex.jwt = Some(r.outcome.clone());
                if let Some(status) = failed {
                    ex.summary = format!("jwt_authn rejected the token: {}", r.outcome.message);
                    return Ok(verdict(Decision::Deny, Some(status), None, Stage::Jwt, ex));
                }
            }
            Kind::Rbac(cfg) => {
                let ctx = Ctx::new(&attrs, &metadata);
                let prefix = str_field(cfg, "shadow_rules_stat_prefix").unwrap_or("");
                if let Some(shadow) = field(cfg, "shadow_rules") {
                    let (hit, _) = engine(&ctx, shadow);
                    let act = action(shadow);
                    if prefix == "istio_ext_authz_" {
                        if let Some(h) = hit {
                            custom_hit.get_or_insert(h);
                        }
                    } else if act != "LOG" {
                        let denied = (act == "DENY") == hit.is_some();
                        let result = if denied { "denied" } else { "allowed" };
                        ex.dry_run.push(Shadow { action: act, result: result.into(), policy: hit });
                    }
                }
                let Some(rules) = field(cfg, "rules") else { continue };
                let (hit, all) = engine(&ctx, rules);
                match action(rules).as_str() {
                    "LOG" => ex.audit = ex.audit.take().or(hit),
                    "DENY" => {
                        if let Some(name) = hit {
                            ex.matched =
                                policy_by_name(rules, &name).map(|p| matched_conditions(&ctx, p)).unwrap_or_default();
                            ex.summary = format!("denied by DENY rule {name}");
                            return Ok(verdict(Decision::Deny, status_for(403), Some(name), Stage::Deny, ex));
                        }
                    }
                    _ => {
                        allow_engine = true;
                        match hit {
                            Some(name) => {
                                let m = policy_by_name(rules, &name)
                                    .map(|p| matched_conditions(&ctx, p))
                                    .unwrap_or_default();
                                allow_hit.get_or_insert((name, m));
                            }
                            None => {
                                ex.nearest_misses = all
                                    .iter()
                                    .filter(|_| opts.explain)
                                    .filter_map(|(n, _)| policy_by_name(rules, n).map(|p| nearest_miss(&ctx, n, p)))
                                    .collect();
                                ex.summary = if all.is_empty() {
                                    "denied: ALLOW policies apply but none of their rules reaches this chain (allow-nothing)"
                                        .into()
                                } else {
                                    format!(
                                        "denied: ALLOW policies apply and none of their {} rule(s) matched",
                                        all.len()
                                    )
                                };
                                return Ok(verdict(Decision::Deny, status_for(403), None, Stage::NoAllowMatch, ex));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(name) = custom_hit {
        ex.summary = format!(
            "CUSTOM rule {name} matched: the decision depends on the external authorizer; if it allows, the rest of the chain allows"
        );
        ex.custom = Some(name.clone());
        return Ok(verdict(Decision::Allow, status_for(200), Some(name), Stage::Custom, ex));
    }
    match allow_hit {
        Some((name, matched)) => {
            ex.summary = format!("allowed by ALLOW rule {name}");
            ex.matched = matched;
            Ok(verdict(Decision::Allow, status_for(200), Some(name), Stage::Allow, ex))
        }
        None => {
            debug_assert!(!allow_engine);
            ex.summary = "allowed: no ALLOW policy applies to this workload and no DENY rule matched".into();
            Ok(verdict(Decision::Allow, status_for(200), None, Stage::NoPolicy, ex))
        }
    }
}
