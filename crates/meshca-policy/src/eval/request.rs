//! The request a user asks about: what Envoy would see on the inbound listener.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Envoy lets the request through.
    Allow,
    /// Envoy answers 401/403 (HTTP) or closes the connection (TCP).
    Deny,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        })
    }
}

/// `source: {principal, ip}`: the peer. No principal means a plaintext peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// SPIFFE ID of the peer certificate (`spiffe://td/ns/x/sa/y`; the scheme may be left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The peer's address (Envoy's `direct_remote_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `remote: {ip}`: the original client (X-Forwarded-For).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// The original client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `destination: {ip, port}`: the workload address the proxy received the connection on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Local (container) port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One request of a `--requests` file (or built from flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Echoed in the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The original client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
    /// The local side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// TLS server name sent by the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path, a query string is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Host / :authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Other request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JWT, sent as `Authorization: Bearer <jwt>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// The decision the user expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Decision>,
}

/// The attributes Envoy's filters look at, parsed and checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attrs {
    /// Full URI SAN of the peer certificate, `None` for plaintext.
    pub peer: Option<String>,
    pub direct_remote_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub local_ip: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub sni: Option<String>,
    /// Lower-case header name → value, with the pseudo headers `:method`, `:path`, `:authority`.
    pub headers: BTreeMap<String, String>,
    /// The path without query and fragment, normalized like Envoy's `normalize_path`.
    pub url_path: Option<String>,
}

fn parse_ip(what: &str, v: Option<&String>) -> Result<Option<IpAddr>, String> {
    match v {
        None => Ok(None),
        Some(s) => s.parse::<IpAddr>().map(Some).map_err(|_| format!("{what}: {s:?} is not an IP address")),
    }
}

impl Request {
    /// Check the fields and build the attributes; `default_port` is the workload port (`--port`).
    pub(crate) fn attrs(&self, default_port: Option<u16>) -> Result<Attrs, String> {
        let src = self.source.clone().unwrap_or_default();
        let peer = match src.principal.as_deref() {
            None | Some("") => None,
            Some(p) if p.starts_with("spiffe://") => Some(p.to_string()),
            Some(p) => Some(format!("spiffe://{p}")),
        };
        let direct = parse_ip("source.ip", src.ip.as_ref())?;
        let remote = parse_ip("remote.ip", self.remote.as_ref().and_then(|r| r.ip.as_ref()))?.or(direct);
        let dst = self.destination.clone().unwrap_or_default();
        let local_ip = parse_ip("destination.ip", dst.ip.as_ref())?;
        let mut headers = BTreeMap::new();
        for (k, v) in &self.headers {
            if k.is_empty() || k.starts_with(':') || k.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(format!("headers: {k:?} is not a valid header name"));
            }
            headers.insert(k.to_ascii_lowercase(), v.clone());
        }
        if let Some(m) = &self.method {
            headers.insert(":method".into(), m.clone());
        }
        if let Some(h) = &self.host {
            headers.insert(":authority".into(), h.clone());
        }
        let url_path = match &self.path {
            Some(p) => {
                if !p.starts_with('/') {
                    return Err(format!("path: {p:?} must start with '/'"));
                }
                headers.insert(":path".into(), normalize_full(p));
                Some(normalize_path(strip_query(p)))
            }
            None => None,
        };
        if let Some(jwt) = &self.jwt {
            headers.insert("authorization".into(), format!("Bearer {jwt}"));
        }
        Ok(Attrs {
            peer,
            direct_remote_ip: direct,
            remote_ip: remote,
            local_ip,
            local_port: dst.port.or(default_port),
            sni: self.sni.clone().filter(|s| !s.is_empty()),
            headers,
            url_path,
        })
    }
}

/// The path without `?query` and `#fragment`.
pub(crate) fn strip_query(p: &str) -> &str {
    let end = p.find(['?', '#']).unwrap_or(p.len());
    p.get(..end).unwrap_or(p)
}

/// `:path` after Envoy's normalization (query string kept).
fn normalize_full(p: &str) -> String {
    let path = strip_query(p);
    let rest = p.get(path.len()..).unwrap_or("");
    format!("{}{rest}", normalize_path(path))
}

/// RFC 3986 normalization as Envoy's `normalize_path: true` does it: percent-encoded unreserved
/// characters are decoded, a backslash becomes `/`, and `.`/`..` segments are resolved.
pub(crate) fn normalize_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut buf: Vec<u8> = Vec::with_capacity(p.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(c) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    buf.push(c);
                } else {
                    buf.push(b'%');
                    buf.extend(hex.unwrap_or_default().to_ascii_uppercase().bytes());
                }
                i += 3;
                continue;
            }
        }
        buf.push(if b == b'\\' { b'/' } else { b });
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&buf).into_owned();
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segs.len().saturating_sub(1);
    let mut trailing = false;
    for (n, seg) in segs.iter().enumerate() {
        match *seg {
            "." => trailing = n == last,
            ".." => {
                out.pop();
                trailing = n == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut s = format!("/{}", out.join("/"));
    if trailing && !s.ends_with('/') {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_like_envoy() {
        assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/%61dmin"), "/admin");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize_path("/../x"), "/x");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(strip_query("/p?x=1#f"), "/p");
    }
}
