//! Envoy matcher builders in protobuf-JSON shape (Istio's `pilot/pkg/security/authz/matcher`).

use serde_json::{json, Value};

use crate::validate::parse_cidr;

/// The metadata namespace jwt_authn writes the verified payload to.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

/// An object from owned values (unlike `json!`, which re-serializes embedded values).
pub fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Go's `regexp.QuoteMeta`.
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn regex(r: &str) -> Value {
    json!({"safeRegex": {"regex": r}})
}

/// `StringMatcher` for an Istio value: `*` any non-empty, `*x` suffix, `x*` prefix, else exact.
pub fn string(v: &str) -> Value {
    if v == "*" {
        regex(".+")
    } else if let Some(s) = v.strip_prefix('*') {
        json!({"suffix": s})
    } else if let Some(p) = v.strip_suffix('*') {
        json!({"prefix": p})
    } else {
        json!({"exact": v})
    }
}

/// `StringMatcherWithPrefix`: like [`string`] with `prefix` prepended (suffix forms become regexes).
pub fn string_with_prefix(v: &str, prefix: &str) -> Value {
    if v == "*" {
        regex(".+")
    } else if let Some(s) = v.strip_prefix('*') {
        regex(&format!("{}.*{}", quote_meta(prefix), quote_meta(s)))
    } else if let Some(p) = v.strip_suffix('*') {
        json!({"prefix": format!("{prefix}{p}")})
    } else {
        json!({"exact": format!("{prefix}{v}")})
    }
}

/// `HeaderMatcher`: `*` is presence, else a string match.
pub fn header(name: &str, v: &str) -> Value {
    if v == "*" {
        json!({"name": name, "presentMatch": true})
    } else {
        json!({"name": name, "stringMatch": string(v)})
    }
}

/// `:authority` matcher, case-insensitive (Istio's `HostMatcher`).
pub fn host(v: &str) -> Value {
    if v == "*" {
        return json!({"name": ":authority", "presentMatch": true});
    }
    let mut m = string(v);
    m["ignoreCase"] = Value::Bool(true);
    json!({"name": ":authority", "stringMatch": m})
}

/// A path permission: `url_path`, or `uri_template` when the value uses `{*}` / `{**}`.
pub fn path(v: &str) -> Value {
    if v.contains("{*}") || v.contains("{**}") {
        let template = v.replace("{**}", "**").replace("{*}", "*");
        return json!({"uriTemplate": {
            "name": "uri-template",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                "pathTemplate": template,
            }
        }});
    }
    json!({"urlPath": {"path": string(v)}})
}

/// `CidrRange` for an IP or CIDR; `None` when it does not parse.
pub fn cidr(v: &str) -> Option<Value> {
    let (ip, len) = parse_cidr(v)?;
    Some(json!({"addressPrefix": ip.to_string(), "prefixLen": len}))
}

/// Metadata matcher on jwt_authn's payload path.
pub fn jwt_metadata(path: &[&str], value: Value) -> Value {
    let mut p = vec![json!({"key": "payload"})];
    p.extend(path.iter().map(|k| json!({"key": k})));
    json!({"filter": JWT_FILTER, "path": p, "value": value})
}

/// The list-or-string value matcher Istio uses for claims, audiences and presenter.
pub fn list_or_string(values: &[String]) -> Value {
    let ms: Vec<Value> = values.iter().map(|v| json!({"stringMatch": string(v)})).collect();
    // Envoy's OrMatcher needs at least two matchers: a single value is used as is.
    let any = if ms.len() == 1 { ms[0].clone() } else { json!({"orMatch": {"valueMatchers": ms}}) };
    json!({"orMatch": {"valueMatchers": [{"listMatch": {"oneOf": any.clone()}}, any]}})
}

/// The (iss AND sub) principal for one request-principal value.
pub fn request_principal(v: &str) -> Value {
    let (iss, sub) = if v == "*" {
        (regex(".+"), regex(".+"))
    } else if let Some((iss, sub)) = v.rsplit_once('/') {
        (string(iss), string(sub))
    } else if let Some(s) = v.strip_prefix('*') {
        (regex(".+"), json!({"suffix": s}))
    } else if let Some(p) = v.strip_suffix('*') {
        (json!({"prefix": p}), regex(".+"))
    } else {
        (json!({"exact": v}), json!({"exact": ""}))
    };
    json!({"andIds": {"ids": [
        {"metadata": jwt_metadata(&["iss"], json!({"stringMatch": iss}))},
        {"metadata": jwt_metadata(&["sub"], json!({"stringMatch": sub}))},
    ]}})
}

/// Regex for a source namespace value: `*` becomes `.*`, the rest is quoted.
pub fn namespace_regex(v: &str) -> String {
    let parts: Vec<String> = v.split('*').map(quote_meta).collect();
    format!(".*/ns/{}/.*", parts.join(".*"))
}

/// Regex for a service account value (`ns/sa`, or `sa` in the policy's namespace).
pub fn service_account_regex(v: &str, policy_ns: &str) -> String {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    format!("spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?", quote_meta(ns), quote_meta(sa))
}

/// `principal_name` matcher for a trust domain value.
pub fn trust_domain(v: &str) -> Value {
    if v == "*" {
        return json!({"prefix": "spiffe://"});
    }
    match v.split_once('*') {
        Some((a, b)) => regex(&format!("spiffe://{}[^/]*{}/.*", quote_meta(a), quote_meta(b))),
        None => json!({"prefix": format!("spiffe://{v}/")}),
    }
}

/// `authenticated` principal around a principal-name matcher.
pub fn authenticated(m: Value) -> Value {
    json!({"authenticated": {"principalName": m}})
}

/// Envoy's `StatusCode` enum name for an HTTP status, as ext_authz `status_on_error` needs.
pub fn status_code_name(code: u16) -> Option<&'static str> {
    Some(match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "NonAuthoritativeInformation",
        204 => "NoContent",
        205 => "ResetContent",
        206 => "PartialContent",
        207 => "MultiStatus",
        208 => "AlreadyReported",
        226 => "IMUsed",
        300 => "MultipleChoices",
        301 => "MovedPermanently",
        302 => "Found",
        303 => "SeeOther",
        304 => "NotModified",
        305 => "UseProxy",
        307 => "TemporaryRedirect",
        308 => "PermanentRedirect",
        400 => "BadRequest",
        401 => "Unauthorized",
        402 => "PaymentRequired",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        407 => "ProxyAuthenticationRequired",
        408 => "RequestTimeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "LengthRequired",
        412 => "PreconditionFailed",
        413 => "PayloadTooLarge",
        414 => "URITooLong",
        415 => "UnsupportedMediaType",
        416 => "RangeNotSatisfiable",
        417 => "ExpectationFailed",
        421 => "MisdirectedRequest",
        422 => "UnprocessableEntity",
        423 => "Locked",
        424 => "FailedDependency",
        426 => "UpgradeRequired",
        428 => "PreconditionRequired",
        429 => "TooManyRequests",
        431 => "RequestHeaderFieldsTooLarge",
        500 => "InternalServerError",
        501 => "NotImplemented",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        505 => "HTTPVersionNotSupported",
        506 => "VariantAlsoNegotiates",
        507 => "InsufficientStorage",
        508 => "LoopDetected",
        510 => "NotExtended",
        511 => "NetworkAuthenticationRequired",
        _ => return None,
    })
}

/// A protobuf-JSON duration (`600s`, `0.002s`) from a Go/protobuf duration string.
pub fn duration_json(ms: f64) -> String {
    let secs = ms / 1000.0;
    if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        let s = format!("{secs:.9}");
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}
