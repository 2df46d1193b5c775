//! `meshca agent`: the node agent. Gets the workload certificate from the CA
//! with a locally generated key, serves it to Envoy over SDS on a unix socket,
//! optionally writes it to a directory, and follows CA rotations.

use anyhow::Context;
use clap::{Args, Subcommand};
use meshca_agent::{AgentConfig, CaEndpoint, ManagerConfig};
use meshca_pki::KeyKind;
use std::path::PathBuf;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    /// CA gRPC address host:port; several replicas as a comma-separated list or dns:///name:port
    /// (the agent moves to the next one when a connection fails)
    #[arg(long, env = "MESHCA_AGENT_CA_ADDR", default_value = "127.0.0.1:15012")]
    ca_addr: String,
    /// Root bundle to verify the CA's serving certificate; roots the CA later returns are trusted too
    #[arg(long, env = "MESHCA_AGENT_CA_ROOT", conflicts_with = "plaintext", required_unless_present = "plaintext")]
    ca_root: Option<PathBuf>,
    /// Talk to a CA started with --plaintext (local use only)
    #[arg(long, env = "MESHCA_AGENT_PLAINTEXT")]
    plaintext: bool,
    /// TLS server name expected in the CA's certificate
    #[arg(long, env = "MESHCA_AGENT_CA_SERVER_NAME", default_value = "istiod.istio-system.svc")]
    ca_server_name: String,
    /// Fallback for CAs without meshca's change stream: the CA's plain-HTTP address, long-polled
    /// (/root-cert.pem) and polled (/status) for rotation signals. Not needed with meshca serve.
    #[arg(long, env = "MESHCA_AGENT_CA_HTTP_ADDR")]
    ca_http_addr: Option<String>,
    /// Do not follow the CA's change stream (meshca.v1.CaEvents) on the gRPC channel
    #[arg(long, env = "MESHCA_AGENT_NO_CA_EVENTS")]
    no_ca_events: bool,
    /// How often to compare the CA's signing chain (with --ca-http-addr)
    #[arg(long, env = "MESHCA_AGENT_CA_STATUS_INTERVAL", default_value = "5s", value_parser = duration)]
    ca_status_interval: Duration,
    /// Bearer token file of the primary workload (served over SDS as `default`), re-read for every request
    #[arg(long, env = "MESHCA_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// An extra workload: NAME=TOKEN_FILE; its certificate (for the identity the CA derives from the token)
    /// is served over SDS as the resource NAME, fetched at the first request for it; repeatable (the environment
    /// variable: space-separated)
    #[arg(long = "workload", value_name = "NAME=TOKEN_FILE", env = "MESHCA_AGENT_WORKLOADS", value_delimiter = ' ', value_parser = meshca_agent::workloads::parse_arg)]
    workloads: Vec<meshca_agent::workloads::Workload>,
    /// Extra workloads from a TOML file: [[workload]] tables with name and token_file (relative to the file)
    #[arg(long, env = "MESHCA_AGENT_WORKLOADS_FILE")]
    workloads_file: Option<PathBuf>,
    /// Sent to the CA as the clusterid header
    #[arg(long, env = "MESHCA_AGENT_CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// Workload key type
    #[arg(long, env = "MESHCA_AGENT_KEY", default_value = "ec-p256")]
    key: KeyKind,
    /// Unix socket Envoy reads SDS from
    #[arg(long, env = "MESHCA_AGENT_SDS_SOCKET", default_value = "./var/run/secrets/workload-spiffe-uds/socket")]
    sds_socket: PathBuf,
    /// Also write cert-chain.pem, key.pem (0600) and root-cert.pem here
    #[arg(long, env = "MESHCA_AGENT_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
    /// Renew this fraction of the way through the certificate's lifetime (±1% jitter)
    #[arg(long, env = "MESHCA_AGENT_GRACE_RATIO", default_value_t = 0.5)]
    grace_ratio: f64,
    /// Requested certificate lifetime
    #[arg(long, env = "MESHCA_AGENT_TTL", default_value = "24h", value_parser = duration)]
    ttl: Duration,
    /// Health and metrics address (e.g. 127.0.0.1:15020)
    #[arg(long, env = "MESHCA_AGENT_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Early renewals after a CA change are spread over this window
    #[arg(long, env = "MESHCA_AGENT_ROTATION_JITTER", default_value = "1s", value_parser = duration)]
    rotation_jitter: Duration,
    /// At most this many CSRs in flight
    #[arg(long, env = "MESHCA_AGENT_MAX_CONCURRENT_CSRS", default_value_t = 8)]
    max_concurrent_csrs: usize,
    /// First retry delay after a failed request (doubles up to --retry-max, with jitter)
    #[arg(long, env = "MESHCA_AGENT_RETRY_INITIAL", default_value = "500ms", value_parser = duration)]
    retry_initial: Duration,
    #[arg(long, env = "MESHCA_AGENT_RETRY_MAX", default_value = "30s", value_parser = duration)]
    retry_max: Duration,
    /// Workload labels for policy selection: k=v,k2=v2
    #[arg(long, env = "MESHCA_AGENT_WORKLOAD_LABELS", default_value = "", value_parser = meshca_agent::policy::workload::parse_labels)]
    workload_labels: std::collections::BTreeMap<String, String>,
    /// Kubernetes downward-API labels file (key="value" per line), watched: a change recompiles the
    /// policies for the new labels; a broken file keeps the previous labels
    #[arg(long, env = "MESHCA_AGENT_WORKLOAD_LABELS_FILE")]
    workload_labels_file: Option<PathBuf>,
    /// A port Envoy serves for the workload: PORT/http|tcp=APP_ADDR (Envoy listens on PORT, the
    /// port policies name, and forwards to the application at APP_ADDR); repeatable
    #[arg(long = "port", env = "MESHCA_AGENT_PORTS", value_delimiter = ' ')]
    ports: Vec<meshca_agent::policy::PortArg>,
    /// Policies from the CA server to Envoy over ECDS: on or off (default: on when --port is given)
    #[arg(long, env = "MESHCA_AGENT_POLICY", value_parser = ["on", "off"])]
    policy: Option<String>,
    /// text or json; MESHCA_LOG sets the filter
    #[arg(long, env = "MESHCA_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Print an Envoy bootstrap for this agent: inbound HTTP and TCP listeners (mTLS with SDS
    /// certificates, plaintext per PeerAuthentication), policy filters over ECDS that refuse
    /// everything until the agent's first policy push, the access log to the agent, and admin.
    EnvoyBootstrap(BootstrapArgs),
}

#[derive(Args, Debug)]
struct BootstrapArgs {
    /// PORT/http|tcp=APP_ADDR, as given to the agent; repeatable
    #[arg(long = "port", required = true)]
    ports: Vec<meshca_agent::policy::PortArg>,
    /// The agent's socket (its --sds-socket)
    #[arg(long)]
    socket: PathBuf,
    /// Envoy's admin address
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    /// Envoy's node id (shown in the agent's logs)
    #[arg(long, default_value = "sidecar")]
    node_id: String,
    /// Envoy's cluster name
    #[arg(long, default_value = "meshca")]
    cluster: String,
    /// yaml or json
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
    output: String,
}

fn print_bootstrap(b: BootstrapArgs) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for p in &b.ports {
        anyhow::ensure!(seen.insert(p.port), "--port {} is given twice", p.port);
    }
    let opts = meshca_envoy::BootstrapOptions {
        node_id: b.node_id,
        cluster: b.cluster,
        admin: b.admin,
        agent_socket: b.socket,
        ports: meshca_agent::policy::compile::port_specs(&b.ports),
    };
    let v = meshca_envoy::bootstrap(&opts);
    if b.output == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", crate::policy::yaml_out::to_yaml(&v));
    }
    Ok(())
}

impl AgentArgs {
    fn config(self) -> anyhow::Result<AgentConfig> {
        anyhow::ensure!(
            self.grace_ratio > 0.0 && self.grace_ratio < 1.0,
            "--grace-ratio {} must be between 0 and 1",
            self.grace_ratio
        );
        anyhow::ensure!(self.ttl >= Duration::from_secs(1), "--ttl must be at least 1s");
        let policy = meshca_agent::policy::PolicyConfig {
            labels: self.workload_labels,
            labels_file: self.workload_labels_file,
            ports: self.ports,
        };
        if let Err(e) = policy.labels() {
            anyhow::bail!("workload labels: {e}");
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &policy.ports {
            anyhow::ensure!(seen.insert(p.port), "--port {} is given twice", p.port);
        }
        let mut workloads = self.workloads;
        if let Some(f) = &self.workloads_file {
            workloads.extend(meshca_agent::workloads::read_file(f)?);
        }
        let token_file = self.token_file.unwrap_or_default();
        // Duplicates and reserved names are refused here, before anything starts.
        meshca_agent::workloads::WorkloadSet::new(token_file.clone(), workloads.clone())?;
        Ok(AgentConfig {
            ca: CaEndpoint {
                addr: self.ca_addr,
                root_file: if self.plaintext { None } else { self.ca_root },
                server_name: self.ca_server_name,
                cluster_id: self.cluster_id,
            },
            token_file,
            workloads,
            manager: ManagerConfig {
                key: self.key,
                ttl: self.ttl,
                grace_ratio: self.grace_ratio,
                jitter_ratio: 0.01,
                max_concurrent: self.max_concurrent_csrs.max(1),
                backoff_initial: self.retry_initial,
                backoff_max: self.retry_max.max(self.retry_initial),
                early_jitter: self.rotation_jitter,
            },
            sds_socket: self.sds_socket,
            output_dir: self.output_dir,
            http_addr: self.http_addr,
            ca_http_addr: self.ca_http_addr,
            ca_events: !self.no_ca_events,
            log_control: Some(meshca_agent::http::LogControl {
                get: meshca_ca::logging::log_filter,
                set: meshca_ca::logging::set_log_levels,
            }),
            status_interval: self.ca_status_interval,
            policy: match self.policy.as_deref() {
                Some("off") => None,
                Some(_) => Some(policy),
                None => (!policy.ports.is_empty()).then_some(policy),
            },
        })
    }
}

pub fn run(mut args: AgentArgs) -> anyhow::Result<()> {
    if let Some(AgentCommand::EnvoyBootstrap(b)) = args.command.take() {
        return print_bootstrap(b);
    }
    anyhow::ensure!(args.token_file.is_some(), "--token-file is required");
    let cfg = args.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
            }
            tracing::info!("shutting down");
        };
        meshca_agent::run(cfg, shutdown).await.context("meshca agent")
    })
}
