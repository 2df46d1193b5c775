//! Envoy matchers described back in Istio terms: which field, which values, what the request had.

use serde::Serialize;
use serde_json::Value;

use super::rbac::{field, list, str_field, Ctx};

/// One condition of a rule, evaluated.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Condition {
    /// Istio field (`methods`, `paths`, `source.principal`, `notPorts`, `request.headers[x]`...).
    pub field: String,
    /// The values the rule accepts (Istio syntax: `abc*`, `*abc`, `*` for presence).
    pub expected: String,
    /// What the request had.
    pub actual: String,
    /// Whether the condition held.
    pub matched: bool,
}

/// Envoy's StringMatcher in Istio's notation.
pub(crate) fn string_text(m: &Value) -> String {
    let ic = field(m, "ignore_case").and_then(Value::as_bool) == Some(true);
    let t = if let Some(e) = str_field(m, "exact") {
        if e.is_empty() {
            "\"\"".to_string()
        } else {
            e.to_string()
        }
    } else if let Some(p) = str_field(m, "prefix") {
        format!("{p}*")
    } else if let Some(s) = str_field(m, "suffix") {
        format!("*{s}")
    } else if let Some(c) = str_field(m, "contains") {
        format!("*{c}*")
    } else if let Some(r) = field(m, "safe_regex").and_then(|r| str_field(r, "regex")) {
        if r == ".+" {
            "*".to_string()
        } else {
            format!("regex({r})")
        }
    } else {
        "?".to_string()
    };
    if ic {
        format!("{t} (any case)")
    } else {
        t
    }
}

fn header_text(h: &Value) -> String {
    if let Some(sm) = field(h, "string_match") {
        return string_text(sm);
    }
    if field(h, "present_match").and_then(Value::as_bool) == Some(true) {
        return "*".into();
    }
    for (k, f) in [("exact_match", "{}"), ("prefix_match", "{}*"), ("suffix_match", "*{}")] {
        if let Some(v) = str_field(h, k) {
            return f.replace("{}", v);
        }
    }
    "?".into()
}

fn cidr_text(c: &Value) -> String {
    let ip = str_field(c, "address_prefix").unwrap_or("?");
    let len = field(c, "prefix_len").map(|v| v.to_string()).unwrap_or_else(|| "0".into());
    format!("{ip}/{}", len.trim_matches('"'))
}

fn value_text(m: &Value) -> String {
    if let Some(sm) = field(m, "string_match") {
        return string_text(sm);
    }
    if let Some(lm) = field(m, "list_match").and_then(|l| field(l, "one_of")) {
        return value_text(lm);
    }
    if let Some(om) = field(m, "or_match") {
        let mut parts: Vec<String> = list(om, "value_matchers").iter().map(value_text).collect();
        parts.dedup();
        return parts.join(" | ");
    }
    if field(m, "present_match").is_some() {
        return "*".into();
    }
    m.to_string()
}

fn opt(s: Option<&str>, none: &str) -> String {
    s.map(str::to_string).unwrap_or_else(|| none.to_string())
}

impl Ctx<'_> {
    fn metadata_actual(&self, m: &Value) -> String {
        if self.jwt_metadata.is_null() {
            return "(no verified JWT)".into();
        }
        let mut cur = Some(self.jwt_metadata);
        for seg in list(m, "path") {
            cur = cur.and_then(|c| c.get(str_field(seg, "key").unwrap_or("")));
        }
        match cur {
            None | Some(Value::Null) => "(claim absent)".into(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }
    }

    fn header_actual(&self, name: &str) -> String {
        let what = match name {
            ":method" => "(no method)",
            ":authority" => "(no host)",
            _ => "(absent)",
        };
        opt(self.attrs.headers.get(&name.to_ascii_lowercase()).map(String::as_str), what)
    }

    /// (field, expected, actual) of a leaf matcher.
    fn leaf(&self, v: &Value) -> (String, String, String) {
        if field(v, "any").is_some() {
            return ("any".into(), "*".into(), "-".into());
        }
        if let Some(h) = field(v, "header") {
            let name = str_field(h, "name").unwrap_or("");
            let f = match name {
                ":method" => "methods".to_string(),
                ":authority" => "hosts".to_string(),
                other => format!("request.headers[{other}]"),
            };
            return (f, header_text(h), self.header_actual(name));
        }
        if let Some(u) = field(v, "url_path") {
            let t = field(u, "path").map(string_text).unwrap_or_default();
            return ("paths".into(), t, opt(self.attrs.url_path.as_deref(), "(no path)"));
        }
        if let Some(u) = field(v, "uri_template") {
            let t = field(u, "typed_config").and_then(|c| str_field(c, "path_template")).unwrap_or("");
            return ("paths".into(), format!("template {t}"), opt(self.attrs.url_path.as_deref(), "(no path)"));
        }
        if let Some(c) = field(v, "destination_ip") {
            let a = self.attrs.local_ip.map(|i| i.to_string());
            return ("destination.ip".into(), cidr_text(c), opt(a.as_deref(), "(unknown)"));
        }
        if let Some(p) = field(v, "destination_port") {
            let a = self.attrs.local_port.map(|i| i.to_string());
            return ("ports".into(), p.to_string().trim_matches('"').to_string(), opt(a.as_deref(), "(unknown)"));
        }
        if let Some(sm) = field(v, "requested_server_name") {
            return ("connection.sni".into(), string_text(sm), opt(self.attrs.sni.as_deref(), "(no SNI)"));
        }
        if let Some(a) = field(v, "authenticated") {
            let t = field(a, "principal_name").map(string_text).unwrap_or_else(|| "*".into());
            let f = if t.starts_with("regex(.*/ns/") {
                "source.namespace"
            } else if t.contains("/(.+/|)sa/") {
                "source.serviceAccount"
            } else if t.starts_with("spiffe://") && !t.contains("/ns/") && (t.ends_with("/*") || t.contains("[^/]")) {
                "source.trustDomain"
            } else {
                "source.principal"
            };
            return (f.into(), t, opt(self.attrs.peer.as_deref(), "(plaintext: no peer certificate)"));
        }
        if let Some(c) = field(v, "direct_remote_ip").or_else(|| field(v, "source_ip")) {
            let a = self.attrs.direct_remote_ip.map(|i| i.to_string());
            return ("source.ip".into(), cidr_text(c), opt(a.as_deref(), "(unknown)"));
        }
        if let Some(c) = field(v, "remote_ip") {
            let a = self.attrs.remote_ip.map(|i| i.to_string());
            return ("remote.ip".into(), cidr_text(c), opt(a.as_deref(), "(unknown)"));
        }
        if let Some(m) = field(v, "metadata") {
            let filter = str_field(m, "filter").unwrap_or("");
            let keys: Vec<&str> = list(m, "path").iter().filter_map(|s| str_field(s, "key")).collect();
            let f = if filter == "envoy.filters.http.jwt_authn" {
                match keys.get(1..).unwrap_or_default() {
                    ["iss"] => "request principal issuer".to_string(),
                    ["sub"] => "request principal subject".to_string(),
                    ["aud"] => "request.auth.audiences".to_string(),
                    ["azp"] => "request.auth.presenter".to_string(),
                    rest => format!("request.auth.claims[{}]", rest.join("][")),
                }
            } else {
                format!("experimental.{filter}[{}]", keys.join("]["))
            };
            let t = field(m, "value").map(value_text).unwrap_or_default();
            return (f, t, self.metadata_actual(m));
        }
        ("(unsupported matcher)".into(), v.to_string(), "-".into())
    }

    /// Describe one AND term of a permission or principal (`principal`: which tree it is).
    pub(crate) fn term(&self, v: &Value, principal: bool) -> Condition {
        let matched = if principal { self.principal(v) } else { self.permission(v) };
        if let Some(inner) = field(v, "not_rule").or_else(|| field(v, "not_id")) {
            let c = self.term(inner, principal);
            return Condition { field: format!("not {}", c.field), matched, ..c };
        }
        let children =
            field(v, "or_rules").map(|x| list(x, "rules")).or_else(|| field(v, "or_ids").map(|x| list(x, "ids")));
        if let Some(children) = children {
            let parts: Vec<Condition> = children.iter().map(|c| self.term(c, principal)).collect();
            let mut fields: Vec<&str> = parts.iter().map(|c| c.field.as_str()).collect();
            fields.dedup();
            let expected: Vec<&str> = parts.iter().map(|c| c.expected.as_str()).collect();
            let actual = parts.first().map(|c| c.actual.clone()).unwrap_or_default();
            return Condition {
                field: fields.join("|"),
                expected: format!("[{}]", expected.join(", ")),
                actual,
                matched,
            };
        }
        if let Some(and) =
            field(v, "and_ids").map(|x| list(x, "ids")).or_else(|| field(v, "and_rules").map(|x| list(x, "rules")))
        {
            let parts: Vec<Condition> = and.iter().map(|c| self.term(c, principal)).collect();
            let is_rp = parts.len() == 2 && parts.iter().all(|c| c.field.starts_with("request principal"));
            if is_rp {
                let e = format!("{}/{}", parts[0].expected, parts[1].expected).replace("\"\"", "");
                let a = if parts[0].actual.starts_with('(') {
                    parts[0].actual.clone()
                } else {
                    format!("{}/{}", parts[0].actual, parts[1].actual)
                };
                return Condition { field: "requestPrincipals".into(), expected: e, actual: a, matched };
            }
            let fields: Vec<String> = parts.iter().map(|c| c.field.clone()).collect();
            let expected: Vec<String> = parts.iter().map(|c| c.expected.clone()).collect();
            let actual: Vec<String> = parts.iter().map(|c| c.actual.clone()).collect();
            return Condition {
                field: fields.join(" & "),
                expected: expected.join(" & "),
                actual: actual.join(" & "),
                matched,
            };
        }
        let (f, e, a) = self.leaf(v);
        Condition { field: f, expected: e, actual: a, matched }
    }

    /// The terms of one permission/principal (an `and_rules`/`and_ids`, or a single matcher).
    pub(crate) fn terms(&self, v: &Value, principal: bool) -> Vec<Condition> {
        let and = if principal {
            field(v, "and_ids").map(|x| list(x, "ids"))
        } else {
            field(v, "and_rules").map(|x| list(x, "rules"))
        };
        match and {
            Some(items) => items.iter().map(|t| self.term(t, principal)).collect(),
            None => vec![self.term(v, principal)],
        }
    }
}
