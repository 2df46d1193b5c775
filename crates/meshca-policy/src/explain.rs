//! Human-readable verdicts: what decided, and why (the matching rule with the values that
//! matched, or every ALLOW rule's nearest miss).

use std::fmt::Write as _;

use crate::eval::{Condition, Decision, Stage, Verdict};

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Peer => "peer",
        Stage::Jwt => "jwt",
        Stage::Custom => "custom",
        Stage::Deny => "deny",
        Stage::Allow => "allow",
        Stage::NoAllowMatch => "no-allow-match",
        Stage::NoPolicy => "no-policy",
    }
}

fn cond(c: &Condition) -> String {
    let verb = if c.matched { "=" } else { "but request had" };
    format!("{} {} {} {}", c.field, c.expected, verb, c.actual)
}

/// One verdict as text (several lines, no trailing newline). `index` numbers the request.
#[must_use]
pub fn render(index: usize, v: &Verdict) -> String {
    let mut out = String::new();
    let name = v.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
    let status = match (v.status, v.stage) {
        (Some(s), _) => format!(" {s}"),
        (None, Stage::Peer) => " (connection closed)".to_string(),
        (None, _) => " (tcp)".to_string(),
    };
    let decision = match v.decision {
        Decision::Allow => "ALLOW",
        Decision::Deny => "DENY",
    };
    let _ = write!(out, "#{index}{name}: {decision}{status} [stage {}]", stage_name(v.stage));
    if let Some(p) = &v.policy {
        let _ = write!(out, " by {p}");
    }
    let ex = &v.explanation;
    let _ = write!(out, "\n    {}", ex.summary);
    if let Some(j) = &ex.jwt {
        let mut line = format!("jwt: {}", j.message);
        if let Some(rp) = &j.request_principal {
            let _ = write!(line, " (request principal {rp})");
        } else if let Some(i) = &j.issuer {
            let _ = write!(line, " (issuer {i})");
        }
        let _ = write!(out, "\n    {line}");
    }
    for c in &ex.matched {
        let _ = write!(out, "\n    matched: {}", cond(c));
    }
    if !ex.nearest_misses.is_empty() {
        out.push_str("\n    nearest misses:");
        for m in &ex.nearest_misses {
            let _ = write!(out, "\n      {}: {}", m.policy, cond(&m.failed));
            if !m.passed.is_empty() {
                let held: Vec<&str> = m.passed.iter().map(|c| c.field.as_str()).collect();
                let _ = write!(out, " (held: {})", held.join(", "));
            }
        }
    }
    if let Some(c) = &ex.custom {
        let _ = write!(out, "\n    custom: {c} matched, the external authorizer is asked");
    }
    if let Some(a) = &ex.audit {
        let _ = write!(out, "\n    audit: {a} matched (request marked for audit logging)");
    }
    for s in &ex.dry_run {
        let p = s.policy.as_deref().unwrap_or("none");
        let _ = write!(out, "\n    dry-run {}: would be {} (matched policy {p})", s.action, s.result);
    }
    for n in &ex.notes {
        let _ = write!(out, "\n    note: {n}");
    }
    if let Some(e) = v.expect {
        let mark = if e == v.decision { "ok" } else { "MISMATCH" };
        let _ = write!(out, "\n    expect {e}: {mark}");
    }
    out
}
