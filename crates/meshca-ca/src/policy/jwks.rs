//! JWKS for the RequestAuthentications of the policy set, fetched by the
//! server and inlined into what agents receive.
//!
//! Why on the server rather than in each agent: one fetch per CA replica
//! instead of one per proxy (an IdP sees a handful of clients, not the whole
//! mesh); agents and their workloads need no egress to identity providers;
//! and every proxy receives the very same keys in the same versioned update,
//! so two proxies never disagree about a token because one refreshed earlier.
//! A failed fetch is not hidden behind stale or empty keys: the key gets an
//! entry in `jwks_errors` and none in `jwks`, so the agent's Envoy fails
//! closed for that issuer, and the error shows in `/status` and a metric.
//!
//! The fetch follows the rules of the CA's own issuer keys
//! ([`crate::jwks`]): HTTPS (plain HTTP only with `--jwt-allow-http`), no
//! redirects, answers capped, the discovery document's `issuer` checked.

use super::load::JwksKey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two fetches of one key asked for by agents (`RefreshJwks`).
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Most keys whose last on-demand fetch time is remembered.
const MAX_TRACKED: usize = 10_000;

pub struct Fetcher {
    http: reqwest::Client,
    allow_http: bool,
    last: Mutex<HashMap<String, Instant>>,
}

fn is_http(url: &str) -> bool {
    url.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://"))
}

impl Fetcher {
    pub fn new(allow_http: bool) -> reqwest::Result<Self> {
        Ok(Self { http: crate::jwks::client()?, allow_http, last: Mutex::new(HashMap::new()) })
    }

    fn check_url(&self, what: &str, url: &str) -> Result<(), String> {
        if is_http(url) {
            if !self.allow_http {
                return Err(format!(
                    "{what} {url} is plain HTTP: anyone on the path could replace the keys; use https:// (or, \
                     for a lab only, --jwt-allow-http)"
                ));
            }
        } else if !url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://")) {
            return Err(format!("{what} {url:?} is not an https:// URL"));
        }
        Ok(())
    }

    /// The JWKS document of `k` (validated as a JWKS), or why not.
    pub async fn fetch(&self, k: &JwksKey) -> Result<String, String> {
        let (uri, body) = if k.discovery {
            self.check_url("issuer", &k.issuer)?;
            let url = format!("{}/.well-known/openid-configuration", k.issuer.trim_end_matches('/'));
            let doc = crate::jwks::get(&self.http, &url).await?;
            let uri =
                crate::jwks::check_discovery(&k.issuer, &doc, self.allow_http).map_err(|e| format!("{url}: {e}"))?;
            let body = crate::jwks::get(&self.http, &uri).await?;
            (uri, body)
        } else {
            self.check_url("jwksUri", &k.key)?;
            (k.key.clone(), crate::jwks::get(&self.http, &k.key).await?)
        };
        let keys = meshca_jwt::KeySet::from_jwks_json(&body).map_err(|e| format!("{uri}: {e}"))?;
        if keys.is_empty() {
            return Err(format!("{uri}: the JWKS holds no usable key"));
        }
        String::from_utf8(body).map_err(|_| format!("{uri}: not UTF-8"))
    }

    /// May an agent-requested fetch of `key` start now? At most one per key per [`MIN_REFRESH_INTERVAL`].
    pub fn admit(&self, key: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.get(key).is_some_and(|t| now.duration_since(*t) < MIN_REFRESH_INTERVAL) {
            return false;
        }
        if last.len() >= MAX_TRACKED {
            last.retain(|_, t| now.duration_since(*t) < MIN_REFRESH_INTERVAL);
        }
        last.insert(key.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_rate_limited_per_key() {
        let f = Fetcher::new(false).unwrap();
        assert!(f.admit("a"));
        assert!(!f.admit("a"));
        assert!(f.admit("b"));
    }

    #[tokio::test]
    async fn plain_http_needs_the_flag() {
        let f = Fetcher::new(false).unwrap();
        let k = JwksKey { key: "http://127.0.0.1:1/k".into(), issuer: "i".into(), discovery: false };
        assert!(f.fetch(&k).await.unwrap_err().contains("--jwt-allow-http"));
        let d = JwksKey { key: "ftp://x".into(), issuer: "ftp://x".into(), discovery: true };
        assert!(f.fetch(&d).await.unwrap_err().contains("not an https://"));
    }
}
