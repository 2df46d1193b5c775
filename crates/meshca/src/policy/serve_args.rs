//! The `meshca serve` flags of policy delivery (`--policy-dir` and friends).

use clap::Args;
use meshca_ca::config::ServeConfig;
use meshca_ca::policy::{PolicyOptions, DEFAULT_JWKS_REFRESH, DEFAULT_ROOT_NAMESPACE};
use std::path::PathBuf;
use std::time::Duration;

/// The keys of these flags in the `--config` TOML file.
pub const KEYS: [&str; 3] = ["policy_dir", "policy_root_namespace", "policy_jwks_refresh"];

#[derive(Args, Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServePolicyArgs {
    /// Serve the Istio security policies of this directory (*.yaml, *.yml, *.json) to agents, watched for changes
    #[arg(long, env = "MESHCA_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Namespace whose policies apply to every namespace [default: istio-system]
    #[arg(long, env = "MESHCA_POLICY_ROOT_NAMESPACE")]
    pub policy_root_namespace: Option<String>,
    /// How often the JWKS of RequestAuthentications are fetched again [default: 5m]
    #[arg(long, env = "MESHCA_POLICY_JWKS_REFRESH", value_parser = duration)]
    #[serde(default, deserialize_with = "file_duration")]
    pub policy_jwks_refresh: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m)"))
}

/// A duration in the TOML file, written as on the command line ("5m").
fn file_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    s.map(|s| duration(&s).map_err(|e| serde::de::Error::custom(format!("policy_jwks_refresh: {e}")))).transpose()
}

impl ServePolicyArgs {
    /// Flags and environment over the file's keys.
    pub fn merge(self, file: ServePolicyArgs) -> ServePolicyArgs {
        ServePolicyArgs {
            policy_dir: self.policy_dir.or(file.policy_dir),
            policy_root_namespace: self.policy_root_namespace.or(file.policy_root_namespace),
            policy_jwks_refresh: self.policy_jwks_refresh.or(file.policy_jwks_refresh),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_are_named() {
        let file: ServePolicyArgs =
            toml::from_str("policy_dir = \"/etc/p\"\npolicy_jwks_refresh = \"30s\"\n").expect("file keys");
        let flags = ServePolicyArgs { policy_root_namespace: Some("mesh".into()), ..Default::default() };
        let opts = flags.merge(file).config(&ServeConfig::default()).unwrap().expect("policy on");
        assert_eq!(opts.dir, PathBuf::from("/etc/p"));
        assert_eq!((opts.root_namespace.as_str(), opts.jwks_refresh), ("mesh", Duration::from_secs(30)));
        let bad = toml::from_str::<ServePolicyArgs>("policy_jwks_refresh = \"soon\"").unwrap_err().to_string();
        assert!(bad.contains("policy_jwks_refresh"), "{bad}");
        let lonely = ServePolicyArgs { policy_root_namespace: Some("x".into()), ..Default::default() };
        assert!(lonely.config(&ServeConfig::default()).unwrap_err().to_string().contains("need --policy-dir"));
        assert!(ServePolicyArgs::default().config(&ServeConfig::default()).unwrap().is_none());
    }
}
