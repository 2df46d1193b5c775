//! Watching the CA for new material over its HTTP port: a long-poll of
//! `/root-cert.pem` (ETag + `?wait=`) notices a new trust bundle at once, and
//! a poll of `/status` notices a new signing chain. Either change makes the
//! manager renew every certificate early. The plain-HTTP answer is only a
//! signal: the bundle handed to Envoy always comes from a CSR response, over
//! the TLS channel that authenticates the CA, so nobody on the path to the
//! HTTP port can inject a root. Nor can it make the agent renew in a loop:
//! early renewals from these signals are limited to one per
//! [`SIGNAL_MIN_INTERVAL`] per signal.
//!
//! This is the fallback for CAs without meshca's change stream (see
//! `events`); it runs only with `--ca-http-addr`.

use crate::manager::CertManager;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// Least time between two early renewals caused by one plain-HTTP signal.
pub const SIGNAL_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Lets one early renewal through per [`SIGNAL_MIN_INTERVAL`].
#[derive(Debug, Default)]
pub struct SignalLimiter {
    last: Option<tokio::time::Instant>,
}

impl SignalLimiter {
    pub fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < SIGNAL_MIN_INTERVAL) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[derive(Debug, Clone)]
pub struct TrustWatchConfig {
    /// host:port of the CA's plain-HTTP port.
    pub ca_http_addr: String,
    /// How long one long-poll may wait.
    pub long_poll: Duration,
    /// How often to compare the CA's signing chain.
    pub status_interval: Duration,
}

/// Long-poll the bundle until the process ends.
pub async fn watch_bundle(cfg: TrustWatchConfig, manager: CertManager, metrics: Arc<Metrics>) {
    let client = reqwest::Client::builder().timeout(cfg.long_poll + Duration::from_secs(10)).build().expect("client");
    let url = format!("http://{}/root-cert.pem?wait={}", cfg.ca_http_addr, cfg.long_poll.as_secs().max(1));
    let mut etag: Option<String> = None;
    let mut failures = 0u32;
    let mut limiter = SignalLimiter::default();
    loop {
        let mut req = client.get(&url);
        if let Some(e) = &etag {
            req = req.header("if-none-match", e.as_str());
        }
        let res = async {
            let resp = req.send().await?;
            let status = resp.status();
            let tag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, tag, body))
        }
        .await;
        match res {
            Ok((s, _, _)) if s == reqwest::StatusCode::NOT_MODIFIED => failures = 0,
            Ok((s, tag, body)) if s.is_success() && body.contains("BEGIN CERTIFICATE") => {
                failures = 0;
                let first = etag.is_none();
                let changed = etag != tag;
                etag = tag;
                if !first && changed {
                    if limiter.allow() {
                        tracing::info!(etag = ?etag, "the CA's trust bundle changed: renewing early to receive it");
                        manager.renew_early();
                    } else {
                        tracing::warn!("the CA's HTTP port reports bundle changes faster than once a minute; ignored");
                    }
                }
            }
            other => {
                failures += 1;
                Metrics::inc(&metrics.trust_watch_errors);
                let what = match other {
                    Ok((s, _, _)) => format!("HTTP {s}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(failures, "polling the CA's trust bundle failed: {what}");
                let delay = crate::manager::backoff(
                    Duration::from_millis(500),
                    Duration::from_secs(15),
                    failures,
                    rand::random::<f64>(),
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The fingerprints of the CA's signing material from `/status`.
fn signing_key(status: &serde_json::Value) -> Option<String> {
    let signer = status.get("signer")?.get("sha256")?.as_str()?.to_string();
    let chain: Vec<&str> = status
        .get("chain")
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|c| c.get("sha256").and_then(|s| s.as_str())).collect())
        .unwrap_or_default();
    let bundle = status.get("root_bundle_etag").and_then(|s| s.as_str()).unwrap_or("");
    Some(format!("{signer}|{}|{bundle}", chain.join(",")))
}

/// Poll `/status` and renew early when the signing chain changes.
pub async fn watch_signer(cfg: TrustWatchConfig, manager: CertManager, metrics: Arc<Metrics>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let url = format!("http://{}/status", cfg.ca_http_addr);
    let mut last: Option<String> = None;
    let mut limiter = SignalLimiter::default();
    loop {
        let res = async { client.get(&url).send().await?.error_for_status()?.json::<serde_json::Value>().await }.await;
        match res.as_ref().map(signing_key) {
            Ok(Some(key)) => {
                if last.as_ref().is_some_and(|l| *l != key) {
                    if limiter.allow() {
                        tracing::info!("the CA signs with new material: renewing early");
                        manager.renew_early();
                    } else {
                        tracing::warn!("the CA's /status reports signer changes faster than once a minute; ignored");
                    }
                }
                last = Some(key);
            }
            Ok(None) => tracing::warn!("the CA's /status has no signer fingerprint"),
            Err(e) => {
                Metrics::inc(&metrics.trust_watch_errors);
                tracing::debug!("polling the CA's /status failed: {e}");
            }
        }
        tokio::time::sleep(cfg.status_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn http_signals_cause_at_most_one_renewal_a_minute() {
        let mut l = SignalLimiter::default();
        assert!(l.allow());
        let allowed = (0..48).filter(|_| l.allow()).count();
        assert_eq!(allowed, 0, "a flood of new ETags is ignored");
        tokio::time::advance(SIGNAL_MIN_INTERVAL).await;
        assert!(l.allow());
        assert!(!l.allow());
    }
}
