//! Envoy's RBAC matchers (`envoy.config.rbac.v3` Permission / Principal, StringMatcher,
//! MetadataMatcher...) interpreted over protobuf JSON, camelCase or snake_case, the way Envoy's
//! `engine_impl.cc` and `matchers.cc` evaluate them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
use serde_json::Value;

use super::request::Attrs;

/// `v[name]`; chains are normalized to snake_case keys when built ([`normalize`]).
pub(crate) fn field<'a>(v: &'a Value, snake: &str) -> Option<&'a Value> {
    v.as_object()?.get(snake)
}

fn snake_case(k: &str) -> String {
    let mut out = String::with_capacity(k.len() + 4);
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Protobuf JSON with camelCase or snake_case field names → snake_case everywhere, except the
/// keys of name maps (`policies`, `providers`), which are names, not fields.
pub(crate) fn normalize(v: &Value) -> Value {
    fn walk(v: &Value, names: bool) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let key =
                            if names || !k.bytes().any(|b| b.is_ascii_uppercase()) { k.clone() } else { snake_case(k) };
                        let child_names = !names && matches!(key.as_str(), "policies" | "providers");
                        (key, walk(x, child_names))
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, false)).collect()),
            other => other.clone(),
        }
    }
    walk(v, false)
}

pub(crate) fn str_field<'a>(v: &'a Value, snake: &str) -> Option<&'a str> {
    field(v, snake).and_then(Value::as_str)
}

fn bool_field(v: &Value, snake: &str) -> bool {
    field(v, snake).and_then(Value::as_bool).unwrap_or(false)
}

/// A number that protobuf JSON may write as a number, a string or a `{value: n}` wrapper.
fn num_field(v: &Value, snake: &str) -> Option<u64> {
    let x = field(v, snake)?;
    match x {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        Value::Object(_) => field(x, "value").and_then(|n| n.as_u64().or_else(|| n.as_str()?.parse().ok())),
        _ => None,
    }
}

/// The request-side data the matchers see.
pub(crate) struct Ctx<'a> {
    pub attrs: &'a Attrs,
    /// jwt_authn dynamic metadata (`{"payload": {...}}`), `Null` when no JWT was verified.
    pub jwt_metadata: &'a Value,
}

/// Compiled regexes, shared by every evaluation (compiling dominates otherwise).
/// Held in an `Arc`: a cloned `Regex` gets a fresh match cache, which costs
/// more than the match itself.
const REGEX_CACHE_MAX: usize = 16_384;
static REGEXES: OnceLock<Mutex<HashMap<String, Option<Arc<Regex>>>>> = OnceLock::new();

fn compiled(re: &str) -> Option<Arc<Regex>> {
    let cache = REGEXES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(r) = map.get(re) {
        return r.clone();
    }
    if map.len() >= REGEX_CACHE_MAX {
        map.clear();
    }
    let r = Regex::new(&format!("^(?:{re})$")).ok().map(Arc::new);
    map.insert(re.to_string(), r.clone());
    r
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(attrs: &'a Attrs, jwt_metadata: &'a Value) -> Self {
        Ctx { attrs, jwt_metadata }
    }

    /// RE2 `FullMatch`. An invalid regex never matches (Envoy would reject the config).
    fn full_match(&self, re: &str, s: &str) -> bool {
        compiled(re).is_some_and(|r| r.is_match(s))
    }

    /// `envoy.type.matcher.v3.StringMatcher`.
    pub(crate) fn string_match(&self, m: &Value, s: &str) -> bool {
        let ic = bool_field(m, "ignore_case");
        let eq = |a: &str, b: &str| if ic { a.eq_ignore_ascii_case(b) } else { a == b };
        if let Some(e) = str_field(m, "exact") {
            return eq(e, s);
        }
        if let Some(p) = str_field(m, "prefix") {
            return s.len() >= p.len() && s.get(..p.len()).is_some_and(|h| eq(h, p));
        }
        if let Some(x) = str_field(m, "suffix") {
            return s.len() >= x.len() && s.get(s.len() - x.len()..).is_some_and(|t| eq(t, x));
        }
        if let Some(c) = str_field(m, "contains") {
            return if ic { s.to_ascii_lowercase().contains(&c.to_ascii_lowercase()) } else { s.contains(c) };
        }
        if let Some(re) = field(m, "safe_regex").and_then(|r| str_field(r, "regex")) {
            return self.full_match(re, s);
        }
        false
    }

    fn header_value(&self, name: &str) -> Option<&str> {
        self.attrs.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// `envoy.config.route.v3.HeaderMatcher`.
    fn header_match(&self, m: &Value) -> bool {
        let name = str_field(m, "name").unwrap_or("");
        let invert = bool_field(m, "invert_match");
        let value = match self.header_value(name) {
            Some(v) => v,
            None if bool_field(m, "treat_missing_header_as_empty") => "",
            None => {
                // An absent header matches only `present_match: false`, and inversion does not apply.
                return field(m, "present_match").and_then(Value::as_bool) == Some(false);
            }
        };
        let r = if let Some(sm) = field(m, "string_match") {
            self.string_match(sm, value)
        } else if let Some(p) = field(m, "present_match").and_then(Value::as_bool) {
            p
        } else if let Some(e) = str_field(m, "exact_match") {
            e == value
        } else if let Some(p) = str_field(m, "prefix_match") {
            value.starts_with(p)
        } else if let Some(x) = str_field(m, "suffix_match") {
            value.ends_with(x)
        } else if let Some(c) = str_field(m, "contains_match") {
            value.contains(c)
        } else if let Some(re) = field(m, "safe_regex_match").and_then(|r| str_field(r, "regex")) {
            self.full_match(re, value)
        } else {
            true
        };
        r != invert
    }

    fn metadata_value(&self, m: &Value) -> Option<&Value> {
        let filter = str_field(m, "filter")?;
        if filter != "envoy.filters.http.jwt_authn" {
            return None;
        }
        let mut cur = self.jwt_metadata;
        for seg in field(m, "path").and_then(Value::as_array).into_iter().flatten() {
            cur = cur.get(str_field(seg, "key")?)?;
        }
        Some(cur)
    }

    /// `envoy.type.matcher.v3.MetadataMatcher`.
    fn metadata_match(&self, m: &Value) -> bool {
        let v = self.metadata_value(m);
        let r = field(m, "value").is_some_and(|vm| self.value_match(vm, v));
        r != bool_field(m, "invert")
    }

    /// `envoy.type.matcher.v3.ValueMatcher`.
    fn value_match(&self, m: &Value, v: Option<&Value>) -> bool {
        let v = v.filter(|x| !x.is_null());
        if field(m, "null_match").is_some() {
            return v.is_none();
        }
        if let Some(p) = field(m, "present_match").and_then(Value::as_bool) {
            return p == v.is_some();
        }
        if let Some(sm) = field(m, "string_match") {
            return v.and_then(Value::as_str).is_some_and(|s| self.string_match(sm, s));
        }
        if let Some(b) = field(m, "bool_match").and_then(Value::as_bool) {
            return v.and_then(Value::as_bool) == Some(b);
        }
        if let Some(dm) = field(m, "double_match") {
            let Some(x) = v.and_then(Value::as_f64) else { return false };
            if let Some(e) = field(dm, "exact").and_then(Value::as_f64) {
                return (x - e).abs() < f64::EPSILON;
            }
            if let Some(r) = field(dm, "range") {
                let lo = field(r, "start").and_then(Value::as_f64).unwrap_or(f64::MIN);
                let hi = field(r, "end").and_then(Value::as_f64).unwrap_or(f64::MAX);
                return x >= lo && x < hi;
            }
            return false;
        }
        if let Some(lm) = field(m, "list_match") {
            let Some(one_of) = field(lm, "one_of") else { return false };
            return v.and_then(Value::as_array).is_some_and(|a| a.iter().any(|e| self.value_match(one_of, Some(e))));
        }
        if let Some(om) = field(m, "or_match") {
            let list = field(om, "value_matchers").and_then(Value::as_array);
            return list.into_iter().flatten().any(|x| self.value_match(x, v));
        }
        false
    }

    fn url_path_match(&self, m: &Value) -> bool {
        let Some(path) = self.attrs.url_path.as_deref() else { return false };
        let Some(sm) = field(m, "path") else { return false };
        self.string_match(sm, path)
    }

    fn uri_template_match(&self, m: &Value) -> bool {
        let Some(path) = self.attrs.url_path.as_deref() else { return false };
        let Some(t) = field(m, "typed_config").and_then(|c| str_field(c, "path_template")) else { return false };
        self.full_match(&template_regex(t), path)
    }

    /// `envoy.config.rbac.v3.Permission`.
    pub(crate) fn permission(&self, p: &Value) -> bool {
        if let Some(x) = field(p, "and_rules") {
            return list(x, "rules").iter().all(|r| self.permission(r));
        }
        if let Some(x) = field(p, "or_rules") {
            return list(x, "rules").iter().any(|r| self.permission(r));
        }
        if let Some(x) = field(p, "not_rule") {
            return !self.permission(x);
        }
        if bool_field(p, "any") {
            return true;
        }
        if let Some(h) = field(p, "header") {
            return self.header_match(h);
        }
        if let Some(u) = field(p, "url_path") {
            return self.url_path_match(u);
        }
        if let Some(u) = field(p, "uri_template") {
            return self.uri_template_match(u);
        }
        if let Some(c) = field(p, "destination_ip") {
            return self.attrs.local_ip.is_some_and(|ip| cidr_contains(c, ip));
        }
        if let Some(port) = num_field(p, "destination_port") {
            return self.attrs.local_port.map(u64::from) == Some(port);
        }
        if let Some(r) = field(p, "destination_port_range") {
            let (lo, hi) = (num_field(r, "start").unwrap_or(0), num_field(r, "end").unwrap_or(0));
            return self.attrs.local_port.is_some_and(|p| (lo..hi).contains(&u64::from(p)));
        }
        if let Some(m) = field(p, "metadata") {
            return self.metadata_match(m);
        }
        if let Some(sm) = field(p, "requested_server_name") {
            return self.string_match(sm, self.attrs.sni.as_deref().unwrap_or(""));
        }
        false
    }

    /// `envoy.config.rbac.v3.Principal`.
    pub(crate) fn principal(&self, p: &Value) -> bool {
        if let Some(x) = field(p, "and_ids") {
            return list(x, "ids").iter().all(|r| self.principal(r));
        }
        if let Some(x) = field(p, "or_ids") {
            return list(x, "ids").iter().any(|r| self.principal(r));
        }
        if let Some(x) = field(p, "not_id") {
            return !self.principal(x);
        }
        if bool_field(p, "any") {
            return true;
        }
        if let Some(a) = field(p, "authenticated") {
            let Some(peer) = self.attrs.peer.as_deref() else { return false };
            return match field(a, "principal_name") {
                Some(sm) => self.string_match(sm, peer),
                None => true,
            };
        }
        if let Some(c) = field(p, "direct_remote_ip").or_else(|| field(p, "source_ip")) {
            return self.attrs.direct_remote_ip.is_some_and(|ip| cidr_contains(c, ip));
        }
        if let Some(c) = field(p, "remote_ip") {
            return self.attrs.remote_ip.is_some_and(|ip| cidr_contains(c, ip));
        }
        if let Some(h) = field(p, "header") {
            return self.header_match(h);
        }
        if let Some(u) = field(p, "url_path") {
            return self.url_path_match(u);
        }
        if let Some(m) = field(p, "metadata") {
            return self.metadata_match(m);
        }
        false
    }
}

pub(crate) fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    field(v, key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `envoy.config.core.v3.CidrRange`.
pub(crate) fn cidr_contains(c: &Value, ip: IpAddr) -> bool {
    let Some(prefix) = str_field(c, "address_prefix").and_then(|s| s.parse::<IpAddr>().ok()) else {
        return false;
    };
    let len = num_field(c, "prefix_len").unwrap_or(0) as u32;
    match (prefix, ip) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let len = len.min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(p) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let len = len.min(128);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            (u128::from(p) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

/// Envoy's `uri_template` syntax (`*` one segment, `**` any number of segments) as a regex.
pub(crate) fn template_regex(t: &str) -> String {
    const SEG: &str = "[a-zA-Z0-9-._~%!$&'()+,;:@=]";
    let mut out = String::new();
    for (i, seg) in t.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg {
            "**" => out.push_str(&format!("{}*", SEG.replace(']', "/]"))),
            "*" => out.push_str(&format!("{SEG}+")),
            lit => out.push_str(&regex::escape(lit)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_matchers_follow_envoy() {
        let a = Attrs::default();
        let ctx = Ctx::new(&a, &Value::Null);
        assert!(ctx.string_match(&normalize(&json!({"exact": "A", "ignoreCase": true})), "a"));
        assert!(ctx.string_match(&normalize(&json!({"prefix": "spiffe://a"})), "spiffe://ab"));
        assert!(ctx.string_match(&normalize(&json!({"suffix": ".com"})), "x.com"));
        assert!(
            ctx.string_match(&normalize(&json!({"safe_regex": {"regex": ".*/ns/foo/.*"}})), "spiffe://td/ns/foo/sa/x")
        );
        assert!(!ctx.string_match(&normalize(&json!({"safeRegex": {"regex": ".+"}})), ""));
        assert!(!ctx.string_match(&normalize(&json!({"safeRegex": {"regex": "a"}})), "ab"));
    }

    #[test]
    fn cidrs_and_templates() {
        let c = normalize(&json!({"addressPrefix": "10.0.0.0", "prefixLen": 8}));
        assert!(cidr_contains(&c, "10.2.3.4".parse().unwrap()));
        assert!(!cidr_contains(&c, "11.2.3.4".parse().unwrap()));
        let re = Regex::new(&format!("^{}$", template_regex("/path/template/*"))).unwrap();
        assert!(re.is_match("/path/template/x"));
        assert!(!re.is_match("/path/template/x/y"));
        let re = Regex::new(&format!("^{}$", template_regex("/**/path"))).unwrap();
        assert!(re.is_match("/a/b/path"));
    }
}
