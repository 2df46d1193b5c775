//! `meshca policy diff OLD NEW`: example requests whose decision changes, grouped into newly
//! allowed and newly denied.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use meshca_policy::diff::{diff, example_requests, Change};
use meshca_policy::eval::{Chain, EvalOptions, JwksByIssuer};

use super::common::{load_set, WorkloadArgs};

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The policies before the change (file or directory).
    pub old: PathBuf,
    /// The policies after the change (file or directory).
    pub new: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// text or json.
    #[arg(long, short = 'o', default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Exit 1 when any decision changes (for CI).
    #[arg(long)]
    pub fail_on_change: bool,
}

fn line(c: &Change) -> String {
    let r = &c.request;
    let peer = r.source.as_ref().and_then(|s| s.principal.clone()).unwrap_or_else(|| "plaintext".into());
    let mut parts = vec![format!("from {peer}")];
    if let Some(ip) = r.source.as_ref().and_then(|s| s.ip.as_ref()) {
        parts.push(format!("ip {ip}"));
    }
    if let Some(ip) = r.remote.as_ref().and_then(|s| s.ip.as_ref()) {
        parts.push(format!("remote {ip}"));
    }
    if let (Some(m), Some(p)) = (&r.method, &r.path) {
        parts.push(format!("{m} {p}"));
    }
    if let Some(h) = &r.host {
        parts.push(format!("host {h}"));
    }
    if let Some(p) = r.destination.as_ref().and_then(|d| d.port) {
        parts.push(format!("port {p}"));
    }
    for (k, v) in &r.headers {
        parts.push(format!("{k}: {v}"));
    }
    if let Some(s) = &r.sni {
        parts.push(format!("sni {s}"));
    }
    format!("  {}\n      was {}, now {}", parts.join(", "), c.old, c.new)
}

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let (old, new) = (load_set(std::slice::from_ref(&args.old))?, load_set(std::slice::from_ref(&args.new))?);
    let workload = args.workload.workload()?;
    let mesh = args.workload.mesh()?;
    let proto = args.workload.protocol();
    let chain = |set| -> anyhow::Result<Chain> {
        let v = meshca_policy::compile::compile(set, &workload, &mesh, proto, args.workload.port)?;
        Chain::from_json(&v).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (a, b) = (chain(&old)?, chain(&new)?);
    let (requests, jwt) = example_requests(&[&old, &new], &mesh.trust_domain, args.workload.port);
    let opts = EvalOptions { now: 0, jwks: JwksByIssuer::new(), port: args.workload.port, explain: false };
    let mut report = diff(&a, &b, requests, &opts);
    if jwt {
        report.notes.push(
            "conditions on JWTs (requestPrincipals, request.auth.*) are not explored: examples carry no token".into(),
        );
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} example requests: {} newly allowed, {} newly denied",
            report.requests,
            report.newly_allowed.len(),
            report.newly_denied.len()
        );
        if !report.newly_allowed.is_empty() {
            println!("newly allowed:");
            report.newly_allowed.iter().for_each(|c| println!("{}", line(c)));
        }
        if !report.newly_denied.is_empty() {
            println!("newly denied:");
            report.newly_denied.iter().for_each(|c| println!("{}", line(c)));
        }
        for n in &report.notes {
            println!("note: {n}");
        }
    }
    if args.fail_on_change && !(report.newly_allowed.is_empty() && report.newly_denied.is_empty()) {
        bail!("decisions changed");
    }
    Ok(())
}
