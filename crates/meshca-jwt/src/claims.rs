//! Verified token claims.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The claims (payload) of a token, as the raw JSON object plus typed
/// accessors for the registered claims.
///
/// [`crate::verify`] only returns `Claims` for tokens whose signature,
/// issuer, audience and validity period were checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Claims {
    map: Map<String, Value>,
}

/// Service-account identity as carried by one of the three Kubernetes claim
/// layouts.
#[derive(PartialEq, Eq)]
enum Source<'a> {
    Absent,
    Invalid,
    Found(&'a str, &'a str),
}

impl Claims {
    /// Wraps a JSON object.
    #[must_use]
    pub fn from_map(map: Map<String, Value>) -> Claims {
        Claims { map }
    }

    /// The raw JSON object.
    #[must_use]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Consumes the claims, returning the raw JSON object.
    #[must_use]
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    /// Any claim by name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// `iss`, if it is a string.
    #[must_use]
    pub fn issuer(&self) -> Option<&str> {
        self.get("iss").and_then(Value::as_str)
    }

    /// `sub`, if it is a string.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.get("sub").and_then(Value::as_str)
    }

    /// `aud`, whether a single string or an array (non-string array
    /// elements are left out). Empty if absent.
    #[must_use]
    pub fn audiences(&self) -> Vec<&str> {
        match self.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// `exp` in whole seconds since the Unix epoch (fractions truncated),
    /// if it is a non-negative number.
    #[must_use]
    pub fn expires_at(&self) -> Option<u64> {
        self.get("exp").and_then(numeric_date_secs)
    }

    /// `nbf` in whole seconds since the Unix epoch, like
    /// [`Claims::expires_at`].
    #[must_use]
    pub fn not_before(&self) -> Option<u64> {
        self.get("nbf").and_then(numeric_date_secs)
    }

    /// `iat` in whole seconds since the Unix epoch, like
    /// [`Claims::expires_at`].
    #[must_use]
    pub fn issued_at(&self) -> Option<u64> {
        self.get("iat").and_then(numeric_date_secs)
    }

    /// The Kubernetes service account `(namespace, name)` the token was
    /// issued for.
    ///
    /// Three layouts are understood:
    ///
    /// 1. `sub` = `system:serviceaccount:<namespace>:<name>` (exactly four
    ///    colon-separated parts, none empty);
    /// 2. projected tokens: `"kubernetes.io": {"namespace": ..,
    ///    "serviceaccount": {"name": ..}}`;
    /// 3. legacy secret tokens: `kubernetes.io/serviceaccount/namespace` and
    ///    `kubernetes.io/serviceaccount/service-account.name`.
    ///
    /// Every layout that is present must be well-formed and all of them must
    /// name the same account; otherwise (or if none is present) the result
    /// is `None`. In particular a `sub` that is present but not of form 1
    /// (e.g. three or five parts) yields `None`.
    #[must_use]
    pub fn kubernetes_service_account(&self) -> Option<(String, String)> {
        let sources = [self.sa_from_subject(), self.sa_from_projected(), self.sa_from_legacy()];
        let mut found: Option<(&str, &str)> = None;
        for source in sources {
            match source {
                Source::Absent => {}
                Source::Invalid => return None,
                Source::Found(ns, sa) => match found {
                    Some(prev) if prev != (ns, sa) => return None,
                    _ => found = Some((ns, sa)),
                },
            }
        }
        found.map(|(ns, sa)| (ns.to_string(), sa.to_string()))
    }

    fn sa_from_subject(&self) -> Source<'_> {
        let Some(sub) = self.get("sub") else {
            return Source::Absent;
        };
        let Some(sub) = sub.as_str() else {
            return Source::Invalid;
        };
        let mut parts = sub.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("system"), Some("serviceaccount"), Some(ns), Some(sa), None) if !ns.is_empty() && !sa.is_empty() => {
                Source::Found(ns, sa)
            }
            _ => Source::Invalid,
        }
    }

    fn sa_from_projected(&self) -> Source<'_> {
        let Some(k8s) = self.get("kubernetes.io") else {
            return Source::Absent;
        };
        let ns = k8s.get("namespace").and_then(Value::as_str);
        let sa = k8s.get("serviceaccount").and_then(|sa| sa.get("name")).and_then(Value::as_str);
        found_if_non_empty(ns, sa)
    }

    fn sa_from_legacy(&self) -> Source<'_> {
        let ns = self.get("kubernetes.io/serviceaccount/namespace");
        let sa = self.get("kubernetes.io/serviceaccount/service-account.name");
        if ns.is_none() && sa.is_none() {
            return Source::Absent;
        }
        found_if_non_empty(ns.and_then(Value::as_str), sa.and_then(Value::as_str))
    }
}

fn found_if_non_empty<'a>(ns: Option<&'a str>, sa: Option<&'a str>) -> Source<'a> {
    match (ns, sa) {
        (Some(ns), Some(sa)) if !ns.is_empty() && !sa.is_empty() => Source::Found(ns, sa),
        _ => Source::Invalid,
    }
}

/// A NumericDate (integer or float JSON number) as seconds since the epoch.
pub(crate) fn numeric_date(value: &Value) -> Option<f64> {
    value.as_f64().filter(|v| v.is_finite())
}

fn numeric_date_secs(value: &Value) -> Option<u64> {
    if let Some(secs) = value.as_u64() {
        return Some(secs);
    }
    numeric_date(value).filter(|v| *v >= 0.0).map(|v| v.trunc() as u64)
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Claims {
        Claims::from_map(map)
    }
}
