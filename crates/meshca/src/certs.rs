//! `meshca certs`: offline certificate tooling, replacing Istio's
//! `tools/certs` makefiles.
//!
//! * `root` makes a self-signed root CA (`root-cert.pem`, `root-key.pem`).
//! * `intermediate` makes a per-cluster intermediate signed by that root and
//!   writes Istio's plug-in CA layout (`ca-cert.pem`, `ca-key.pem`,
//!   `cert-chain.pem`, `root-cert.pem`).
//! * `bundle` concatenates root certificates into one trust bundle.
//! * `inspect` prints certificates the way istiod logs them.
//!
//! Nothing is ever overwritten without `--force`, keys are written with mode
//! 0600, and every file is written atomically.

mod authority;
mod bundle;
mod files;
mod inspect;

use clap::Subcommand;

/// Offline certificate tooling: roots, intermediates, bundles, inspection.
#[derive(clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a self-signed root CA: DIR/root-cert.pem and DIR/root-key.pem.
    Root(authority::RootArgs),
    /// Create a cluster's intermediate CA, signed by a root made with `certs root`,
    /// in Istio's plug-in layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem).
    Intermediate(authority::IntermediateArgs),
    /// Combine root certificates from several PEM files into one trust bundle.
    Bundle(bundle::BundleArgs),
    /// Print the certificates of PEM files, in istiod's log format.
    Inspect(inspect::InspectArgs),
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Root(a) => authority::run_root(a),
        CertsCommand::Intermediate(a) => authority::run_intermediate(a),
        CertsCommand::Bundle(a) => bundle::run(a),
        CertsCommand::Inspect(a) => inspect::run(a),
    }
}
