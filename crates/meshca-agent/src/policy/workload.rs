//! What the agent knows about its workload: labels (`--workload-labels k=v,...`
//! or a Kubernetes downward-API labels file), declared ports
//! (`--port 8080/http=127.0.0.1:9080`) and the namespace from its SPIFFE ID.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

/// The protocol Envoy speaks on a declared port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Tcp,
}

/// `--port PORT/PROTO=APP_ADDR`: Envoy listens on `port` (the port policies
/// name) and forwards to the application at `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortArg {
    pub port: u16,
    pub protocol: Protocol,
    pub app: SocketAddr,
}

impl std::str::FromStr for PortArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected PORT/PROTOCOL=APP_ADDR, e.g. 8080/http=127.0.0.1:9080 or 9000/tcp=127.0.0.1:9001";
        let (lhs, app) = s.split_once('=').ok_or_else(|| format!("--port {s:?}: no '=APP_ADDR' ({usage})"))?;
        let (port, proto) = lhs.split_once('/').ok_or_else(|| format!("--port {s:?}: no '/PROTOCOL' ({usage})"))?;
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("--port {s:?}: {port:?} is not a port number 1-65535"))?;
        let protocol = match proto.trim().to_ascii_lowercase().as_str() {
            "http" | "http2" | "grpc" => Protocol::Http,
            "tcp" => Protocol::Tcp,
            other => return Err(format!("--port {s:?}: protocol {other:?} is not http or tcp")),
        };
        let app: SocketAddr =
            app.trim().parse().map_err(|e| format!("--port {s:?}: application address {app:?}: {e} ({usage})"))?;
        Ok(PortArg { port, protocol, app })
    }
}

/// `k=v,k2=v2` (empty: no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("--workload-labels: {item:?} is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("--workload-labels: {item:?} has an empty key"));
        }
        out.insert(k.to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// A Kubernetes downward-API labels file: one `key="value"` per line (the
/// value a Go-quoted string).
pub fn parse_labels_file(path: &Path, text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("{}: expected key=\"value\", got {line:?}", at()))?;
        let v = v.trim();
        let value = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => unquote(inner).ok_or_else(|| format!("{}: bad escape in {v}", at()))?,
            None => v.to_string(),
        };
        if k.trim().is_empty() {
            return Err(format!("{}: empty label key", at()));
        }
        out.insert(k.trim().to_string(), value);
    }
    Ok(out)
}

fn unquote(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            _ => return None,
        }
    }
    Some(out)
}

/// (trust domain, namespace, service account) of `spiffe://TD/ns/NS/sa/SA`.
pub fn spiffe_parts(id: &str) -> Option<(String, String, String)> {
    let rest = id.strip_prefix("spiffe://")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [td, "ns", ns, "sa", sa] if !ns.is_empty() => Some((td.to_string(), ns.to_string(), sa.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_labels_and_identities_parse() {
        let p: PortArg = "8080/http=127.0.0.1:9080".parse().unwrap();
        assert_eq!((p.port, p.protocol, p.app.port()), (8080, Protocol::Http, 9080));
        assert_eq!("9000/TCP=127.0.0.1:9".parse::<PortArg>().unwrap().protocol, Protocol::Tcp);
        assert!("8080/udp=127.0.0.1:1".parse::<PortArg>().unwrap_err().contains("udp"));
        assert!("8080=127.0.0.1:1".parse::<PortArg>().is_err());
        assert!("0/http=127.0.0.1:1".parse::<PortArg>().is_err());
        let l = parse_labels("app=web, version=v1").unwrap();
        assert_eq!(l.get("version").map(String::as_str), Some("v1"));
        assert!(parse_labels("app").is_err());
        let f = parse_labels_file(Path::new("labels"), "app=\"web\"\nx=\"a\\\"b\"\n\n").unwrap();
        assert_eq!((f["app"].as_str(), f["x"].as_str()), ("web", "a\"b"));
        let e = parse_labels_file(Path::new("labels"), "app=\"web\"\nbroken\n").unwrap_err();
        assert!(e.contains("labels:2"), "{e}");
        assert_eq!(
            spiffe_parts("spiffe://cluster.local/ns/foo/sa/bar"),
            Some(("cluster.local".into(), "foo".into(), "bar".into()))
        );
        assert_eq!(spiffe_parts("spiffe://cluster.local/x"), None);
    }
}
