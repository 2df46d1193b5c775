//! `meshca doctor`: diagnose CA material, a running CA, Vault, workloads,
//! Envoy, mTLS between two workloads, and JWTs. Exit 0 when nothing failed.

use crate::serve::VaultArgs;
use clap::Args;
use meshca_doctor::output::{render, Format};
use meshca_doctor::{Targets, VaultTarget};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s, 24h)"))
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Plug-in CA directory to check (ca-cert.pem/ca-key.pem/cert-chain.pem/root-cert.pem or tls.crt/tls.key/ca.crt)
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// A running CA's gRPC address host:port (TLS handshake check)
    #[arg(long)]
    ca_addr: Option<String>,
    /// A running CA's HTTP address host:port (/readyz, /status, /root-cert.pem)
    #[arg(long)]
    ca_http_addr: Option<String>,
    /// Root bundle to verify the CA's gRPC certificate with [default: the CA's served root, else --ca-dir's]
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// TLS server name expected in the CA's gRPC certificate
    #[arg(long, default_value = "istiod.istio-system.svc")]
    ca_server_name: String,
    /// The longest workload certificate lifetime issued (the intermediate must outlive it)
    #[arg(long, default_value = "24h", value_parser = duration)]
    max_workload_ttl: Duration,
    /// A running agent's HTTP address host:port
    #[arg(long)]
    agent: Option<String>,
    /// Envoy admin address host:port (give two to check mTLS between them)
    #[arg(long = "envoy-admin")]
    envoy_admin: Vec<String>,
    /// Keep Envoy's failure counters in this file and report their increase since the previous run
    #[arg(long)]
    stats_state: Option<PathBuf>,
    /// A workload certificate directory: cert-chain.pem, key.pem, root-cert.pem (give two to check mTLS between them)
    #[arg(long = "cert-dir")]
    cert_dir: Vec<PathBuf>,
    /// Expected SPIFFE ID, in the order of --cert-dir / --envoy-admin
    #[arg(long = "expect-identity")]
    expect_identity: Vec<String>,
    /// A caller or end-user JWT to check
    #[arg(long)]
    token: Option<PathBuf>,
    /// Directory of Istio policy files to validate and lint
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Trusted JWT issuer ISSUER=SOURCE (a JWKS file, a JWKS URL, or oidc), as for serve (repeatable)
    #[arg(long = "jwt-issuer")]
    jwt_issuer: Vec<String>,
    /// Audience the token must carry
    #[arg(long, default_value = "istio-ca")]
    token_audience: String,
    /// text (grouped, with hints), json, or short (only what is not ok)
    #[arg(long, short = 'o', default_value = "text")]
    output: Format,
    /// Time budget of the whole run (every probe is bounded by it)
    #[arg(long, default_value = "1500ms", value_parser = duration)]
    timeout: Duration,
    #[command(flatten)]
    vault: VaultArgs,
}

fn vault_target(v: VaultArgs) -> Option<VaultTarget> {
    let addr = v.vault_addr.filter(|a| !a.trim().is_empty())?;
    let auth = v.vault_auth.unwrap_or_else(|| {
        if v.vault_role_id.is_some() {
            "approle".into()
        } else if v.vault_auth_role.is_some() {
            if v.vault_jwt_file.is_some() { "jwt" } else { "kubernetes" }.into()
        } else {
            "token".into()
        }
    });
    let clean =
        |s: Option<String>, d: &str| s.map(|s| s.trim_matches('/').to_string()).unwrap_or_else(|| d.to_string());
    Some(VaultTarget {
        addr,
        ca_file: v.vault_ca_file,
        namespace: v.vault_namespace,
        auth,
        token: v.vault_token,
        token_file: v.vault_token_file,
        auth_mount: v.vault_auth_mount,
        role_id: v.vault_role_id,
        secret_id_file: v.vault_secret_id_file,
        auth_role: v.vault_auth_role,
        jwt_file: v.vault_jwt_file,
        mode: v.vault_mode.unwrap_or_else(|| "vault-upstream".into()),
        pki_mount: clean(v.vault_pki_mount, "pki_int"),
        cert_path: clean(v.vault_cert_path, "pki_int/cert/ca"),
        chain_path: clean(v.vault_chain_path, "pki_int/cert/ca_chain"),
        root_path: v.vault_root_path.map(|s| s.trim_matches('/').to_string()),
        key_path: clean(v.vault_key_path, "kv/istioca"),
        key_field: v.vault_key_field.unwrap_or_else(|| "ca-key.pem".into()),
    })
}

fn targets(a: DoctorArgs) -> anyhow::Result<(Targets, Format)> {
    anyhow::ensure!(a.envoy_admin.len() <= 2, "--envoy-admin: at most two (the mtls checks compare two)");
    anyhow::ensure!(a.cert_dir.len() <= 2, "--cert-dir: at most two (the mtls checks compare two)");
    let jwt_issuers = crate::serve::parse_jwt_issuers(&a.jwt_issuer)?;
    if let Some(m) = &a.vault.vault_mode {
        anyhow::ensure!(
            m == "vault-kv" || m == "vault-upstream",
            "--vault-mode {m:?}: expected vault-kv or vault-upstream"
        );
    }
    let t = Targets {
        ca_dir: a.ca_dir,
        ca_addr: a.ca_addr,
        ca_http_addr: a.ca_http_addr,
        ca_root: a.ca_root,
        ca_server_name: a.ca_server_name,
        max_workload_ttl: a.max_workload_ttl,
        agent: a.agent,
        envoy_admins: a.envoy_admin,
        stats_state: a.stats_state,
        cert_dirs: a.cert_dir,
        expect_identities: a.expect_identity,
        token: a.token,
        jwt_issuers,
        token_audience: a.token_audience,
        vault: vault_target(a.vault),
        policy_dir: a.policy_dir,
        timeout: a.timeout,
    };
    Ok((t, a.output))
}

/// Run the checks and print the report; exit 1 when a check failed.
pub fn run(args: DoctorArgs) -> ExitCode {
    let (targets, format) = match targets(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = rt.block_on(meshca_doctor::run(targets));
    print!("{}", render(&report, format));
    if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
