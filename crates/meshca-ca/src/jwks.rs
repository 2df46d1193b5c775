//! Fetching an issuer's keys: a JWKS file, a JWKS URL, or OIDC discovery.
//!
//! Whoever can change these keys can mint tokens for any service account, so
//! the fetch is strict: HTTPS only (plain HTTP only with `--jwt-allow-http`,
//! which warns), no redirects, answers capped at [`MAX_BODY`], the discovery
//! document's `issuer` must equal the configured issuer, and its `jwks_uri`
//! must be HTTPS (or, with `--jwt-allow-http`, on the issuer's own origin).

use meshca_jwt::KeySet;
use std::path::PathBuf;
use std::time::Duration;

/// Largest JWKS or discovery document accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
    /// OIDC discovery: `<issuer>/.well-known/openid-configuration` then its `jwks_uri`.
    Oidc,
    /// Keys given in-process (meshca's own token issuer).
    Static(KeySet),
}

impl JwksSource {
    /// `--jwt-issuer ISSUER=SOURCE`: SOURCE is `oidc`, an http(s) URL or a file path.
    pub fn parse(source: &str) -> Self {
        if source == "oidc" {
            JwksSource::Oidc
        } else if source.starts_with("http://") || source.starts_with("https://") {
            JwksSource::Url(source.to_string())
        } else {
            JwksSource::File(PathBuf::from(source))
        }
    }
}

fn is_http(url: &str) -> bool {
    url.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://"))
}

/// Refuse a plain-HTTP source unless `allow_http`; with it, warn.
pub fn check_source(issuer: &str, source: &JwksSource, allow_http: bool) -> Result<(), String> {
    let url = match source {
        JwksSource::Url(u) => u.as_str(),
        JwksSource::Oidc => issuer,
        JwksSource::File(_) | JwksSource::Static(_) => return Ok(()),
    };
    if !is_http(url) {
        if matches!(source, JwksSource::Oidc) && !url.starts_with("https://") {
            return Err(format!("--jwt-issuer {issuer}=oidc: OIDC discovery needs an https:// issuer"));
        }
        return Ok(());
    }
    if !allow_http {
        return Err(format!(
            "--jwt-issuer {issuer}: the keys would be fetched over plain HTTP from {url}, where anyone on the path \
             can replace them and mint tokens for any service account. Use https://, a JWKS file, or (for a lab \
             only) --jwt-allow-http"
        ));
    }
    tracing::warn!(issuer = %issuer, url = %url, "JWKS fetched over plain HTTP (--jwt-allow-http): anyone on the path can mint tokens");
    Ok(())
}

/// The HTTP client for JWKS and discovery: no redirects, short timeouts.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// GET `url` with the key-fetch rules: no redirects, success only, at most [`MAX_BODY`] bytes.
pub async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status().is_redirection() {
        return Err(format!("GET {url}: HTTP {} (redirects are not followed for keys)", resp.status()));
    }
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(format!("GET {url}: answer larger than {MAX_BODY} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("GET {url}: answer larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn origin(url: &reqwest::Url) -> (String, Option<String>, Option<u16>) {
    (url.scheme().to_string(), url.host_str().map(str::to_ascii_lowercase), url.port_or_known_default())
}

/// The `jwks_uri` of a discovery document, after checking its `issuer` and the URI itself.
pub fn check_discovery(issuer: &str, doc: &[u8], allow_http: bool) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| format!("not JSON: {e}"))?;
    let got = v.get("issuer").and_then(|i| i.as_str()).ok_or("no \"issuer\"")?;
    if got != issuer {
        return Err(format!("its \"issuer\" is {:?}, not the configured {issuer:?}", crate::sanitize::short(got)));
    }
    let jwks_uri = v.get("jwks_uri").and_then(|j| j.as_str()).ok_or("no \"jwks_uri\"")?;
    let uri =
        reqwest::Url::parse(jwks_uri).map_err(|e| format!("jwks_uri {:?}: {e}", crate::sanitize::short(jwks_uri)))?;
    let iss = reqwest::Url::parse(issuer).map_err(|e| format!("issuer {issuer:?} is not a URL: {e}"))?;
    let ok = match uri.scheme() {
        "https" => true,
        "http" => allow_http && origin(&uri) == origin(&iss),
        _ => false,
    };
    if !ok {
        return Err(format!(
            "jwks_uri {} must be https:// (plain HTTP only on the issuer's own origin with --jwt-allow-http)",
            crate::sanitize::short(jwks_uri)
        ));
    }
    Ok(jwks_uri.to_string())
}

/// Fetch the keys of `issuer` from `source`.
pub async fn fetch_keys(
    http: &reqwest::Client,
    issuer: &str,
    source: &JwksSource,
    allow_http: bool,
) -> Result<KeySet, String> {
    match source {
        JwksSource::Static(k) => Ok(k.clone()),
        JwksSource::File(p) => {
            let b = tokio::fs::read(p).await.map_err(|e| format!("{}: {e}", p.display()))?;
            KeySet::from_jwks_json(&b).map_err(|e| format!("{}: {e}", p.display()))
        }
        JwksSource::Url(u) => {
            let b = get(http, u).await?;
            KeySet::from_jwks_json(&b).map_err(|e| format!("{u}: {e}"))
        }
        JwksSource::Oidc => {
            let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
            let doc = get(http, &url).await?;
            let jwks_uri = check_discovery(issuer, &doc, allow_http).map_err(|e| format!("{url}: {e}"))?;
            let b = get(http, &jwks_uri).await?;
            KeySet::from_jwks_json(&b).map_err(|e| format!("{jwks_uri}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_the_flag() {
        let url = JwksSource::parse("http://idp.example/jwks");
        assert!(check_source("iss", &url, false).unwrap_err().contains("--jwt-allow-http"));
        assert!(check_source("iss", &url, true).is_ok());
        assert!(check_source("https://i", &JwksSource::parse("https://idp/jwks"), false).is_ok());
        assert!(check_source("http://i", &JwksSource::Oidc, false).is_err());
        assert!(check_source("i", &JwksSource::parse("/etc/jwks.json"), false).is_ok());
    }

    #[test]
    fn discovery_issuer_and_jwks_uri_are_checked() {
        let doc = |iss: &str, uri: &str| serde_json::json!({"issuer": iss, "jwks_uri": uri}).to_string().into_bytes();
        let i = "https://idp.example";
        assert_eq!(check_discovery(i, &doc(i, "https://keys.example/k"), false).unwrap(), "https://keys.example/k");
        assert!(check_discovery(i, &doc("https://evil.example", "https://keys.example/k"), false)
            .unwrap_err()
            .contains("not the configured"));
        assert!(check_discovery(i, &doc(i, "http://keys.example/k"), true).is_err());
        let h = "http://idp.example:8080";
        assert!(check_discovery(h, &doc(h, "http://idp.example:8080/k"), true).is_ok());
        assert!(check_discovery(h, &doc(h, "http://other:8080/k"), true).is_err());
        assert!(check_discovery(h, &doc(h, "http://idp.example:8080/k"), false).is_err());
        assert!(check_discovery(i, &doc(i, "file:///etc/passwd"), false).is_err());
    }
}
