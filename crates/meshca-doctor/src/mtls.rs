//! `mtls`: given two workloads (two cert dirs or two Envoy admins), would
//! each accept the other's certificate, and if not, exactly why.

use crate::certs::{self, describe, subjects};
use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::{envoy, workload, Context};
use meshca_pki::verify::{anchors, verify_leaf, Usage};
use meshca_pki::CertDer;

pub const A_ACCEPTS_B: CheckDef = CheckDef {
    id: "mtls.first-accepts-second",
    description: "the first workload accepts the second one's certificate",
    severity: Severity::Error,
};
pub const B_ACCEPTS_A: CheckDef = CheckDef {
    id: "mtls.second-accepts-first",
    description: "the second workload accepts the first one's certificate",
    severity: Severity::Error,
};

/// One side of a connection.
pub struct Peer {
    pub name: String,
    pub chain: Vec<CertDer>,
    pub roots: Vec<CertDer>,
    /// The identities this side requires of its peer (Envoy SAN matchers);
    /// empty: not known.
    pub requires: Vec<String>,
}

async fn peers(ctx: &Context) -> Result<(Peer, Peer), String> {
    let t = &ctx.targets;
    if t.envoy_admins.len() >= 2 {
        let mut v = Vec::new();
        for a in &t.envoy_admins[..2] {
            let s = envoy::probe(ctx, a).await?;
            if s.chain.is_empty() || s.roots.is_empty() {
                return Err(format!("Envoy at {a} holds no default certificate or no ROOTCA (see the envoy checks)"));
            }
            v.push(Peer { name: format!("Envoy {a}"), chain: s.chain, roots: s.roots, requires: s.san_matchers });
        }
        let b = v.pop().ok_or("no second Envoy")?;
        let a = v.pop().ok_or("no first Envoy")?;
        return Ok((a, b));
    }
    if t.cert_dirs.len() >= 2 {
        let mut v = Vec::new();
        for (i, d) in t.cert_dirs[..2].iter().enumerate() {
            let cd = workload::load(d)?;
            // What a side requires of its peer: the peer's expected identity.
            let requires = t.expect_identities.get(1 - i).cloned().into_iter().collect();
            v.push(Peer { name: d.display().to_string(), chain: cd.chain, roots: cd.roots, requires });
        }
        let b = v.pop().ok_or("no second dir")?;
        let a = v.pop().ok_or("no first dir")?;
        return Ok((a, b));
    }
    Err(String::new())
}

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut c = Checks::new();
    match peers(ctx).await {
        Err(e) if e.is_empty() => {
            c.skip_all(&[A_ACCEPTS_B, B_ACCEPTS_A], "needs two --cert-dir or two --envoy-admin");
        }
        Err(e) => {
            for d in [A_ACCEPTS_B, B_ACCEPTS_A] {
                c.record(&d, Outcome::skip(format!("cannot read both workloads: {e}")));
            }
        }
        Ok((a, b)) => {
            c.record(&A_ACCEPTS_B, accepts(&a, &b, ctx.now));
            c.record(&B_ACCEPTS_A, accepts(&b, &a, ctx.now));
        }
    }
    c.into_results()
}

/// Would `verifier` accept `presenter`'s certificate?
pub fn accepts(verifier: &Peer, presenter: &Peer, now: std::time::SystemTime) -> Outcome {
    let leaf = &presenter.chain[0];
    let (v, p) = (&verifier.name, &presenter.name);
    let anchors = match anchors(&verifier.roots) {
        Ok(a) => a,
        Err(e) => {
            return Outcome::fail(format!("{v}'s trust bundle is unusable: {e}"), "fix its root-cert.pem / ROOTCA")
        }
    };
    if let Err(e) = verify_leaf(leaf, &presenter.chain[1..], &anchors, now, Usage::Client) {
        if certs::anchor_of(&presenter.chain, &verifier.roots).is_none() {
            let top = presenter.chain.last().and_then(|c| certs::info(c)).map(|i| i.issuer).unwrap_or_default();
            return Outcome::fail(
                format!(
                    "{p}'s certificate {} chains to \"{top}\", but {v} trusts only {}",
                    describe(leaf),
                    subjects(&verifier.roots)
                ),
                "different roots: the two workloads were issued by CAs that do not share a root (TLSV1_ALERT_UNKNOWN_CA, \
                 \"certificate signed by unknown authority\"). Give both CAs intermediates from one root, or put both \
                 roots in each bundle",
            );
        }
        return Outcome::fail(
            format!("{p}'s certificate {} does not verify for {v}: {e}", describe(leaf)),
            "the certificate is expired, not yet valid, or its chain misses an intermediate (CERTIFICATE_VERIFY_FAILED). \
             See the workload checks of that side",
        );
    }
    if verifier.requires.is_empty() {
        return Outcome::Ok;
    }
    let id = workload::spiffe_id(leaf).unwrap_or_default();
    if verifier.requires.contains(&id) {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!("{v} requires the peer SAN to be one of {:?}, {p} presents {id:?}", verifier.requires),
        "wrong SAN: the handshake fails with \"verify cert failed: SAN matcher\" (Envoy counts ssl.fail_verify_san). \
         The peer runs as another service account or trust domain than the matcher expects; fix the matcher or the \
         peer's identity",
    )
}
