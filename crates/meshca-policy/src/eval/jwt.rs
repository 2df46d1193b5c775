//! Envoy's `envoy.filters.http.jwt_authn` as Istio configures it (every provider optional, a
//! present token must verify), interpreted over the compiled filter config. Checks run in Envoy's
//! order: parse, issuer configured, `nbf`/`exp` with clock skew, audiences, JWKS, kid/alg, signature.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use super::rbac::{field, list, str_field};
use super::request::Attrs;

/// Keys for issuers whose JWKS Envoy would fetch (`jwksUri` / OIDC): issuer → JWKS JSON text.
/// The key `*` applies to every issuer without its own entry.
pub type JwksByIssuer = BTreeMap<String, String>;

/// Result of the jwt_authn stage.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JwtOutcome {
    /// Envoy's status string (`Jwt is expired`...), `OK` or `no token`.
    pub message: String,
    /// HTTP status Envoy answers with when it rejects (401, or 403 for audiences).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `iss` of the token, if it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `<iss>/<sub>` when verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_principal: Option<String>,
    /// The provider (`origins-N`) that handled the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

pub(crate) struct JwtResult {
    pub outcome: JwtOutcome,
    /// Dynamic metadata written for RBAC (`{"payload": {...}}`), `Null` when nothing verified.
    pub metadata: Value,
    /// Headers jwt_authn removes after success (`forward: false`).
    pub strip: Vec<String>,
}

const DEFAULT_SKEW: i64 = 60;
const ENVOY_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "EdDSA",
];

struct Token {
    raw: String,
    header: Map<String, Value>,
    payload: Map<String, Value>,
}

fn fail(message: &str, issuer: Option<String>, provider: Option<String>) -> JwtResult {
    let status = if message == "Audiences in Jwt are not allowed" { 403 } else { 401 };
    JwtResult {
        outcome: JwtOutcome {
            message: message.to_string(),
            status: Some(status),
            issuer,
            request_principal: None,
            provider,
        },
        metadata: Value::Null,
        strip: Vec::new(),
    }
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or("");
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

/// (header name or "", token) pairs this provider would extract.
fn extract(provider: &Value, attrs: &Attrs) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let headers = list(provider, "from_headers");
    let params = list(provider, "from_params");
    let cookies = list(provider, "from_cookies");
    let path = attrs.headers.get(":path").cloned().unwrap_or_default();
    if headers.is_empty() && params.is_empty() && cookies.is_empty() {
        if let Some(v) = attrs.headers.get("authorization") {
            if let Some(t) = v.strip_prefix("Bearer ") {
                out.push(("authorization".to_string(), t.trim().to_string()));
            }
        }
        if let Some(t) = query_param(&path, "access_token") {
            out.push((String::new(), t));
        }
        return out;
    }
    for h in headers {
        let name = str_field(h, "name").unwrap_or("").to_ascii_lowercase();
        let prefix = str_field(h, "value_prefix").unwrap_or("");
        if let Some(v) = attrs.headers.get(&name) {
            if let Some(t) = v.strip_prefix(prefix) {
                out.push((name.clone(), t.trim().to_string()));
            }
        }
    }
    for p in params.iter().filter_map(Value::as_str) {
        if let Some(t) = query_param(&path, p) {
            out.push((String::new(), t));
        }
    }
    out
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn parse(raw: &str) -> Result<Token, &'static str> {
    let parts: Vec<&str> = raw.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections");
    };
    if URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).is_err() {
        return Err("Jwt header is an invalid Base64url encoded");
    }
    let header = decode_part(h).ok_or("Jwt header is an invalid JSON")?;
    match header.get("alg") {
        Some(Value::String(a)) if ENVOY_ALGS.contains(&a.as_str()) => {}
        Some(Value::String(_)) => return Err("Jwt header [alg] is not supported"),
        _ => return Err("Jwt header [alg] field is required and must be a string"),
    }
    if header.get("kid").is_some_and(|k| !k.is_string()) {
        return Err("Jwt header [kid] field is not a string");
    }
    if URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).is_err() {
        return Err("Jwt payload is an invalid Base64url encoded");
    }
    let payload = decode_part(p).ok_or("Jwt payload is an invalid JSON")?;
    for (claim, msg) in
        [("iss", "Jwt payload [iss] field is not a string"), ("sub", "Jwt payload [sub] field is not a string")]
    {
        if payload.get(claim).is_some_and(|v| !v.is_string()) {
            return Err(msg);
        }
    }
    for (claim, msg) in [
        ("iat", "Jwt payload [iat] field is not an integer"),
        ("nbf", "Jwt payload [nbf] field is not an integer"),
        ("exp", "Jwt payload [exp] field is not an integer"),
    ] {
        if payload.get(claim).is_some_and(|v| !(v.is_u64() || v.is_i64() || v.is_f64())) {
            return Err(msg);
        }
    }
    match payload.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return Err("Jwt payload [aud] field is not a string or string list"),
    }
    if URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).is_err() {
        return Err("Jwt signature is an invalid Base64url encoded");
    }
    Ok(Token { raw: raw.to_string(), header, payload })
}

fn claim_secs(payload: &Map<String, Value>, name: &str) -> Option<i64> {
    payload.get(name).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

/// jwt_verify_lib's audience normalization: scheme and trailing slash do not count.
fn norm_aud(a: &str) -> &str {
    let a = a.strip_prefix("https://").or_else(|| a.strip_prefix("http://")).unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

/// Signature check against a JWKS text, with Envoy's kid/alg selection.
fn verify_signature(t: &Token, jwks_text: &str) -> Result<(), &'static str> {
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(jwks_text) else {
        return Err("Jwks doesn't have any valid public key");
    };
    let keys = doc.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
    let alg = t.header.get("alg").and_then(Value::as_str).unwrap_or("");
    let kid = t.header.get("kid").and_then(Value::as_str);
    let mut any_valid = false;
    let mut kid_alg_matched = false;
    for key in keys {
        let Ok(mut jwk) = serde_json::from_value::<meshca_jwt::Jwk>(key) else { continue };
        let expected_kty = match alg.get(..2) {
            Some("RS" | "PS") => "RSA",
            Some("ES") => "EC",
            Some("HS") => "oct",
            _ => "OKP",
        };
        any_valid = true;
        if jwk.kty != expected_kty {
            continue;
        }
        if let (Some(want), Some(have)) = (kid, jwk.kid.as_deref()) {
            if want != have {
                continue;
            }
        }
        if jwk.alg.as_deref().is_some_and(|a| a != alg) {
            continue;
        }
        kid_alg_matched = true;
        jwk.kid = kid.map(str::to_string);
        let Ok(set) = meshca_jwt::KeySet::from_jwks(&meshca_jwt::Jwks { keys: vec![jwk] }) else { continue };
        let v = meshca_jwt::Validation::new("", "");
        match meshca_jwt::verify(&t.raw, &set, &v) {
            Err(meshca_jwt::JwtError::BadSignature)
            | Err(meshca_jwt::JwtError::UnknownKid(_))
            | Err(meshca_jwt::JwtError::UnsupportedAlgorithm(_))
            | Err(meshca_jwt::JwtError::InvalidKey(_)) => continue,
            // Every other outcome comes after a good signature in meshca-jwt.
            _ => return Ok(()),
        }
    }
    if !any_valid {
        Err("Jwks doesn't have any valid public key")
    } else if kid_alg_matched {
        Err("Jwt verification fails")
    } else {
        Err("Jwks doesn't have key to match kid or alg from Jwt")
    }
}

/// Run jwt_authn (`config` is the filter's typed_config) for a request.
pub(crate) fn run(config: &Value, attrs: &Attrs, now: i64, extra: &JwksByIssuer) -> JwtResult {
    let ok_none = JwtResult {
        outcome: JwtOutcome {
            message: "no token".into(),
            status: None,
            issuer: None,
            request_principal: None,
            provider: None,
        },
        metadata: Value::Null,
        strip: Vec::new(),
    };
    if field(config, "bypass_cors_preflight").and_then(Value::as_bool) == Some(true)
        && attrs.headers.get(":method").map(String::as_str) == Some("OPTIONS")
        && attrs.headers.contains_key("origin")
        && attrs.headers.contains_key("access-control-request-method")
    {
        return ok_none;
    }
    let providers: Vec<(&String, &Value)> =
        field(config, "providers").and_then(Value::as_object).map(|m| m.iter().collect()).unwrap_or_default();
    let mut tokens: Vec<(String, String)> = Vec::new();
    for (_, p) in &providers {
        for t in extract(p, attrs) {
            if !tokens.contains(&t) {
                tokens.push(t);
            }
        }
    }
    if tokens.is_empty() {
        return ok_none;
    }
    let mut result = ok_none;
    for (location, raw) in &tokens {
        let t = match parse(raw) {
            Ok(t) => t,
            Err(msg) => return fail(msg, None, None),
        };
        let iss = t.payload.get("iss").and_then(Value::as_str).map(str::to_string);
        let found = providers.iter().find(|(_, p)| match str_field(p, "issuer") {
            Some(i) if !i.is_empty() => Some(i) == iss.as_deref(),
            _ => true,
        });
        let Some((pname, p)) = found else { return fail("Jwt issuer is not configured", iss, None) };
        let pname = Some(pname.to_string());
        let skew = field(p, "clock_skew_seconds").and_then(Value::as_i64).unwrap_or(DEFAULT_SKEW);
        if claim_secs(&t.payload, "nbf").is_some_and(|nbf| nbf > now + skew) {
            return fail("Jwt not yet valid", iss, pname);
        }
        if claim_secs(&t.payload, "exp").is_some_and(|exp| exp != 0 && now > exp + skew) {
            return fail("Jwt is expired", iss, pname);
        }
        let allowed: Vec<&str> = list(p, "audiences").iter().filter_map(Value::as_str).collect();
        if !allowed.is_empty() {
            let auds: Vec<&str> = match t.payload.get("aud") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !auds.iter().any(|a| allowed.iter().any(|b| norm_aud(a) == norm_aud(b))) {
                return fail("Audiences in Jwt are not allowed", iss, pname);
            }
        }
        let inline = field(p, "local_jwks").and_then(|l| str_field(l, "inline_string")).map(str::to_string);
        let jwks = inline.or_else(|| {
            let key = iss.clone().unwrap_or_default();
            extra.get(&key).or_else(|| extra.get("*")).cloned()
        });
        let Some(jwks) = jwks else { return fail("Jwks remote fetch is failed", iss, pname) };
        if let Err(msg) = verify_signature(&t, &jwks) {
            return fail(msg, iss, pname);
        }
        let meta_name = str_field(p, "payload_in_metadata").unwrap_or("payload").to_string();
        let mut payload = t.payload.clone();
        let mut spaced: Vec<String> = vec!["scope".into(), "permission".into()];
        if let Some(n) = field(p, "normalize_payload_in_metadata") {
            spaced.extend(list(n, "space_delimited_claims").iter().filter_map(Value::as_str).map(str::to_string));
        }
        for c in spaced {
            if let Some(Value::String(s)) = payload.get(&c) {
                let parts: Vec<Value> =
                    s.split(' ').filter(|x| !x.is_empty()).map(|x| Value::String(x.into())).collect();
                payload.insert(c, Value::Array(parts));
            }
        }
        let sub = t.payload.get("sub").and_then(Value::as_str);
        let rp = iss.as_deref().zip(sub).map(|(i, s)| format!("{i}/{s}"));
        result.metadata = Value::Object(Map::from_iter([(meta_name, Value::Object(payload))]));
        result.outcome =
            JwtOutcome { message: "OK".into(), status: None, issuer: iss, request_principal: rp, provider: pname };
        if field(p, "forward").and_then(Value::as_bool) != Some(true) && !location.is_empty() {
            result.strip.push(location.clone());
        }
    }
    result
}
