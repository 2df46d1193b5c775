//! Legacy v1alpha1 objects to their modern equivalents (the mapping of Istio 1.4's
//! `istioctl x authz convert` and of `security-policy-migrate`), with a report of everything that
//! could not be converted and why.
//!
//! Without a Service inventory, a legacy target service `name` (or `name.ns.svc...`) becomes the
//! selector `app: <name>`; every such assumption is in the report.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::model::{AccessRule, AuthnPolicy, Object, PolicySet, RbacConfig, RbacMode, ServiceRoleBinding, Spec};

/// One thing that was not (or not exactly) converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// `file:line` of the legacy object.
    pub at: String,
    /// `Kind name.namespace`.
    pub object: String,
    /// What was lost or assumed, and why.
    pub message: String,
}

/// Converted objects (Kubernetes JSON) and the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conversion {
    /// Modern objects.
    pub objects: Vec<Value>,
    /// What could not be converted.
    pub issues: Vec<Issue>,
}

struct Out<'a> {
    conv: &'a mut Conversion,
    o: &'a Object,
}

impl Out<'_> {
    fn issue(&mut self, message: String) {
        let o = self.o;
        self.conv.issues.push(Issue {
            at: o.source.to_string(),
            object: format!("{} {}", o.kind(), o.display_name()),
            message,
        });
    }

    fn push(&mut self, kind: &str, name: &str, ns: &str, spec: Value) {
        self.conv.objects.push(json!({
            "apiVersion": "security.istio.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "annotations": {"meshca.io/converted-from": format!("{} {}", self.o.kind(), self.o.display_name())}},
            "spec": spec,
        }));
    }
}

fn short_service(s: &str) -> &str {
    s.split('.').next().unwrap_or(s)
}

fn rbac_config(out: &mut Out<'_>, c: &RbacConfig, root: &str) {
    let deny_all = json!({});
    let allow_all = json!({"rules": [{}]});
    match c.mode {
        RbacMode::Off => out.push("AuthorizationPolicy", "global-allow-all", root, allow_all),
        RbacMode::On => out.push("AuthorizationPolicy", "global-deny-all", root, deny_all),
        RbacMode::OnWithInclusion => {
            let t = c.inclusion.clone().unwrap_or_default();
            for ns in &t.namespaces {
                out.push("AuthorizationPolicy", &format!("{ns}-deny-all"), ns, deny_all.clone());
            }
            if !t.services.is_empty() {
                out.issue(format!("inclusion.services {:?}: service-level inclusion has no modern equivalent; add a deny-all policy with a selector per service", t.services));
            }
        }
        RbacMode::OnWithExclusion => {
            let t = c.exclusion.clone().unwrap_or_default();
            out.push("AuthorizationPolicy", "global-deny-all", root, deny_all);
            for ns in &t.namespaces {
                out.push("AuthorizationPolicy", &format!("{ns}-allow-all"), ns, allow_all.clone());
            }
            if !t.services.is_empty() {
                out.issue(format!(
                    "exclusion.services {:?}: service-level exclusion has no modern equivalent",
                    t.services
                ));
            }
        }
    }
    if c.enforcement_mode.as_deref() == Some("PERMISSIVE") {
        out.issue(
            "enforcementMode PERMISSIVE: add the annotation istio.io/dry-run: \"true\" to the converted policies"
                .into(),
        );
    }
}

fn subject_sources(out: &mut Out<'_>, b: &ServiceRoleBinding) -> (Vec<Value>, bool) {
    let mut from = Vec::new();
    let mut anyone = false;
    for s in &b.subjects {
        let mut src = Map::new();
        if s.user == "*" || s.user == "allUsers" {
            anyone = true;
            continue;
        }
        if s.user == "allAuthenticatedUsers" {
            src.insert("principals".into(), json!(["*"]));
        } else if !s.user.is_empty() {
            src.insert("principals".into(), json!([s.user]));
        }
        if !s.group.is_empty() {
            out.issue(format!(
                "subject group {:?}: groups are not converted (use when request.auth.claims[groups])",
                s.group
            ));
        }
        for (k, v) in &s.properties {
            let field = match k.as_str() {
                "source.namespace" => "namespaces",
                "source.ip" => "ipBlocks",
                "request.auth.principal" => "requestPrincipals",
                "source.principal" => "principals",
                other => {
                    out.issue(format!("subject property {other:?} is not converted"));
                    continue;
                }
            };
            src.insert(field.into(), json!([v]));
        }
        if !src.is_empty() {
            from.push(json!({"source": src}));
        }
    }
    (from, anyone)
}

fn access_rule_to(out: &mut Out<'_>, r: &AccessRule) -> Option<Value> {
    let mut op = Map::new();
    if !r.methods.is_empty() {
        op.insert("methods".into(), json!(r.methods));
    }
    if !r.paths.is_empty() {
        op.insert("paths".into(), json!(r.paths));
    }
    if !r.ports.is_empty() || !r.not_ports.is_empty() {
        out.issue(
            "ports are dropped (as Istio's converter did): add to.operation.ports with the container port".into(),
        );
    }
    if !r.constraints.is_empty() {
        let keys: Vec<&str> = r.constraints.iter().map(|c| c.key.as_str()).collect();
        out.issue(format!("constraints {keys:?} are dropped: rewrite them as `when` conditions"));
    }
    (!op.is_empty()).then(|| json!([{"operation": op}]))
}

fn service_role(out: &mut Out<'_>, set: &PolicySet, rules: &[AccessRule]) {
    let (ns, name) = (out.o.namespace().to_string(), out.o.meta.name.clone());
    let bindings: Vec<&ServiceRoleBinding> = set
        .objects
        .iter()
        .filter(|x| x.namespace() == ns)
        .filter_map(|x| match &x.spec {
            Spec::ServiceRoleBinding(b) if b.role_ref.as_ref().is_some_and(|r| r.name == name) => Some(b),
            _ => None,
        })
        .collect();
    if bindings.is_empty() {
        out.issue("no ServiceRoleBinding refers to this role: it granted nothing and is not converted".into());
        return;
    }
    let mut from = Vec::new();
    let mut anyone = false;
    for b in bindings {
        let (f, a) = subject_sources(out, b);
        from.extend(f);
        anyone |= a;
    }
    for (i, r) in rules.iter().enumerate() {
        let to = access_rule_to(out, r);
        let mut rule = Map::new();
        if !anyone && !from.is_empty() {
            rule.insert("from".into(), json!(from));
        }
        if let Some(t) = to {
            rule.insert("to".into(), t);
        }
        let services: Vec<&String> = r.services.iter().collect();
        if services.is_empty() || services.iter().any(|s| s.as_str() == "*") {
            out.push("AuthorizationPolicy", &format!("{name}-all-workloads-rule{i}"), &ns, json!({"rules": [rule]}));
            continue;
        }
        for (j, s) in services.iter().enumerate() {
            let short = short_service(s);
            if short.contains('*') {
                out.issue(format!(
                    "service {s:?} uses a wildcard: selectors cannot express it; converted as all workloads"
                ));
            }
            let spec = if short.contains('*') {
                json!({"rules": [rule]})
            } else {
                out.issue(format!(
                    "service {s:?} assumed to select pods labelled app: {short}; check the Service's selector"
                ));
                json!({"selector": {"matchLabels": {"app": short}}, "rules": [rule]})
            };
            let pname = format!("service-{}-rule{i}-target{j}", short.replace('*', "wildcard"));
            out.push("AuthorizationPolicy", &pname, &ns, spec);
        }
    }
}

fn authn_policy(out: &mut Out<'_>, p: &AuthnPolicy, mesh: bool, root: &str) {
    let ns = if mesh { root.to_string() } else { out.o.namespace().to_string() };
    // `peers: [{mtls: {}}]` and `peers: [{mtls: }]` (null) both mean mutual TLS, STRICT unless said.
    let mode =
        p.peers.iter().find(|m| m.jwt.is_none()).map(|m| match m.mtls.as_ref().and_then(|x| x.mode.as_deref()) {
            Some("PERMISSIVE") => "PERMISSIVE",
            _ => "STRICT",
        });
    let mode = if p.peer_is_optional { mode.map(|_| "PERMISSIVE") } else { mode };
    let targets: Vec<Option<&str>> =
        if p.targets.is_empty() { vec![None] } else { p.targets.iter().map(|t| Some(t.name.as_str())).collect() };
    for t in &p.targets {
        if !t.ports.is_empty() {
            out.issue(format!("target {:?} ports: legacy ports are Service ports; portLevelMtls needs the container (target) port, so it is not converted", t.name));
        }
        out.issue(format!("target {:?} assumed to select pods labelled app: {}", t.name, t.name));
    }
    let base = out.o.meta.name.clone();
    for t in &targets {
        let name = match t {
            Some(n) => format!("{base}-{n}"),
            None if mesh => "default".to_string(),
            None => base.clone(),
        };
        let sel = t.map(|n| json!({"matchLabels": {"app": n}}));
        if let Some(m) = mode {
            let mut spec = json!({"mtls": {"mode": m}});
            if let Some(s) = &sel {
                spec["selector"] = s.clone();
            }
            out.push("PeerAuthentication", &name, &ns, spec);
        }
        let jwts: Vec<Value> = p
            .origins
            .iter()
            .filter_map(|o| o.jwt.as_ref())
            .map(|j| {
                let mut r = json!({"issuer": j.issuer});
                if !j.audiences.is_empty() {
                    r["audiences"] = json!(j.audiences);
                }
                if !j.jwks_uri.is_empty() {
                    r["jwksUri"] = json!(j.jwks_uri);
                }
                if !j.jwks.is_empty() {
                    r["jwks"] = json!(j.jwks);
                }
                if !j.jwt_headers.is_empty() {
                    r["fromHeaders"] = json!(j.jwt_headers.iter().map(|h| json!({"name": h})).collect::<Vec<_>>());
                }
                if !j.jwt_params.is_empty() {
                    r["fromParams"] = json!(j.jwt_params);
                }
                r
            })
            .collect();
        if jwts.is_empty() {
            continue;
        }
        let mut ra = json!({"jwtRules": jwts});
        if let Some(s) = &sel {
            ra["selector"] = s.clone();
        }
        out.push("RequestAuthentication", &name, &ns, ra);
        if !p.origin_is_optional {
            let mut deny =
                json!({"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]});
            if let Some(s) = &sel {
                deny["selector"] = s.clone();
            }
            out.push("AuthorizationPolicy", &format!("{name}-require-jwt"), &ns, deny);
            out.issue(
                "a missing JWT used to get 401 (Origin authentication failed); the DENY policy answers 403".into(),
            );
        }
        if p.origins.iter().filter_map(|o| o.jwt.as_ref()).any(|j| !j.trigger_rules.is_empty()) {
            out.issue(
                "triggerRules are not converted: restrict the require-jwt DENY rule with to.operation.paths/notPaths"
                    .into(),
            );
        }
    }
    if p.principal_binding.as_deref() == Some("USE_ORIGIN") {
        out.issue("principalBinding USE_ORIGIN has no equivalent: authorization policies use requestPrincipals for the JWT identity".into());
    }
}

/// Convert every legacy object of `set`. Modern objects in `set` are left alone.
#[must_use]
pub fn convert(set: &PolicySet, root_namespace: &str) -> Conversion {
    let mut conv = Conversion::default();
    for o in &set.objects {
        let mut out = Out { conv: &mut conv, o };
        match &o.spec {
            Spec::ClusterRbacConfig(c) | Spec::RbacConfig(c) => rbac_config(&mut out, c, root_namespace),
            Spec::ServiceRole(r) => service_role(&mut out, set, &r.rules),
            Spec::Policy(p) => authn_policy(&mut out, p, false, root_namespace),
            Spec::MeshPolicy(p) => authn_policy(&mut out, p, true, root_namespace),
            _ => {}
        }
    }
    conv
}
