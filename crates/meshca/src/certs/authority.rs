//! `meshca certs root` and `meshca certs intermediate`: the CA certificates of
//! Istio's `tools/certs` makefiles (`make root-ca`, `make <cluster>-cacerts`).

use super::files::{self, Output};
use anyhow::{bail, Context as _};
use meshca_pki::authority::{new_intermediate, new_root};
use meshca_pki::material::Part;
use meshca_pki::pem::{cert_to_pem, certs_to_pem};
use meshca_pki::{AuthorityOptions, CaMaterial, KeyKind, MaterialInput};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const KEY_HELP: &str = "Key type: ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096";

#[derive(clap::Args)]
pub(crate) struct RootArgs {
    /// Directory for root-cert.pem and root-key.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Common name of the root.
    #[arg(long, value_name = "NAME", default_value = "Root CA")]
    cn: String,
    /// Organization of the root.
    #[arg(long, value_name = "ORG", default_value = "Istio")]
    org: String,
    /// Lifetime, e.g. 87600h or 3650d.
    #[arg(long, value_name = "DURATION", default_value = "87600h", value_parser = files::parse_ttl)]
    ttl: Duration,
    #[arg(long, value_name = "TYPE", default_value = "ec-p256", help = KEY_HELP)]
    key: KeyKind,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub(crate) struct IntermediateArgs {
    /// Directory holding root-cert.pem and root-key.pem (from `meshca certs root`).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Directory for ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Cluster name: the subject becomes "CN=Intermediate CA - NAME,O=ORG,L=NAME".
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// Organization of the intermediate.
    #[arg(long, value_name = "ORG", default_value = "Istio")]
    org: String,
    /// Lifetime, e.g. 8760h or 365d; never extends past the root's NotAfter.
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = files::parse_ttl)]
    ttl: Duration,
    #[arg(long, value_name = "TYPE", default_value = "ec-p256", help = KEY_HELP)]
    key: KeyKind,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

fn check_name(flag: &str, value: &str) -> anyhow::Result<()> {
    if value.trim().is_empty() {
        bail!("{flag} must not be empty");
    }
    if value.chars().any(char::is_control) {
        bail!("{flag} must not contain control characters");
    }
    Ok(())
}

fn fmt_time(t: SystemTime) -> String {
    meshca_pki::material::fmt_time(t)
}

pub(crate) fn run_root(args: RootArgs) -> anyhow::Result<()> {
    check_name("--cn", &args.cn)?;
    check_name("--org", &args.org)?;
    let now = SystemTime::now();
    files::check_ttl(now, args.ttl)?;
    let cert_path = args.out.join("root-cert.pem");
    let key_path = args.out.join("root-key.pem");
    files::refuse_existing(&[&cert_path, &key_path], args.force)?;

    let opts = AuthorityOptions {
        common_name: args.cn,
        organization: args.org,
        locality: None,
        ttl: args.ttl,
        key: args.key,
        path_len: None,
    };
    let root = new_root(&opts, now).context("creating the root CA")?;
    let cert_pem = cert_to_pem(&root.cert);
    let key_pem = root.key.to_pkcs8_pem();

    files::prepare_dir(&args.out)?;
    files::write_all(&[
        Output::secret(key_path.clone(), key_pem.as_bytes()),
        Output::public(cert_path.clone(), cert_pem.as_bytes()),
    ])?;
    println!("wrote {} and {} ({})", cert_path.display(), key_path.display(), root.key.description());
    println!("{}", meshca_pki::inspect::istiod_line(&root.cert)?);
    Ok(())
}

/// The root CA of `dir`, validated as a set: the key must match the
/// certificate, which must be a CA valid now.
fn load_root(dir: &Path, now: SystemTime) -> anyhow::Result<CaMaterial> {
    let cert_path = dir.join("root-cert.pem");
    let key_path = dir.join("root-key.pem");
    let cert_pem = files::read(&cert_path)?;
    let key_pem = files::read(&key_path)?;
    let cert_name = cert_path.display().to_string();
    let key_name = key_path.display().to_string();
    let cert = Part { name: &cert_name, pem: &cert_pem };
    let input = MaterialInput { cert, key: Part { name: &key_name, pem: &key_pem }, chain: None, roots: cert };
    CaMaterial::from_input(&input, now)
        .with_context(|| format!("the root CA in {} cannot sign an intermediate; nothing was written", dir.display()))
}

pub(crate) fn run_intermediate(args: IntermediateArgs) -> anyhow::Result<()> {
    check_name("--cluster", &args.cluster)?;
    check_name("--org", &args.org)?;
    let now = SystemTime::now();
    files::check_ttl(now, args.ttl)?;
    let ca_cert_path = args.out.join("ca-cert.pem");
    let ca_key_path = args.out.join("ca-key.pem");
    let chain_path = args.out.join("cert-chain.pem");
    let roots_path = args.out.join("root-cert.pem");
    files::refuse_existing(&[&ca_cert_path, &ca_key_path, &chain_path, &roots_path], args.force)?;

    let root = load_root(&args.root, now)?;
    let root_info = meshca_pki::inspect::cert_info(root.signer().cert())?;
    if !root_info.self_signed {
        eprintln!(
            "warning: {} (\"{}\") is not self-signed; cert-chain.pem will not reach a self-signed root",
            args.root.join("root-cert.pem").display(),
            root_info.subject
        );
    }

    let opts = AuthorityOptions {
        common_name: format!("Intermediate CA - {}", args.cluster),
        organization: args.org,
        locality: Some(args.cluster.clone()),
        ttl: args.ttl,
        key: args.key,
        path_len: Some(0),
    };
    let inter = new_intermediate(&opts, root.signer(), now).context("signing the intermediate CA")?;
    let ca_cert_pem = cert_to_pem(&inter.cert);
    let ca_key_pem = inter.key.to_pkcs8_pem();
    // Istio's makefile: cert-chain.pem = ca-cert.pem + root-cert.pem.
    let chain_pem = format!("{ca_cert_pem}{}", cert_to_pem(root.signer().cert()));
    let roots_pem = certs_to_pem(root.roots());

    // Check the set exactly as `meshca serve` will load it, before writing anything.
    let names = [&ca_cert_path, &ca_key_path, &chain_path, &roots_path].map(|p| p.display().to_string());
    let input = MaterialInput {
        cert: Part { name: &names[0], pem: ca_cert_pem.as_bytes() },
        key: Part { name: &names[1], pem: ca_key_pem.as_bytes() },
        chain: Some(Part { name: &names[2], pem: chain_pem.as_bytes() }),
        roots: Part { name: &names[3], pem: roots_pem.as_bytes() },
    };
    CaMaterial::from_input(&input, now).with_context(|| {
        format!(
            "the new intermediate does not validate against the root in {}; nothing was written",
            args.root.display()
        )
    })?;

    files::prepare_dir(&args.out)?;
    files::write_all(&[
        Output::secret(ca_key_path.clone(), ca_key_pem.as_bytes()),
        Output::public(ca_cert_path.clone(), ca_cert_pem.as_bytes()),
        Output::public(chain_path.clone(), chain_pem.as_bytes()),
        Output::public(roots_path.clone(), roots_pem.as_bytes()),
    ])?;

    if now.checked_add(args.ttl).is_none_or(|t| t > root.signer().not_after()) {
        eprintln!(
            "note: the requested --ttl reaches past the root's NotAfter; the intermediate expires with the root at {}",
            fmt_time(root.signer().not_after())
        );
    }
    println!(
        "wrote {}, {}, {} and {} ({})",
        ca_cert_path.display(),
        ca_key_path.display(),
        chain_path.display(),
        roots_path.display(),
        inter.key.description()
    );
    println!("{}", meshca_pki::inspect::istiod_line(&inter.cert)?);
    Ok(())
}
