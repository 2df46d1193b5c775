//! `meshca`: a service-mesh certificate authority. This binary only wires the
//! command line to the library crates.
#![forbid(unsafe_code)]

mod agent;
mod certs;
mod request;
mod serve;
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
}

fn init_logging(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHCA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("--log-format {other:?}: expected text or json"),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.log_format().and_then(|f| init_logging(&f)).and_then(|()| serve::run(*args)),
        Command::Certs(args) => certs::run(args),
        Command::Token(args) => token::run(args),
        Command::Request(args) => request::run(args),
        Command::Agent(args) => init_logging(&args.log_format).and_then(|()| agent::run(*args)),
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
