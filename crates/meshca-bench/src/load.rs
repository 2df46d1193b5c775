//! The load engine, independent of the system under test: a closed loop of
//! N callers (steady state) and a burst of every request at once (restart
//! storm). Latencies are kept exactly (one u32 of microseconds per request)
//! and sorted for percentiles.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request kind against one system. `conn` picks the connection (a
/// gRPC channel, or a slot of an HTTP/1.1 connection pool); `job` the
/// prepared CSR and token.
pub trait Caller: Send + Sync + 'static {
    fn call(&self, conn: usize, job: usize) -> impl Future<Output = Result<(), String>> + Send;
}

/// When a closed-loop run stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After every job of the range was sent once.
    Count,
    /// After this long, cycling over the range (CSRs are then reused).
    Duration(Duration),
}

/// The outcome of one run.
#[derive(Debug, Default)]
pub struct RunResult {
    pub ok: u64,
    pub errors: u64,
    /// Up to a few distinct error messages.
    pub error_samples: Vec<String>,
    pub elapsed: Duration,
    /// Sorted latencies of successful requests, in microseconds.
    pub latencies_us: Vec<u32>,
}

const MAX_ERROR_SAMPLES: usize = 5;

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    samples: Vec<String>,
    lat: Vec<u32>,
}

impl Tally {
    fn record(&mut self, r: Result<(), String>, took: Duration) {
        match r {
            Ok(()) => {
                self.ok += 1;
                self.lat.push(took.as_micros().min(u32::MAX as u128) as u32);
            }
            Err(e) => {
                self.errors += 1;
                if self.samples.len() < MAX_ERROR_SAMPLES && !self.samples.contains(&e) {
                    self.samples.push(e);
                }
            }
        }
    }

    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        self.errors += o.errors;
        for s in o.samples {
            if self.samples.len() < MAX_ERROR_SAMPLES && !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
        self.lat.extend(o.lat);
    }

    fn finish(mut self, elapsed: Duration) -> RunResult {
        self.lat.sort_unstable();
        RunResult { ok: self.ok, errors: self.errors, error_samples: self.samples, elapsed, latencies_us: self.lat }
    }
}

/// `concurrency` callers, caller `w` on connection `w % connections`, each
/// sending its next request as soon as the previous one is answered.
pub async fn closed_loop<C: Caller>(
    caller: Arc<C>,
    jobs: Range<usize>,
    concurrency: usize,
    connections: usize,
    stop: Stop,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let len = jobs.len();
    let start = Instant::now();
    let deadline = match stop {
        Stop::Count => None,
        Stop::Duration(d) => Some(start + d),
    };
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (caller, next, base) = (caller.clone(), next.clone(), jobs.start);
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let job = match deadline {
                    None if k >= len => break,
                    None => base + k,
                    Some(d) if Instant::now() >= d => break,
                    Some(_) => base + k % len,
                };
                let sent = Instant::now();
                let r = caller.call(w % connections.max(1), job).await;
                t.record(r, sent.elapsed());
            }
            t
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(e) => total.record(Err(format!("caller task failed: {e}")), Duration::ZERO),
        }
    }
    total.finish(start.elapsed())
}

/// Every job at once, job `i` on connection `i % connections`. A request's
/// latency counts from the start of the burst (it includes connecting and
/// queueing): the time a restarted workload waits for its certificate.
pub async fn burst<C: Caller>(caller: Arc<C>, jobs: Range<usize>, connections: usize) -> RunResult {
    let start = Instant::now();
    let tasks: Vec<_> = jobs
        .enumerate()
        .map(|(i, job)| {
            let caller = caller.clone();
            tokio::spawn(async move {
                let r = caller.call(i % connections.max(1), job).await;
                (r, start.elapsed())
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok((r, took)) => total.record(r, took),
            Err(e) => total.record(Err(format!("request task failed: {e}")), Duration::ZERO),
        }
    }
    total.finish(start.elapsed())
}

impl RunResult {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of successful latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let n = self.latencies_us.len();
        let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        self.latencies_us[idx] as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Caller for Fake {
        async fn call(&self, _conn: usize, job: usize) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if job % 10 == 9 {
                Err("every tenth fails".into())
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_every_job_once() {
        let r = closed_loop(Arc::new(Fake), 100..200, 8, 2, Stop::Count).await;
        assert_eq!((r.ok, r.errors), (90, 10));
        assert_eq!(r.error_samples, vec!["every tenth fails".to_string()]);
        assert_eq!(r.latencies_us.len(), 90);
        assert!(r.quantile_ms(0.5) >= 1.0);
    }

    #[tokio::test]
    async fn burst_sends_everything() {
        let r = burst(Arc::new(Fake), 0..50, 4).await;
        assert_eq!((r.ok, r.errors), (45, 5));
        assert!(r.quantile_ms(1.0) <= r.elapsed.as_secs_f64() * 1000.0);
    }

    #[test]
    fn quantiles() {
        let r = RunResult { latencies_us: (1..=100).map(|x| x * 1000).collect(), ..Default::default() };
        assert_eq!(r.quantile_ms(0.5), 50.0);
        assert_eq!(r.quantile_ms(0.99), 99.0);
        assert_eq!(r.quantile_ms(1.0), 100.0);
    }
}
