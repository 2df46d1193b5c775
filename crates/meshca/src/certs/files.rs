//! File handling shared by the `certs` subcommands: reading PEM inputs with
//! errors that name the file, refusing to clobber outputs, and atomic writes.

use anyhow::{bail, Context as _};
use meshca_ca::fsutil;
use meshca_pki::CertDer;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The last second X.509 (GeneralizedTime) and our date handling can express:
/// 9999-12-31T23:59:59Z.
const MAX_NOT_AFTER_UNIX: u64 = 253_402_300_799;

/// Parse a `--ttl` such as `87600h`, `90d` or `1y 6months` (humantime syntax).
pub(super) fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 87600h, 365d, 90d 12h)"))?;
    if d.is_zero() {
        return Err("the lifetime must be longer than zero".into());
    }
    Ok(d)
}

/// Check that `now + ttl` is a date a certificate can carry.
pub(super) fn check_ttl(now: SystemTime, ttl: Duration) -> anyhow::Result<()> {
    let max = SystemTime::UNIX_EPOCH + Duration::from_secs(MAX_NOT_AFTER_UNIX);
    match now.checked_add(ttl) {
        Some(t) if t <= max => Ok(()),
        _ => bail!(
            "--ttl {} is too long: the certificate would expire after the year 9999",
            humantime::format_duration(ttl)
        ),
    }
}

/// Read a whole file; the error names it.
pub(super) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Read a file and parse every PEM certificate in it; an unreadable file or
/// one without certificates is an error naming the file.
pub(super) fn read_certs(path: &Path) -> anyhow::Result<Vec<CertDer>> {
    let pem = read(path)?;
    meshca_pki::pem::parse_certs(&pem).with_context(|| format!("{}", path.display()))
}

/// Fail, naming every file in `paths` that already exists, unless `force`.
pub(super) fn refuse_existing(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    // symlink_metadata: a dangling symlink is in the way too.
    let existing: Vec<String> =
        paths.iter().filter(|p| std::fs::symlink_metadata(p).is_ok()).map(|p| p.display().to_string()).collect();
    match existing.as_slice() {
        [] => Ok(()),
        [one] => {
            bail!("{one} already exists; refusing to overwrite it (pass --force to replace it)")
        }
        many => bail!("{} already exist; refusing to overwrite them (pass --force to replace them)", many.join(", ")),
    }
}

/// Create an output directory (mode 0700 when we create it); fail if the
/// path exists and is not a directory.
pub(super) fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} exists and is not a directory", dir.display());
    }
    fsutil::ensure_private_dir(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

/// One file to write.
pub(super) struct Output<'a> {
    pub path: PathBuf,
    pub bytes: &'a [u8],
    /// Private key: mode 0600 instead of 0644.
    pub secret: bool,
}

impl<'a> Output<'a> {
    pub fn public(path: PathBuf, bytes: &'a [u8]) -> Self {
        Self { path, bytes, secret: false }
    }
    pub fn secret(path: PathBuf, bytes: &'a [u8]) -> Self {
        Self { path, bytes, secret: true }
    }
}

/// Write every output atomically, in order; the error names the file.
pub(super) fn write_all(outputs: &[Output<'_>]) -> anyhow::Result<()> {
    for o in outputs {
        let written =
            if o.secret { fsutil::write_secret(&o.path, o.bytes) } else { fsutil::write_public(&o.path, o.bytes) };
        written.with_context(|| format!("cannot write {}", o.path.display()))?;
    }
    Ok(())
}

/// "1 certificate", "2 certificates".
pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
