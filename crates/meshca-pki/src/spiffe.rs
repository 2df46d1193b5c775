//! SPIFFE IDs of the Istio form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SpiffeError {
    #[error("not a SPIFFE ID (must start with spiffe://): {0:?}")]
    Scheme(String),
    #[error("SPIFFE ID {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    Shape(String),
    #[error("invalid {what} {value:?}: only lowercase letters, digits, '-', '.' and '_' are allowed, at most 253 characters")]
    Segment { what: &'static str, value: String },
    #[error("invalid {what} {value:?}: \".\" and \"..\" segments are not allowed in a SPIFFE ID")]
    DotSegment { what: &'static str, value: String },
    #[error("not a Kubernetes service-account username (system:serviceaccount:<ns>:<sa>): {0:?}")]
    Username(String),
}

fn check_segment(what: &'static str, value: &str) -> Result<(), SpiffeError> {
    // The SPIFFE spec forbids dot segments; go-spiffe peers refuse such IDs.
    if value == "." || value == ".." {
        return Err(SpiffeError::DotSegment { what, value: value.to_string() });
    }
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::Segment { what, value: value.to_string() })
    }
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeError> {
        check_segment("trust domain", trust_domain)?;
        check_segment("namespace", namespace)?;
        check_segment("service account", service_account)?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    /// From a Kubernetes username `system:serviceaccount:<ns>:<sa>` (exactly four parts).
    pub fn from_k8s_username(trust_domain: &str, username: &str) -> Result<Self, SpiffeError> {
        let parts: Vec<&str> = username.split(':').collect();
        match parts.as_slice() {
            ["system", "serviceaccount", ns, sa] => Self::new(trust_domain, ns, sa),
            _ => Err(SpiffeError::Username(username.to_string())),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The `ns/sa` short form used in configuration (trusted node accounts).
    pub fn short(&self) -> String {
        format!("{}/{}", self.namespace, self.service_account)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, SpiffeError> {
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| SpiffeError::Scheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(SpiffeError::Shape(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused() {
        for bad in [
            "spiffe://cluster.local/ns/../sa/..",
            "spiffe://cluster.local/ns/./sa/x",
            "spiffe://cluster.local/ns/x/sa/.",
            "spiffe://../ns/x/sa/y",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
        assert!(SpiffeId::from_k8s_username("td", "system:serviceaccount:..:x").is_err());
        assert!(SpiffeId::new("td", "a", "..").is_err());
        // Dots inside a segment stay legal (Kubernetes names allow them).
        assert!(SpiffeId::new("td", "a.b", "c..d").is_ok());
    }

    #[test]
    fn parse_and_format() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/sleep".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "sleep");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
        assert_eq!(id.short(), "default/sleep");
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns/a b/sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn kubernetes_usernames() {
        let id = SpiffeId::from_k8s_username("td", "system:serviceaccount:foo:bar").unwrap();
        assert_eq!(id.to_string(), "spiffe://td/ns/foo/sa/bar");
        for bad in [
            "system:serviceaccount:foo",
            "system:serviceaccount:foo:bar:baz",
            "user:serviceaccount:a:b",
            "system:serviceaccount::b",
        ] {
            assert!(SpiffeId::from_k8s_username("td", bad).is_err(), "{bad}");
        }
    }
}
