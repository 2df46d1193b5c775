//! What a policy change does: example requests built from the values the policies mention, each
//! evaluated on the old and the new compiled chains; the ones whose decision differs, grouped into
//! newly allowed and newly denied.
//!
//! Requests are synthesized (peer identity × method × path, then hosts, ports, source addresses,
//! headers and SNI varied one at a time). JWT-based conditions are not explored: a request
//! principal needs a signed token, so those conditions are reported as not covered.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::eval::{evaluate, Chain, Decision, Destination, EvalOptions, Remote, Request, Source, Stage};
use crate::model::{PolicySet, Spec};

/// The most requests a diff evaluates.
pub const MAX_REQUESTS: usize = 4000;

/// One request whose decision changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The example request.
    pub request: Request,
    /// Before: `stage` and deciding policy.
    pub old: String,
    /// After.
    pub new: String,
}

/// The result of a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// How many example requests were evaluated.
    pub requests: usize,
    /// Denied before, allowed now.
    pub newly_allowed: Vec<Change>,
    /// Allowed before, denied now.
    pub newly_denied: Vec<Change>,
    /// What the examples cannot show.
    pub notes: Vec<String>,
}

/// A concrete value that a policy string value (`abc`, `abc*`, `*abc`, `*`) matches.
fn instance(v: &str, filler: &str) -> String {
    if v == "*" {
        return filler.to_string();
    }
    if let Some(p) = v.strip_suffix('*') {
        return format!("{p}{filler}");
    }
    if let Some(s) = v.strip_prefix('*') {
        return format!("{filler}{s}");
    }
    v.to_string()
}

fn path_instance(v: &str) -> String {
    let p = instance(v, "x").replace("{**}", "a/b").replace("{*}", "a");
    if p.starts_with('/') {
        p
    } else {
        format!("/{p}")
    }
}

fn first_ip(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

#[derive(Default)]
struct Values {
    peers: BTreeSet<String>,
    methods: BTreeSet<String>,
    paths: BTreeSet<String>,
    hosts: BTreeSet<String>,
    ports: BTreeSet<u16>,
    ips: BTreeSet<String>,
    remote: BTreeSet<String>,
    headers: BTreeSet<(String, String)>,
    sni: BTreeSet<String>,
    jwt: bool,
}

fn collect(set: &PolicySet, td: &str, v: &mut Values) {
    for o in &set.objects {
        let Spec::AuthorizationPolicy(p) = &o.spec else { continue };
        for r in p.rules() {
            for s in r.from().iter().filter_map(|f| f.source.as_ref()) {
                for x in s.principals.iter().chain(&s.not_principals) {
                    v.peers.insert(instance(x, "x"));
                }
                for x in s.namespaces.iter().chain(&s.not_namespaces) {
                    v.peers.insert(format!("{td}/ns/{}/sa/default", instance(x, "x")));
                }
                for x in s.service_accounts.iter().chain(&s.not_service_accounts) {
                    let (ns, sa) = x.split_once('/').unwrap_or((o.namespace(), x));
                    v.peers.insert(format!("{td}/ns/{ns}/sa/{sa}"));
                }
                for x in s.trust_domains.iter().chain(&s.not_trust_domains) {
                    v.peers.insert(format!("{}/ns/default/sa/default", instance(x, "x")));
                }
                v.ips.extend(s.ip_blocks.iter().chain(&s.not_ip_blocks).map(|x| first_ip(x)));
                v.remote.extend(s.remote_ip_blocks.iter().chain(&s.not_remote_ip_blocks).map(|x| first_ip(x)));
                v.jwt |= !s.request_principals.is_empty() || !s.not_request_principals.is_empty();
            }
            for op in r.to().iter().filter_map(|t| t.operation.as_ref()) {
                v.methods.extend(op.methods.iter().chain(&op.not_methods).map(|x| instance(x, "X")));
                v.paths.extend(op.paths.iter().chain(&op.not_paths).map(|x| path_instance(x)));
                v.hosts.extend(
                    op.hosts.iter().chain(&op.not_hosts).map(|x| instance(x, "example").replace(":*", ":8080")),
                );
                v.ports.extend(op.ports.iter().chain(&op.not_ports).filter_map(|x| x.parse::<u16>().ok()));
            }
            for c in &r.when {
                let vals = c.values.iter().chain(&c.not_values);
                match c.key.as_str() {
                    "source.ip" => v.ips.extend(vals.map(|x| first_ip(x))),
                    "remote.ip" => v.remote.extend(vals.map(|x| first_ip(x))),
                    "source.principal" => v.peers.extend(vals.map(|x| instance(x, "x"))),
                    "source.namespace" => {
                        v.peers.extend(vals.map(|x| format!("{td}/ns/{}/sa/default", instance(x, "x"))))
                    }
                    "destination.port" => v.ports.extend(vals.filter_map(|x| x.parse::<u16>().ok())),
                    "connection.sni" => v.sni.extend(vals.map(|x| instance(x, "svc"))),
                    k if k.starts_with("request.headers[") => {
                        let name = k.trim_start_matches("request.headers[").trim_end_matches(']').to_string();
                        v.headers.extend(vals.map(|x| (name.clone(), instance(x, "x"))));
                    }
                    k if k.starts_with("request.auth.") => v.jwt = true,
                    _ => {}
                }
            }
        }
    }
}

/// Example requests from the values both sets mention (at most [`MAX_REQUESTS`]).
#[must_use]
pub fn example_requests(sets: &[&PolicySet], trust_domain: &str, port: Option<u16>) -> (Vec<Request>, bool) {
    let mut v = Values::default();
    for s in sets {
        collect(s, trust_domain, &mut v);
    }
    let mut peers: Vec<Option<String>> = vec![None, Some(format!("{trust_domain}/ns/default/sa/default"))];
    peers.extend(v.peers.iter().map(|p| Some(p.trim_start_matches("spiffe://").to_string())));
    peers.dedup();
    let methods: Vec<String> = std::iter::once("GET".to_string())
        .chain(v.methods.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let paths: Vec<String> =
        std::iter::once("/".to_string()).chain(v.paths.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    let base_port = port.or_else(|| v.ports.iter().next().copied()).unwrap_or(8080);
    let mk = |peer: &Option<String>, method: &str, path: &str| Request {
        source: Some(Source { principal: peer.clone().map(|p| format!("spiffe://{p}")), ip: Some("10.0.0.1".into()) }),
        destination: Some(Destination { ip: Some("10.0.0.2".into()), port: Some(base_port) }),
        method: Some(method.to_string()),
        path: Some(path.to_string()),
        host: Some("example".into()),
        ..Request::default()
    };
    let mut out = Vec::new();
    'outer: for peer in &peers {
        for m in &methods {
            for p in &paths {
                if out.len() >= MAX_REQUESTS {
                    break 'outer;
                }
                out.push(mk(peer, m, p));
            }
        }
    }
    let bases: Vec<Request> = peers.iter().map(|p| mk(p, "GET", "/")).collect();
    for b in &bases {
        for h in &v.hosts {
            out.push(Request { host: Some(h.clone()), ..b.clone() });
        }
        for port in &v.ports {
            out.push(Request {
                destination: Some(Destination { ip: Some("10.0.0.2".into()), port: Some(*port) }),
                ..b.clone()
            });
        }
        for ip in &v.ips {
            let principal = b.source.as_ref().and_then(|s| s.principal.clone());
            out.push(Request { source: Some(Source { principal, ip: Some(ip.clone()) }), ..b.clone() });
        }
        for ip in &v.remote {
            out.push(Request { remote: Some(Remote { ip: Some(ip.clone()) }), ..b.clone() });
        }
        for (k, val) in &v.headers {
            let mut r = b.clone();
            r.headers.insert(k.clone(), val.clone());
            out.push(r);
        }
        if b.source.as_ref().is_some_and(|s| s.principal.is_some()) {
            for s in &v.sni {
                out.push(Request { sni: Some(s.clone()), ..b.clone() });
            }
        }
    }
    out.truncate(MAX_REQUESTS);
    (out, v.jwt)
}

fn describe(stage: Stage, policy: Option<&str>) -> String {
    let s = serde_json::to_value(stage).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    match policy {
        Some(p) => format!("{s} ({p})"),
        None => s,
    }
}

/// Evaluate `requests` on both chains and keep the ones whose decision differs.
#[must_use]
pub fn diff(old: &Chain, new: &Chain, requests: Vec<Request>, opts: &EvalOptions) -> DiffReport {
    let mut report = DiffReport { requests: requests.len(), ..DiffReport::default() };
    for r in requests {
        let (Ok(a), Ok(b)) = (evaluate(old, &r, opts), evaluate(new, &r, opts)) else { continue };
        if a.decision == b.decision {
            continue;
        }
        let change = Change {
            old: describe(a.stage, a.policy.as_deref()),
            new: describe(b.stage, b.policy.as_deref()),
            request: r,
        };
        match b.decision {
            Decision::Allow => report.newly_allowed.push(change),
            Decision::Deny => report.newly_denied.push(change),
        }
    }
    report
}
