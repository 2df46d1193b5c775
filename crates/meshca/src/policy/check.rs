//! `meshca policy check`: evaluate requests as Istio + Envoy would, and explain.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use meshca_policy::eval::{self, Chain, Decision, EvalOptions, JwksByIssuer, Request};
use serde_json::Value;

use super::common::{load_set, read_text, WorkloadArgs};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Policy files or directories (YAML or JSON).
    #[arg(long, num_args = 1.., required_unless_present = "filters")]
    pub policies: Vec<PathBuf>,
    /// Evaluate already compiled filters instead (the JSON of `meshca policy compile`).
    #[arg(long, conflicts_with = "policies")]
    pub filters: Option<PathBuf>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// JWKS for issuers that use jwksUri or OIDC discovery: a JWKS document (used for every
    /// issuer) or an object mapping issuer to JWKS (repeatable).
    #[arg(long)]
    pub jwks: Vec<PathBuf>,
    /// Clock for JWT exp/nbf: unix seconds or RFC 3339 [default: now].
    #[arg(long)]
    pub jwt_now: Option<String>,
    /// Requests file: a YAML or JSON list of requests.
    #[arg(long, conflicts_with_all = ["name", "source_principal", "source_ip", "remote_ip", "destination_ip", "sni", "method", "path", "host", "header", "jwt", "expect"])]
    pub requests: Option<PathBuf>,
    /// One request: name echoed in the output.
    #[arg(long)]
    pub name: Option<String>,
    /// Peer SPIFFE ID (none: plaintext).
    #[arg(long)]
    pub source_principal: Option<String>,
    /// Peer address.
    #[arg(long)]
    pub source_ip: Option<String>,
    /// Original client address (X-Forwarded-For).
    #[arg(long)]
    pub remote_ip: Option<String>,
    /// Local address.
    #[arg(long)]
    pub destination_ip: Option<String>,
    /// TLS SNI.
    #[arg(long)]
    pub sni: Option<String>,
    /// HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// HTTP path (with query).
    #[arg(long)]
    pub path: Option<String>,
    /// Host header.
    #[arg(long)]
    pub host: Option<String>,
    /// Request header `name=value` (repeatable).
    #[arg(long)]
    pub header: Vec<String>,
    /// A JWT sent as `Authorization: Bearer`.
    #[arg(long)]
    pub jwt: Option<String>,
    /// Expected decision: allow or deny.
    #[arg(long, value_parser = ["allow", "deny"])]
    pub expect: Option<String>,
    /// text or json.
    #[arg(long, short = 'o', default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

fn parse_now(s: Option<&str>) -> anyhow::Result<i64> {
    match s {
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
        Some(s) => {
            if let Ok(n) = s.parse::<i64>() {
                return Ok(n);
            }
            let t = humantime::parse_rfc3339_weak(s)
                .with_context(|| format!("--jwt-now {s:?}: expected unix seconds or an RFC 3339 time"))?;
            Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
        }
    }
}

pub(crate) fn read_jwks(files: &[PathBuf]) -> anyhow::Result<JwksByIssuer> {
    let mut out = JwksByIssuer::new();
    for f in files {
        let text = read_text(f)?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", f.display()))?;
        match &v {
            Value::Object(m) if m.contains_key("keys") => {
                out.insert("*".into(), text.clone());
            }
            Value::Object(m) => {
                for (iss, jwks) in m {
                    let t = match jwks {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.insert(iss.clone(), t);
                }
            }
            _ => bail!("{}: expected a JWKS or an object issuer -> JWKS", f.display()),
        }
    }
    Ok(out)
}

/// The requests of a YAML/JSON file (a list, or one request per document).
pub(crate) fn read_requests(p: &std::path::Path) -> anyhow::Result<Vec<Request>> {
    let name = p.display().to_string();
    let text = read_text(p)?;
    let docs = meshca_policy::load::yaml_to_json(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut items = Vec::new();
    for d in docs {
        match d {
            Value::Array(a) => items.extend(a),
            Value::Null => {}
            other => items.push(other),
        }
    }
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let label = item.get("name").and_then(Value::as_str).map(|n| format!(" ({n})")).unwrap_or_default();
        let r: Request =
            serde_json::from_value(item).map_err(|e| anyhow::anyhow!("{name}: request #{}{label}: {e}", i + 1))?;
        out.push(r);
    }
    Ok(out)
}

impl CheckArgs {
    fn flag_request(&self) -> anyhow::Result<Request> {
        let mut headers = BTreeMap::new();
        for h in &self.header {
            let Some((k, v)) = h.split_once('=') else { bail!("--header {h:?}: expected name=value") };
            headers.insert(k.to_string(), v.to_string());
        }
        let source = (self.source_principal.is_some() || self.source_ip.is_some())
            .then(|| eval::Source { principal: self.source_principal.clone(), ip: self.source_ip.clone() });
        let expect = self.expect.as_deref().map(|e| if e == "allow" { Decision::Allow } else { Decision::Deny });
        Ok(Request {
            name: self.name.clone(),
            source,
            remote: self.remote_ip.clone().map(|ip| eval::Remote { ip: Some(ip) }),
            destination: self.destination_ip.clone().map(|ip| eval::Destination { ip: Some(ip), port: None }),
            sni: self.sni.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            host: self.host.clone(),
            headers,
            jwt: self.jwt.clone(),
            expect,
        })
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let jwks = read_jwks(&args.jwks)?;
    // With --policies, the loaded set also gives the PeerAuthentication gate: it closes the
    // connection before any filter runs (not known with --filters).
    let (chain_json, notes, peer) = match &args.filters {
        Some(f) => {
            let json = serde_json::from_str(&read_text(f)?).with_context(|| format!("{}: not JSON", f.display()))?;
            (json, Vec::new(), None)
        }
        None => {
            let (set, w, mesh) = (load_set(&args.policies)?, args.workload.workload()?, args.workload.mesh()?);
            let (json, notes) = super::compile::compiled_set(&set, &w, &mesh, &args.workload, &jwks)?;
            (json, notes, Some((set, w, mesh)))
        }
    };
    let chain = Chain::from_json(&chain_json).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = EvalOptions { now: parse_now(args.jwt_now.as_deref())?, jwks, port: args.workload.port, explain: true };
    let requests = match &args.requests {
        Some(p) => read_requests(p)?,
        None => vec![args.flag_request()?],
    };
    let mut verdicts = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let label = r.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        let port = r.destination.as_ref().and_then(|d| d.port).or(opts.port).unwrap_or(0);
        let gate = peer
            .as_ref()
            .and_then(|(set, w, mesh)| eval::peer_gate(&eval::effective_mtls_source(set, w, mesh, port), r));
        if let Some(v) = gate {
            verdicts.push(v);
            continue;
        }
        let mut v = eval::evaluate(&chain, r, &opts).map_err(|e| anyhow::anyhow!("request #{}{label}: {e}", i + 1))?;
        if matches!(v.stage, eval::Stage::NoAllowMatch | eval::Stage::Deny) {
            v.explanation.notes.clone_from(&notes);
        }
        verdicts.push(v);
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&verdicts)?);
    } else {
        for (i, v) in verdicts.iter().enumerate() {
            println!("{}", meshca_policy::explain::render(i + 1, v));
        }
    }
    let failed = verdicts.iter().filter(|v| !v.meets_expectation()).count();
    if failed > 0 {
        bail!("{failed} of {} request(s) did not get the expected decision", verdicts.len());
    }
    Ok(())
}
