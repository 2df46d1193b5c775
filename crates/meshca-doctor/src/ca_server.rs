//! `ca-server`: a running CA, through its HTTP port (`/readyz`, `/status`,
//! `/root-cert.pem`) and a TLS handshake on its gRPC port.

use crate::certs::{self, subjects};
use crate::check::{CheckDef, CheckResult, Checks, Outcome, Severity};
use crate::fetch::{explain, tls_handshake};
use crate::Context;
use serde_json::Value;
use std::path::PathBuf;

pub const READY: CheckDef = CheckDef {
    id: "ca-server.ready",
    description: "the CA answers on its HTTP port and is ready",
    severity: Severity::Fatal,
};
pub const GRPC_TLS: CheckDef = CheckDef {
    id: "ca-server.grpc-tls",
    description: "the CA's gRPC port completes a TLS handshake with the trusted root",
    severity: Severity::Error,
};
pub const PLUGIN_IN_USE: CheckDef = CheckDef {
    id: "ca-server.plugin-in-use",
    description: "plug-in CA files, when present, are the active source",
    severity: Severity::Error,
};
pub const FILES_ACTIVE: CheckDef = CheckDef {
    id: "ca-server.files-active",
    description: "the CA files on disk are the material the CA signs with",
    severity: Severity::Error,
};
pub const LAST_RELOAD: CheckDef = CheckDef {
    id: "ca-server.last-reload",
    description: "the last reload of CA material succeeded",
    severity: Severity::Error,
};
pub const ROOT_SERVED: CheckDef = CheckDef {
    id: "ca-server.root-served",
    description: "the root the CA serves is the root on disk",
    severity: Severity::Error,
};

pub const ROOT_SWITCH: CheckDef = CheckDef {
    id: "ca-server.root-switch",
    description: "no root switch is pending (a prepared signer waiting to activate)",
    severity: Severity::Warning,
};
pub const AGENT_BUNDLES: CheckDef = CheckDef {
    id: "ca-server.agent-bundles",
    description: "every connected agent holds the CA's current trust bundle",
    severity: Severity::Error,
};

pub const CLOCK: CheckDef = CheckDef {
    id: "ca-server.clock-skew",
    description: "this host's clock agrees with the CA's within 5 minutes",
    severity: Severity::Error,
};

pub const ALL: [CheckDef; 9] =
    [GRPC_TLS, READY, CLOCK, PLUGIN_IN_USE, FILES_ACTIVE, LAST_RELOAD, ROOT_SERVED, ROOT_SWITCH, AGENT_BUNDLES];

pub async fn run(ctx: &Context) -> Vec<CheckResult> {
    let mut c = Checks::new();
    let t = &ctx.targets;
    // The gRPC port is probed whatever the HTTP port says.
    c.record(&GRPC_TLS, grpc_tls(ctx).await);
    let Some(http) = t.ca_http_addr.clone() else {
        c.skip_all(&ALL[1..2], "no --ca-http-addr given");
        c.skip_all(&ALL[2..], "no --ca-http-addr given (the CA's /status is needed)");
        return c.into_results();
    };
    let ready = ctx.http.get_dated(&format!("http://{http}/readyz")).await;
    let date = ready.as_ref().ok().and_then(|(_, _, d)| d.clone());
    let ready = match ready {
        Ok((200, _, _)) => Outcome::Ok,
        Ok((status, body, _)) => Outcome::fail(
            format!("the CA at {http} is not ready: HTTP {status} {}", body.trim()),
            "the CA is up but has no usable CA material yet (starting, or its source is failing). Read its log \
             (meshca serve) and the last_error of /status",
        ),
        Err(e) => Outcome::fail(
            format!("the CA at {http} is unreachable: {e}"),
            format!("{}. Check that meshca serve runs and --ca-http-addr is its --http-addr", explain(&e)),
        ),
    };
    c.record(&READY, ready);
    c.run(&CLOCK, || clock_skew(date.as_deref(), crate::certs::unix(std::time::SystemTime::now())));
    let status = if c.blocked() { None } else { ctx.http.get_json(&format!("http://{http}/status")).await.ok() };
    let Some(status) = status else {
        for d in &ALL[2..] {
            c.run(d, || Outcome::skip(format!("the CA's /status at {http} did not answer")));
        }
        return c.into_results();
    };
    let source = status["source"].as_str().unwrap_or("unknown").to_string();
    let dir = t.ca_dir.clone().or_else(|| status["directory"].as_str().map(PathBuf::from));
    c.run(&PLUGIN_IN_USE, || plugin_in_use(&source, dir.as_ref(), &status));
    c.run(&FILES_ACTIVE, || files_active(&source, dir.as_ref(), &status));
    c.run(&LAST_RELOAD, || last_reload(&status));
    let served = ctx.served_roots().await.cloned();
    c.run(&ROOT_SERVED, || root_served(&source, dir.as_ref(), served.clone()));
    c.run(&ROOT_SWITCH, || root_switch(&status));
    c.run(&AGENT_BUNDLES, || agent_bundles(&status, served.as_ref()));
    c.into_results()
}

fn root_switch(status: &Value) -> Outcome {
    let Some(rot) = status.get("rotation") else { return Outcome::skip("this CA does not report rotation state") };
    let p = &rot["prepared"];
    if p.is_null() {
        return Outcome::Ok;
    }
    Outcome::warn(
        format!(
            "a new signer \"{}\" was prepared at {} and activates by {} (waiting for {}; {} of {} connected agents \
             confirmed the new bundle)",
            p["signer_subject"].as_str().unwrap_or("?"),
            p["prepared_at"].as_str().unwrap_or("?"),
            p["activate_by"].as_str().unwrap_or("?"),
            p["waiting_for"].as_str().unwrap_or("?"),
            p["agents_confirmed"],
            p["agents_connected"]
        ),
        "a root switch is in progress: the new root is published first and the signer switches once agents hold it \
         (or the propagation delay ends). Nothing to do unless it stays pending; agents that never confirm are \
         listed by ca-server.agent-bundles",
    )
}

fn agent_bundles(status: &Value, served: Option<&Result<Vec<meshca_pki::CertDer>, String>>) -> Outcome {
    let Some(agents) = status.get("rotation").and_then(|r| r["agents"].as_array()) else {
        return Outcome::skip("this CA does not report its agents");
    };
    let Some(Ok(served)) = served else { return Outcome::skip("the CA's /root-cert.pem did not answer") };
    let current = meshca_pki::inspect::sha256_hex(meshca_pki::pem::certs_to_pem(served).as_bytes());
    let stale: Vec<String> = agents
        .iter()
        .filter(|a| a["bundle_sha256"].as_str().is_some_and(|b| !b.is_empty() && b != current))
        .map(|a| format!("{} ({})", a["identity"].as_str().unwrap_or("?"), a["peer"].as_str().unwrap_or("?")))
        .collect();
    if stale.is_empty() {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!(
            "{} of {} connected agents hold an older trust bundle: {}",
            stale.len(),
            agents.len(),
            stale.join(", ")
        ),
        "root update not detected by these agents: they did not take in the CA's current bundle (trust watch failing, \
         or an old agent without --ca-http-addr). Their workloads reject peers under the new root; restart them",
    )
}

fn clock_skew(date: Option<&str>, now: i64) -> Outcome {
    let Some(date) = date else { return Outcome::skip("the CA's answer carries no Date header") };
    let Ok(t) = time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc2822) else {
        return Outcome::skip(format!("the CA's Date header {date:?} does not parse"));
    };
    let skew = t.unix_timestamp() - now;
    if skew.abs() <= crate::workload::SKEW {
        return Outcome::Ok;
    }
    let (who, how) = if skew > 0 { ("the CA's", "ahead of") } else { ("the CA's", "behind") };
    Outcome::fail(
        format!("{who} clock is {} {how} this host's (CA: {date})", crate::certs::human_secs(skew.abs())),
        "clock skew beyond 5 minutes: certificates the CA issues look not yet valid (or already expired) here \
         (\"x509: certificate has expired or is not yet valid\"). Fix time synchronisation (NTP) on the CA or this node",
    )
}

fn complete_layout(dir: &std::path::Path) -> Option<(&'static str, &'static str)> {
    let all = |n: &[&str]| n.iter().all(|f| dir.join(f).is_file());
    if all(&["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]) {
        Some(("ca-cert.pem", "root-cert.pem"))
    } else if all(&["tls.crt", "tls.key", "ca.crt"]) {
        Some(("tls.crt", "ca.crt"))
    } else {
        None
    }
}

fn plugin_in_use(source: &str, dir: Option<&PathBuf>, status: &Value) -> Outcome {
    let Some(dir) = dir else { return Outcome::skip("no --ca-dir given and the CA reports none") };
    if complete_layout(dir).is_none() || source != "self-signed" {
        return Outcome::Ok;
    }
    let signer = status["signer"]["subject"].as_str().unwrap_or("?");
    Outcome::fail(
        format!(
            "plug-in CA files are present in {} but the CA signs with its self-signed root \"{signer}\"",
            dir.display()
        ),
        "the files arrived after the CA started and were never loaded, or the CA reads another directory \
         (istio#57853: \"cacerts created but workloads still issued by O=cluster.local\"). Check the CA's --ca-dir \
         and its log for the refused files; the files are picked up on change, a restart of meshca serve loads them \
         for sure",
    )
}

fn fp(v: &Value) -> Option<String> {
    v["sha256"].as_str().map(str::to_string)
}

fn files_active(source: &str, dir: Option<&PathBuf>, status: &Value) -> Outcome {
    let Some(dir) = dir else { return Outcome::skip("no --ca-dir given and the CA reports none") };
    let Some((cert, roots)) = complete_layout(dir) else {
        return Outcome::skip(format!("no complete plug-in set in {}", dir.display()));
    };
    if source != "plugged" {
        return Outcome::skip(format!("the active source is {source}, not the plug-in files"));
    }
    let disk_signer = match certs::read_certs(&dir.join(cert)) {
        Ok(c) => meshca_pki::inspect::sha256_hex(&c[0]),
        Err(e) => return Outcome::fail(e, "the CA cannot load this file either; fix or replace it"),
    };
    let disk_roots = certs::read_certs(&dir.join(roots)).map(|r| certs::fingerprints(&r)).unwrap_or_default();
    let mut active_roots: Vec<String> =
        status["roots"].as_array().map(|a| a.iter().filter_map(fp).collect()).unwrap_or_default();
    active_roots.sort();
    let signer_differs = fp(&status["signer"]).as_deref() != Some(disk_signer.as_str());
    let roots_differ = active_roots != disk_roots;
    if !signer_differs && !roots_differ {
        return Outcome::Ok;
    }
    let what = match (signer_differs, roots_differ) {
        (true, true) => format!("{cert} and {roots} differ"),
        (true, false) => format!("{cert} differs"),
        _ => format!("{roots} differs"),
    };
    let why = match status["last_error"].as_str() {
        Some(_) => "the CA refused the new files (the reason is under ca-server.last-reload)".to_string(),
        None => "the CA has not seen the change (no reload since the files were written)".to_string(),
    };
    Outcome::fail(
        format!(
            "{what} from the active material in {} (the CA loaded generation {} at {})",
            dir.display(),
            status["generation"],
            status["loaded_at"].as_str().unwrap_or("?")
        ),
        format!(
            "rotation not picked up: {why}. Fix the refused files, or check that the CA watches this directory \
             (--reload-poll-interval bounds the delay; a new root needs --allow-root-replace or to be added to the \
             bundle first)"
        ),
    )
}

fn last_reload(status: &Value) -> Outcome {
    match status["last_error"].as_str() {
        None => Outcome::Ok,
        Some(e) => Outcome::fail(
            format!("the last reload at {} failed: {e}", status["last_error_at"].as_str().unwrap_or("?")),
            "the CA keeps signing with the previous material; the new material was refused for the reason above. \
             Fix it and the CA retries on the next change or poll",
        ),
    }
}

fn root_served(
    source: &str,
    dir: Option<&PathBuf>,
    served: Option<Result<Vec<meshca_pki::CertDer>, String>>,
) -> Outcome {
    let Some(served) = served else { return Outcome::skip("no --ca-http-addr") };
    let served = match served {
        Ok(s) => s,
        Err(e) => return Outcome::fail(e, "the CA's trust bundle endpoint failed; agents cannot follow root changes"),
    };
    let Some(dir) = dir else { return Outcome::skip("no --ca-dir given and the CA reports none") };
    let Some((_, roots)) = complete_layout(dir) else {
        return Outcome::skip(format!("no complete plug-in set in {}", dir.display()));
    };
    if source != "plugged" {
        return Outcome::skip(format!("the active source is {source}, not the plug-in files"));
    }
    let disk = match certs::read_certs(&dir.join(roots)) {
        Ok(d) => d,
        Err(e) => return Outcome::fail(e, "fix the root bundle file"),
    };
    if certs::fingerprints(&disk) == certs::fingerprints(&served) {
        return Outcome::Ok;
    }
    Outcome::fail(
        format!("the CA serves {} but {} holds {}", subjects(&served), dir.join(roots).display(), subjects(&disk)),
        "root update not detected: the CA has not loaded the new root bundle (it refuses a bundle that drops the \
         current root unless --allow-root-replace). Add the new root next to the old one in the bundle, or restart \
         with --allow-root-replace once every workload trusts it",
    )
}

async fn grpc_tls(ctx: &Context) -> Outcome {
    let t = &ctx.targets;
    let Some(addr) = &t.ca_addr else { return Outcome::skip("no --ca-addr given") };
    let (roots, from) = if let Some(p) = &t.ca_root {
        match certs::read_certs(p) {
            Ok(r) => (r, p.display().to_string()),
            Err(e) => return Outcome::fail(e, "give --ca-root a PEM bundle holding the CA's root"),
        }
    } else if let Some(Ok(r)) = ctx.served_roots().await {
        (r.clone(), "the CA's /root-cert.pem".to_string())
    } else if let Some(r) = ctx.disk_roots() {
        (r, "the root bundle of --ca-dir".to_string())
    } else {
        return Outcome::skip("no root to verify with: give --ca-root, --ca-http-addr or --ca-dir");
    };
    let left = ctx.http.left().unwrap_or(ctx.targets.timeout);
    match tls_handshake(addr, &t.ca_server_name, &roots, left).await {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::fail(
            format!("{e} (trusting {from}, server name {:?})", t.ca_server_name),
            format!(
                "{}. Agents fail the same way (\"ca request failed\" / \"authentication handshake failed\"): check the \
                 address, that the CA is not started with --plaintext, the root agents trust (--ca-root) and the \
                 server name (--ca-server-name / --serving-dns)",
                explain(&e)
            ),
        ),
    }
}
