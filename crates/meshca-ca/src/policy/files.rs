//! Reading policy files from disk, shared by `meshca serve --policy-dir` and
//! the `meshca policy` verbs: files as given, directories walked for
//! `.yaml`/`.yml`/`.json`, sorted, size-capped.
//!
//! Entries whose name starts with `.` are skipped: in a Kubernetes ConfigMap
//! mount the `..data` link and the `..<timestamp>` directory repeat the
//! visible files, which would otherwise be loaded twice.

use std::path::{Path, PathBuf};

/// Largest policy file read (the loader has its own, finer limits).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// Most files read under the given paths.
pub const MAX_FILES: usize = 10_000;
/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {len} bytes is larger than the {MAX_FILE}-byte limit")]
    TooLarge { path: String, len: u64 },
    #[error("more than {MAX_FILES} policy files under {0}")]
    TooMany(String),
    #[error("{0}: directories nested too deep")]
    TooDeep(String),
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: p.display().to_string(), source }
}

/// A text file, size-capped.
pub fn read_text(p: &Path) -> Result<String, FileError> {
    let meta = std::fs::metadata(p).map_err(io(p))?;
    if meta.len() > MAX_FILE {
        return Err(FileError::TooLarge { path: p.display().to_string(), len: meta.len() });
    }
    std::fs::read_to_string(p).map_err(io(p))
}

/// The files under `paths`: files as given, directories walked for .yaml/.yml/.json, sorted.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FileError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(io(p))?;
        if meta.is_dir() {
            walk(p, &mut out, 0)?;
        } else {
            out.push(p.clone());
        }
    }
    if out.len() > MAX_FILES {
        return Err(FileError::TooMany(paths.first().map(|p| p.display().to_string()).unwrap_or_default()));
    }
    Ok(out)
}

/// Is `name` a policy file name (`.yaml`, `.yml` or `.json`, not hidden)?
pub fn is_policy_file(name: &str) -> bool {
    !name.starts_with('.')
        && matches!(Path::new(name).extension().and_then(|x| x.to_str()), Some("yaml" | "yml" | "json"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), FileError> {
    if depth > MAX_DEPTH {
        return Err(FileError::TooDeep(dir.display().to_string()));
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            walk(&e, out, depth + 1)?;
        } else if e.file_name().and_then(|n| n.to_str()).is_some_and(is_policy_file) {
            out.push(e);
        }
        if out.len() > MAX_FILES {
            return Err(FileError::TooMany(dir.display().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_data_entries_are_not_read_twice() {
        let d = tempfile::tempdir().unwrap();
        let ts = d.path().join("..2026_01_01");
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("a.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(&ts, d.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(d.path().join("..data/a.yaml"), d.path().join("a.yaml")).unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/b.json"), "{}").unwrap();
        let files = policy_files(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(files, vec![d.path().join("a.yaml"), d.path().join("sub/b.json")]);
        assert!(matches!(read_text(&d.path().join("missing.yaml")), Err(FileError::Io { .. })));
    }
}
