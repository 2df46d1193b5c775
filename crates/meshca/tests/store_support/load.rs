//! A CSR client at a steady rate, spread round-robin over replicas; it does
//! not retry, so every failed request is counted.

use meshca_testkit::{connect, make_csr, request, CaClient, KeyType};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// Longest time between two successful requests.
    pub longest_gap: Duration,
    /// The first few errors, with the replica they came from.
    pub errors: Vec<String>,
    /// Failed requests per replica.
    pub failed_by: HashMap<SocketAddr, u64>,
}

pub struct CsrLoad {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<LoadReport>,
}

impl CsrLoad {
    /// `rate` requests per second for identity `spiffe://td/ns/ns/sa/sa` with `token`.
    pub fn start(addrs: Vec<SocketAddr>, roots_pem: String, token: String, identity: String, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(run(addrs, roots_pem, token, identity, rate, flag))
        });
        Self { stop, handle }
    }

    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("load thread")
    }
}

async fn one(client: &mut CaClient, csr: &str, token: &str) -> Result<(), String> {
    let resp =
        tokio::time::timeout(Duration::from_secs(5), client.create_certificate(request(csr, 600, Some(token), None)))
            .await
            .map_err(|_| "no answer in 5s".to_string())?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    if resp.into_inner().cert_chain.is_empty() {
        return Err("empty chain".into());
    }
    Ok(())
}

async fn run(
    addrs: Vec<SocketAddr>,
    roots: String,
    token: String,
    identity: String,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let (csr, _key) = make_csr(KeyType::EcP256, Some(&identity));
    let mut clients: Vec<Option<CaClient>> = addrs.iter().map(|_| None).collect();
    let mut report = LoadReport::default();
    let mut last_ok = Instant::now();
    let period = Duration::from_secs(1) / rate.max(1);
    let mut tick = tokio::time::interval(period);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let n = i % addrs.len();
        i += 1;
        if clients[n].is_none() {
            match tokio::time::timeout(Duration::from_secs(3), connect(addrs[n], &roots, None)).await {
                Ok(Ok(c)) => clients[n] = Some(c),
                Ok(Err(e)) => {
                    record_err(&mut report, addrs[n], format!("connect: {e}"));
                    continue;
                }
                Err(_) => {
                    record_err(&mut report, addrs[n], "connect: timeout".into());
                    continue;
                }
            }
        }
        let c = clients[n].as_mut().expect("connected");
        match one(c, &csr, &token).await {
            Ok(()) => {
                report.ok += 1;
                report.longest_gap = report.longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            Err(e) => {
                clients[n] = None;
                record_err(&mut report, addrs[n], e);
            }
        }
    }
    report
}

fn record_err(report: &mut LoadReport, addr: SocketAddr, e: String) {
    report.failed += 1;
    *report.failed_by.entry(addr).or_default() += 1;
    if report.errors.len() < 10 {
        report.errors.push(format!("{addr}: {e}"));
    }
}
