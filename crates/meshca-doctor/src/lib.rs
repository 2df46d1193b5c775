//! `meshca doctor`: named checks of everything that makes mesh certificates
//! work, each with a stable id, a one-line description, a probe, a severity
//! and, on failure, a hint that states the cause and the fix.
//!
//! The doctor never links the CA or the agent: it reads files and talks to
//! running components over their network APIs (the CA's HTTP and gRPC
//! ports, the agent's HTTP port, Envoy's admin API, Vault, OIDC issuers).
//!
//! Categories are [`CategoryDef`]s; [`builtin_categories`] lists the ones
//! shipped here, and [`run_categories`] runs any list, so later categories
//! (policy, HA) are added by appending one entry.
#![forbid(unsafe_code)]

pub mod ca_material;
pub mod ca_server;
pub mod certs;
pub mod check;
pub mod envoy;
pub mod fetch;
pub mod ha;
pub mod jwt;
pub mod mtls;
pub mod output;
pub mod policy;
pub mod vault;
pub mod workload;

pub use check::{CategoryReport, CheckDef, CheckResult, Checks, Outcome, Report, Severity, Status};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Vault/OpenBao connection and the layout to check.
#[derive(Debug, Clone, Default)]
pub struct VaultTarget {
    pub addr: String,
    pub ca_file: Option<PathBuf>,
    pub namespace: Option<String>,
    /// `token`, `approle`, `jwt` or `kubernetes`.
    pub auth: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub auth_mount: Option<String>,
    pub role_id: Option<String>,
    pub secret_id_file: Option<PathBuf>,
    pub auth_role: Option<String>,
    pub jwt_file: Option<PathBuf>,
    /// `vault-kv` or `vault-upstream`.
    pub mode: String,
    pub pki_mount: String,
    pub cert_path: String,
    pub chain_path: String,
    pub root_path: Option<String>,
    pub key_path: String,
    pub key_field: String,
}

/// What to diagnose; every field is optional and checks without their target are skipped.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Plug-in CA directory.
    pub ca_dir: Option<PathBuf>,
    /// The CA's gRPC (TLS) address host:port.
    pub ca_addr: Option<String>,
    /// The CA's HTTP address host:port.
    pub ca_http_addr: Option<String>,
    /// Root bundle to verify the CA's gRPC serving certificate with.
    pub ca_root: Option<PathBuf>,
    pub ca_server_name: String,
    /// The longest workload certificate lifetime the CA issues.
    pub max_workload_ttl: Duration,
    /// A running agent's HTTP address.
    pub agent: Option<String>,
    /// Envoy admin addresses (two: the mtls category compares them).
    pub envoy_admins: Vec<String>,
    /// File keeping Envoy's counters between runs, to report their increase.
    pub stats_state: Option<PathBuf>,
    /// Workload certificate directories (two: the mtls category compares them).
    pub cert_dirs: Vec<PathBuf>,
    /// Expected SPIFFE IDs, in the order of the cert dirs / Envoys.
    pub expect_identities: Vec<String>,
    /// A caller or end-user JWT.
    pub token: Option<PathBuf>,
    /// Trusted issuers, ISSUER=SOURCE (JWKS file, JWKS URL or `oidc`).
    pub jwt_issuers: Vec<(String, String)>,
    pub token_audience: String,
    pub vault: Option<VaultTarget>,
    /// Directory of policy files (AuthorizationPolicy, RequestAuthentication, ...).
    pub policy_dir: Option<PathBuf>,
    /// Budget of the whole run; every probe is bounded by it.
    pub timeout: Duration,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            ca_dir: None,
            ca_addr: None,
            ca_http_addr: None,
            ca_root: None,
            ca_server_name: "istiod.istio-system.svc".into(),
            max_workload_ttl: Duration::from_secs(24 * 3600),
            agent: None,
            envoy_admins: Vec::new(),
            stats_state: None,
            cert_dirs: Vec::new(),
            expect_identities: Vec::new(),
            token: None,
            jwt_issuers: Vec::new(),
            token_audience: "istio-ca".into(),
            vault: None,
            policy_dir: None,
            timeout: Duration::from_millis(1500),
        }
    }
}

/// Shared state of one run: the targets, the clock, an HTTP client and facts
/// several categories need (fetched once).
pub struct Context {
    pub targets: Targets,
    pub now: SystemTime,
    pub deadline: Instant,
    pub http: fetch::Http,
    served_roots: tokio::sync::OnceCell<Result<Vec<meshca_pki::CertDer>, String>>,
}

impl Context {
    pub fn new(targets: Targets) -> Self {
        let deadline = Instant::now() + targets.timeout;
        let http = fetch::Http::new(targets.timeout).until(deadline);
        Self { targets, now: SystemTime::now(), deadline, http, served_roots: tokio::sync::OnceCell::new() }
    }

    /// The roots the CA serves on `/root-cert.pem`, fetched once.
    pub async fn served_roots(&self) -> Option<&Result<Vec<meshca_pki::CertDer>, String>> {
        let addr = self.targets.ca_http_addr.as_ref()?;
        Some(
            self.served_roots
                .get_or_init(|| async {
                    let body = self.http.get_ok(&format!("http://{addr}/root-cert.pem")).await?;
                    meshca_pki::pem::parse_certs(body.as_bytes())
                        .map_err(|e| format!("the CA's /root-cert.pem is not a PEM bundle: {e}"))
                })
                .await,
        )
    }

    /// The trust bundle of the CA's plug-in directory (`root-cert.pem` or `ca.crt`).
    pub fn disk_roots(&self) -> Option<Vec<meshca_pki::CertDer>> {
        let dir = self.targets.ca_dir.as_ref()?;
        ["root-cert.pem", "ca.crt"]
            .iter()
            .find_map(|n| std::fs::read(dir.join(n)).ok())
            .and_then(|b| meshca_pki::pem::parse_certs(&b).ok())
    }
}

type CategoryFuture = Pin<Box<dyn Future<Output = Vec<CheckResult>> + Send>>;

/// A category of checks: its name and the function that runs them all.
#[derive(Clone, Copy)]
pub struct CategoryDef {
    pub name: &'static str,
    pub run: fn(Arc<Context>) -> CategoryFuture,
}

/// The categories shipped with meshca, in report order. Policy and HA
/// categories append themselves here when they exist.
pub fn builtin_categories() -> Vec<CategoryDef> {
    vec![
        CategoryDef { name: "ca-material", run: |c| Box::pin(async move { ca_material::run(&c) }) },
        CategoryDef { name: "ca-server", run: |c| Box::pin(async move { ca_server::run(&c).await }) },
        CategoryDef { name: "vault", run: |c| Box::pin(async move { vault::run(&c).await }) },
        CategoryDef { name: "workload", run: |c| Box::pin(async move { workload::run(&c).await }) },
        CategoryDef { name: "envoy", run: |c| Box::pin(async move { envoy::run(&c).await }) },
        CategoryDef { name: "mtls", run: |c| Box::pin(async move { mtls::run(&c).await }) },
        CategoryDef { name: "jwt", run: |c| Box::pin(async move { jwt::run(&c).await }) },
        CategoryDef { name: "policy", run: |c| Box::pin(async move { policy::run(&c) }) },
        CategoryDef { name: "ha", run: |c| Box::pin(async move { ha::run(&c).await }) },
    ]
}

/// Run `categories` concurrently against `targets`.
pub async fn run_categories(targets: Targets, categories: &[CategoryDef]) -> Report {
    let ctx = Arc::new(Context::new(targets));
    // Every probe is bounded by the budget; a category whose probes chain
    // several slow answers is cut off a little after it.
    let deadline = tokio::time::Instant::from_std(ctx.deadline) + Duration::from_millis(400);
    let handles: Vec<_> = categories.iter().map(|c| (c.name, tokio::spawn((c.run)(ctx.clone())))).collect();
    let mut out = Vec::new();
    for (name, mut h) in handles {
        let checks = match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(Ok(checks)) => checks,
            Ok(Err(e)) => vec![internal(
                format!("{name}.internal"),
                format!("the {name} checks ran to completion"),
                format!("the {name} checks stopped: {e}"),
                "this is a meshca bug; please report it",
            )],
            Err(_) => {
                h.abort();
                vec![internal(
                    format!("{name}.deadline"),
                    format!("the {name} checks finish within the time budget"),
                    format!("the {name} checks did not finish within {:?}", ctx.targets.timeout),
                    "a target accepts connections but answers slowly (overloaded, or a proxy in between). Check it, \
                     or give more time with --timeout",
                )]
            }
        };
        out.push(CategoryReport { name: name.to_string(), checks });
    }
    Report::new(out)
}

fn internal(id: String, description: String, error: String, hint: &str) -> CheckResult {
    CheckResult { id, description, result: Status::Error, error: Some(error), hint: Some(hint.to_string()) }
}

/// Run the built-in categories.
pub async fn run(targets: Targets) -> Report {
    run_categories(targets, &builtin_categories()).await
}
