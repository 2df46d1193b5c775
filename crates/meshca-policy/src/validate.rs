//! Istio's validation rules for security objects (`pkg/config/validation` and
//! `pkg/config/security` in Istio), as errors and warnings with a field path.
//!
//! [`validate`] is run by the loader on every object; an object with an error is not loaded.
//! Messages follow Istio's wording where the reference gives it.

use std::net::IpAddr;

mod authn;

pub use authn::parse_duration_ms;
use authn::{peer_authentication, request_authentication};

use crate::model::{
    parse_go_bool, Action, AuthorizationPolicy, Object, PolicyTargetReference, Spec, WorkloadSelector,
    DRY_RUN_ANNOTATION,
};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One validation finding; `path` is relative to the object (`spec.rules[0].when[1].key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

/// The warning Istio gives for DENY rules made only of HTTP attributes (they deny all TCP traffic).
pub const DENY_HTTP_ONLY_WARNING: &str = "configured AuthorizationPolicy will deny all traffic to TCP ports under its \
     scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port";

#[derive(Default)]
struct Out(Vec<Finding>);

impl Out {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding { severity: Severity::Error, path: path.into(), message: message.into() });
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding { severity: Severity::Warning, path: path.into(), message: message.into() });
    }
}

/// All validation findings for one object.
pub fn validate(obj: &Object) -> Vec<Finding> {
    let mut out = Out::default();
    match &obj.spec {
        Spec::AuthorizationPolicy(p) => {
            if let Some(v) = obj.meta.annotations.get(DRY_RUN_ANNOTATION) {
                if parse_go_bool(v).is_none() {
                    let path = format!("metadata.annotations[{DRY_RUN_ANNOTATION}]");
                    out.warn(path, format!("invalid value {v:?} for {DRY_RUN_ANNOTATION}: the policy is enforced"));
                }
            }
            authorization_policy(p, &mut out)
        }
        Spec::RequestAuthentication(p) => request_authentication(p, &mut out),
        Spec::PeerAuthentication(p) => peer_authentication(p, &mut out),
        Spec::ServiceRoleBinding(b) => {
            if b.subjects.is_empty() {
                out.err("spec.subjects", "at least one subject must be specified");
            }
            if b.role_ref.as_ref().is_none_or(|r| r.name.is_empty()) && b.role.is_none() && b.actions.is_empty() {
                out.err("spec.roleRef", "`roleRef` must be set with a non-empty name");
            }
            if let Some(r) = &b.role_ref {
                if r.kind != "ServiceRole" {
                    out.err(
                        "spec.roleRef.kind",
                        format!("kind set to {:?}, the only supported value is \"ServiceRole\"", r.kind),
                    );
                }
            }
        }
        Spec::ServiceRole(r) => {
            if r.rules.is_empty() {
                out.err("spec.rules", "at least 1 rule must be specified");
            }
            for (i, rule) in r.rules.iter().enumerate() {
                if rule.services.is_empty() {
                    out.err(format!("spec.rules[{i}].services"), "at least 1 service must be specified");
                }
            }
        }
        _ => {}
    }
    out.0
}

fn selector(sel: Option<&WorkloadSelector>, out: &mut Out) {
    let Some(sel) = sel else { return };
    if sel.match_labels.is_empty() {
        out.warn("spec.selector", "workload selector specified without labels");
    }
    for (k, v) in &sel.match_labels {
        let p = format!("spec.selector.matchLabels[{k}]");
        if k.is_empty() {
            out.err(&p, "empty key is not supported in selector");
        }
        if k.contains('*') || v.contains('*') {
            out.err(&p, "wildcard is not supported in selector");
        }
    }
}

fn target_refs(
    sel: Option<&WorkloadSelector>,
    one: Option<&PolicyTargetReference>,
    many: &[PolicyTargetReference],
    out: &mut Out,
) {
    if sel.is_some() && (one.is_some() || !many.is_empty()) {
        out.err("spec", "only one of targetRefs or workloadSelector can be set");
    }
    if one.is_some() && !many.is_empty() {
        out.err("spec", "only one of targetRef or targetRefs can be set");
    }
    if many.len() > 16 {
        out.err("spec.targetRefs", "at most 16 targetRefs are allowed");
    }
    let refs = one.map(|r| ("spec.targetRef".to_string(), r)).into_iter();
    let refs = refs.chain(many.iter().enumerate().map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)));
    for (p, r) in refs {
        if !r.namespace.is_empty() {
            out.err(format!("{p}.namespace"), format!("targetRef namespace must not be set; found {:?}", r.namespace));
        }
        let ok = match r.kind.as_str() {
            "Service" => r.group.is_empty() || r.group == "core",
            "ServiceEntry" => r.group == "networking.istio.io",
            "Gateway" | "GatewayClass" => r.group == "gateway.networking.k8s.io",
            _ => false,
        };
        if !ok {
            out.err(
                &p,
                format!(
                    "targetRef must be to one of Service, ServiceEntry, gateway.networking.k8s.io/Gateway or \
                     GatewayClass; found {}/{}",
                    r.group, r.kind
                ),
            );
        }
        if r.name.is_empty() {
            out.err(format!("{p}.name"), "targetRef name must be set");
        }
    }
}

/// Parses an IP or CIDR as Istio does; `None` when invalid.
pub fn parse_cidr(v: &str) -> Option<(IpAddr, u8)> {
    match v.split_once('/') {
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some((ip, len))
        }
        None => {
            let ip: IpAddr = v.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn ips(values: &[String], path: &str, out: &mut Out) {
    for (i, v) in values.iter().enumerate() {
        if parse_cidr(v).is_none() {
            let what = if v.contains('/') { "bad CIDR range" } else { "bad IP address" };
            out.err(format!("{path}[{i}]"), format!("{what} ({v})"));
        }
    }
}

fn ports(values: &[String], path: &str, out: &mut Out) {
    for (i, v) in values.iter().enumerate() {
        if v.parse::<u16>().is_err() {
            out.err(format!("{path}[{i}]"), format!("bad port ({v})"));
        }
    }
}

fn non_empty(values: &[String], field: &str, path: &str, out: &mut Out) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            out.err(format!("{path}[{i}]"), format!("empty value not allowed, found in {field}"));
        }
    }
}

fn service_accounts(values: &[String], path: &str, out: &mut Out) {
    if values.len() > 16 {
        out.err(path, "at most 16 service accounts are allowed");
    }
    for (i, v) in values.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if v.len() > 320 {
            out.err(&p, "service account must be at most 320 characters");
        }
        if v.contains('*') {
            out.err(&p, format!("wildcard is not supported in service account: {v}"));
        }
        let parts: Vec<&str> = v.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|s| s.is_empty()) {
            out.err(&p, format!("service account must be in the form `namespace/name` or `name`, found {v:?}"));
        }
    }
}

fn trust_domains(values: &[String], path: &str, out: &mut Out) {
    for (i, v) in values.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if v.contains('/') {
            out.err(&p, format!("trust domain must not contain '/': {v}"));
        }
        let stars = v.matches('*').count();
        if stars > 1 {
            out.err(&p, format!("at most one wildcard is allowed in trust domain: {v}"));
        } else if stars == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*') {
            out.err(&p, format!("wildcard is only allowed at the start or end of trust domain: {v}"));
        }
    }
}

/// Istio's `CheckValidPathTemplate` for a path that uses `{*}` or `{**}`.
pub fn path_template_error(path: &str) -> Option<String> {
    if !path.contains("{*}") && !path.contains("{**}") {
        return None;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        match *s {
            "{*}" => {}
            "{**}" if i + 1 == segs.len() || !segs[i + 1..].iter().any(|x| *x == "{*}" || *x == "{**}") => {}
            "{**}" => {
                return Some(format!(
                    "invalid or unsupported path {path}, found in paths: {{**}} is not the last operator"
                ))
            }
            _ => {
                let ok = s.chars().all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;=:@".contains(c));
                if !ok {
                    return Some(format!(
                        "invalid or unsupported path {path}, found in paths: invalid literal segment {s:?}"
                    ));
                }
            }
        }
    }
    None
}

fn authorization_policy(p: &AuthorizationPolicy, out: &mut Out) {
    selector(p.selector.as_ref(), out);
    target_refs(p.selector.as_ref(), p.target_ref.as_ref(), &p.target_refs, out);
    let has_rules = !p.rules().is_empty();
    match p.action {
        Action::Custom => {
            if p.provider.as_ref().is_none_or(|pr| pr.name.is_empty()) {
                out.err("spec.provider", "must specify a provider name for CUSTOM action");
            }
            if !has_rules {
                out.err("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
            }
        }
        Action::Deny if !has_rules => out.err("spec.rules", "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"),
        _ => {}
    }
    if p.action != Action::Custom && p.provider.is_some() {
        out.err("spec.provider", "`provider` must not be set for action other than CUSTOM");
    }
    for (r, rule) in p.rules().iter().enumerate() {
        let rp = format!("spec.rules[{r}]");
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            out.err(format!("{rp}.from"), "`from` must not be empty");
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            out.err(format!("{rp}.to"), "`to` must not be empty");
        }
        // Every `from` (`to`) entry must keep a TCP-capable field, or it matches all TCP traffic.
        let mut tcp_from = true;
        for (f, from) in rule.from().iter().enumerate() {
            let fp = format!("{rp}.from[{f}].source");
            let Some(s) = &from.source else {
                out.err(&fp, "`from.source` must not be nil");
                continue;
            };
            if s.is_empty() {
                out.err(&fp, "`from.source` must not be empty");
            }
            if p.action == Action::Custom {
                let unsupported = [
                    ("namespaces", &s.namespaces),
                    ("notNamespaces", &s.not_namespaces),
                    ("serviceAccounts", &s.service_accounts),
                    ("notServiceAccounts", &s.not_service_accounts),
                    ("trustDomains", &s.trust_domains),
                    ("notTrustDomains", &s.not_trust_domains),
                    ("principals", &s.principals),
                    ("notPrincipals", &s.not_principals),
                    ("requestPrincipals", &s.request_principals),
                    ("notRequestPrincipals", &s.not_request_principals),
                ];
                for (name, v) in unsupported {
                    if !v.is_empty() {
                        out.err(
                            format!("{fp}.{name}"),
                            format!("From.{} is currently not supported with CUSTOM action", upper_first(name)),
                        );
                    }
                }
            }
            if !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty() {
                let mixed = !s.principals.is_empty()
                    || !s.not_principals.is_empty()
                    || !s.namespaces.is_empty()
                    || !s.not_namespaces.is_empty();
                if mixed {
                    out.err(&fp, "cannot set serviceAccounts with namespaces or principals");
                }
            }
            let lists = [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
                ("trustDomains", &s.trust_domains),
                ("notTrustDomains", &s.not_trust_domains),
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ];
            for (name, v) in lists {
                non_empty(v, upper_first(name).as_str(), &format!("{fp}.{name}"), out);
            }
            ips(&s.ip_blocks, &format!("{fp}.ipBlocks"), out);
            ips(&s.not_ip_blocks, &format!("{fp}.notIpBlocks"), out);
            ips(&s.remote_ip_blocks, &format!("{fp}.remoteIpBlocks"), out);
            ips(&s.not_remote_ip_blocks, &format!("{fp}.notRemoteIpBlocks"), out);
            service_accounts(&s.service_accounts, &format!("{fp}.serviceAccounts"), out);
            service_accounts(&s.not_service_accounts, &format!("{fp}.notServiceAccounts"), out);
            trust_domains(&s.trust_domains, &format!("{fp}.trustDomains"), out);
            trust_domains(&s.not_trust_domains, &format!("{fp}.notTrustDomains"), out);
            tcp_from &= [
                &s.principals,
                &s.not_principals,
                &s.namespaces,
                &s.not_namespaces,
                &s.ip_blocks,
                &s.not_ip_blocks,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                &s.service_accounts,
                &s.not_service_accounts,
            ]
            .iter()
            .any(|v| !v.is_empty());
        }
        let mut tcp_to = true;
        for (t, to) in rule.to().iter().enumerate() {
            let tp = format!("{rp}.to[{t}].operation");
            let Some(o) = &to.operation else {
                out.err(&tp, "`to.operation` must not be nil");
                continue;
            };
            if o.is_empty() {
                out.err(&tp, "`to.operation` must not be empty");
            }
            let lists = [
                ("hosts", &o.hosts),
                ("notHosts", &o.not_hosts),
                ("ports", &o.ports),
                ("notPorts", &o.not_ports),
                ("methods", &o.methods),
                ("notMethods", &o.not_methods),
                ("paths", &o.paths),
                ("notPaths", &o.not_paths),
            ];
            for (name, v) in lists {
                non_empty(v, upper_first(name).as_str(), &format!("{tp}.{name}"), out);
            }
            ports(&o.ports, &format!("{tp}.ports"), out);
            ports(&o.not_ports, &format!("{tp}.notPorts"), out);
            for (name, v) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
                for (i, path) in v.iter().enumerate() {
                    if let Some(e) = path_template_error(path) {
                        out.err(format!("{tp}.{name}[{i}]"), e);
                    }
                }
            }
            tcp_to &= !o.ports.is_empty() || !o.not_ports.is_empty();
        }
        for (w, cond) in rule.when.iter().enumerate() {
            let wp = format!("{rp}.when[{w}]");
            if cond.key.is_empty() {
                out.err(format!("{wp}.key"), "`key` must not be empty");
                continue;
            }
            if cond.values.is_empty() && cond.not_values.is_empty() {
                out.err(&wp, format!("at least one of `values` or `notValues` must be set for key {}", cond.key));
            }
            if let Err(e) = crate::validate::check_attribute(&cond.key) {
                out.err(format!("{wp}.key"), e);
                continue;
            }
            if p.action == Action::Custom {
                let k = cond.key.as_str();
                if matches!(k, "source.namespace" | "source.serviceAccount" | "source.trustDomain" | "source.principal")
                    || k.starts_with("request.auth.")
                {
                    out.err(
                        format!("{wp}.key"),
                        format!("When condition {k} is currently not supported with CUSTOM action"),
                    );
                }
            }
            for (name, vals) in [("values", &cond.values), ("notValues", &cond.not_values)] {
                let single = if name == "values" { "value" } else { "notValue" };
                for (i, v) in vals.iter().enumerate() {
                    let bad = match cond.key.as_str() {
                        "source.ip" | "remote.ip" | "destination.ip" => parse_cidr(v).is_none(),
                        "destination.port" => v.parse::<u16>().is_err(),
                        _ => false,
                    };
                    if bad {
                        out.err(format!("{wp}.{name}[{i}]"), format!("invalid `{single}` for `{}`: {v}", cond.key));
                    }
                }
            }
        }
        let deny_like = p.action == Action::Deny;
        if deny_like && ((rule.from.is_some() && !tcp_from && rule.to.is_none()) || (rule.to.is_some() && !tcp_to)) {
            out.warn(&rp, DENY_HTTP_ONLY_WARNING);
        }
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// Istio's `ValidateAttribute` on a `when` key: `Ok` for a supported key.
pub fn check_attribute(key: &str) -> Result<(), String> {
    let bracketed = |prefix: &str| -> bool {
        key.strip_prefix(prefix).is_some_and(|rest| {
            rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2 && !rest[1..rest.len() - 1].contains('[')
        })
    };
    match key {
        "source.ip"
        | "remote.ip"
        | "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "destination.ip"
        | "destination.port"
        | "connection.sni" => Ok(()),
        "destination.namespace" => Err(format!("attribute {key} is replaced by the metadata.namespace")),
        "destination.name" | "destination.user" => {
            Err(format!("deprecated attribute {key}: only supported in v1alpha1"))
        }
        _ if key.starts_with("destination.labels") => {
            Err(format!("attribute {key} is replaced by the workload selector"))
        }
        _ if key.starts_with("request.headers") => {
            if bracketed("request.headers") {
                Ok(())
            } else {
                Err(format!("invalid key: {key}, expected the form request.headers[<name>]"))
            }
        }
        _ if key.starts_with("request.auth.claims") => {
            let rest = &key["request.auth.claims".len()..];
            let ok = rest.len() > 2
                && rest.starts_with('[')
                && rest.ends_with(']')
                && rest[1..rest.len() - 1].split("][").all(|c| !c.is_empty() && !c.contains(['[', ']']));
            if ok {
                Ok(())
            } else {
                Err(format!("invalid key: {key}, expected the form request.auth.claims[<claim>]"))
            }
        }
        _ if key.starts_with("experimental.envoy.filters.") => {
            let ok = key
                .find('[')
                .is_some_and(|i| i > "experimental.envoy.filters.".len() && key.ends_with(']') && i + 2 < key.len());
            if ok {
                Ok(())
            } else {
                Err(format!("invalid key: {key}, expected the form experimental.envoy.filters.<name>[<key>]"))
            }
        }
        _ => Err(format!("unknown attribute: {key}")),
    }
}
