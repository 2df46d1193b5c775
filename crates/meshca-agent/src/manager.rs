//! The certificate manager, in ztunnel's style: one worker task owns a queue
//! of refresh deadlines and the CSRs in flight; every identity has a `watch`
//! channel of its [`CertState`]. CSRs are single-flight per identity and
//! capped overall; renewal happens at a grace ratio of the lifetime with
//! jitter; failures back off exponentially with jitter and keep a
//! still-valid certificate in service.

use crate::caclient::{Identity, Signer};
use crate::cert::Cert;
use crate::error::AgentError;
use crate::metrics::Metrics;
use meshca_pki::{KeyKind, PrivateKey};
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Where an identity's certificate stands.
#[derive(Debug, Clone)]
pub enum CertState {
    Initializing,
    Available(Arc<Cert>),
    Unavailable(AgentError),
}

impl CertState {
    pub fn cert(&self) -> Option<&Arc<Cert>> {
        match self {
            Self::Available(c) => Some(c),
            _ => None,
        }
    }
}

/// Wall-clock seam: certificate validity is wall-clock, timers are tokio's.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub key: KeyKind,
    pub ttl: Duration,
    /// Renew this fraction of the way through a certificate's life.
    pub grace_ratio: f64,
    /// ± this fraction of the lifetime, at random, around the grace ratio.
    pub jitter_ratio: f64,
    /// At most this many CSRs in flight at once.
    pub max_concurrent: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Early renewals after a CA change are spread over [0, this).
    pub early_jitter: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            key: KeyKind::EcP256,
            ttl: Duration::from_secs(24 * 3600),
            grace_ratio: 0.5,
            jitter_ratio: 0.01,
            max_concurrent: 8,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            early_jitter: Duration::from_secs(1),
        }
    }
}

/// Exponential backoff with "equal jitter": half fixed, half random.
pub fn backoff(initial: Duration, max: Duration, attempt: u32, rnd: f64) -> Duration {
    let exp = initial.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = exp.min(max.as_secs_f64());
    Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * rnd.clamp(0.0, 1.0))
}

enum Cmd {
    Fetch(Identity),
    RenewEarly,
}

struct Shared {
    states: Mutex<HashMap<Identity, watch::Sender<CertState>>>,
    /// The bundle from the latest CSR response (authenticated by the CA's TLS).
    trust: watch::Sender<Option<Arc<str>>>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn set_trust(&self, pem: &str) -> bool {
        let changed = self.trust.send_if_modified(|cur| {
            if cur.as_deref() == Some(pem) {
                return false;
            }
            *cur = Some(Arc::from(pem));
            true
        });
        if changed {
            Metrics::inc(&self.metrics.trust_updates);
        }
        changed
    }
}

/// Handle to the manager; cheap to clone.
#[derive(Clone)]
pub struct CertManager {
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
}

impl CertManager {
    /// Start the worker on the current tokio runtime.
    pub fn start<S: Signer>(signer: S, cfg: ManagerConfig, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { states: Mutex::new(HashMap::new()), trust: watch::channel(None).0, metrics });
        let worker = Worker {
            signer: Arc::new(signer),
            cfg,
            clock,
            shared: shared.clone(),
            queue: BTreeMap::new(),
            scheduled: HashMap::new(),
            in_flight: HashSet::new(),
            rerun: HashSet::new(),
            attempts: HashMap::new(),
            seq: 0,
        };
        tokio::spawn(worker.run(rx));
        Self { tx, shared }
    }

    /// Watch an identity's certificate; the first call starts fetching it.
    pub fn subscribe(&self, id: &Identity) -> watch::Receiver<CertState> {
        let mut states = self.shared.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get(id) {
            return s.subscribe();
        }
        let (tx, rx) = watch::channel(CertState::Initializing);
        states.insert(id.clone(), tx);
        let _ = self.tx.send(Cmd::Fetch(id.clone()));
        rx
    }

    /// The trust bundle (PEM) to hand to workloads.
    pub fn trust(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.shared.trust.subscribe()
    }

    /// The CA signs with new material: renew every identity soon (with jitter).
    pub fn renew_early(&self) {
        let _ = self.tx.send(Cmd::RenewEarly);
    }

    /// An identity's state without subscribing (`None`: never asked for, so not fetched).
    pub fn peek(&self, id: &Identity) -> Option<CertState> {
        let states = self.shared.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(id).map(|s| s.borrow().clone())
    }

    pub fn current(&self, id: &Identity) -> Option<Arc<Cert>> {
        let states = self.shared.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(id).and_then(|s| s.borrow().cert().cloned())
    }
}

type Outcome = (Identity, Result<Arc<Cert>, AgentError>);

struct Worker<S> {
    signer: Arc<S>,
    cfg: ManagerConfig,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    /// (deadline, sequence) -> identity; `scheduled` is the reverse index.
    queue: BTreeMap<(Instant, u64), Identity>,
    scheduled: HashMap<Identity, (Instant, u64)>,
    in_flight: HashSet<Identity>,
    /// Identities whose in-flight CSR may predate a CA change.
    rerun: HashSet<Identity>,
    attempts: HashMap<Identity, u32>,
    seq: u64,
}

impl<S: Signer> Worker<S> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut tasks: JoinSet<Outcome> = JoinSet::new();
        loop {
            let next = if tasks.len() < self.cfg.max_concurrent.max(1) {
                self.queue.first_key_value().map(|(k, _)| k.0)
            } else {
                None
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Cmd::Fetch(id)) => self.schedule(id, Instant::now(), true),
                    Some(Cmd::RenewEarly) => self.renew_early(),
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                    Ok((id, res)) => self.finished(id, res),
                    Err(e) => tracing::error!("certificate request task failed: {e}"),
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    if let Some(((_, _), id)) = self.queue.pop_first() {
                        self.scheduled.remove(&id);
                        self.in_flight.insert(id.clone());
                        tasks.spawn(request(self.signer.clone(), self.cfg.clone(), self.clock.clone(), self.shared.metrics.clone(), id));
                    }
                }
            }
        }
    }

    /// Queue `id` at `at`; with `earlier_only`, keep an earlier deadline.
    fn schedule(&mut self, id: Identity, at: Instant, earlier_only: bool) {
        if self.in_flight.contains(&id) {
            return;
        }
        if let Some(old) = self.scheduled.get(&id).copied() {
            if earlier_only && old.0 <= at {
                return;
            }
            self.queue.remove(&old);
        }
        self.seq += 1;
        self.queue.insert((at, self.seq), id.clone());
        self.scheduled.insert(id, (at, self.seq));
    }

    fn jitter(&self, max: Duration) -> Duration {
        max.mul_f64(rand::rng().random_range(0.0..1.0))
    }

    fn renew_early(&mut self) {
        let ids: Vec<Identity> = self.shared.states.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        tracing::info!(identities = ids.len(), "the CA's material changed: renewing early");
        for id in ids {
            Metrics::inc(&self.shared.metrics.early_renewals);
            if self.in_flight.contains(&id) {
                self.rerun.insert(id);
            } else {
                let at = Instant::now() + self.jitter(self.cfg.early_jitter);
                self.schedule(id, at, true);
            }
        }
    }

    fn at_instant(&self, t: SystemTime) -> Instant {
        Instant::now() + t.duration_since(self.clock.now()).unwrap_or_default()
    }

    fn finished(&mut self, id: Identity, res: Result<Arc<Cert>, AgentError>) {
        self.in_flight.remove(&id);
        let rerun = self.rerun.remove(&id);
        let Some(state) = self.shared.states.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned() else {
            return;
        };
        match res {
            Ok(cert) => {
                self.attempts.remove(&id);
                Metrics::inc(&self.shared.metrics.renewals);
                self.shared.metrics.set_expiry(&id.name, &cert.spiffe_id, cert.not_after);
                self.shared.set_trust(&cert.roots_pem);
                let j = rand::rng().random_range(-1.0..=1.0);
                let at = if rerun {
                    Instant::now() + self.jitter(self.cfg.early_jitter)
                } else {
                    self.at_instant(cert.renew_at(self.cfg.grace_ratio, self.cfg.jitter_ratio, j))
                };
                tracing::info!(
                    resource = %id.name, identity = %cert.spiffe_id, serial = %cert.serial,
                    renew_in = ?at.saturating_duration_since(Instant::now()), "certificate issued"
                );
                state.send_replace(CertState::Available(cert));
                self.schedule(id, at, false);
            }
            Err(e) => {
                Metrics::inc(&self.shared.metrics.renewal_failures);
                let n = self.attempts.entry(id.clone()).or_insert(0);
                *n += 1;
                let delay =
                    backoff(self.cfg.backoff_initial, self.cfg.backoff_max, *n, rand::rng().random_range(0.0..1.0));
                let now = self.clock.now();
                let keep = state.borrow().cert().is_some_and(|c| c.valid_at(now));
                tracing::warn!(resource = %id.name, attempt = *n, retry_in = ?delay, kept_valid_cert = keep, "certificate request failed: {e}");
                if !keep {
                    state.send_replace(CertState::Unavailable(e));
                }
                self.schedule(id, Instant::now() + delay, false);
            }
        }
    }
}

/// One CSR round trip: a fresh key, a CSR without SAN (the CA sets the
/// identity from the token), and a checked response.
async fn request<S: Signer>(
    signer: Arc<S>,
    cfg: ManagerConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    id: Identity,
) -> Outcome {
    let res = async {
        let kind = cfg.key;
        let (key, csr) = tokio::task::spawn_blocking(move || -> Result<(PrivateKey, String), AgentError> {
            let key = PrivateKey::generate(kind).map_err(|e| AgentError::Key(e.to_string()))?;
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr = params
                .serialize_request(key.key_pair())
                .and_then(|c| c.pem())
                .map_err(|e| AgentError::Key(e.to_string()))?;
            Ok((key, csr))
        })
        .await
        .map_err(|e| AgentError::Key(e.to_string()))??;
        Metrics::inc(&metrics.csr_sent);
        let chain = signer.sign(&id, csr, cfg.ttl).await?;
        Cert::from_response(&key, &chain, clock.now()).map(Arc::new)
    }
    .await;
    (id, res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered() {
        let (i, m) = (Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff(i, m, 1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(i, m, 1, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(i, m, 3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(i, m, 20, 1.0), m);
        assert_eq!(backoff(i, m, 200, 0.0), m / 2);
    }
}
