//! Code generation for `proto/istio/v1/auth/ca.proto` (Istio's CA API) and
//! `proto/meshca/v1/events.proto` (meshca's change stream), and a check that
//! the committed output in `src/generated/` is up to date.
//!
//! The generated Rust is committed so that building `meshca-proto` needs
//! neither `protoc` nor a build script. The `.proto` is compiled in-process by
//! `protox` (which bundles the protobuf well-known types, so
//! `google.protobuf.Struct` resolves without a system include path), and the
//! resulting `FileDescriptorSet` is handed to `tonic-prost-build`.
//!
//! Regenerate the committed file after editing the `.proto` (or after bumping
//! `prost`/`tonic` code generators) with:
//!
//! ```text
//! MESHCA_REGENERATE_PROTO=1 cargo test -p meshca-proto --test drift
//! ```

use std::fs;
use std::path::{Path, PathBuf};

/// Environment variable that switches the test from "check" to "overwrite".
const REGENERATE_ENV: &str = "MESHCA_REGENERATE_PROTO";

/// The command printed when the committed file is stale.
const REGENERATE_CMD: &str = "MESHCA_REGENERATE_PROTO=1 cargo test -p meshca-proto --test drift";

/// The proto files and the package each defines; prost names its output file after the package.
const PROTOS: [(&str, &[&str], &str); 2] = [
    ("istio/v1/auth/ca.proto", &["istio/v1/auth/ca.proto"], "istio.v1.auth"),
    ("meshca/v1/*.proto", &["meshca/v1/events.proto", "meshca/v1/policy.proto"], "meshca.v1"),
];

/// Header prepended to the generator output in the committed file.
fn header(file: &str) -> String {
    format!(
        "// Generated from proto/{file} by crates/meshca-proto/tests/drift.rs.\n\
         // Do not edit by hand. Regenerate with:\n//\n//     {REGENERATE_CMD}\n//\n"
    )
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn proto_dir() -> PathBuf {
    crate_dir().join("proto")
}

fn committed_path(package: &str) -> PathBuf {
    crate_dir().join("src").join("generated").join(format!("{package}.rs"))
}

/// Runs the full generation pipeline into `out_dir` and returns the text that
/// belongs in the committed file.
fn generate(out_dir: &Path, file: &str, files: &[&str], package: &str) -> String {
    let fds = protox::Compiler::new([proto_dir()])
        .expect("create protox compiler")
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)
        .unwrap_or_else(|e| panic!("compile {file} with protox: {e:?}"))
        .file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // Default anyway (well-known types map to `::prost_types`); explicit so
        // the mapping of `google.protobuf.Struct` is obvious.
        .compile_well_known_types(false)
        .extern_path(".google.protobuf.Struct", "::prost_types::Struct")
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("generate Rust code with tonic-prost-build");

    let generated = out_dir.join(format!("{package}.rs"));
    let body = fs::read_to_string(&generated).unwrap_or_else(|e| panic!("read generated {}: {e}", generated.display()));
    format!("{}{body}", header(file))
}

/// Normalises line endings so a CRLF checkout does not count as drift.
fn normalize(s: &str) -> String {
    s.replace("\r\n", "\n")
}

/// Describes the difference as a single hunk: everything between the longest
/// common prefix and the longest common suffix, with a little context.
fn describe_difference(committed: &str, fresh: &str) -> String {
    const CONTEXT: usize = 3;
    const MAX_SHOWN: usize = 20;

    let old: Vec<&str> = committed.lines().collect();
    let new: Vec<&str> = fresh.lines().collect();
    let prefix = old.iter().zip(new.iter()).take_while(|(a, b)| a == b).count();
    let max_suffix = old.len().min(new.len()) - prefix;
    let suffix = old.iter().rev().zip(new.iter().rev()).take(max_suffix).take_while(|(a, b)| a == b).count();
    let old_changed = &old[prefix..old.len() - suffix];
    let new_changed = &new[prefix..new.len() - suffix];

    let mut out = format!(
        "@@ -{},{} +{},{} @@ (committed: {} lines, generated: {} lines)\n",
        prefix + 1,
        old_changed.len(),
        prefix + 1,
        new_changed.len(),
        old.len(),
        new.len()
    );
    let mut push_lines = |sign: char, lines: &[&str]| {
        for line in lines.iter().take(MAX_SHOWN) {
            out.push(sign);
            out.push_str(line);
            out.push('\n');
        }
        if lines.len() > MAX_SHOWN {
            out.push_str(&format!("{sign}... {} more lines\n", lines.len() - MAX_SHOWN));
        }
    };
    push_lines(' ', &old[prefix.saturating_sub(CONTEXT)..prefix]);
    push_lines('-', old_changed);
    push_lines('+', new_changed);
    let tail = old.len() - suffix;
    push_lines(' ', &old[tail..(tail + CONTEXT).min(old.len())]);
    out.insert_str(0, "--- committed\n+++ generated\n");
    out
}

#[test]
fn generated_code_is_up_to_date() {
    for (file, files, package) in PROTOS {
        check(file, files, package);
    }
}

fn check(file: &str, files: &[&str], package: &str) {
    let tmp = tempfile::tempdir().expect("create tempdir");
    let fresh = generate(tmp.path(), file, files, package);
    let path = committed_path(package);

    if std::env::var_os(REGENERATE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        fs::create_dir_all(path.parent().expect("generated dir has a parent")).expect("create src/generated");
        fs::write(&path, &fresh).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("regenerated {}", path.display());
        return;
    }

    let committed = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read committed generated code {}: {e}\nregenerate it with:\n    {REGENERATE_CMD}",
            path.display()
        )
    });

    if normalize(&committed) != normalize(&fresh) {
        panic!(
            "{} is out of date with proto/{file} or the code generators.\n\
             Regenerate it with:\n    {REGENERATE_CMD}\n\n{}",
            path.display(),
            describe_difference(&normalize(&committed), &normalize(&fresh)),
        );
    }
}
