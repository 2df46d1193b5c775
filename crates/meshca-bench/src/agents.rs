//! The patterns real agents produce, meshca only: every istio-agent, ztunnel
//! or meshca agent holds its own TLS connection with one CSR in flight
//! ("per-connection"), and a restart storm is thousands of *new* TLS
//! connections with one CSR each ("connection storm"). The cost of one new
//! TLS connection is measured in the same run, against the same server, so
//! the storm's p99 can be set beside its physical bound.

use crate::load::{self, Stop};
use crate::procstat::{self, CpuMark};
use crate::report::{Row, Scenario};
use crate::targets::GrpcCaller;
use crate::{KeyRun, Plan};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Server CPU (µs) per new TLS connection: `n` connections opened one after
/// the other (TCP accept, TLS 1.3 handshake with the server's certificate,
/// HTTP/2 preface and SETTINGS), each closed before the next. It is what a
/// new connection costs meshca, so a little more than the handshake's
/// cryptography alone.
pub async fn handshake_us(pid: u32, addr: SocketAddr, roots_pem: &str, n: usize) -> anyhow::Result<f64> {
    // One unmeasured connection warms the session machinery up.
    drop(meshca_testkit::connect(addr, roots_pem, None).await?);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mark = CpuMark::take(pid)?;
    for _ in 0..n {
        drop(meshca_testkit::connect(addr, roots_pem, None).await?);
    }
    // Let the server finish tearing the last connections down.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let spent = mark.since(pid)?;
    Ok(spent.server * 1e6 / n.max(1) as f64)
}

/// Both scenarios against a running meshca.
pub async fn run(
    plan: &Plan,
    run: &KeyRun,
    pid: u32,
    addr: SocketAddr,
    roots_pem: &str,
) -> anyhow::Result<(f64, Vec<Row>)> {
    let kind = run.kind;
    crate::quiet(plan).await;
    let hs = handshake_us(pid, addr, roots_pem, plan.handshakes).await?;
    eprintln!("[{kind}] meshca new TLS connection: {hs:.0} µs server CPU ({} sequential handshakes)", plan.handshakes);
    let mut rows = Vec::new();
    if !run.per_conn.is_empty() {
        let n = plan.per_conn_connections;
        let caller = Arc::new(GrpcCaller::new(addr, roots_pem.to_string(), n, &run.jobs)?);
        caller.connect_all().await?;
        crate::quiet(plan).await;
        let mark = CpuMark::take(pid)?;
        let r = load::closed_loop(caller.clone(), run.per_conn.clone(), n, n, Stop::Count).await;
        let spent = mark.since(pid)?;
        eprintln!(
            "[{kind}] meshca per-connection ({n} connections, one request each in flight): {:.0} certs/s, p99 {:.1} ms, \
             {} errors, {:.0} µs CPU/cert ({:.0} kernel)",
            r.throughput(),
            r.quantile_ms(0.99),
            r.errors,
            spent.server * 1e6 / r.ok.max(1) as f64,
            spent.server_sys * 1e6 / r.ok.max(1) as f64,
        );
        let rss = procstat::peak_rss_kib(pid).ok();
        rows.push(row(Scenario::PerConnection, run, n, n, r, spent, rss));
        drop(caller);
    }
    if !run.conn_storm.is_empty() {
        let n = run.conn_storm.len();
        let caller = Arc::new(GrpcCaller::new(addr, roots_pem.to_string(), n, &run.jobs)?);
        crate::quiet(plan).await;
        let reset = procstat::reset_peak_rss(pid);
        let mark = CpuMark::take(pid)?;
        let t = Instant::now();
        let r = load::burst(caller.clone(), run.conn_storm.clone(), n).await;
        let spent = mark.since(pid)?;
        let rss = if reset { procstat::peak_rss_kib(pid).ok() } else { None };
        eprintln!(
            "[{kind}] meshca connection storm: {n} new TLS connections with one CSR each in {:.2}s, p99 {:.0} ms, \
             {} errors, {:.0} µs CPU/cert, peak RSS {} KiB",
            t.elapsed().as_secs_f64(),
            r.quantile_ms(0.99),
            r.errors,
            spent.server * 1e6 / r.ok.max(1) as f64,
            rss.map_or("?".into(), |k| k.to_string()),
        );
        rows.push(row(Scenario::ConnStorm, run, n, n, r, spent, rss));
        drop(caller);
    }
    Ok((hs, rows))
}

fn row(
    scenario: Scenario,
    run: &KeyRun,
    concurrency: usize,
    connections: usize,
    result: load::RunResult,
    spent: procstat::Spent,
    peak_rss_kib: Option<u64>,
) -> Row {
    Row { scenario, key: run.kind, system: "meshca", concurrency, connections, result, spent, peak_rss_kib }
}
