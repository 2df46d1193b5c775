//! The `meshca serve` flags of policy delivery (`--policy-dir` and friends).

use clap::Args;
use meshca_ca::config::ServeConfig;
use meshca_ca::policy::{PolicyOptions, DEFAULT_JWKS_REFRESH, DEFAULT_ROOT_NAMESPACE};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Default, Clone)]
pub struct ServePolicyArgs {
    /// Serve the Istio security policies of this directory (*.yaml, *.yml, *.json) to agents, watched for changes
    #[arg(long, env = "MESHCA_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Namespace whose policies apply to every namespace [default: istio-system]
    #[arg(long, env = "MESHCA_POLICY_ROOT_NAMESPACE")]
    pub policy_root_namespace: Option<String>,
    /// How often the JWKS of RequestAuthentications are fetched again [default: 5m]
    #[arg(long, env = "MESHCA_POLICY_JWKS_REFRESH", value_parser = duration)]
    pub policy_jwks_refresh: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m)"))
}

impl ServePolicyArgs {
    /// The policy options, `None` without `--policy-dir`. Plain-HTTP JWKS follow `--jwt-allow-http`.
    pub fn config(self, cfg: &ServeConfig) -> anyhow::Result<Option<PolicyOptions>> {
        let Some(dir) = self.policy_dir.filter(|d| !d.as_os_str().is_empty()) else {
            anyhow::ensure!(
                self.policy_root_namespace.is_none() && self.policy_jwks_refresh.is_none(),
                "--policy-root-namespace and --policy-jwks-refresh need --policy-dir"
            );
            return Ok(None);
        };
        let root_namespace = self.policy_root_namespace.unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.into());
        anyhow::ensure!(!root_namespace.is_empty(), "--policy-root-namespace must not be empty");
        let jwks_refresh = self.policy_jwks_refresh.unwrap_or(DEFAULT_JWKS_REFRESH);
        anyhow::ensure!(jwks_refresh >= Duration::from_secs(1), "--policy-jwks-refresh must be at least 1s");
        Ok(Some(PolicyOptions {
            dir,
            root_namespace,
            jwks_refresh,
            poll_interval: cfg.reload_poll_interval,
            allow_http: cfg.jwt_allow_http,
        }))
    }
}
