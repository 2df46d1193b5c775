//! RequestAuthentication to Envoy's `jwt_authn` filter (Istio's `authn/policy_applier.go`).

use serde_json::{json, Map, Value};

use super::matchers::duration_json;
use super::CompileOptions;
use crate::model::{JwtRule, Object, Spec};
use crate::validate::parse_duration_ms;

/// The jwt_authn filter for the applicable RequestAuthentications, or `None` when they have no rules.
pub fn jwt_authn_filter(objects: &[&Object], options: &CompileOptions, notes: &mut Vec<String>) -> Option<Value> {
    let mut rules: Vec<&JwtRule> = objects
        .iter()
        .filter_map(|o| match &o.spec {
            Spec::RequestAuthentication(r) => Some(r.jwt_rules.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    if rules.is_empty() {
        return None;
    }
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    let mut providers = Map::new();
    for (i, r) in rules.iter().enumerate() {
        providers.insert(format!("origins-{i}"), provider(r, options, notes));
    }
    let n = rules.len();
    let mut reqs: Vec<Value> = (0..n).map(|i| json!({"providerName": format!("origins-{i}")})).collect();
    if n == 1 {
        reqs.push(json!({"allowMissing": {}}));
    } else {
        let all: Vec<Value> = (0..n)
            .map(|i| {
                json!({"requiresAny": {"requirements": [{"providerName": format!("origins-{i}")}, {"allowMissing": {}}]}})
            })
            .collect();
        reqs.push(json!({"requiresAll": {"requirements": all}}));
    }
    Some(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": {"requiresAny": {"requirements": reqs}}}],
            "bypassCorsPreflight": true,
        }
    }))
}

/// `outbound|<port>||<host>` for a jwksUri.
fn jwks_cluster(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("https", uri));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let default_port = if scheme == "http" { 80 } else { 443 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().unwrap_or(default_port))
        }
        _ => (authority.to_string(), default_port),
    };
    format!("outbound|{port}||{host}")
}

fn provider(r: &JwtRule, options: &CompileOptions, notes: &mut Vec<String>) -> Value {
    let mut p = Map::new();
    if !r.issuer.is_empty() {
        p.insert("issuer".to_string(), json!(r.issuer));
    }
    if !r.audiences.is_empty() {
        p.insert("audiences".to_string(), json!(r.audiences));
    }
    let supplied =
        options.jwks.get(&r.jwks_uri).filter(|_| !r.jwks_uri.is_empty()).or_else(|| options.jwks.get(&r.issuer));
    if !r.jwks.is_empty() {
        p.insert("localJwks".to_string(), json!({"inlineString": r.jwks}));
    } else if let Some(keys) = supplied {
        p.insert("localJwks".to_string(), json!({"inlineString": keys}));
    } else if !r.jwks_uri.is_empty() {
        let timeout = duration_json(r.timeout.as_deref().and_then(parse_duration_ms).unwrap_or(5000.0));
        p.insert(
            "remoteJwks".to_string(),
            json!({"httpUri": {"uri": r.jwks_uri, "cluster": jwks_cluster(&r.jwks_uri), "timeout": timeout},
                   "cacheDuration": "300s"}),
        );
    } else {
        notes.push(format!(
            "issuer {:?} has neither jwks nor jwksUri and no keys were supplied; istiod would discover them through \
             OIDC, meshca inlines an empty key set (every token is rejected)",
            r.issuer
        ));
        p.insert("localJwks".to_string(), json!({"inlineString": "{\"keys\":[]}"}));
    }
    if r.forward_original_token {
        p.insert("forward".to_string(), json!(true));
    }
    if !r.from_headers.is_empty() {
        let h: Vec<Value> = r
            .from_headers
            .iter()
            .map(|h| {
                if h.prefix.is_empty() {
                    json!({"name": h.name})
                } else {
                    json!({"name": h.name, "valuePrefix": h.prefix})
                }
            })
            .collect();
        p.insert("fromHeaders".to_string(), Value::Array(h));
    }
    if !r.from_params.is_empty() {
        p.insert("fromParams".to_string(), json!(r.from_params));
    }
    if !r.from_cookies.is_empty() {
        p.insert("fromCookies".to_string(), json!(r.from_cookies));
    }
    if !r.output_payload_to_header.is_empty() {
        p.insert("forwardPayloadHeader".to_string(), json!(r.output_payload_to_header));
    }
    p.insert("payloadInMetadata".to_string(), json!("payload"));
    if !r.output_claim_to_headers.is_empty() {
        let c: Vec<Value> =
            r.output_claim_to_headers.iter().map(|c| json!({"headerName": c.header, "claimName": c.claim})).collect();
        p.insert("claimToHeaders".to_string(), Value::Array(c));
    }
    let mut claims = vec!["scope".to_string(), "permission".to_string()];
    for c in &r.space_delimited_claims {
        if !claims.contains(c) {
            claims.push(c.clone());
        }
    }
    p.insert("normalizePayloadInMetadata".to_string(), json!({"spaceDelimitedClaims": claims}));
    Value::Object(p)
}
