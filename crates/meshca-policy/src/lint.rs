//! Lint: the seeds' troubleshooting pitfalls and the semantic traps of Istio's policy language,
//! each with a stable id, a severity, the file:line of the offending value and a fix.
//!
//! Catalogue (ids are stable):
//!
//! | id | severity | finding |
//! |---|---|---|
//! | POL001 | error | a principal written with `spiffe://` (never matches) |
//! | POL002 | warning | `*` in the middle of a value (a literal star, not a wildcard) |
//! | POL003 | error | a request principal without `/` or `*` (never matches) |
//! | POL004 | warning | `*@domain` request principal: tests the `sub` suffix, not the issuer |
//! | POL005 | warning | a host without its `host:*` form (`Host: h:port` does not match) |
//! | POL006 | warning | request principals / `request.auth.*` with no RequestAuthentication in scope |
//! | POL007 | warning | a RequestAuthentication rule without `audiences` (no `aud` check at all) |
//! | POL008 | warning | issuer differs from a RequestAuthentication issuer only by a trailing `/` |
//! | POL009 | warning | ALLOW `spec: {}` next to other ALLOW policies (does not deny everything) |
//! | POL010 | warning (error on a TCP workload) | ALLOW rule with HTTP-only fields: skipped whole on TCP ports |
//! | POL011 | warning | DENY rule with HTTP-only fields and no ports: denies every TCP connection |
//! | POL012 | warning | a policy selecting control-plane components |
//! | POL013 | error | more than one ClusterRbacConfig, or one not named `default` |
//! | POL014 | error | a ServiceRoleBinding whose ServiceRole is in another namespace |
//! | POL015 | warning | a ServiceRole naming services of another namespace |
//! | POL016 | warning | a legacy v1alpha1 object (removed in Istio 1.6), with its modern equivalent |
//! | POL017 | error | (inventory) a referenced namespace that does not exist (IST0101) |
//! | POL018 | warning | (inventory) a policy whose selector / namespace matches no workload (IST0127) |
//! | POL019 | error | (inventory) an HTTP-only ALLOW rule reaching a TCP port of a selected workload |

mod inventory;

pub use inventory::{Inventory, InventoryPort, InventoryWorkload};

use serde::Serialize;

use crate::model::{Action, AuthorizationPolicy, Object, PolicySet, Protocol, Spec};

/// error, warning or info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy cannot do what it says.
    Error,
    /// Probably not what was meant.
    Warning,
    /// Worth knowing.
    Info,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable check id (`POL001`...).
    pub id: &'static str,
    /// error, warning or info.
    pub severity: Severity,
    /// File of the object.
    pub file: String,
    /// Line of the offending value (or of the object).
    pub line: u32,
    /// `Kind name.namespace`.
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Optional context: the mesh's root namespace and, when known, the workload protocol.
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// Root namespace (policies there apply mesh-wide).
    pub root_namespace: String,
    /// `Some(Tcp)` when the policies are known to reach a TCP port.
    pub protocol: Option<Protocol>,
    /// Namespaces and workloads of the cluster, for the analyzer-like checks.
    pub inventory: Option<Inventory>,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions { root_namespace: "istio-system".into(), protocol: None, inventory: None }
    }
}

struct Ctx<'a> {
    o: &'a Object,
    out: &'a mut Vec<Finding>,
}

impl Ctx<'_> {
    fn add(&mut self, id: &'static str, severity: Severity, path: &str, message: String, hint: &str) {
        self.out.push(Finding {
            id,
            severity,
            file: self.o.source.file.clone(),
            line: if path.is_empty() { self.o.source.line } else { self.o.line_of(path) },
            object: format!("{} {}", self.o.kind(), self.o.display_name()),
            message,
            hint: hint.to_string(),
        });
    }
}

const CONTROL_PLANE: &[&str] = &[
    "istiod",
    "pilot",
    "istio-pilot",
    "istio-ingressgateway",
    "istio-egressgateway",
    "ingressgateway",
    "mixer",
    "citadel",
];

fn middle_star(v: &str) -> bool {
    let inner = v.get(1..v.len().saturating_sub(1)).unwrap_or("");
    v.len() > 2 && inner.contains('*') || (v.len() > 1 && v.starts_with('*') && v.ends_with('*'))
}

/// Every (field path, value) of a string list, with the lint that applies to each value.
fn values<'a>(base: &str, field: &str, vals: &'a [String]) -> impl Iterator<Item = (String, &'a String)> + 'a {
    let base = format!("{base}.{field}");
    vals.iter().enumerate().map(move |(i, v)| (format!("{base}[{i}]"), v))
}

fn uses_request_auth(p: &AuthorizationPolicy) -> bool {
    p.rules().iter().any(|r| {
        r.from()
            .iter()
            .filter_map(|f| f.source.as_ref())
            .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty())
            || r.when.iter().any(|c| c.key.starts_with("request.auth."))
    })
}

fn lint_authz(c: &mut Ctx<'_>, p: &AuthorizationPolicy, set: &PolicySet, opts: &LintOptions) {
    let ns = c.o.namespace().to_string();
    let http_only_when = |k: &str| k.starts_with("request.headers[") || k.starts_with("request.auth.");
    for (ri, rule) in p.rules().iter().enumerate() {
        let rbase = format!("spec.rules[{ri}]");
        let mut http_only: Vec<&str> = Vec::new();
        let mut has_ports = false;
        for (fi, f) in rule.from().iter().enumerate() {
            let Some(s) = &f.source else { continue };
            let sbase = format!("{rbase}.from[{fi}].source");
            for (field, list) in [("principals", &s.principals), ("notPrincipals", &s.not_principals)] {
                for (path, v) in values(&sbase, field, list) {
                    if v.starts_with("spiffe://") {
                        c.add(
                            "POL001",
                            Severity::Error,
                            &path,
                            format!("{field} value {v:?} includes the spiffe:// scheme and never matches"),
                            "write principals without the scheme: td/ns/<ns>/sa/<sa>",
                        );
                    }
                }
            }
            for (field, list) in
                [("requestPrincipals", &s.request_principals), ("notRequestPrincipals", &s.not_request_principals)]
            {
                if !list.is_empty() {
                    http_only.push("requestPrincipals");
                }
                for (path, v) in values(&sbase, field, list) {
                    lint_request_principal(c, &path, field, v, set);
                }
            }
            let all = [
                &s.principals,
                &s.not_principals,
                &s.namespaces,
                &s.not_namespaces,
                &s.request_principals,
                &s.not_request_principals,
            ];
            for list in all {
                for v in list.iter().filter(|v| middle_star(v)) {
                    c.add(
                        "POL002",
                        Severity::Warning,
                        &sbase,
                        format!("{v:?}: a '*' in the middle is a literal star, not a wildcard"),
                        "use a prefix (abc*) or suffix (*abc) match, or list the values",
                    );
                }
            }
        }
        for (ti, t) in rule.to().iter().enumerate() {
            let Some(op) = &t.operation else { continue };
            let obase = format!("{rbase}.to[{ti}].operation");
            has_ports |= !op.ports.is_empty() || !op.not_ports.is_empty();
            if !op.hosts.is_empty() || !op.not_hosts.is_empty() {
                http_only.push("hosts");
            }
            if !op.methods.is_empty() || !op.not_methods.is_empty() {
                http_only.push("methods");
            }
            if !op.paths.is_empty() || !op.not_paths.is_empty() {
                http_only.push("paths");
            }
            for (path, h) in values(&obase, "hosts", &op.hosts) {
                if h != "*" && !h.contains(':') && !op.hosts.iter().any(|x| *x == format!("{h}:*")) {
                    c.add(
                        "POL005",
                        Severity::Warning,
                        &path,
                        format!("host {h:?} does not match requests with a port in Host ({h}:8080)"),
                        &format!("add \"{h}:*\" next to \"{h}\""),
                    );
                }
            }
            for list in [&op.hosts, &op.not_hosts, &op.methods, &op.not_methods] {
                for v in list.iter().filter(|v| middle_star(v)) {
                    c.add(
                        "POL002",
                        Severity::Warning,
                        &obase,
                        format!("{v:?}: a '*' in the middle is a literal star, not a wildcard"),
                        "use a prefix (abc*) or suffix (*abc) match, or list the values",
                    );
                }
            }
            for v in op.paths.iter().chain(&op.not_paths).filter(|v| middle_star(v) && !v.contains('{')) {
                c.add(
                    "POL002",
                    Severity::Warning,
                    &obase,
                    format!("path {v:?}: a '*' in the middle is a literal star"),
                    "use a path template such as /api/{*}/items",
                );
            }
        }
        for (wi, cond) in rule.when.iter().enumerate() {
            if http_only_when(&cond.key) {
                http_only.push("when");
            }
            if cond.key == "destination.port" {
                has_ports = true;
            }
            if cond.key == "source.principal" {
                for (path, v) in values(&format!("{rbase}.when[{wi}]"), "values", &cond.values) {
                    if v.starts_with("spiffe://") {
                        c.add(
                            "POL001",
                            Severity::Error,
                            &path,
                            format!("source.principal value {v:?} includes spiffe:// and never matches"),
                            "write principals without the scheme",
                        );
                    }
                }
            }
            if cond.key == "request.auth.principal" {
                for (path, v) in values(&format!("{rbase}.when[{wi}]"), "values", &cond.values) {
                    lint_request_principal(c, &path, "request.auth.principal", v, set);
                }
            }
        }
        http_only.dedup();
        if http_only.is_empty() {
            continue;
        }
        let fields = http_only.join(", ");
        match p.action {
            Action::Allow => {
                let sev = if opts.protocol == Some(Protocol::Tcp) { Severity::Error } else { Severity::Warning };
                c.add("POL010", sev, &rbase, format!("rule[{ri}] uses HTTP-only fields ({fields}): on TCP ports the whole rule is skipped, and if no rule is left every TCP connection is denied"), "split the rule: put the TCP-capable conditions (principals, namespaces, ipBlocks, ports) in their own rule, or check that the port is named http-*");
            }
            Action::Deny | Action::Audit | Action::Custom if !has_ports => {
                c.add("POL011", Severity::Warning, &rbase, format!("rule[{ri}] uses HTTP-only fields ({fields}) and no ports: on TCP ports those conditions are dropped and the rule matches every connection"), "add to.operation.ports with the HTTP ports this rule is meant for");
            }
            _ => {}
        }
    }
    if uses_request_auth(p) {
        let scope_has_ra = set.objects.iter().any(|o| {
            matches!(o.spec, Spec::RequestAuthentication(_))
                && (o.namespace() == ns || o.namespace() == opts.root_namespace)
        });
        if !scope_has_ra {
            c.add("POL006", Severity::Warning, "spec.rules", "requestPrincipals / request.auth.* are used but no RequestAuthentication is in scope: no JWT is ever verified, so these conditions never match".into(), "add a RequestAuthentication for the issuer in this namespace or the root namespace");
        }
    }
    if p.action == Action::Allow && p.rules.as_ref().is_none_or(Vec::is_empty) {
        let others = set.objects.iter().any(|o| {
            !std::ptr::eq(o, c.o)
                && (o.namespace() == ns || o.namespace() == opts.root_namespace)
                && matches!(&o.spec, Spec::AuthorizationPolicy(q) if q.action == Action::Allow && !q.rules().is_empty())
        });
        if others {
            c.add("POL009", Severity::Warning, "spec", "ALLOW policy without rules (allow-nothing) next to other ALLOW policies: requests they allow are still allowed, so it does not deny everything".into(), "remove it, or use action: DENY with rules: [{}] to deny everything");
        }
    }
    let sel = p.selector.as_ref().map(|s| s.match_labels.clone()).unwrap_or_default();
    if sel.iter().any(|(k, v)| (k == "app" || k == "istio") && CONTROL_PLANE.contains(&v.as_str())) {
        c.add("POL012", Severity::Warning, "spec.selector", "the policy selects an Istio control-plane component; authorization is meant for mesh services and can break the control plane".into(), "select your workloads instead, or scope the policy to a gateway deliberately");
    }
}

fn lint_request_principal(c: &mut Ctx<'_>, path: &str, field: &str, v: &str, set: &PolicySet) {
    let bare_url = ["https://", "http://"]
        .iter()
        .find_map(|s| v.strip_prefix(s))
        .is_some_and(|rest| !rest.trim_end_matches('/').contains('/') && !rest.contains('*'));
    if bare_url {
        c.add(
            "POL003",
            Severity::Error,
            path,
            format!("{field} value {v:?} is an issuer alone: it is split at the last '/', so it never matches"),
            "write <issuer>/* to accept any subject of this issuer",
        );
    } else if !v.contains('/') && !v.contains('*') {
        c.add(
            "POL003",
            Severity::Error,
            path,
            format!("{field} value {v:?} has no '/': it requires iss={v:?} and an empty sub, so it never matches"),
            "write <issuer>/<subject>, <issuer>/* or */<subject>",
        );
    }
    if v.starts_with("*@") && !v.contains('/') {
        c.add(
            "POL004",
            Severity::Warning,
            path,
            format!("{field} value {v:?} matches the suffix of the JWT's sub, not its issuer"),
            "to restrict the issuer write <issuer>/*",
        );
    }
    if let Some((iss, _)) = v.rsplit_once('/') {
        for o in &set.objects {
            if let Spec::RequestAuthentication(ra) = &o.spec {
                for r in &ra.jwt_rules {
                    if r.issuer != iss && r.issuer.trim_end_matches('/') == iss.trim_end_matches('/') {
                        c.add("POL008", Severity::Warning, path, format!("issuer {iss:?} differs from RequestAuthentication {} issuer {:?} only by a trailing '/'", o.display_name(), r.issuer), "use exactly the issuer string of the tokens (the iss claim)");
                    }
                }
            }
        }
    }
}

/// Every finding for `set`, sorted by file and line.
#[must_use]
pub fn lint(set: &PolicySet, opts: &LintOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    let crc: Vec<&Object> = set.objects.iter().filter(|o| matches!(o.spec, Spec::ClusterRbacConfig(_))).collect();
    for o in &set.objects {
        let mut c = Ctx { o, out: &mut out };
        match &o.spec {
            Spec::AuthorizationPolicy(p) => lint_authz(&mut c, p, set, opts),
            Spec::RequestAuthentication(ra) => {
                for (i, r) in ra.jwt_rules.iter().enumerate() {
                    if r.audiences.is_empty() {
                        c.add("POL007", Severity::Warning, &format!("spec.jwtRules[{i}]"), format!("jwtRules[{i}] (issuer {:?}) has no audiences: Envoy then accepts tokens for any audience", r.issuer), "list the audiences this workload accepts");
                    }
                }
                if ra.selector.as_ref().is_some_and(|s| {
                    s.match_labels
                        .iter()
                        .any(|(k, v)| (k == "app" || k == "istio") && CONTROL_PLANE.contains(&v.as_str()))
                }) {
                    c.add(
                        "POL012",
                        Severity::Warning,
                        "spec.selector",
                        "the policy selects an Istio control-plane component".into(),
                        "select your workloads instead",
                    );
                }
            }
            Spec::ClusterRbacConfig(_) => {
                if crc.len() > 1 {
                    c.add(
                        "POL013",
                        Severity::Error,
                        "",
                        format!(
                            "{} ClusterRbacConfig objects: Istio disables authorization and ignores all policies",
                            crc.len()
                        ),
                        "keep exactly one ClusterRbacConfig, named default",
                    );
                } else if o.meta.name != "default" {
                    c.add(
                        "POL013",
                        Severity::Error,
                        "metadata.name",
                        format!("ClusterRbacConfig is named {:?}: only the one named default is used", o.meta.name),
                        "rename it to default",
                    );
                }
            }
            Spec::ServiceRoleBinding(b) => {
                if let Some(r) = &b.role_ref {
                    let here = set.objects.iter().any(|x| {
                        matches!(x.spec, Spec::ServiceRole(_))
                            && x.meta.name == r.name
                            && x.namespace() == o.namespace()
                    });
                    let elsewhere = set.objects.iter().find(|x| {
                        matches!(x.spec, Spec::ServiceRole(_))
                            && x.meta.name == r.name
                            && x.namespace() != o.namespace()
                    });
                    if let (false, Some(other)) = (here, elsewhere) {
                        c.add("POL014", Severity::Error, "spec.roleRef", format!("roleRef {:?} is a ServiceRole in namespace {:?}, not in the binding's namespace {:?}: the binding has no effect", r.name, other.namespace(), o.namespace()), "put the ServiceRoleBinding and its ServiceRole in the same namespace");
                    }
                }
            }
            Spec::ServiceRole(sr) => {
                let ns = o.namespace().to_string();
                for (i, rule) in sr.rules.iter().enumerate() {
                    for (path, s) in values(&format!("spec.rules[{i}]"), "services", &rule.services) {
                        let parts: Vec<&str> = s.split('.').collect();
                        if parts.len() >= 2 && parts[1] != ns && !parts[1].contains('*') {
                            c.add(
                                "POL015",
                                Severity::Warning,
                                &path,
                                format!(
                                    "service {s:?} is in namespace {:?}, but the ServiceRole is in {ns:?}",
                                    parts[1]
                                ),
                                "a ServiceRole only covers services of its own namespace: move it",
                            );
                        }
                    }
                }
            }
            _ => {}
        }
        if o.spec.is_legacy() {
            let modern = match &o.spec {
                Spec::ServiceRole(_) | Spec::ServiceRoleBinding(_) => {
                    "an ALLOW AuthorizationPolicy (meshca policy convert)"
                }
                Spec::ClusterRbacConfig(_) | Spec::RbacConfig(_) => {
                    "a root-namespace AuthorizationPolicy: spec: {} (deny all) or rules: [{}] (allow all)"
                }
                Spec::MeshPolicy(_) | Spec::Policy(_) => {
                    "PeerAuthentication (mTLS) and RequestAuthentication + AuthorizationPolicy (JWT)"
                }
                _ => "the security.istio.io v1 APIs",
            };
            c.add(
                "POL016",
                Severity::Warning,
                "",
                format!("{} is a legacy v1alpha1 object; Istio 1.6 and later ignore it", o.kind()),
                &format!("replace it with {modern}"),
            );
        }
    }
    if let Some(inv) = &opts.inventory {
        inventory::check(set, inv, &opts.root_namespace, &mut out);
    }
    out.sort_by(|a, b| (&a.file, a.line, a.id).cmp(&(&b.file, b.line, b.id)));
    out
}
