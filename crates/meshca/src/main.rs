//! `meshca`: a service-mesh certificate authority. This binary only wires the
//! command line to the library crates.
#![forbid(unsafe_code)]

mod agent;
mod certs;
mod doctor;
mod limits;
mod policy;
mod request;
mod serve;
mod store_args;
mod token;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "meshca", version, about = "A service-mesh certificate authority, wire compatible with Istio")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CA: Istio's CreateCertificate gRPC API plus health, metrics, trust bundle and status over HTTP.
    Serve(Box<serve::ServeArgs>),
    /// Offline certificate tooling: roots, intermediates, bundles, inspection.
    Certs(certs::CertsArgs),
    /// Service-account tokens signed by the CA's own token key.
    Token(token::TokenArgs),
    /// Get a workload certificate from a running CA and write it to a directory.
    Request(request::RequestArgs),
    /// Node agent: get the workload certificate from the CA and serve it to Envoy over SDS.
    Agent(Box<agent::AgentArgs>),
    /// Diagnose CA material, a running CA, Vault, workloads, Envoy, mTLS and JWTs: named checks with hints.
    Doctor(Box<doctor::DoctorArgs>),
    /// Istio authorization/authentication policies: check (evaluate and explain), compile, lint, diff, convert.
    Policy(policy::PolicyArgs),
}

fn init_logging(format: &str) -> anyhow::Result<()> {
    // Escapes and caps every field, rate-limits each call site (meshca_ca::logging).
    meshca_ca::logging::init(format)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.log_format().and_then(|f| init_logging(&f)).and_then(|()| serve::run(*args)),
        Command::Certs(args) => certs::run(args),
        Command::Token(args) => token::run(args),
        Command::Request(args) => request::run(args),
        Command::Agent(args) => init_logging(&args.log_format).and_then(|()| agent::run(*args)),
        Command::Policy(args) => policy::run(args),
        Command::Doctor(args) => return doctor::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
