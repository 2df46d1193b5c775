//! `workload`: a workload's certificate directory (`cert-chain.pem`,
//! `key.pem`, `root-cert.pem`, as the agent writes it) and the agent itself.

use crate::certs::{self, describe, human_secs, subjects};
use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::fetch::explain;
use crate::Context;
use meshca_pki::verify::{anchors, verify_leaf, Usage};
use meshca_pki::CertDer;
use std::path::Path;

pub const FILES: CheckDef = CheckDef {
    id: "workload.files",
    description: "cert-chain.pem, key.pem and root-cert.pem are present and parse",
    severity: Severity::Fatal,
};
pub const KEY: CheckDef = CheckDef {
    id: "workload.key-matches-cert",
    description: "key.pem matches the certificate",
    severity: Severity::Error,
};
pub const SAN: CheckDef = CheckDef {
    id: "workload.identity",
    description: "the certificate's SPIFFE ID is the expected identity",
    severity: Severity::Error,
};
pub const VALIDITY: CheckDef = CheckDef {
    id: "workload.validity",
    description: "the certificate is within its validity period (clock skew under 5 minutes)",
    severity: Severity::Error,
};
pub const CHAIN: CheckDef = CheckDef {
    id: "workload.chain",
    description: "the certificate chain verifies against the workload's trust bundle",
    severity: Severity::Error,
};
pub const BUNDLE: CheckDef = CheckDef {
    id: "workload.bundle-current",
    description: "the workload's trust bundle holds the CA's current root",
    severity: Severity::Error,
};
pub const AGENT: CheckDef = CheckDef {
    id: "workload.agent-healthy",
    description: "the agent is healthy and holds a valid certificate",
    severity: Severity::Error,
};

const DIR_CHECKS: [CheckDef; 6] = [FILES, KEY, SAN, VALIDITY, CHAIN, BUNDLE];
pub const SKEW: i64 = 300;

/// The parsed files of a certificate directory.
pub struct CertDir {
    pub chain: Vec<CertDer>,
    pub roots: Vec<CertDer>,
}

pub fn load(dir: &Path) -> Result<CertDir, String> {
    let chain = certs::read_certs(&dir.join("cert-chain.pem"))?;
    let roots = certs::read_certs(&dir.join("root-cert.pem"))?;
    if !dir.join("key.pem").is_file() {
        return Err(format!("{}: missing", dir.join("key.pem").display()));
    }
    Ok(CertDir { chain, roots })
}

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let t = &ctx.targets;
    if t.cert_dirs.is_empty() {
        let mut c = Checks::new();
        c.skip_all(&DIR_CHECKS, "no --cert-dir given");
        out.extend(c.into_results());
    }
    let ca_roots: Option<(Vec<CertDer>, &str)> = match ctx.served_roots().await {
        Some(Ok(r)) => Some((r.clone(), "the CA serves")),
        _ => ctx.disk_roots().map(|r| (r, "the --ca-dir bundle holds")),
    };
    for (i, dir) in t.cert_dirs.iter().enumerate() {
        let mut c = Checks::new();
        let expect = t.expect_identities.get(i).map(String::as_str);
        let files = load(dir);
        let d = match files {
            Ok(d) => {
                c.record(&FILES, Outcome::Ok);
                d
            }
            Err(e) => {
                c.record(
                    &FILES,
                    Outcome::fail(
                        e,
                        "the agent has not written its certificate (it has none yet, or --output-dir differs)",
                    ),
                );
                for def in &DIR_CHECKS[1..] {
                    c.run(def, || Outcome::Ok);
                }
                out.extend(label(c.into_results(), dir, t.cert_dirs.len()));
                continue;
            }
        };
        let now = certs::unix(ctx.now);
        c.run(&KEY, || key(dir, &d));
        c.run(&SAN, || identity(&d.chain[0], expect));
        c.run(&VALIDITY, || validity(&d.chain[0], now));
        c.run(&CHAIN, || chain(&d, ctx.now));
        c.run(&BUNDLE, || bundle(&d, ca_roots.as_ref()));
        out.extend(label(c.into_results(), dir, t.cert_dirs.len()));
    }
    let mut c = Checks::new();
    c.record(&AGENT, agent(ctx).await);
    out.extend(c.into_results());
    out
}

fn label(mut r: Vec<CheckResult>, dir: &Path, n: usize) -> Vec<CheckResult> {
    if n > 1 {
        for x in &mut r {
            x.description = format!("{} [{}]", x.description, dir.display());
        }
    }
    r
}

fn key(dir: &Path, d: &CertDir) -> Outcome {
    match certs::key_matches(&d.chain[0], &dir.join("key.pem")) {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::fail(
            format!("{} does not belong to the certificate {}", dir.join("key.pem").display(), describe(&d.chain[0])),
            "the files come from different renewals (a partial write). The agent writes them together; restart it",
        ),
        Err(e) => Outcome::fail(e, "key.pem must be a PEM private key"),
    }
}

/// The URI SAN of a certificate or the reason there is none.
pub fn spiffe_id(leaf: &[u8]) -> Result<String, String> {
    let i = certs::info(leaf).ok_or("the certificate does not parse")?;
    i.spiffe_id
        .ok_or_else(|| format!("{} has no spiffe:// URI SAN (SANs: {:?} {:?})", describe(leaf), i.uris, i.dns_names))
}

pub fn identity(leaf: &[u8], expect: Option<&str>) -> Outcome {
    let id = match spiffe_id(leaf) {
        Ok(id) => id,
        Err(e) => {
            return Outcome::fail(e, "peers match the SPIFFE ID; issue the certificate through the CA with a SPIFFE ID")
        }
    };
    let Some(expect) = expect else { return Outcome::Ok };
    if id == expect {
        return Outcome::Ok;
    }
    let td = |s: &str| s.trim_start_matches("spiffe://").split('/').next().unwrap_or("").to_string();
    let cause = if td(&id) != td(expect) {
        format!("the trust domain differs ({} vs {}): the CA's --trust-domain is not the mesh's", td(&id), td(expect))
    } else {
        "the token the agent sent names another service account (namespace/serviceaccount), or the SPIFFE ID \
         template differs"
            .to_string()
    };
    Outcome::fail(
        format!("the certificate is for {id}, expected {expect}"),
        format!("peers reject it with \"verify cert failed: SAN matcher\" (istio#49874): {cause}. Fix the identity the workload runs as"),
    )
}

pub fn validity(leaf: &[u8], now: i64) -> Outcome {
    let Some(i) = certs::info(leaf) else { return Outcome::fail("the certificate does not parse", "replace it") };
    if now >= i.not_after_unix {
        return Outcome::fail(
            format!("{} expired on {} ({} ago)", describe(leaf), i.not_after, human_secs(now - i.not_after_unix)),
            "the agent did not renew it: check that the agent runs and reaches the CA (its /healthz and log), and that \
             its token is still valid",
        );
    }
    if now < i.not_before_unix {
        let ahead = i.not_before_unix - now;
        let msg = format!("{} is not valid before {} ({} from now)", describe(leaf), i.not_before, human_secs(ahead));
        if ahead > SKEW {
            return Outcome::fail(
                format!("{msg}: clock skew beyond 5 minutes"),
                "this host's clock is behind the CA's (\"x509: certificate has expired or is not yet valid\"). Fix \
                 time synchronisation (NTP) on the node or the CA",
            );
        }
        return Outcome::warn(
            msg,
            "a small clock skew between this host and the CA; peers with a slower clock reject the certificate until \
             then. Check NTP",
        );
    }
    let life = i.not_after_unix - i.not_before_unix;
    let left = i.not_after_unix - now;
    if life > 0 && left * 4 < life {
        return Outcome::warn(
            format!("{} expires in {} (less than a quarter of its lifetime)", describe(leaf), human_secs(left)),
            "the agent renews at half-life, so renewal is failing: check the agent's /healthz and log",
        );
    }
    Outcome::Ok
}

fn chain(d: &CertDir, now: std::time::SystemTime) -> Outcome {
    let anchors = match anchors(&d.roots) {
        Ok(a) => a,
        Err(e) => return Outcome::fail(format!("root-cert.pem: {e}"), "the trust bundle must hold CA certificates"),
    };
    match verify_leaf(&d.chain[0], &d.chain[1..], &anchors, now, Usage::Client) {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            let problem = certs::chain_problem(&d.chain, &d.roots).unwrap_or_else(|| e.to_string());
            Outcome::fail(
                format!("cert-chain.pem does not verify against root-cert.pem: {problem}"),
                "peers holding this bundle reject the certificate (\"certificate signed by unknown authority\"): the \
                 chain was issued under another root or misses an intermediate. Renew through the CA whose root is \
                 in the bundle",
            )
        }
    }
}

fn bundle(d: &CertDir, ca: Option<&(Vec<CertDer>, &str)>) -> Outcome {
    let Some((ca_roots, said)) = ca else { return Outcome::skip("no --ca-http-addr or --ca-dir to compare with") };
    let missing: Vec<&CertDer> = ca_roots.iter().filter(|r| !d.roots.contains(r)).collect();
    if !missing.is_empty() {
        return Outcome::fail(
            format!("{said} {} but the workload's root-cert.pem holds {}", subjects(ca_roots), subjects(&d.roots)),
            "root update not detected: the workload still trusts the old root, so peers with certificates from the \
             new root fail (\"x509: certificate signed by unknown authority\"). The agent picks up a new root with \
             --ca-http-addr (long-poll) or on its next renewal; restart the agent to force it",
        );
    }
    if certs::anchor_of(&d.chain, ca_roots).is_none() {
        return Outcome::fail(
            format!("the certificate {} does not chain to a root {said}", describe(&d.chain[0])),
            "it was issued before a root change; the agent must renew it (restart the agent to force a renewal)",
        );
    }
    Outcome::Ok
}

async fn agent(ctx: &Context) -> Outcome {
    let Some(addr) = &ctx.targets.agent else { return Outcome::skip("no --agent given") };
    match ctx.http.get(&format!("http://{addr}/healthz")).await {
        Ok((200, _)) => Outcome::Ok,
        Ok((status, body)) => Outcome::fail(
            format!("the agent at {addr} is unhealthy: HTTP {status} {}", body.trim()),
            "the agent has no valid certificate: it cannot reach the CA or the CA refuses it. Its log names the \
             CA error; check --ca-addr, --ca-root and the token",
        ),
        Err(e) => Outcome::fail(
            format!("the agent at {addr} is unreachable: {e}"),
            format!("{}. Check that meshca agent runs with --http-addr {addr}", explain(&e)),
        ),
    }
}
