//! The three output formats: Linkerd-style text, JSON, and short (only what
//! is not ok).

use crate::check::{Report, Status};
use std::fmt::Write as _;

/// `text`, `json` or `short`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Short,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" | "table" | "wide" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            "short" => Ok(Self::Short),
            o => Err(format!("--output {o:?}: expected text, json or short")),
        }
    }
}

fn symbol(s: Status) -> &'static str {
    match s {
        Status::Ok => "√",
        Status::Warning => "‼",
        Status::Error => "×",
        Status::Skipped => "-",
    }
}

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Text => text(report, false),
        Format::Short => text(report, true),
    }
}

fn text(report: &Report, short: bool) -> String {
    let mut out = String::new();
    for cat in &report.categories {
        let shown: Vec<_> =
            cat.checks.iter().filter(|c| !short || matches!(c.result, Status::Warning | Status::Error)).collect();
        if shown.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{}\n{}", cat.name, "-".repeat(cat.name.chars().count()));
        for c in shown {
            match c.result {
                Status::Skipped => {
                    let _ = writeln!(
                        out,
                        "{} {} (skipped: {})",
                        symbol(c.result),
                        c.description,
                        c.error.as_deref().unwrap_or("")
                    );
                }
                Status::Ok => {
                    let _ = writeln!(out, "{} {}", symbol(c.result), c.description);
                }
                _ => {
                    let _ = writeln!(out, "{} {}", symbol(c.result), c.description);
                    if let Some(e) = &c.error {
                        let _ = writeln!(out, "    {e}");
                    }
                    if let Some(h) = &c.hint {
                        let _ = writeln!(out, "    hint [{}]: {h}", c.id);
                    }
                }
            }
        }
        out.push('\n');
    }
    let warnings = report.categories.iter().flat_map(|c| &c.checks).filter(|c| c.result == Status::Warning).count();
    let _ = writeln!(
        out,
        "Status check results are {}{}",
        if report.success { "√" } else { "×" },
        if warnings > 0 {
            format!(" ({warnings} warning{})", if warnings == 1 { "" } else { "s" })
        } else {
            String::new()
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CategoryReport, CheckDef, CheckResult, Outcome, Severity};

    #[test]
    fn text_groups_by_category_and_short_keeps_only_problems() {
        let ok = CheckDef { id: "a.ok", description: "fine", severity: Severity::Error };
        let bad = CheckDef { id: "a.bad", description: "broken thing", severity: Severity::Error };
        let report = Report::new(vec![CategoryReport {
            name: "cat".into(),
            checks: vec![
                CheckResult::new(&ok, Outcome::Ok),
                CheckResult::new(&bad, Outcome::fail("it broke", "because; fix")),
            ],
        }]);
        let t = render(&report, Format::Text);
        assert!(
            t.starts_with("cat\n---\n√ fine\n× broken thing\n    it broke\n    hint [a.bad]: because; fix\n"),
            "{t}"
        );
        assert!(t.ends_with("Status check results are ×\n"), "{t}");
        let s = render(&report, Format::Short);
        assert!(!s.contains("fine") && s.contains("broken thing"), "{s}");
        let j: serde_json::Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
        assert_eq!(j["success"], false);
        assert_eq!(j["categories"][0]["checks"][1]["result"], "error");
        assert_eq!(j["categories"][0]["checks"][0]["error"], serde_json::Value::Null);
    }
}
