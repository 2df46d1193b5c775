//! Memory soak: meshca issues many certificates (16 callers over 4 HTTP/2
//! channels, cycling over the prepared CSRs and tokens) and its resident set
//! is read after every round; the RSS after the first tenth is compared with
//! the RSS at the end (no growth per request: within 10%).

use crate::load::{self, Stop};
use crate::targets::GrpcCaller;
use crate::{procstat, KeyRun, Plan};
use anyhow::Context;
use meshca_testkit::{Server, ServerOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest growth accepted between the RSS after the first tenth and at the end.
const MAX_GROWTH: f64 = 0.10;

pub async fn run(plan: &Plan, run: KeyRun, total: usize, max: Duration) -> anyhow::Result<()> {
    let work = run.dir.join("meshca");
    let opts = ServerOptions { ca_dir: Some(run.ca.dir.clone()), ..Default::default() };
    let server = Server::start(&plan.meshca_bin, &work, opts)?;
    let pid = server.pid().context("server pid")?;
    let caller = Arc::new(GrpcCaller::new(server.grpc, server.root_pem(), plan.connections, &run.jobs)?);
    caller.connect_all().await?;
    let tenth = (total / 10).max(1);
    let start = Instant::now();
    let (mut issued, mut at_tenth) = (0usize, None);
    let mut series = Vec::new();
    let start_rss = procstat::rss_kib(pid)?;
    eprintln!("[{}] soak: up to {total} certificates or {}s; RSS at start {start_rss} KiB", run.kind, max.as_secs());
    while issued < total && start.elapsed() < max {
        let round = run.steady.start..run.steady.start + run.steady.len().min(total - issued);
        let r = load::closed_loop(caller.clone(), round, plan.concurrency, plan.connections, Stop::Count).await;
        anyhow::ensure!(r.errors == 0, "soak: {} errors after {issued} certificates: {:?}", r.errors, r.error_samples);
        issued += r.ok as usize;
        let rss = procstat::rss_kib(pid)?;
        series.push((issued, rss, start.elapsed().as_secs_f64()));
        if at_tenth.is_none() && issued >= tenth {
            at_tenth = Some((issued, rss));
        }
        eprintln!("  {issued} certificates, {:.0}s: RSS {rss} KiB", start.elapsed().as_secs_f64());
    }
    let end_rss = procstat::rss_kib(pid)?;
    let (n10, rss10) = at_tenth.context("the soak ended before a tenth of its certificates")?;
    let growth = end_rss as f64 / rss10 as f64 - 1.0;
    let cpu_us = procstat::cpu_seconds(pid)? * 1e6 / issued.max(1) as f64;
    let verdict = if growth <= MAX_GROWTH { "within" } else { "OVER" };
    println!(
        "soak ({}): {issued} certificates in {:.0}s ({} asked); server RSS {rss10} KiB after {n10}, {end_rss} KiB at the \
         end: {:+.1}% ({verdict} the 10% target); peak {} KiB; {cpu_us:.0} µs server CPU per certificate (whole life)",
        run.kind,
        start.elapsed().as_secs_f64(),
        total,
        growth * 100.0,
        procstat::peak_rss_kib(pid)?,
    );
    let json = serde_json::json!({
        "key": run.kind.as_str(),
        "asked": total,
        "issued": issued,
        "elapsed_s": start.elapsed().as_secs_f64(),
        "rss_kib_start": start_rss,
        "rss_kib_after_tenth": rss10,
        "tenth_at": n10,
        "rss_kib_end": end_rss,
        "growth": growth,
        "peak_rss_kib": procstat::peak_rss_kib(pid)?,
        "series": series.iter().map(|(n, r, t)| serde_json::json!([n, r, t])).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all("bench/results")?;
    std::fs::write("bench/results/soak.json", serde_json::to_string_pretty(&json)? + "\n")?;
    eprintln!("wrote bench/results/soak.json");
    anyhow::ensure!(growth <= MAX_GROWTH, "server RSS grew {:.1}% (target 10%)", growth * 100.0);
    Ok(())
}
