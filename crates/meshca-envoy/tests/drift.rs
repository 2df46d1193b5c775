//! Generates `src/envoy_descriptors.bin` (a binary `FileDescriptorSet` without source info) from the
//! Envoy `.proto` sources that ship inside the `envoy-types` package, and checks that the committed
//! file is up to date. The protos are compiled in-process by `protox`.
//!
//! Regenerate after changing `DESCRIPTOR_ROOTS` or bumping `envoy-types` with:
//!
//! ```text
//! MESHCA_REGENERATE_PROTO=1 cargo test -p meshca-envoy --test drift
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;

const REGENERATE_ENV: &str = "MESHCA_REGENERATE_PROTO";
const REGENERATE_CMD: &str = "MESHCA_REGENERATE_PROTO=1 cargo test -p meshca-envoy --test drift";

/// Include directories under envoy-types' `proto/`, in the order protox searches them.
const INCLUDE_DIRS: &[&str] =
    &["data-plane-api", "xds", "protoc-gen-validate", "googleapis", "cel-spec", "opentelemetry-proto", "client_model"];

/// The `proto/` directory of the `envoy-types` package this workspace resolves, found through
/// `cargo metadata` (works for any CARGO_HOME or vendored source).
fn envoy_types_proto_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("run `{cargo} metadata`: {e}"));
    assert!(out.status.success(), "`cargo metadata` failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages list")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types is a dependency of meshca-envoy");
    let dir = Path::new(manifest).parent().expect("manifest has a parent").join("proto");
    assert!(dir.join("data-plane-api").is_dir(), "{} has no data-plane-api protos", dir.display());
    dir
}

fn generate() -> Vec<u8> {
    let root = envoy_types_proto_dir();
    let includes: Vec<PathBuf> = INCLUDE_DIRS.iter().map(|d| root.join(d)).filter(|d| d.is_dir()).collect();
    let mut fds = protox::Compiler::new(includes)
        .expect("create protox compiler")
        .include_source_info(false)
        .include_imports(true)
        .open_files(meshca_envoy::DESCRIPTOR_ROOTS)
        .unwrap_or_else(|e| panic!("compile Envoy protos with protox: {e:?}"))
        .file_descriptor_set();
    fds.file.sort_by(|a, b| a.name.cmp(&b.name));
    fds.encode_to_vec()
}

#[test]
fn descriptor_set_is_up_to_date() {
    let fresh = generate();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/envoy_descriptors.bin");
    if std::env::var_os(REGENERATE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("regenerated {} ({} bytes)", path.display(), fresh.len());
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        committed == fresh,
        "{} is out of date ({} bytes committed, {} generated); regenerate it with:\n    {REGENERATE_CMD}",
        path.display(),
        committed.len(),
        fresh.len()
    );
    assert_eq!(committed.as_slice(), meshca_envoy::ENVOY_DESCRIPTORS, "the crate embeds the file it checks");
}
