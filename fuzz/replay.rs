//! Corpus replay shared by the test suites (`crates/*/tests/fuzz_corpus.rs`
//! include this file with `#[path]`): every file of `fuzz/corpus/<target>/`
//! is fed to the same call as the fuzz target, and a panic names the input.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `fuzz/` at the repository root (tests run from `crates/<crate>`).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// A file under `fuzz/`, e.g. `keys/jwks.json`; a missing file is a loud failure.
pub fn fuzz_file(rel: &str) -> Vec<u8> {
    let path = fuzz_dir().join(rel);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}): the fuzz corpus is part of the tree", path.display()))
}

/// One named input of a target's corpus.
pub fn input(target: &str, name: &str) -> Vec<u8> {
    fuzz_file(&format!("corpus/{target}/{name}"))
}

/// Feed every input of `fuzz/corpus/<target>/` to `check`; panics naming each
/// input that panicked. Returns the number of inputs (a missing or empty
/// corpus directory is a failure).
pub fn replay(target: &str, mut check: impl FnMut(&Path, &[u8])) -> usize {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing ({e}); see scripts/fuzz.sh", dir.display()));
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("readable corpus directory").path()).collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        assert!(data.len() <= 16 * 1024, "corpus input {} is over 16 KiB", path.display());
        if catch_unwind(AssertUnwindSafe(|| check(path, &data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{} corpus input(s) of {target} panicked: {failed:#?}", failed.len());
    files.len()
}
