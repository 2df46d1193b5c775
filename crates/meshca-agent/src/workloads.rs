//! The workloads one agent serves. The primary workload (`--token-file`) is
//! the SDS resource `default`; every extra workload (`--workload NAME=FILE`,
//! `--workloads-file`) is served under its own NAME, with a certificate for
//! whatever identity the CA derives from its token. Extra certificates are
//! requested lazily, at the first SDS request naming them, and kept renewed
//! from then on.
//!
//! The workloads file is TOML:
//!
//! ```toml
//! [[workload]]
//! name = "reviews"
//! token_file = "tokens/reviews"   # relative to the file's directory
//! ```

use crate::caclient::Identity;
use crate::sds::{DEFAULT_RESOURCE, ROOT_RESOURCE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// At most this many workloads per agent.
pub const MAX_WORKLOADS: usize = 10_000;
/// A workloads file larger than this is refused.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Longest resource name.
pub const MAX_NAME_LEN: usize = 253;

/// One extra workload: its SDS resource name and its token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub token_file: PathBuf,
    /// Where it was configured (`--workload`, or `file:line`), for errors.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("reading the workloads file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the workloads file {path} is larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
    #[error("{origin}: {field}: {message}")]
    Invalid { origin: String, field: &'static str, message: String },
    #[error("{path}:{line}: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("more than {max} workloads")]
    TooMany { max: usize },
}

/// Check a resource name: not reserved, printable, no spaces or `=`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name == DEFAULT_RESOURCE || name == ROOT_RESOURCE {
        return Err(format!(
            "{name:?} is reserved (`default` is the primary workload of --token-file, `ROOTCA` the trust bundle)"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '=') {
        return Err(format!("{name:?} contains {c:?} (no spaces, control characters or '=')"));
    }
    Ok(())
}

/// `NAME=TOKEN_FILE`, as given to `--workload`.
pub fn parse_arg(s: &str) -> Result<Workload, String> {
    let (name, file) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=TOKEN_FILE"))?;
    check_name(name).map_err(|e| format!("workload name {e}"))?;
    if file.is_empty() {
        return Err(format!("workload {name:?} has an empty token file"));
    }
    Ok(Workload { name: name.into(), token_file: file.into(), origin: format!("--workload {name}") })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    workload: Vec<toml::Spanned<Entry>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: toml::Spanned<String>,
    token_file: toml::Spanned<String>,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// Parse a workloads file's text; relative token files are taken from `path`'s directory.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Workload>, WorkloadError> {
    let shown = path.display().to_string();
    let doc: FileDoc = toml::from_str(text).map_err(|e| WorkloadError::Syntax {
        path: shown.clone(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().trim().to_string(),
    })?;
    if doc.workload.len() > MAX_WORKLOADS {
        return Err(WorkloadError::TooMany { max: MAX_WORKLOADS });
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let mut out = Vec::with_capacity(doc.workload.len());
    for entry in doc.workload {
        let e = entry.into_inner();
        let at = |span: std::ops::Range<usize>| format!("{shown}:{}", line_of(text, span.start));
        check_name(e.name.get_ref()).map_err(|message| WorkloadError::Invalid {
            origin: at(e.name.span()),
            field: "workload.name",
            message,
        })?;
        if e.token_file.get_ref().is_empty() {
            return Err(WorkloadError::Invalid {
                origin: at(e.token_file.span()),
                field: "workload.token_file",
                message: "is empty".into(),
            });
        }
        let origin = at(e.name.span());
        let file = PathBuf::from(e.token_file.into_inner());
        let token_file = if file.is_relative() { base.join(file) } else { file };
        out.push(Workload { name: e.name.into_inner(), token_file, origin });
    }
    Ok(out)
}

/// Read and parse a workloads file.
pub fn read_file(path: &Path) -> Result<Vec<Workload>, WorkloadError> {
    let shown = path.display().to_string();
    let read = |source| WorkloadError::Read { path: shown.clone(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_FILE_BYTES {
        return Err(WorkloadError::TooLarge { path: shown, max: MAX_FILE_BYTES });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse_file(path, &text)
}

/// Every workload the agent may serve, by SDS resource name; `default` is the primary.
#[derive(Debug, Clone)]
pub struct WorkloadSet {
    primary: Identity,
    /// Extra workloads in the order configured.
    extra: Vec<Identity>,
    index: BTreeMap<String, usize>,
}

impl WorkloadSet {
    /// The primary workload and the extras; duplicate or reserved names are refused.
    pub fn new(primary_token: PathBuf, extra: Vec<Workload>) -> Result<Self, WorkloadError> {
        if extra.len() > MAX_WORKLOADS {
            return Err(WorkloadError::TooMany { max: MAX_WORKLOADS });
        }
        let mut index = BTreeMap::new();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        let mut ids = Vec::with_capacity(extra.len());
        for w in extra {
            check_name(&w.name).map_err(|message| WorkloadError::Invalid {
                origin: w.origin.clone(),
                field: "workload.name",
                message,
            })?;
            if let Some(first) = origins.get(&w.name) {
                return Err(WorkloadError::Invalid {
                    origin: w.origin,
                    field: "workload.name",
                    message: format!("{:?} is already configured at {first}", w.name),
                });
            }
            origins.insert(w.name.clone(), w.origin);
            index.insert(w.name.clone(), ids.len());
            ids.push(Identity { name: w.name, token_file: w.token_file });
        }
        let primary = Identity { name: DEFAULT_RESOURCE.to_string(), token_file: primary_token };
        Ok(Self { primary, extra: ids, index })
    }

    /// Only the primary workload.
    pub fn single(primary: Identity) -> Self {
        Self { primary, extra: Vec::new(), index: BTreeMap::new() }
    }

    pub fn primary(&self) -> &Identity {
        &self.primary
    }

    /// The workload served under resource `name`.
    pub fn get(&self, name: &str) -> Option<&Identity> {
        if name == self.primary.name {
            return Some(&self.primary);
        }
        self.index.get(name).map(|&i| &self.extra[i])
    }

    /// The primary, then the extras in the order configured.
    pub fn iter(&self) -> impl Iterator<Item = &Identity> {
        std::iter::once(&self.primary).chain(self.extra.iter())
    }

    pub fn len(&self) -> usize {
        1 + self.extra.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_entries_resolve_relative_paths_and_errors_name_file_line_field() {
        let p = Path::new("/etc/meshca/workloads.toml");
        let text = "[[workload]]\nname = \"a\"\ntoken_file = \"tok/a\"\n\n[[workload]]\nname = \"b\"\ntoken_file = \"/abs/b\"\n";
        let ws = parse_file(p, text).unwrap();
        assert_eq!(ws[0].token_file, PathBuf::from("/etc/meshca/tok/a"));
        assert_eq!(ws[1].token_file, PathBuf::from("/abs/b"));
        assert_eq!(ws[1].origin, "/etc/meshca/workloads.toml:6");

        let bad =
            "[[workload]]\nname = \"a\"\ntoken_file = \"x\"\n[[workload]]\nname = \"default\"\ntoken_file = \"y\"\n";
        let e = parse_file(p, bad).unwrap_err().to_string();
        assert!(e.starts_with("/etc/meshca/workloads.toml:5: workload.name: \"default\" is reserved"), "{e}");

        let missing = "[[workload]]\nname = \"a\"\n\n[[workload]]\nname = \"b\"\n";
        let e = parse_file(p, missing).unwrap_err().to_string();
        assert!(e.starts_with("/etc/meshca/workloads.toml:") && e.contains("token_file"), "{e}");

        let typo = "[[workload]]\nname = \"a\"\ntoken_fille = \"x\"\n";
        let e = parse_file(p, typo).unwrap_err().to_string();
        assert!(e.starts_with("/etc/meshca/workloads.toml:3:") && e.contains("token_fille"), "{e}");

        let e = parse_file(p, "[[workload]]\nname = 3\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/meshca/workloads.toml:2:"), "{e}");
    }

    #[test]
    fn duplicates_reserved_names_and_bad_args_are_refused() {
        assert!(parse_arg("ROOTCA=/t").unwrap_err().contains("reserved"));
        assert!(parse_arg("noequals").is_err());
        assert!(parse_arg("a b=/t").is_err());
        assert!(parse_arg("a=").is_err());
        let a = parse_arg("a=/t/a").unwrap();
        let mut dup = parse_arg("a=/t/other").unwrap();
        dup.origin = "w.toml:9".into();
        let e = WorkloadSet::new("/t/primary".into(), vec![a.clone(), dup]).unwrap_err().to_string();
        assert_eq!(e, "w.toml:9: workload.name: \"a\" is already configured at --workload a");
        let set = WorkloadSet::new("/t/primary".into(), vec![a]).unwrap();
        assert_eq!(set.get("default").map(|i| i.token_file.clone()), Some(PathBuf::from("/t/primary")));
        assert_eq!(set.get("a").map(|i| i.name.as_str()), Some("a"));
        assert!(set.get("ROOTCA").is_none() && set.get("b").is_none());
        assert_eq!(set.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["default", "a"]);
    }
}
