//! `meshca certs bundle`: one trust bundle from several root files, as needed
//! while rotating roots or joining meshes (every cluster trusts every root).

use super::files::{self, plural, Output};
use anyhow::{bail, Context as _};
use meshca_pki::CertDer;
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct BundleArgs {
    /// File to write the bundle to.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// PEM files whose certificates go into the bundle, in this order.
    #[arg(required = true, value_name = "PEM")]
    inputs: Vec<PathBuf>,
}

pub(crate) fn run(args: BundleArgs) -> anyhow::Result<()> {
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut bundle: Vec<CertDer> = Vec::new();
    let mut duplicates = 0usize;
    for input in &args.inputs {
        for (i, der) in files::read_certs(input)?.into_iter().enumerate() {
            let info = meshca_pki::inspect::cert_info(&der)
                .with_context(|| format!("{}: certificate #{}", input.display(), i + 1))?;
            if !seen.insert(der.to_vec()) {
                duplicates += 1;
                continue;
            }
            if !info.is_ca {
                eprintln!(
                    "warning: {}: certificate #{} (\"{}\") is not a CA certificate",
                    input.display(),
                    i + 1,
                    info.subject
                );
            }
            bundle.push(der);
        }
    }
    if bundle.is_empty() {
        bail!("no certificates to write");
    }
    files::refuse_existing(&[&args.out], args.force)?;
    let pem = meshca_pki::pem::certs_to_pem(&bundle);
    files::write_all(&[Output::public(args.out.clone(), pem.as_bytes())])?;
    println!(
        "wrote {} to {} ({} dropped)",
        plural(bundle.len(), "certificate", "certificates"),
        args.out.display(),
        plural(duplicates, "duplicate", "duplicates")
    );
    Ok(())
}
