//! `meshca policy compile`: the Envoy filters for a workload, as JSON or YAML.

use std::path::PathBuf;

use clap::Args;
use meshca_policy::compile::CompileOptions;
use meshca_policy::eval::JwksByIssuer;
use meshca_policy::model::{MeshSettings, PolicySet, Workload};
use serde_json::Value;

use super::common::{load_set, WorkloadArgs};

#[derive(Args, Debug)]
pub struct CompileArgs {
    /// Policy files or directories.
    #[arg(long, num_args = 1.., required = true)]
    pub policies: Vec<PathBuf>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// JWKS to inline for jwksUri/OIDC issuers: a JWKS document, or an object issuer -> JWKS (repeatable).
    #[arg(long)]
    pub jwks: Vec<PathBuf>,
    /// json or yaml.
    #[arg(long, short = 'o', default_value = "json", value_parser = ["json", "yaml"])]
    pub output: String,
}

/// `{"http_filters": [...]}` or `{"network_filters": [...]}` for the workload, and the
/// compiler's notes (rules skipped or broadened on TCP, bad CUSTOM providers...).
pub fn compiled(policies: &[PathBuf], w: &WorkloadArgs, jwks: &JwksByIssuer) -> anyhow::Result<(Value, Vec<String>)> {
    compiled_set(&load_set(policies)?, &w.workload()?, &w.mesh()?, w, jwks)
}

/// [`compiled`] for a set already loaded (with the workload and mesh settings `w` gives).
pub fn compiled_set(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshSettings,
    w: &WorkloadArgs,
    jwks: &JwksByIssuer,
) -> anyhow::Result<(Value, Vec<String>)> {
    let options = CompileOptions { jwks: jwks.clone() };
    let out = meshca_policy::compile::compile_report(set, workload, mesh, w.protocol(), w.port, &options)?;
    let notes = out.notes.into_iter().filter(|n| !n.starts_with("compiled for port")).collect();
    Ok((out.filters, notes))
}

pub fn run(args: CompileArgs) -> anyhow::Result<()> {
    let jwks = super::check::read_jwks(&args.jwks)?;
    let (v, notes) = compiled(&args.policies, &args.workload, &jwks)?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    if args.output == "yaml" {
        print!("{}", super::yaml_out::to_yaml(&v));
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
