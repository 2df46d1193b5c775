//! `envoy`: a proxy through its admin API — the secrets it holds
//! (`/config_dump`), what it presents, and the counters that name a cause (`/stats`).

use crate::certs::{self, describe, subjects};
use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::fetch::explain;
use crate::workload;
use crate::Context;
use base64::Engine as _;
use meshca_pki::CertDer;
use serde_json::Value;

pub const ADMIN: CheckDef = CheckDef {
    id: "envoy.admin",
    description: "the Envoy admin API answers and the server is LIVE",
    severity: Severity::Fatal,
};
pub const SECRETS: CheckDef = CheckDef {
    id: "envoy.secrets-active",
    description: "the default and ROOTCA secrets are active (not warming)",
    severity: Severity::Error,
};
pub const MATCHES_AGENT: CheckDef = CheckDef {
    id: "envoy.cert-matches-agent",
    description: "the certificate Envoy presents is the agent's current one",
    severity: Severity::Error,
};
pub const IDENTITY: CheckDef = CheckDef {
    id: "envoy.identity",
    description: "the presented SPIFFE ID is the expected identity",
    severity: Severity::Error,
};
pub const EXPIRY: CheckDef = CheckDef {
    id: "envoy.cert-validity",
    description: "the presented certificate is valid",
    severity: Severity::Error,
};
pub const BUNDLE: CheckDef = CheckDef {
    id: "envoy.bundle-current",
    description: "Envoy's ROOTCA holds the CA's current root",
    severity: Severity::Error,
};
pub const VERIFY_ERRORS: CheckDef = CheckDef {
    id: "envoy.tls-verify-failures",
    description: "no TLS handshake failed certificate or SAN verification",
    severity: Severity::Warning,
};
pub const NOT_READY: CheckDef = CheckDef {
    id: "envoy.sds-not-ready",
    description: "no connection was reset because a secret was not delivered",
    severity: Severity::Warning,
};
pub const RBAC: CheckDef =
    CheckDef { id: "envoy.rbac-denied", description: "no request was denied by RBAC", severity: Severity::Warning };
pub const JWT: CheckDef = CheckDef {
    id: "envoy.jwt-denied",
    description: "no request was denied by JWT authentication",
    severity: Severity::Warning,
};

pub const ALL: [CheckDef; 10] =
    [ADMIN, SECRETS, MATCHES_AGENT, IDENTITY, EXPIRY, BUNDLE, VERIFY_ERRORS, NOT_READY, RBAC, JWT];

/// What one Envoy holds.
#[derive(Debug, Default, Clone)]
pub struct EnvoyState {
    pub admin: String,
    /// Certificate chain of the `default` secret (leaf first).
    pub chain: Vec<CertDer>,
    /// Trusted CAs of the `ROOTCA` secret.
    pub roots: Vec<CertDer>,
    pub active: Vec<String>,
    pub warming: Vec<String>,
    /// Exact URI SANs any validation context of the config requires of peers.
    pub san_matchers: Vec<String>,
    pub stats: Vec<(String, u64)>,
    /// Seconds since the previous run and its counters (`--stats-state`).
    pub previous: Option<(f64, Vec<(String, u64)>)>,
}

fn data_source(v: &Value) -> Vec<u8> {
    if let Some(b) = v["inline_bytes"].as_str() {
        return base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default();
    }
    v["inline_string"].as_str().map(|s| s.as_bytes().to_vec()).unwrap_or_default()
}

fn collect_san_matchers(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "match_typed_subject_alt_names" || k == "match_subject_alt_names" {
                    for e in x.as_array().into_iter().flatten() {
                        let s = if e["matcher"].is_object() { &e["matcher"]["exact"] } else { &e["exact"] };
                        if let Some(s) = s.as_str() {
                            out.push(s.to_string());
                        }
                    }
                } else {
                    collect_san_matchers(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_san_matchers(x, out)),
        _ => {}
    }
}

/// Read an Envoy's secrets, SAN matchers and counters.
pub async fn probe(ctx: &Context, admin: &str) -> Result<EnvoyState, String> {
    let info = ctx.http.get_json(&format!("http://{admin}/server_info")).await?;
    let state = info["state"].as_str().unwrap_or("?");
    if state != "LIVE" {
        return Err(format!(
            "Envoy at {admin} is {state}, not LIVE (it is still initializing: secrets or listeners pending)"
        ));
    }
    let dump = ctx.http.get_json(&format!("http://{admin}/config_dump")).await?;
    let mut s = EnvoyState { admin: admin.to_string(), ..Default::default() };
    collect_san_matchers(&dump, &mut s.san_matchers);
    for cfg in dump["configs"].as_array().into_iter().flatten() {
        for sec in cfg["dynamic_active_secrets"].as_array().into_iter().flatten() {
            let name = sec["name"].as_str().unwrap_or("").to_string();
            let secret = &sec["secret"];
            let chain = data_source(&secret["tls_certificate"]["certificate_chain"]);
            if !chain.is_empty() {
                s.chain = meshca_pki::pem::parse_certs(&chain).unwrap_or_default();
            }
            let ca = data_source(&secret["validation_context"]["trusted_ca"]);
            if !ca.is_empty() {
                s.roots = meshca_pki::pem::parse_certs(&ca).unwrap_or_default();
            }
            s.active.push(name);
        }
        for sec in cfg["dynamic_warming_secrets"].as_array().into_iter().flatten() {
            s.warming.push(sec["name"].as_str().unwrap_or("").to_string());
        }
    }
    let stats = ctx.http.get_ok(&format!("http://{admin}/stats")).await?;
    s.stats = stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| v.trim().parse::<u64>().ok().map(|n| (k.to_string(), n)))
        .collect();
    Ok(s)
}

/// The counters ending in `suffix`: their total (or, with a previous run's
/// values, the increase since then) and the non-zero ones for the message.
fn counter(s: &EnvoyState, suffix: &str) -> (u64, Vec<String>) {
    let sum = |st: &[(String, u64)]| st.iter().filter(|(k, _)| k.ends_with(suffix)).map(|(_, v)| *v).sum::<u64>();
    let mut lines: Vec<String> =
        s.stats.iter().filter(|(k, v)| k.ends_with(suffix) && *v > 0).map(|(k, v)| format!("{k}: {v}")).collect();
    let total = sum(&s.stats);
    match &s.previous {
        None => (total, lines),
        Some((ago, prev)) => {
            let d = total.saturating_sub(sum(prev));
            lines.push(format!("+{d} since the previous run {ago:.0}s ago, {:.1}/min", d as f64 * 60.0 / ago.max(1.0)));
            (d, lines)
        }
    }
}

const WATCHED: [&str; 5] =
    ["ssl.fail_verify_error", "ssl.fail_verify_san", "secrets_not_ready", "rbac.denied", "jwt_authn.denied"];

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Counters of the previous run (`--stats-state`), per admin address.
fn load_state(path: Option<&std::path::Path>) -> Value {
    path.and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
}

fn previous(state: &Value, admin: &str) -> Option<(f64, Vec<(String, u64)>)> {
    let e = &state[admin];
    let at = e["at"].as_f64()?;
    let stats = e["stats"].as_object()?.iter().filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n))).collect();
    Some(((now_secs() - at).max(0.0), stats))
}

fn save_state(path: &std::path::Path, states: &[EnvoyState]) {
    let mut out = serde_json::Map::new();
    for s in states {
        let stats: serde_json::Map<String, Value> = s
            .stats
            .iter()
            .filter(|(k, _)| WATCHED.iter().any(|w| k.ends_with(w)))
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect();
        out.insert(s.admin.clone(), serde_json::json!({"at": now_secs(), "stats": stats}));
    }
    if let Err(e) = std::fs::write(path, Value::Object(out).to_string()) {
        tracing::warn!("--stats-state {}: cannot be written: {e}", path.display());
    }
}

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let t = &ctx.targets;
    let mut out = Vec::new();
    if t.envoy_admins.is_empty() {
        let mut c = Checks::new();
        c.skip_all(&ALL, "no --envoy-admin given");
        return c.into_results();
    }
    let ca_roots: Option<(Vec<CertDer>, &str)> = match ctx.served_roots().await {
        Some(Ok(r)) => Some((r.clone(), "the CA serves")),
        _ => ctx.disk_roots().map(|r| (r, "the --ca-dir bundle holds")),
    };
    let agent_serial = agent_serial(ctx).await;
    let state = load_state(t.stats_state.as_deref());
    let mut seen = Vec::new();
    for (i, admin) in t.envoy_admins.iter().enumerate() {
        let mut c = Checks::new();
        let s = match probe(ctx, admin).await {
            Ok(mut s) => {
                s.previous = previous(&state, admin);
                seen.push(s.clone());
                c.record(&ADMIN, Outcome::Ok);
                s
            }
            Err(e) => {
                c.record(
                    &ADMIN,
                    Outcome::fail(e.clone(), format!("{}. Check --envoy-admin (Envoy's admin address)", explain(&e))),
                );
                for d in &ALL[1..] {
                    c.run(d, || Outcome::Ok);
                }
                out.extend(label(c.into_results(), admin, t.envoy_admins.len()));
                continue;
            }
        };
        let now = certs::unix(ctx.now);
        let secrets_ok = c.run(&SECRETS, || secrets(&s));
        let leaf = s.chain.first().cloned();
        let cert_dir = t.cert_dirs.get(i).and_then(|d| workload::load(d).ok());
        // --agent is the first workload's agent.
        let agent = if i == 0 { agent_serial.as_deref() } else { None };
        c.run(&MATCHES_AGENT, || matches_agent(leaf.as_ref(), agent, cert_dir.as_ref()));
        let expect = t.expect_identities.get(i).map(String::as_str);
        c.run(&IDENTITY, || {
            leaf.as_ref().map_or(Outcome::skip("no default certificate"), |l| workload::identity(l, expect))
        });
        c.run(&EXPIRY, || {
            leaf.as_ref().map_or(Outcome::skip("no default certificate"), |l| workload::validity(l, now))
        });
        c.run(&BUNDLE, || bundle(&s, ca_roots.as_ref()));
        c.run(&VERIFY_ERRORS, || verify_errors(&s));
        c.run(&NOT_READY, || not_ready(&s, secrets_ok));
        c.run(&RBAC, || {
            let (n, lines) = counter(&s, "rbac.denied");
            if n == 0 {
                return Outcome::Ok;
            }
            Outcome::fail(
                format!("{n} requests denied by RBAC ({})", lines.join(", ")),
                "an authorization policy denies these requests: too restrictive (no ALLOW rule matches the caller's \
                 principal/namespace), or a DENY rule matches. Enable the rbac debug log to see the matched policy",
            )
        });
        c.run(&JWT, || {
            let (n, lines) = counter(&s, "jwt_authn.denied");
            if n == 0 {
                return Outcome::Ok;
            }
            Outcome::fail(
                format!("{n} requests denied by JWT authentication ({})", lines.join(", ")),
                "the tokens are expired, from an issuer not configured, or signed with a key missing from the JWKS \
                 (check with meshca doctor --token FILE --jwt-issuer ...)",
            )
        });
        out.extend(label(c.into_results(), admin, t.envoy_admins.len()));
    }
    if let Some(p) = &t.stats_state {
        save_state(p, &seen);
    }
    out
}

fn label(mut r: Vec<CheckResult>, admin: &str, n: usize) -> Vec<CheckResult> {
    if n > 1 {
        for x in &mut r {
            x.description = format!("{} [{admin}]", x.description);
        }
    }
    r
}

fn secrets(s: &EnvoyState) -> Outcome {
    let mut problems = Vec::new();
    for name in ["default", "ROOTCA"] {
        if s.active.iter().any(|a| a == name) {
            continue;
        }
        if s.warming.iter().any(|a| a == name) {
            problems.push(format!("{name} is warming (requested over SDS, never delivered)"));
        } else {
            problems.push(format!("{name} is absent"));
        }
    }
    if problems.is_empty() {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!("Envoy at {}: {}", s.admin, problems.join("; ")),
        "SDS never answered: the agent is not running, its socket is not the one Envoy's sds cluster points at, or it \
         has no certificate yet (see the agent's /healthz). Connections using these secrets are reset",
    )
}

async fn agent_serial(ctx: &Context) -> Option<String> {
    let addr = ctx.targets.agent.as_ref()?;
    let (_, body) = ctx.http.get(&format!("http://{addr}/healthz")).await.ok()?;
    body.split_whitespace().skip_while(|w| *w != "serial").nth(1).map(norm_serial)
}

fn norm_serial(s: &str) -> String {
    let s = s.to_ascii_lowercase().replace(':', "");
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.into()
    }
}

fn matches_agent(leaf: Option<&CertDer>, agent: Option<&str>, dir: Option<&workload::CertDir>) -> Outcome {
    let Some(leaf) = leaf else { return Outcome::skip("Envoy holds no default certificate") };
    let serial = certs::info(leaf).map(|i| norm_serial(&i.serial)).unwrap_or_default();
    let hint = "Envoy did not take the agent's latest certificate: the SDS push was rejected (NACK, see \
                meshca_agent_sds_nacks_total) or the Envoy talks to another agent. Restart the Envoy or the agent";
    if let Some(a) = agent {
        if a != serial {
            return Outcome::fail(format!("Envoy presents serial {serial}, the agent holds serial {a}"), hint);
        }
        return Outcome::Ok;
    }
    if let Some(d) = dir {
        if d.chain.first() != Some(leaf) {
            return Outcome::fail(
                format!("Envoy presents {}, the cert dir holds {}", describe(leaf), describe(&d.chain[0])),
                hint,
            );
        }
        return Outcome::Ok;
    }
    Outcome::skip("no --agent or matching --cert-dir to compare with")
}

fn bundle(s: &EnvoyState, ca: Option<&(Vec<CertDer>, &str)>) -> Outcome {
    let Some((ca_roots, said)) = ca else { return Outcome::skip("no --ca-http-addr or --ca-dir to compare with") };
    if s.roots.is_empty() {
        return Outcome::skip("Envoy holds no ROOTCA");
    }
    if ca_roots.iter().all(|r| s.roots.contains(r)) {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!("{said} {} but Envoy's ROOTCA holds {}", subjects(ca_roots), subjects(&s.roots)),
        "root update not detected: the agent has not pushed the CA's new root to this Envoy (agent stopped, or not \
         following the CA with --ca-http-addr). Peers with certificates from the new root fail with \
         \"TLSV1_ALERT_UNKNOWN_CA\" / CERTIFICATE_VERIFY_FAILED. Restart the agent",
    )
}

fn verify_errors(s: &EnvoyState) -> Outcome {
    let (ca, ca_lines) = counter(s, "ssl.fail_verify_error");
    let (san, san_lines) = counter(s, "ssl.fail_verify_san");
    let mut parts = Vec::new();
    let mut causes = Vec::new();
    if ca > 0 {
        parts.push(format!("{ca} handshakes failed CA verification ({})", ca_lines.join(", ")));
        causes.push("fail_verify_error: the peer's certificate chains to a root this Envoy does not trust (unknown CA: different roots, or a root update one side has not received)");
    }
    if san > 0 {
        parts.push(format!("{san} handshakes failed SAN verification ({})", san_lines.join(", ")));
        causes.push("fail_verify_san: the peer presented another identity than the SAN matcher expects (wrong service account or trust domain)");
    }
    if parts.is_empty() {
        return Outcome::Ok;
    }
    Outcome::fail(
        parts.join("; "),
        format!("{}. Compare both sides with meshca doctor mtls (two --envoy-admin)", causes.join("; ")),
    )
}

fn not_ready(s: &EnvoyState, secrets_ok: bool) -> Outcome {
    let (n, lines) = counter(s, "secrets_not_ready");
    if n == 0 {
        return Outcome::Ok;
    }
    let text = format!("{n} connections reset because a secret was not ready ({})", lines.join(", "));
    let hint = "SDS had not answered when these connections came: the agent started after Envoy or could not get a \
                certificate";
    if secrets_ok {
        Outcome::warn(format!("{text}; the secrets are active now"), hint)
    } else {
        Outcome::fail(text, hint)
    }
}
