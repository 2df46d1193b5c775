//! `meshca policy status`: the three hops of a policy in one view. From the
//! CA's `/status`: the set's version, its last refusal, JWKS, and per
//! connected agent which objects apply, the version it received, the version
//! its Envoy runs, whether that is the latest, and NACKs. With `--agent`, the
//! agent's own `/status` `policy` section too (when the agent has one).

use clap::Args;
use serde_json::Value;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The CA's HTTP address (host:port or URL), e.g. 127.0.0.1:15014.
    #[arg(long)]
    pub ca: String,
    /// An agent's HTTP address (host:port or URL), to show its own view as well.
    #[arg(long)]
    pub agent: Option<String>,
    /// Print JSON: {"ca": <the CA's policy section>, "agent": <the agent's policy section or null>}.
    #[arg(long)]
    pub json: bool,
    /// Timeout of each request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn status_url(addr: &str) -> String {
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    };
    format!("{base}/status")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let http = meshca_doctor::fetch::Http::new(args.timeout);
    let (ca, agent) = rt.block_on(async {
        let ca = http.get_json(&status_url(&args.ca)).await;
        let agent = match &args.agent {
            Some(a) => Some(http.get_json(&status_url(a)).await),
            None => None,
        };
        (ca, agent)
    });
    let ca = ca.map_err(|e| anyhow::anyhow!("CA: {e}"))?;
    let policy = ca.get("policy").cloned().unwrap_or(Value::Null);
    anyhow::ensure!(!policy.is_null(), "the CA at {} serves no policies (started without --policy-dir)", args.ca);
    let agent = agent.transpose().map_err(|e| anyhow::anyhow!("agent: {e}"))?;
    let agent_policy = agent.as_ref().and_then(|a| a.get("policy")).cloned().unwrap_or(Value::Null);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"ca": policy, "agent": agent_policy}))?);
        return Ok(());
    }
    print!("{}", render(&policy, agent.is_some().then_some(&agent_policy)));
    Ok(())
}

/// The text report.
pub fn render(p: &Value, agent: Option<&Value>) -> String {
    let mut out = String::new();
    let objects = p.get("object_count").and_then(Value::as_u64).unwrap_or(0);
    out.push_str(&format!(
        "policy set   version {}  objects {objects}  loaded {}  ({})\n",
        or_dash(text(p, "version")),
        or_dash(text(p, "loaded_at")),
        text(p, "directory")
    ));
    match text(p, "refused") {
        "" => out.push_str("refused      - (the served set is the latest on disk)\n"),
        r => {
            out.push_str(&format!(
                "refused      at {} (the previous set stays served):\n",
                or_dash(text(p, "refused_at"))
            ));
            for line in r.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    for j in p.get("jwks").and_then(Value::as_array).into_iter().flatten() {
        let state = if j.get("ok").and_then(Value::as_bool) == Some(true) {
            let kids: Vec<&str> =
                j.get("kids").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            format!("ok, kids {}", kids.join(","))
        } else {
            format!("FAILING (requests with its tokens are refused): {}", text(j, "error"))
        };
        out.push_str(&format!("jwks         {}  {state}\n", text(j, "key")));
    }
    let agents = p.get("agents").and_then(Value::as_array).cloned().unwrap_or_default();
    out.push_str(&format!("\nagents ({})\n", agents.len()));
    if !agents.is_empty() {
        out.push_str(&format!(
            "{:<48} {:<17} {:<17} {:<7} {:<8} OBJECTS\n",
            "IDENTITY", "RECEIVED", "APPLIED", "LATEST", "STATE"
        ));
    }
    for a in &agents {
        let latest = !text(a, "version_sent").is_empty() && text(a, "version_applied") == text(a, "version_sent");
        let objs: Vec<&str> =
            a.get("objects").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "{:<48} {:<17} {:<17} {:<7} {:<8} {}\n",
            text(a, "identity"),
            or_dash(text(a, "version_received")),
            or_dash(text(a, "version_applied")),
            if latest { "yes" } else { "no" },
            text(a, "state"),
            if objs.is_empty() { "(none)".to_string() } else { objs.join(", ") }
        ));
        if !text(a, "error").is_empty() {
            out.push_str(&format!("    error: {}\n", text(a, "error")));
        }
        for r in a.get("resources").and_then(Value::as_array).into_iter().flatten() {
            if text(r, "state") == "nacked" {
                out.push_str(&format!("    NACK {} ({}): {}\n", text(r, "name"), text(r, "version"), text(r, "error")));
            }
        }
    }
    if let Some(a) = agent {
        out.push_str("\nagent's own view\n");
        if a.is_null() {
            out.push_str("  (the agent's /status has no policy section)\n");
        } else if let Some(m) = a.as_object() {
            for (k, v) in m {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!("  {k}: {shown}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_refusal_agents_and_nacks() {
        let p = serde_json::json!({
            "version": "abc", "object_count": 1, "directory": "/p", "loaded_at": "t",
            "refused": "bad.yaml:6: spec.action: bad", "refused_at": "t2",
            "jwks": [{"key": "https://idp/keys", "ok": false, "error": "GET: refused"}],
            "agents": [{"identity": "spiffe://td/ns/a/sa/x", "version_sent": "abc", "version_received": "abc",
                        "version_applied": "old", "state": "nacked", "objects": ["AuthorizationPolicy/a/allow"],
                        "resources": [{"name": "meshca.http.8080", "version": "abc", "state": "nacked", "error": "boom"}]}],
        });
        let t = render(&p, Some(&Value::Null));
        assert!(t.contains("bad.yaml:6: spec.action: bad"), "{t}");
        assert!(t.contains("FAILING"), "{t}");
        assert!(t.contains("NACK meshca.http.8080 (abc): boom"), "{t}");
        assert!(t.contains("AuthorizationPolicy/a/allow"), "{t}");
        assert!(t.contains("no policy section"), "{t}");
        assert_eq!(status_url("127.0.0.1:1"), "http://127.0.0.1:1/status");
    }
}
