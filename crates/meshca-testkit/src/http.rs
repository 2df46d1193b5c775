//! Raw HTTP/1.1 on loopback (no client library), Prometheus samples, and
//! polling with deadlines.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A parsed response: status, lower-cased header names with values, body.
pub type Response = (u16, Vec<(String, String)>, String);

/// GET `path` with extra headers. Chunked bodies are decoded. A read timeout
/// of 60 s leaves room for long-polls.
pub fn try_http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = header(&hdrs, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok((status, hdrs, body))
}

/// [`try_http`] that panics when the connection fails.
pub fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_http(addr, path, headers).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Undo HTTP/1.1 chunked transfer encoding.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of one sample line of a Prometheus exposition; `name` includes
/// any labels exactly as rendered (e.g. `meshca_requests_refused_total{reason="csr"}`).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// [`sample`] that panics, with the exposition, when the sample is missing.
pub fn metric(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

/// Poll `f` every `every` until it returns `Some`, panicking after `timeout`.
pub async fn poll_every<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(every).await;
    }
}
