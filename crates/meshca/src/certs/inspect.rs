//! `meshca certs inspect`: istiod's one-line view of each certificate, with
//! details on request, or everything as JSON.

use super::files;
use anyhow::Context as _;
use clap::ValueEnum;
use meshca_pki::inspect::{cert_info, istiod_line, CertInfo};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// istiod's log line per certificate.
    Text,
    /// A JSON array: one object per certificate, with its file and index (from 0).
    Json,
}

#[derive(clap::Args)]
pub(crate) struct InspectArgs {
    /// Also show SANs, key usages, CA constraints, key, fingerprint, validity and issuer.
    #[arg(long, short)]
    verbose: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// PEM files to inspect; every certificate in each is shown.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// One certificate in `--output json`.
#[derive(Serialize)]
struct JsonCert {
    file: String,
    /// Position of the certificate in its file, from 0.
    index: usize,
    #[serde(flatten)]
    info: CertInfo,
}

struct Parsed {
    file: String,
    index: usize,
    line: String,
    info: CertInfo,
}

pub(crate) fn run(args: InspectArgs) -> anyhow::Result<()> {
    // Parse everything first so that a bad file prints nothing half-way.
    let mut certs = Vec::new();
    for path in &args.files {
        let file = path.display().to_string();
        for (index, der) in files::read_certs(path)?.into_iter().enumerate() {
            let what = || format!("{file}: certificate #{}", index + 1);
            let line = istiod_line(&der).with_context(what)?;
            let info = cert_info(&der).with_context(what)?;
            certs.push(Parsed { file: file.clone(), index, line, info });
        }
    }
    let mut out = String::new();
    match args.output {
        Format::Json => {
            let json: Vec<JsonCert> =
                certs.into_iter().map(|c| JsonCert { file: c.file, index: c.index, info: c.info }).collect();
            out = serde_json::to_string_pretty(&json)?;
            out.push('\n');
        }
        Format::Text => {
            let now = unix_now();
            let headers = args.files.len() > 1;
            let mut last_file: Option<&str> = None;
            for c in &certs {
                if headers && last_file != Some(c.file.as_str()) {
                    if last_file.is_some() {
                        out.push('\n');
                    }
                    let _ = writeln!(out, "# {}", c.file);
                    last_file = Some(&c.file);
                }
                let _ = writeln!(out, "{}", c.line);
                if args.verbose {
                    for l in details(&c.info, now) {
                        let _ = writeln!(out, "    {l}");
                    }
                }
            }
        }
    }
    print_stdout(&out)
}

/// Write to stdout; a closed pipe (`meshca certs inspect ... | head`) is not an error.
fn print_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("writing to stdout")),
        _ => Ok(()),
    }
}

fn unix_now() -> i64 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The `--verbose` lines for one certificate.
fn details(info: &CertInfo, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    let sans: Vec<String> = info
        .dns_names
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(info.uris.iter().map(|u| format!("URI:{u}")))
        .chain(info.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    out.push(format!("SANs: {}", list(&sans)));
    if let Some(id) = &info.spiffe_id {
        out.push(format!("SPIFFE ID: {id}"));
    }
    out.push(format!("Key usage: {}", list(&info.key_usage)));
    out.push(format!("Extended key usage: {}", list(&info.extended_key_usage)));
    if info.is_ca {
        let path_len = info.path_len.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        out.push(format!("CA: true, path length: {path_len}"));
    } else {
        out.push("CA: false".into());
    }
    out.push(format!("Key: {}", info.key));
    out.push(format!("SHA-256 fingerprint: {}", colon_hex(&info.sha256_fingerprint)));
    out.push(format!("Validity: {} to {} ({})", info.not_before, info.not_after, validity(info, now)));
    out.push(format!("Self-signed: {}", if info.self_signed { "yes" } else { "no" }));
    out
}

/// `ab12...` as `AB:12:...`, the way `openssl x509 -fingerprint` prints it.
fn colon_hex(hex: &str) -> String {
    let upper = hex.to_ascii_uppercase();
    let pairs: Vec<&str> = upper.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap_or("??")).collect();
    pairs.join(":")
}

fn validity(info: &CertInfo, now: i64) -> String {
    const DAY: i64 = 86_400;
    if now < info.not_before_unix {
        format!("not yet valid, starts in {}", days(info.not_before_unix - now))
    } else if now >= info.not_after_unix {
        format!("EXPIRED {} ago", days(now - info.not_after_unix))
    } else {
        let left = info.not_after_unix - now;
        if left < DAY {
            format!("valid, expires in {}h", left / 3600)
        } else {
            format!("valid, {} left", days(left))
        }
    }
}

fn days(secs: i64) -> String {
    let d = secs / 86_400;
    if d == 1 {
        "1 day".into()
    } else if d == 0 {
        "less than a day".into()
    } else {
        format!("{d} days")
    }
}
