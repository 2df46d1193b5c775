//! CUSTOM policies: the shadow RBAC filter that marks requests for the external authorizer and the
//! ext_authz filter itself (Istio's `builder/extauthz.go`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::matchers::{duration_json, status_code_name};
use super::{build_policies, rbac_rules, rbac_wrap};
use crate::model::{Action, AuthorizationPolicy, BodyInCheck, ExtensionProvider, MeshSettings, Object, Protocol};
use crate::validate::parse_duration_ms;

/// Suffix Istio appends to the deny policies of a misconfigured CUSTOM provider.
pub const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";

/// The filters for every CUSTOM provider, sorted by provider name.
pub fn custom_filters(
    policies: &[(&Object, &AuthorizationPolicy)],
    mesh: &MeshSettings,
    protocol: Protocol,
    notes: &mut Vec<String>,
) -> Vec<Value> {
    let mut by_provider: BTreeMap<String, Vec<(&Object, &AuthorizationPolicy)>> = BTreeMap::new();
    for (o, p) in policies {
        let name = p.provider.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        by_provider.entry(name).or_default().push((*o, *p));
    }
    let multiple = by_provider.len() > 1;
    let mut out = Vec::new();
    for (provider, group) in &by_provider {
        let config = mesh.provider(provider);
        if protocol == Protocol::Tcp && config.is_some_and(|c| c.envoy_ext_authz_http.is_some()) {
            notes.push(format!("ignored CUSTOM action with HTTP provider {provider:?} on TCP filter chain"));
            continue;
        }
        let problem = if multiple {
            Some("only one CUSTOM provider per workload is supported".to_string())
        } else {
            match config {
                None => Some(format!("extension provider {provider:?} is not defined in the mesh config")),
                Some(c) => provider_error(c).err(),
            }
        };
        let prefix = format!("istio-ext-authz-{provider}-");
        let (enforced, _) = build_policies(group, Action::Custom, mesh, protocol, &prefix, notes);
        match (problem, config) {
            (None, Some(c)) => {
                let mut cfg = Map::new();
                cfg.insert("shadowRules".to_string(), rbac_rules("DENY", enforced));
                cfg.insert("shadowRulesStatPrefix".to_string(), json!("istio_ext_authz_"));
                out.push(rbac_wrap(protocol, cfg));
                out.push(ext_authz_filter(c, provider, protocol));
            }
            (problem, _) => {
                notes.push(format!(
                    "CUSTOM provider {provider:?} is not usable ({}); its rules deny the requests they match",
                    problem.unwrap_or_default()
                ));
                let renamed: Map<String, Value> =
                    enforced.into_iter().map(|(k, v)| (format!("{k}{BAD_CUSTOM_SUFFIX}"), v)).collect();
                let mut cfg = Map::new();
                cfg.insert("rules".to_string(), rbac_rules("DENY", renamed));
                out.push(rbac_wrap(protocol, cfg));
            }
        }
    }
    out
}

fn check_common(port: u32, timeout: Option<&String>, status: &str, service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("service must be set".to_string());
    }
    if !(1..=65535).contains(&port) {
        return Err(format!("port {port} is out of range 1..65535"));
    }
    if let Some(t) = timeout {
        parse_duration_ms(t).ok_or_else(|| format!("invalid timeout {t:?}"))?;
    }
    if !status.is_empty() {
        let ok = status.parse::<u16>().ok().and_then(status_code_name).is_some();
        if !ok {
            return Err(format!("invalid statusOnError {status:?}"));
        }
    }
    Ok(())
}

/// Why an extension provider cannot be used for ext_authz, if it cannot.
pub fn provider_error(p: &ExtensionProvider) -> Result<(), String> {
    if let Some(g) = &p.envoy_ext_authz_grpc {
        return check_common(g.port, g.timeout.as_ref(), &g.status_on_error, &g.service);
    }
    if let Some(h) = &p.envoy_ext_authz_http {
        check_common(h.port, h.timeout.as_ref(), &h.status_on_error, &h.service)?;
        if !h.path_prefix.is_empty() && !h.path_prefix.starts_with('/') {
            return Err(format!("pathPrefix must begin with /, found {:?}", h.path_prefix));
        }
        return Ok(());
    }
    Err(format!("extension provider {:?} is not an ext_authz provider", p.name))
}

/// `ns/host` or `host` to host.
fn host_of(service: &str) -> &str {
    service.split_once('/').map_or(service, |(_, h)| h)
}

fn timeout_json(t: Option<&String>) -> String {
    duration_json(t.and_then(|t| parse_duration_ms(t)).unwrap_or(600_000.0))
}

fn body_json(b: &BodyInCheck) -> Value {
    let mut m = Map::new();
    if b.max_request_bytes != 0 {
        m.insert("maxRequestBytes".to_string(), json!(b.max_request_bytes));
    }
    if b.allow_partial_message {
        m.insert("allowPartialMessage".to_string(), json!(true));
    }
    if b.pack_as_bytes {
        m.insert("packAsBytes".to_string(), json!(true));
    }
    Value::Object(m)
}

fn header_patterns(values: &[String]) -> Value {
    let patterns: Vec<Value> = values
        .iter()
        .map(|v| {
            if let Some(s) = v.strip_prefix('*') {
                json!({"suffix": s, "ignoreCase": true})
            } else if let Some(p) = v.strip_suffix('*') {
                json!({"prefix": p, "ignoreCase": true})
            } else {
                json!({"exact": v, "ignoreCase": true})
            }
        })
        .collect();
    json!({ "patterns": patterns })
}

fn ext_authz_filter(c: &ExtensionProvider, provider: &str, protocol: Protocol) -> Value {
    let rbac_filter = match protocol {
        Protocol::Http => "envoy.filters.http.rbac",
        Protocol::Tcp => "envoy.filters.network.rbac",
    };
    let mut cfg = Map::new();
    cfg.insert("transportApiVersion".to_string(), json!("V3"));
    cfg.insert(
        "filterEnabledMetadata".to_string(),
        json!({"filter": rbac_filter, "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
               "value": {"stringMatch": {"prefix": format!("istio-ext-authz-{provider}")}}}),
    );
    let (fail_open, clear_cache, status, body) = if let Some(g) = &c.envoy_ext_authz_grpc {
        let host = host_of(&g.service);
        cfg.insert(
            "grpcService".to_string(),
            json!({"envoyGrpc": {"clusterName": format!("outbound|{}||{host}", g.port), "authority": host},
                   "timeout": timeout_json(g.timeout.as_ref())}),
        );
        (g.fail_open, g.clear_route_cache, g.status_on_error.as_str(), g.include_request_body_in_check.as_ref())
    } else if let Some(h) = &c.envoy_ext_authz_http {
        let host = host_of(&h.service);
        let mut svc = Map::new();
        svc.insert(
            "serverUri".to_string(),
            json!({"uri": format!("http://{host}"), "cluster": format!("outbound|{}||{host}", h.port),
                   "timeout": timeout_json(h.timeout.as_ref())}),
        );
        if !h.path_prefix.is_empty() {
            svc.insert("pathPrefix".to_string(), json!(h.path_prefix));
        }
        if !h.include_additional_headers_in_check.is_empty() {
            let add: Vec<Value> =
                h.include_additional_headers_in_check.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            svc.insert("authorizationRequest".to_string(), json!({"headersToAdd": add}));
        }
        let mut resp = Map::new();
        for (key, list) in [
            ("allowedUpstreamHeaders", &h.headers_to_upstream_on_allow),
            ("allowedClientHeaders", &h.headers_to_downstream_on_deny),
            ("allowedClientHeadersOnSuccess", &h.headers_to_downstream_on_allow),
        ] {
            if !list.is_empty() {
                resp.insert(key.to_string(), header_patterns(list));
            }
        }
        if !resp.is_empty() {
            svc.insert("authorizationResponse".to_string(), Value::Object(resp));
        }
        cfg.insert("httpService".to_string(), Value::Object(svc));
        let allowed = if h.include_request_headers_in_check.is_empty() {
            &h.include_headers_in_check
        } else {
            &h.include_request_headers_in_check
        };
        if !allowed.is_empty() && protocol == Protocol::Http {
            cfg.insert("allowedHeaders".to_string(), header_patterns(allowed));
        }
        (h.fail_open, h.clear_route_cache, h.status_on_error.as_str(), h.include_request_body_in_check.as_ref())
    } else {
        (false, false, "", None)
    };
    if fail_open {
        cfg.insert("failureModeAllow".to_string(), json!(true));
    }
    let (name, type_url) = match protocol {
        Protocol::Http => {
            if let Some(code) = status.parse::<u16>().ok().and_then(status_code_name) {
                cfg.insert("statusOnError".to_string(), json!({ "code": code }));
            }
            if let Some(b) = body {
                cfg.insert("withRequestBody".to_string(), body_json(b));
            }
            if clear_cache {
                cfg.insert("clearRouteCache".to_string(), json!(true));
            }
            ("envoy.filters.http.ext_authz", "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz")
        }
        Protocol::Tcp => {
            cfg.insert("statPrefix".to_string(), json!("tcp."));
            (
                "envoy.filters.network.ext_authz",
                "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
            )
        }
    };
    cfg.insert("@type".to_string(), json!(type_url));
    super::matchers::obj([("name", json!(name)), ("typed_config", Value::Object(cfg))])
}
