//! `meshca request`: a one-shot workload client. Generates a key, sends a CSR
//! to the CA with a token, and writes `cert-chain.pem`, `key.pem` (0600) and
//! `root-cert.pem`, the files Istio's agent writes for non-Envoy workloads.

use anyhow::Context;
use clap::Args;
use meshca_ca::fsutil;
use meshca_pki::{KeyKind, PrivateKey};
use meshca_proto::{IstioCertificateRequest, IstioCertificateServiceClient};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// CA address host:port
    #[arg(long, default_value = "127.0.0.1:15012")]
    ca_addr: String,
    /// Root bundle to verify the CA's serving certificate (e.g. saved from /root-cert.pem)
    #[arg(long, conflicts_with = "plaintext")]
    ca_root: Option<PathBuf>,
    /// Talk to a CA started with --plaintext
    #[arg(long)]
    plaintext: bool,
    /// TLS server name to expect in the CA's certificate
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// File holding the bearer token (e.g. from `meshca token create`)
    #[arg(long)]
    token_file: PathBuf,
    /// Requested lifetime
    #[arg(long, default_value = "24h", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
    ttl: Duration,
    /// Key type of the workload key
    #[arg(long, default_value = "ec-p256")]
    key: KeyKind,
    /// Directory to write cert-chain.pem, key.pem and root-cert.pem into
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: RequestArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(request(args))
}

async fn request(args: RequestArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading token file {}", args.token_file.display()))?;
    let key = PrivateKey::generate(args.key)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(key.key_pair())?.pem()?;

    let channel = if args.plaintext {
        Channel::from_shared(format!("http://{}", args.ca_addr))?.connect().await
    } else {
        let root_path = args.ca_root.as_ref().context("--ca-root is required unless --plaintext")?;
        let roots = std::fs::read_to_string(root_path).with_context(|| format!("reading {}", root_path.display()))?;
        let tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(roots)).domain_name(args.server_name.clone());
        Channel::from_shared(format!("https://{}", args.ca_addr))?.tls_config(tls)?.connect().await
    }
    .with_context(|| format!("connecting to the CA at {}", args.ca_addr))?;
    let mut client = IstioCertificateServiceClient::new(channel);
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: args.ttl.as_secs() as i64,
        metadata: None,
    });
    req.metadata_mut().insert("authorization", format!("Bearer {}", token.trim()).parse()?);
    let resp = client
        .create_certificate(req)
        .await
        .map_err(|s| anyhow::anyhow!("the CA refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    anyhow::ensure!(
        resp.cert_chain.len() >= 2,
        "the CA returned {} chain elements (expected at least 2)",
        resp.cert_chain.len()
    );
    let (roots, chain) = resp.cert_chain.split_last().context("empty chain")?;
    std::fs::create_dir_all(&args.out)?;
    fsutil::write_public(&args.out.join("cert-chain.pem"), chain.concat().as_bytes())?;
    fsutil::write_secret(&args.out.join("key.pem"), key.to_pkcs8_pem().as_bytes())?;
    fsutil::write_public(&args.out.join("root-cert.pem"), roots.as_bytes())?;
    let line = meshca_pki::inspect::istiod_line(&meshca_pki::pem::parse_certs(chain[0].as_bytes())?[0])?;
    let info = meshca_pki::inspect::cert_info(&meshca_pki::pem::parse_certs(chain[0].as_bytes())?[0])?;
    println!("{line}");
    println!("identity: {}", info.spiffe_id.unwrap_or_default());
    println!("wrote {}/{{cert-chain.pem,key.pem,root-cert.pem}}", args.out.display());
    Ok(())
}
