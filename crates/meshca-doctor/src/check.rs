//! The unit of diagnosis: a check with a stable id, a one-line description
//! and a severity, and the result of running its probe.

use serde::Serialize;

/// How bad a failed check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Failure stops the rest of the category: later checks depend on it.
    Fatal,
    /// Failure fails the run.
    Error,
    /// Failure is reported as a warning and does not fail the run.
    Warning,
}

/// A named check. `id` is stable across releases (scripts match on it).
#[derive(Debug, Clone, Copy)]
pub struct CheckDef {
    pub id: &'static str,
    pub description: &'static str,
    pub severity: Severity,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Not fatal even for an error-severity check (e.g. "expires in 20 days").
    Warn {
        error: String,
        hint: String,
    },
    /// A failure; shown as a warning for warning-severity checks.
    Fail {
        error: String,
        hint: String,
    },
    /// The target is absent or a prerequisite failed.
    Skip(String),
}

impl Outcome {
    pub fn fail(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Fail { error: error.into(), hint: hint.into() }
    }
    pub fn warn(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Warn { error: error.into(), hint: hint.into() }
    }
    pub fn skip(reason: impl Into<String>) -> Self {
        Self::Skip(reason.into())
    }
}

/// The four results of the JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
    Skipped,
}

/// One check's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: String,
    pub description: String,
    pub result: Status,
    /// What is wrong (or why the check was skipped); `null` when ok.
    pub error: Option<String>,
    /// The cause and the fix; `null` when ok or skipped.
    pub hint: Option<String>,
}

impl CheckResult {
    pub fn new(def: &CheckDef, outcome: Outcome) -> Self {
        let (result, error, hint) = match outcome {
            Outcome::Ok => (Status::Ok, None, None),
            Outcome::Warn { error, hint } => (Status::Warning, Some(error), Some(hint)),
            Outcome::Fail { error, hint } if def.severity == Severity::Warning => {
                (Status::Warning, Some(error), Some(hint))
            }
            Outcome::Fail { error, hint } => (Status::Error, Some(error), Some(hint)),
            Outcome::Skip(reason) => (Status::Skipped, Some(reason), None),
        };
        Self { id: def.id.to_string(), description: def.description.to_string(), result, error, hint }
    }
}

/// Runs the checks of one category in order: after a failed fatal check the
/// remaining ones are skipped, naming the check that stopped them.
#[derive(Debug, Default)]
pub struct Checks {
    results: Vec<CheckResult>,
    blocked_by: Option<&'static str>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a check whose probe already ran.
    pub fn record(&mut self, def: &CheckDef, outcome: Outcome) -> bool {
        if let Some(by) = self.blocked_by {
            self.results.push(CheckResult::new(def, Outcome::skip(format!("not run: {by} failed"))));
            return false;
        }
        let failed = matches!(outcome, Outcome::Fail { .. });
        if failed && def.severity == Severity::Fatal {
            self.blocked_by = Some(def.id);
        }
        self.results.push(CheckResult::new(def, outcome));
        !failed
    }

    /// Run `probe` unless an earlier fatal check failed.
    pub fn run(&mut self, def: &CheckDef, probe: impl FnOnce() -> Outcome) -> bool {
        if self.blocked_by.is_some() {
            return self.record(def, Outcome::Ok);
        }
        self.record(def, probe())
    }

    /// Whether a fatal check failed.
    pub fn blocked(&self) -> bool {
        self.blocked_by.is_some()
    }

    /// Skip every one of `defs` with the same reason (the target is absent).
    pub fn skip_all(&mut self, defs: &[CheckDef], reason: &str) {
        for d in defs {
            self.results.push(CheckResult::new(d, Outcome::skip(reason)));
        }
    }

    pub fn into_results(self) -> Vec<CheckResult> {
        self.results
    }
}

/// One category of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryReport {
    pub name: String,
    pub checks: Vec<CheckResult>,
}

/// The whole run; serializes to the `--output json` shape.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub success: bool,
    pub categories: Vec<CategoryReport>,
}

impl Report {
    pub fn new(categories: Vec<CategoryReport>) -> Self {
        let success = categories.iter().flat_map(|c| &c.checks).all(|c| c.result != Status::Error);
        Self { success, categories }
    }

    /// The result of check `id`, if it ran.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.categories.iter().flat_map(|c| &c.checks).find(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FATAL: CheckDef = CheckDef { id: "t.fatal", description: "fatal", severity: Severity::Fatal };
    const WARN: CheckDef = CheckDef { id: "t.warn", description: "warn", severity: Severity::Warning };

    #[test]
    fn fatal_failure_skips_the_rest_and_warning_severity_downgrades() {
        let mut c = Checks::new();
        assert!(!c.run(&WARN, || Outcome::fail("e", "h")));
        c.run(&FATAL, || Outcome::fail("broken", "fix it"));
        c.run(&WARN, || panic!("must not run after a fatal failure"));
        let r = c.into_results();
        assert_eq!(r[0].result, Status::Warning);
        assert_eq!(r[1].result, Status::Error);
        assert_eq!(r[2].result, Status::Skipped);
        assert_eq!(r[2].error.as_deref(), Some("not run: t.fatal failed"));
        let report = Report::new(vec![CategoryReport { name: "t".into(), checks: r }]);
        assert!(!report.success);
        assert_eq!(report.check("t.fatal").map(|c| c.result), Some(Status::Error));
    }
}
