//! Replays the fuzz corpus of the `meshca serve` TOML file
//! (fuzz/corpus/serve_config, fuzzed with a mirror of these types in
//! fuzz/src/config.rs) through the real parser: no input panics, and the named
//! seeds keep their verdicts.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use super::ServeArgs;
use std::path::Path;

fn resolve(path: &Path) -> anyhow::Result<meshca_ca::config::ServeConfig> {
    ServeArgs { config: Some(path.to_path_buf()), ..Default::default() }.resolve()
}

#[test]
fn serve_config_corpus_resolves_or_errors() {
    let n = replay::replay("serve_config", |path, _| drop(resolve(path)));
    assert!(n >= 10, "serve_config corpus has only {n} inputs");
    let seed = |name: &str| resolve(&replay::fuzz_dir().join("corpus/serve_config").join(name));
    let full = seed("full.toml").expect("full.toml is a valid config");
    assert_eq!((full.trust_domain.as_str(), full.jwt_issuers.len()), ("cluster.local", 2));
    assert!(full.vault.is_some());
    seed("minimal.toml").expect("minimal.toml is a valid config");
    for bad in [
        "unknown_key.toml",
        "unknown_vault_key.toml",
        "negative_size.toml",
        "overflow_u32.toml",
        "duration_overflow.toml",
        "bad_addr.toml",
        "bad_key.toml",
        "bad_trust_domain.toml",
        "dup_table.toml",
        "bad_escape.toml",
        "wrong_type.toml",
    ] {
        assert!(seed(bad).is_err(), "{bad}: accepted");
    }
}
