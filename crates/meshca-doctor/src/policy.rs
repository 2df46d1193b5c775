//! `policy`: the policy files of `--policy-dir` (Istio's AuthorizationPolicy,
//! RequestAuthentication, PeerAuthentication and the legacy v1alpha1
//! objects), loaded and linted with `meshca-policy`: what Istio would refuse,
//! and the pitfalls of the seeds' troubleshooting guide.

use crate::check::{CheckDef, Checks, Outcome, Severity};
use crate::Context;
use meshca_policy::lint::{lint, Finding, LintOptions, Severity as LintSeverity};
use meshca_policy::model::PolicySet;
use std::path::{Path, PathBuf};

pub const LOAD: CheckDef = CheckDef {
    id: "policy.valid",
    description: "every policy file loads and passes Istio's validation",
    severity: Severity::Fatal,
};
pub const LINT_ERRORS: CheckDef = CheckDef {
    id: "policy.lint-errors",
    description: "no policy does something other than what it says (lint errors)",
    severity: Severity::Error,
};
pub const LINT_WARNINGS: CheckDef = CheckDef {
    id: "policy.lint-warnings",
    description: "no policy pitfall from the troubleshooting guide (lint warnings)",
    severity: Severity::Warning,
};

pub const ALL: [CheckDef; 3] = [LOAD, LINT_ERRORS, LINT_WARNINGS];

/// Most files and bytes read from a policy directory.
const MAX_FILES: usize = 2_000;
const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Findings listed in one check's message.
const SHOWN: usize = 5;

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue; // Kubernetes' ..data and ..<timestamp> entries repeat the visible files
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
                out.push(p);
            }
            if out.len() > MAX_FILES {
                return Err(format!("more than {MAX_FILES} policy files under {}", dir.display()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn listed(findings: &[&Finding]) -> String {
    let mut s: Vec<String> = findings
        .iter()
        .take(SHOWN)
        .map(|f| format!("{}:{}: {} {} ({})", f.file, f.line, f.id, f.message, f.object))
        .collect();
    if findings.len() > SHOWN {
        s.push(format!("... and {} more", findings.len() - SHOWN));
    }
    s.join("; ")
}

fn hints(findings: &[&Finding]) -> String {
    let mut h: Vec<&str> = findings.iter().map(|f| f.hint.as_str()).collect();
    h.dedup();
    h.truncate(3);
    format!("{} (run `meshca policy lint` on the directory for every finding)", h.join("; "))
}

pub fn run(ctx: &Context) -> Vec<crate::check::CheckResult> {
    let mut checks = Checks::new();
    let Some(dir) = &ctx.targets.policy_dir else {
        checks.skip_all(&ALL, "no --policy-dir given");
        return checks.into_results();
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let loaded = policy_files(dir).and_then(|files| {
        let mut total = 0u64;
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            total += text.len() as u64;
            if total > MAX_BYTES {
                return Err(format!("the policy files under {} exceed {MAX_BYTES} bytes", dir.display()));
            }
            let r = meshca_policy::load::load_report(&f.display().to_string(), &text);
            objects.extend(r.objects);
            errors.extend(r.errors.into_iter().map(|e| format!("{}:{}: {}: {}", e.file, e.line, e.path, e.message)));
        }
        Ok(())
    });
    checks.run(&LOAD, || match loaded {
        Err(e) => Outcome::fail(e, "point --policy-dir at a readable directory of policy YAML/JSON files"),
        Ok(()) if !errors.is_empty() => Outcome::fail(
            format!("{} error(s): {}", errors.len(), errors.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ")),
            "Istio's API server would refuse these objects (kubectl apply fails) and `meshca policy` refuses \
             them too: fix the field named at each file:line",
        ),
        Ok(()) => Outcome::Ok,
    });
    if checks.blocked() {
        checks.skip_all(&[LINT_ERRORS, LINT_WARNINGS], "the policies do not load (policy.valid)");
        return checks.into_results();
    }
    let set = PolicySet::from_objects(objects);
    let findings = lint(&set, &LintOptions::default());
    let errs: Vec<&Finding> = findings.iter().filter(|f| f.severity == LintSeverity::Error).collect();
    let warns: Vec<&Finding> = findings.iter().filter(|f| f.severity == LintSeverity::Warning).collect();
    checks.run(&LINT_ERRORS, || if errs.is_empty() { Outcome::Ok } else { Outcome::fail(listed(&errs), hints(&errs)) });
    checks.run(&LINT_WARNINGS, || {
        if warns.is_empty() {
            Outcome::Ok
        } else {
            Outcome::warn(listed(&warns), hints(&warns))
        }
    });
    checks.into_results()
}
