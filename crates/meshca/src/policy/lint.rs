//! `meshca policy lint PATH...`: Istio's validation warnings plus meshca's checks
//! (`meshca_policy::lint`), as text or a JSON array; exit code 1 when any error.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use meshca_policy::lint::{Finding, LintOptions, Severity};
use meshca_policy::model::{PolicySet, Protocol};

use super::common::{policy_files, read_text};

#[derive(Args, Debug)]
pub struct LintArgs {
    /// Policy files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The policies reach a TCP port: HTTP-only ALLOW rules become errors.
    #[arg(long, value_parser = ["http", "tcp"])]
    pub protocol: Option<String>,
    /// Inventory (YAML/JSON): `namespaces: [..]`, `workloads: [{namespace, labels, serviceAccount,
    /// ports: [{port, protocol}]}]`; enables the namespace / workload / TCP-port checks.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Root namespace.
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// text or json.
    #[arg(long, short = 'o', default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

fn load_finding(e: &meshca_policy::load::LoadError, severity: Severity) -> Finding {
    Finding {
        id: if severity == Severity::Error { "SCHEMA-ERROR" } else { "SCHEMA-WARNING" },
        severity,
        file: e.file.clone(),
        line: e.line,
        object: String::new(),
        message: if e.path.is_empty() { e.message.clone() } else { format!("{}: {}", e.path, e.message) },
        hint: "see Istio's validation rules".into(),
    }
}

pub fn run(args: LintArgs) -> anyhow::Result<()> {
    let mut findings = Vec::new();
    let mut objects = Vec::new();
    for f in policy_files(&args.paths)? {
        let text = read_text(&f)?;
        let report = meshca_policy::load::load_report(&f.display().to_string(), &text);
        findings.extend(report.errors.iter().map(|e| load_finding(e, Severity::Error)));
        findings.extend(report.warnings.iter().map(|e| load_finding(e, Severity::Warning)));
        objects.extend(report.objects);
    }
    let inventory = match &args.inventory {
        Some(p) => {
            let name = p.display().to_string();
            let docs = meshca_policy::load::yaml_to_json(&name, &read_text(p)?).map_err(|e| anyhow::anyhow!("{e}"))?;
            let doc = docs.into_iter().next().unwrap_or_default();
            Some(serde_json::from_value(doc).map_err(|e| anyhow::anyhow!("{name}: {e}"))?)
        }
        None => None,
    };
    let opts = LintOptions {
        root_namespace: args.root_namespace.clone(),
        protocol: args.protocol.as_deref().map(|p| if p == "tcp" { Protocol::Tcp } else { Protocol::Http }),
        inventory,
    };
    findings.extend(meshca_policy::lint::lint(&PolicySet::from_objects(objects), &opts));
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for f in &findings {
            let sev = serde_json::to_value(f.severity)?;
            let obj = if f.object.is_empty() { String::new() } else { format!(" [{}]", f.object) };
            println!(
                "{}:{}: {} {}{obj}: {}\n    hint: {}",
                f.file,
                f.line,
                sev.as_str().unwrap_or(""),
                f.id,
                f.message,
                f.hint
            );
        }
    }
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    if errors > 0 {
        bail!("{errors} error(s)");
    }
    Ok(())
}
