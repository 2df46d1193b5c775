//! `meshca token create`: mint a service-account token that `meshca serve`
//! trusts (signed by the token key in the data directory).

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a JWT for system:serviceaccount:<ns>:<sa>.
    Create {
        /// The CA's data directory (where the token key lives) [default: ./meshca-data]
        #[arg(long, env = "MESHCA_DATA_DIR", default_value = "./meshca-data")]
        data_dir: PathBuf,
        /// Namespace.
        #[arg(long)]
        ns: String,
        /// Service account.
        #[arg(long)]
        sa: String,
        /// Lifetime.
        #[arg(long, default_value = "1h", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
        ttl: Duration,
        /// Audience.
        #[arg(long, env = "MESHCA_TOKEN_AUDIENCE", default_value = "istio-ca")]
        audience: String,
    },
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create { data_dir, ns, sa, ttl, audience } => {
            let key = meshca_ca::tokens::load_or_create_key(&data_dir)?;
            let token = meshca_ca::tokens::mint(&key, &ns, &sa, &audience, ttl, std::time::SystemTime::now())?;
            println!("{token}");
            Ok(())
        }
    }
}
