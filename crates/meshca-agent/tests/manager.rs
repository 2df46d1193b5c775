//! The certificate manager against a fake CA (the `Signer` seam): single
//! flight per identity, the cap on concurrent CSRs, renewal at the grace
//! ratio, and a still-valid certificate kept while renewals fail.

use meshca_agent::{AgentError, CertManager, CertState, Identity, ManagerConfig, Metrics, Signer, SystemClock};
use rcgen::{CertifiedIssuer, KeyPair};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

/// A fake CA: counts calls and concurrency, can be told to fail, signs for `validity`.
struct FakeCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    validity: Duration,
    delay: Duration,
    fail: AtomicBool,
    calls: AtomicUsize,
    now: AtomicUsize,
    max: AtomicUsize,
    per_id: Mutex<HashMap<String, usize>>,
    max_per_id: AtomicUsize,
}

impl FakeCa {
    fn new(validity: Duration, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            issuer: support::issuer(),
            validity,
            delay,
            fail: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            per_id: Mutex::new(HashMap::new()),
            max_per_id: AtomicUsize::new(0),
        })
    }
}

impl Signer for FakeCa {
    async fn sign(&self, id: &Identity, csr: String, _ttl: Duration) -> Result<Vec<String>, AgentError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        let k = {
            let mut m = self.per_id.lock().unwrap();
            let e = m.entry(id.name.clone()).or_insert(0);
            *e += 1;
            *e
        };
        self.max_per_id.fetch_max(k, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        *self.per_id.lock().unwrap().get_mut(&id.name).unwrap() -= 1;
        self.now.fetch_sub(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(AgentError::Connect("fake CA is down".into()));
        }
        Ok(support::sign(&self.issuer, &csr, &id.name, self.validity))
    }
}

fn id(name: &str) -> Identity {
    Identity { name: name.into(), token_file: "/dev/null".into() }
}

fn manager(ca: &Arc<FakeCa>, cfg: ManagerConfig) -> (CertManager, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    (CertManager::start(ca.clone(), cfg, metrics.clone(), Arc::new(SystemClock)), metrics)
}

async fn wait_for(rx: &mut tokio::sync::watch::Receiver<CertState>, f: impl Fn(&CertState) -> bool) -> CertState {
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| f(s))).await.expect("state in time").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_per_identity_and_capped_concurrency() {
    let ca = FakeCa::new(Duration::from_secs(3600), Duration::from_millis(100));
    let cfg = ManagerConfig { max_concurrent: 3, ..Default::default() };
    let (m, metrics) = manager(&ca, cfg);
    let mut rxs = Vec::new();
    for i in 0..12 {
        rxs.push(m.subscribe(&id(&format!("w{i}"))));
        // Subscribing again (a second Envoy stream) does not send a second CSR.
        rxs.push(m.subscribe(&id(&format!("w{i}"))));
    }
    m.renew_early(); // arrives while CSRs are in flight: at most one rerun each
    for rx in rxs.iter_mut() {
        wait_for(rx, |s| matches!(s, CertState::Available(_))).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ca.max.load(Ordering::SeqCst) <= 3, "cap of 3 concurrent CSRs exceeded: {}", ca.max.load(Ordering::SeqCst));
    assert_eq!(ca.max_per_id.load(Ordering::SeqCst), 1, "two CSRs for one identity at once");
    let calls = ca.calls.load(Ordering::SeqCst);
    assert!((12..=24).contains(&calls), "12 first issues plus at most one early renewal each, got {calls}");
    assert_eq!(metrics.renewal_failures.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_at_grace_ratio_and_keeps_valid_cert_while_failing() {
    let ca = FakeCa::new(Duration::from_secs(6), Duration::ZERO);
    let cfg = ManagerConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..Default::default()
    };
    let (m, metrics) = manager(&ca, cfg);
    let mut rx = m.subscribe(&id("app"));
    let first = wait_for(&mut rx, |s| matches!(s, CertState::Available(_))).await.cert().unwrap().clone();
    ca.fail.store(true, Ordering::SeqCst);
    // Renewal is due at ~3s (half of 6s); it fails and backs off...
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let failures = metrics.renewal_failures.load(Ordering::SeqCst);
    assert!((2..=20).contains(&failures), "renewal attempted and backed off: {failures} failures");
    // ...while the still-valid certificate stays available.
    let now = rx.borrow().clone();
    assert_eq!(now.cert().map(|c| c.serial.clone()), Some(first.serial.clone()), "kept the valid certificate");
    ca.fail.store(false, Ordering::SeqCst);
    let second = wait_for(&mut rx, |s| s.cert().is_some_and(|c| c.serial != first.serial)).await;
    assert!(second.cert().unwrap().not_after > first.not_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_without_a_valid_cert() {
    let ca = FakeCa::new(Duration::from_secs(3600), Duration::ZERO);
    ca.fail.store(true, Ordering::SeqCst);
    let (m, _) = manager(&ca, ManagerConfig::default());
    let mut rx = m.subscribe(&id("app"));
    let s = wait_for(&mut rx, |s| matches!(s, CertState::Unavailable(_))).await;
    assert!(matches!(s, CertState::Unavailable(AgentError::Connect(_))), "{s:?}");
    ca.fail.store(false, Ordering::SeqCst);
    wait_for(&mut rx, |s| matches!(s, CertState::Available(_))).await;
}
