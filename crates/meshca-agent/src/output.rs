//! `--output-dir`: `cert-chain.pem`, `key.pem` (0600) and `root-cert.pem`,
//! each written atomically, for workloads that read files instead of SDS.

use crate::manager::CertState;
use meshca_files as fsutil;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

pub async fn write_files(
    dir: PathBuf,
    mut cert: watch::Receiver<CertState>,
    mut trust: watch::Receiver<Option<Arc<str>>>,
) {
    if let Err(e) = fsutil::ensure_private_dir(&dir) {
        tracing::error!("creating the output directory {}: {e}", dir.display());
    }
    let (mut last_serial, mut last_trust) = (String::new(), None::<Arc<str>>);
    loop {
        let current = cert.borrow_and_update().clone();
        let roots = trust.borrow_and_update().clone();
        if let Some(c) = current.cert() {
            if c.serial != last_serial {
                // Key before chain: a reader that sees the new chain also sees its key.
                let res = fsutil::write_secret(&dir.join("key.pem"), c.key_pem.as_bytes())
                    .and_then(|()| fsutil::write_public(&dir.join("cert-chain.pem"), c.chain_pem.as_bytes()));
                match res {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), serial = %c.serial, "wrote cert-chain.pem and key.pem");
                        last_serial = c.serial.clone();
                    }
                    Err(e) => tracing::error!("writing to {}: {e}", dir.display()),
                }
            }
        }
        if let Some(r) = roots.filter(|r| Some(r) != last_trust.as_ref()) {
            match fsutil::write_public(&dir.join("root-cert.pem"), r.as_bytes()) {
                Ok(()) => last_trust = Some(r),
                Err(e) => tracing::error!("writing root-cert.pem to {}: {e}", dir.display()),
            }
        }
        tokio::select! {
            r = cert.changed() => if r.is_err() { return },
            r = trust.changed() => if r.is_err() { return },
        }
    }
}
