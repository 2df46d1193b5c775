//! Where CA material comes from: a plug-in directory in either of Istio's
//! layouts, or a self-signed root persisted under the data directory.

use crate::fsutil;
use meshca_pki::authority::{new_root, AuthorityOptions};
use meshca_pki::material::{MaterialError, MaterialInput, Part};
use meshca_pki::{pem, CaMaterial, KeyKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The plug-in file layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`.
    Istio,
    /// kubernetes.io/tls: `tls.crt`, `tls.key`, `ca.crt`.
    KubernetesTls,
}

pub const ISTIO_FILES: [&str; 4] = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"];
pub const TLS_FILES: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

fn msg(file: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> MaterialError {
    MaterialError { file: file.into(), problem: problem.into(), fix: fix.into() }
}

/// Which layout `dir` holds, `None` when it holds no plug-in material at all.
/// A partial set is an error naming the missing files.
pub fn detect(dir: &Path) -> Result<Option<Layout>, MaterialError> {
    let present = |names: &[&str]| -> Vec<bool> { names.iter().map(|n| dir.join(n).exists()).collect() };
    let a = present(&ISTIO_FILES);
    let b = present(&TLS_FILES);
    let incomplete = |names: &[&str], have: &[bool]| {
        let missing: Vec<&str> = names.iter().zip(have).filter(|(_, h)| !**h).map(|(n, _)| *n).collect();
        msg(
            dir.join(missing[0]).display().to_string(),
            format!("incomplete signing CA bundle: missing {}", missing.join(", ")),
            format!("provide all of {} in {}", names.join(", "), dir.display()),
        )
    };
    if a.iter().all(|x| *x) {
        return Ok(Some(Layout::Istio));
    }
    if b.iter().all(|x| *x) {
        return Ok(Some(Layout::KubernetesTls));
    }
    if a.iter().any(|x| *x) {
        return Err(incomplete(&ISTIO_FILES, &a));
    }
    if b.iter().any(|x| *x) {
        return Err(incomplete(&TLS_FILES, &b));
    }
    Ok(None)
}

/// The key file whose presence decides plugged mode (for Istio's log lines).
pub fn key_path(dir: &Path, layout: Option<Layout>) -> PathBuf {
    match layout {
        Some(Layout::KubernetesTls) => dir.join("tls.key"),
        _ => dir.join("ca-key.pem"),
    }
}

fn read(dir: &Path, name: &str) -> Result<(String, Vec<u8>), MaterialError> {
    let path = dir.join(name);
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(b) => Ok((shown, b)),
        Err(e) => {
            Err(msg(shown, format!("cannot be read: {e}"), "check that the file exists and is readable by meshca"))
        }
    }
}

/// Read the named files of `dir` and validate them as one set. `chain` is
/// `None` when the signing certificate stands alone.
fn load_files(
    dir: &Path,
    cert: &str,
    key: &str,
    chain: Option<&str>,
    roots: &str,
    now: SystemTime,
) -> Result<CaMaterial, MaterialError> {
    let (cn, cert) = read(dir, cert)?;
    let (kn, key) = read(dir, key)?;
    let key = zeroize::Zeroizing::new(key);
    let chain = chain.map(|c| read(dir, c)).transpose()?;
    let (rn, roots) = read(dir, roots)?;
    let input = MaterialInput {
        cert: Part { name: &cn, pem: &cert },
        key: Part { name: &kn, pem: &key },
        chain: chain.as_ref().map(|(n, pem)| Part { name: n, pem }),
        roots: Part { name: &rn, pem: &roots },
    };
    CaMaterial::from_input(&input, now)
}

/// Load and validate the plug-in set of `dir` in `layout`.
pub fn load_plugged(dir: &Path, layout: Layout, now: SystemTime) -> Result<CaMaterial, MaterialError> {
    match layout {
        Layout::Istio => load_files(dir, "ca-cert.pem", "ca-key.pem", Some("cert-chain.pem"), "root-cert.pem", now),
        // tls.crt holds the signing certificate and whatever chain came with it.
        Layout::KubernetesTls => load_files(dir, "tls.crt", "tls.key", Some("tls.crt"), "ca.crt", now),
    }
}

/// Options of the self-signed root generated when nothing is plugged in.
#[derive(Debug, Clone)]
pub struct SelfSignedOptions {
    pub key: KeyKind,
    pub ttl: Duration,
    pub organization: String,
}

/// Load the self-signed root kept under `data_dir/ca/`, creating it on first
/// start. An existing but broken root is an error, never silently replaced:
/// replacing it would cut every workload off.
pub fn load_or_create_self_signed(
    data_dir: &Path,
    opts: &SelfSignedOptions,
    now: SystemTime,
) -> Result<(CaMaterial, bool), MaterialError> {
    let dir = data_dir.join("ca");
    let cert_path = dir.join("root-cert.pem");
    let key_path = dir.join("root-key.pem");
    if cert_path.exists() || key_path.exists() {
        return load_files(&dir, "root-cert.pem", "root-key.pem", None, "root-cert.pem", now).map(|m| (m, false));
    }
    let root = new_root(
        &AuthorityOptions {
            common_name: "meshca self-signed root".into(),
            organization: opts.organization.clone(),
            locality: None,
            ttl: opts.ttl,
            key: opts.key,
            path_len: None,
        },
        now,
    )
    .map_err(|e| msg(cert_path.display().to_string(), format!("could not create the self-signed root: {e}"), ""))?;
    let io = |p: &Path, e: std::io::Error| {
        msg(p.display().to_string(), format!("cannot be written: {e}"), "make the data directory writable by meshca")
    };
    fsutil::ensure_private_dir(&dir).map_err(|e| io(&dir, e))?;
    fsutil::write_secret(&key_path, root.key.to_pkcs8_pem().as_bytes()).map_err(|e| io(&key_path, e))?;
    fsutil::write_public(&cert_path, pem::cert_to_pem(&root.cert).as_bytes()).map_err(|e| io(&cert_path, e))?;
    let m = CaMaterial::self_signed(root)?;
    Ok((m, true))
}
