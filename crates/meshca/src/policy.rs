//! `meshca policy`: Istio's authorization and authentication policies checked (evaluated and
//! explained), compiled to Envoy filters, linted, converted from the legacy APIs and diffed.

mod check;
mod common;
mod compile;
mod convert;
mod diff;
mod lint;
mod serve_args;
mod status;
pub(crate) mod yaml_out;

use clap::{Args, Subcommand};
pub use serve_args::{ServePolicyArgs, KEYS as POLICY_KEYS};

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Evaluate requests against the policies that apply to a workload, as Istio + Envoy would, and explain.
    Check(Box<check::CheckArgs>),
    /// Print the Envoy filters Istio generates for a workload (jwt_authn, CUSTOM, AUDIT, DENY, ALLOW).
    Compile(Box<compile::CompileArgs>),
    /// Find policies that do not do what they seem to (stable ids, file:line, a fix); exit 1 on errors.
    Lint(lint::LintArgs),
    /// What a change does: example requests whose decision differs between OLD and NEW.
    Diff(Box<diff::DiffArgs>),
    /// Legacy rbac.istio.io / authentication.istio.io v1alpha1 objects to security.istio.io v1, with a report.
    Convert(convert::ConvertArgs),
    /// What the CA serves and what each agent's Envoy runs: versions, applied objects, NACKs, refusals.
    Status(status::StatusArgs),
}

pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::Check(a) => check::run(*a),
        PolicyCommand::Compile(a) => compile::run(*a),
        PolicyCommand::Lint(a) => lint::run(a),
        PolicyCommand::Diff(a) => diff::run(*a),
        PolicyCommand::Convert(a) => convert::run(a),
        PolicyCommand::Status(a) => status::run(a),
    }
}
