//! JSON values printed as block YAML (for `--output yaml`).

use serde_json::Value;

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '@' | '+'))
                && !s.starts_with(['-', '.', '@'])
                && s.parse::<f64>().is_err()
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
                );
            if plain {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        other => other.to_string(),
    }
}

fn key(k: &str) -> String {
    scalar(&Value::String(k.to_string()))
}

fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        emit(x, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        emit(x, indent, out);
                    }
                    _ => out.push_str(&format!("{pad}{}: {}\n", key(k), inline(x))),
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for x in a {
                let mut inner = String::new();
                match x {
                    Value::Object(o) if !o.is_empty() => emit(x, indent + 2, &mut inner),
                    Value::Array(l) if !l.is_empty() => emit(x, indent + 2, &mut inner),
                    _ => inner = format!("{pad}  {}\n", inline(x)),
                }
                let trimmed = inner.get(indent + 2..).unwrap_or("");
                out.push_str(&format!("{pad}- {trimmed}"));
            }
        }
        other => out.push_str(&format!("{pad}{}\n", inline(other))),
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => scalar(other),
    }
}

/// `v` as a YAML document.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_round_trips_through_the_policy_loader() {
        let v = serde_json::json!({"http_filters": [{"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/x", "rules": {"policies": {"ns[foo]-policy[a]-rule[0]": {
            "permissions": [{"and_rules": {"rules": [{"any": true}]}}], "principals": [{"not_id": {"any": true}}]}}},
            "ports": [80, "80", "true", "", "a: b", "- x"], "empty": {}, "none": []}}]});
        let y = to_yaml(&v);
        let back = meshca_policy::load::yaml_to_json("t", &y).expect("parses");
        assert_eq!(back, vec![v], "{y}");
    }
}
