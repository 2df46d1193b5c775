//! Logging set-up for the binary: every field value is escaped and capped
//! ([`crate::sanitize`]) so no caller can forge a line or make one huge, and
//! each call site is rate-limited (a burst, then a steady rate) so a flood of
//! refused requests cannot become a flood of disk writes. ERROR lines are
//! never dropped. The number of dropped lines is a metric and is summarised
//! in the log every few seconds by [`spawn_summary`].

use crate::sanitize::{clean, LONG};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Lines one call site may write at once.
pub const BURST: f64 = 20.0;
/// Lines per second one call site may write after the burst.
pub const PER_SECOND: f64 = 10.0;
/// Cap for the message of a line (field values get [`LONG`]).
const MESSAGE_CAP: usize = 8 * 1024;

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped by the rate limit since start.
pub fn suppressed_total() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per call site.
#[derive(Default)]
pub struct RateLimit {
    /// Keyed by the address of the call site's static metadata.
    buckets: Mutex<HashMap<usize, Bucket>>,
}

impl RateLimit {
    fn allow(&self, site: usize, now: Instant) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(site).or_insert(Bucket { tokens: BURST, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * PER_SECOND).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        if *event.metadata().level() == Level::ERROR
            || self.allow(std::ptr::from_ref(event.metadata()) as usize, Instant::now())
        {
            true
        } else {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

type FilterHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The live filter, changed at run time through the HTTP port's `/logging`.
static FILTER: std::sync::OnceLock<(FilterHandle, Mutex<String>)> = std::sync::OnceLock::new();

const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn,rustls=warn";
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Merge `changes` into the filter `current`: `level=L` sets the default
/// level, `SCOPE=L` (a tracing target such as `meshca_ca::reload`, or a
/// crate such as `h2`) sets one scope, replacing an earlier directive for it.
pub fn merge_filter(current: &str, changes: &[(String, String)]) -> Result<String, String> {
    if changes.is_empty() {
        return Err("nothing to change: give level=LEVEL or SCOPE=LEVEL (e.g. meshca_ca::reload=debug)".into());
    }
    if changes.len() > 32 {
        return Err("at most 32 changes at once".into());
    }
    let mut directives: Vec<String> =
        current.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_string).collect();
    for (scope, level) in changes {
        let level = level.to_ascii_lowercase();
        if !LEVELS.contains(&level.as_str()) {
            return Err(format!("{:?}: the level must be one of {}", clean(&level, 40), LEVELS.join(", ")));
        }
        let valid = !scope.is_empty()
            && scope.len() <= 100
            && scope.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-');
        if !valid {
            return Err(format!("{:?}: a scope is a tracing target such as meshca_ca::reload", clean(scope, 40)));
        }
        if scope == "level" {
            directives.retain(|d| d.contains('='));
            directives.insert(0, level);
        } else {
            let scope = scope.replace('-', "_");
            directives.retain(|d| d.split('=').next() != Some(scope.as_str()));
            directives.push(format!("{scope}={level}"));
        }
    }
    Ok(directives.join(","))
}

/// The filter in force, if the global subscriber was installed by [`init`].
pub fn log_filter() -> Option<String> {
    FILTER.get().map(|(_, cur)| cur.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Change log levels without a restart (see [`merge_filter`]); returns the new filter.
pub fn set_log_levels(changes: &[(String, String)]) -> Result<String, String> {
    let (handle, cur) = FILTER.get().ok_or("logging is not initialised")?;
    let mut cur = cur.lock().unwrap_or_else(|p| p.into_inner());
    let next = merge_filter(&cur, changes)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&next).map_err(|e| format!("invalid filter {next:?}: {e}"))?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    tracing::warn!(filter = %next, "log levels changed at run time");
    *cur = next.clone();
    Ok(next)
}

/// Install the global subscriber: `text` or `json` on stderr, filtered by `MESHCA_LOG`.
pub fn init(format: &str) -> anyhow::Result<()> {
    let spec = std::env::var("MESHCA_LOG")
        .ok()
        .filter(|s| tracing_subscriber::EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(&spec));
    let _ = FILTER.set((handle, Mutex::new(spec)));
    let registry = tracing_subscriber::registry().with(filter).with(RateLimit::default());
    match format {
        "json" => registry
            .with(tracing_subscriber::fmt::layer().event_format(JsonLine).with_writer(std::io::stderr))
            .try_init()?,
        "text" => {
            let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                if field.name() == "message" {
                    write!(w, "{}", clean(&format!("{value:?}"), MESSAGE_CAP))
                } else {
                    write!(w, "{}={}", field.name(), clean(&format!("{value:?}"), LONG))
                }
            })
            .delimited(" ");
            let ansi = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            registry
                .with(tracing_subscriber::fmt::layer().fmt_fields(fields).with_ansi(ansi).with_writer(std::io::stderr))
                .try_init()?
        }
        other => anyhow::bail!("--log-format {other:?}: expected text or json"),
    }
    Ok(())
}

/// JSON lines shaped like tracing-subscriber's (`timestamp`, `level`,
/// `fields`, `target`), with every field value capped like the text format.
struct JsonLine;

struct CappedFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl CappedFields<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: &str) {
        let cap = if field.name() == "message" { MESSAGE_CAP } else { LONG };
        self.0.insert(field.name().to_string(), serde_json::Value::String(clean(value, cap)));
    }
}

impl tracing::field::Visit for CappedFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value);
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = serde_json::Map::new();
        event.record(&mut CappedFields(&mut fields));
        let meta = event.metadata();
        let line = serde_json::json!({
            "timestamp": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "level": meta.level().as_str(),
            "fields": fields,
            "target": meta.target(),
        });
        writeln!(w, "{line}")
    }
}

/// Every `every`, log how many lines the rate limit dropped in that time.
pub fn spawn_summary(every: Duration) {
    tokio::spawn(async move {
        let mut last = suppressed_total();
        loop {
            tokio::time::sleep(every).await;
            let now = suppressed_total();
            if now > last {
                tracing::warn!(
                    suppressed = now - last,
                    "log lines dropped by the rate limit in the last {}s (per call site: burst {BURST}, then {PER_SECOND}/s)",
                    every.as_secs()
                );
            }
            last = now;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_cap_and_escape_every_field() {
        let buf = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let make = move || Sink(sink.clone());
        let sub = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().event_format(JsonLine).with_writer(make));
        tracing::subscriber::with_default(sub, || {
            let hostile = format!("a\n{}", "\u{1b}[31m".repeat(10_000));
            tracing::info!(identity = hostile.as_str(), n = 3u64, "refused {}", "x\ny");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["n"], 3);
        assert_eq!(v["fields"]["message"], "refused x\\ny");
        let id = v["fields"]["identity"].as_str().unwrap();
        assert!(id.len() < LONG + 32 && !id.chars().any(char::is_control), "{id}");
    }

    struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bucket_allows_a_burst_then_a_rate() {
        let rl = RateLimit::default();
        let id = 42usize;
        let t0 = Instant::now();
        let burst = (0..100).filter(|_| rl.allow(id, t0)).count();
        assert_eq!(burst, BURST as usize);
        assert!(rl.allow(id, t0 + Duration::from_millis(150)));
        assert!(!rl.allow(id, t0 + Duration::from_millis(150)));
    }
}

#[cfg(test)]
mod filter_tests {
    use super::merge_filter;

    fn ch(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn scopes_and_default_level_merge_into_the_filter() {
        let f = merge_filter("info,h2=warn", &ch(&[("meshca_ca::reload", "debug")])).unwrap();
        assert_eq!(f, "info,h2=warn,meshca_ca::reload=debug");
        let f = merge_filter(&f, &ch(&[("meshca_ca::reload", "INFO"), ("level", "warn")])).unwrap();
        assert_eq!(f, "warn,h2=warn,meshca_ca::reload=info");
        assert!(merge_filter("info", &ch(&[("rbac", "loud")])).unwrap_err().contains("must be one of"));
        assert!(merge_filter("info", &ch(&[("a b\n", "debug")])).is_err());
        assert!(merge_filter("info", &[]).is_err());
    }
}
