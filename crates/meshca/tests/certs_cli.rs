//! End-to-end tests of `meshca certs`: the real binary in temporary
//! directories, with every result checked independently by the `openssl` CLI.
//! These tests require `openssl` on PATH and fail (never skip) without it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn meshca(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshca")).args(args).output().expect("running the meshca binary")
}

/// Run meshca, require success, return stdout.
fn ok(args: &[&str]) -> String {
    let out = meshca(args);
    assert!(out.status.success(), "meshca {args:?} failed\n{}", show(&out));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Run meshca, require exit status 1, return stderr.
fn fails(args: &[&str]) -> String {
    let out = meshca(args);
    assert_eq!(out.status.code(), Some(1), "meshca {args:?} should have failed\n{}", show(&out));
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(stderr.starts_with("error: "), "stderr should start with 'error: ': {stderr}");
    stderr
}

fn openssl_output(args: &[&str]) -> Output {
    match Command::new("openssl").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the `openssl` command-line tool is required by the certs_cli tests but was not found on PATH; install it (e.g. apt-get install openssl)"
        ),
        Err(e) => panic!("running openssl {args:?}: {e}"),
    }
}

/// Run openssl, require success, return stdout.
fn openssl(args: &[&str]) -> String {
    let out = openssl_output(args);
    assert!(out.status.success(), "openssl {args:?} failed\n{}", show(&out));
    String::from_utf8(out.stdout).expect("utf-8 openssl output")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// `-subject` or `-issuer` in RFC 2253 form, which lists the last RDN first
/// like istiod (Go) does: `CN=Root CA,O=Istio`.
fn name(p: &Path, which: &str) -> String {
    let out = openssl(&["x509", "-in", s(p), "-noout", &format!("-{which}"), "-nameopt", "RFC2253"]);
    out.trim().strip_prefix(&format!("{which}=")).expect("name=value").to_string()
}

fn x509_text(p: &Path) -> String {
    openssl(&["x509", "-in", s(p), "-noout", "-text"])
}

/// openssl's `notAfter=Nov 25 16:38:16 2026 GMT` as a sortable (year, month, day, time) tuple.
fn openssl_date(p: &Path, which: &str) -> (u32, u32, u32, String) {
    let out = openssl(&["x509", "-in", s(p), "-noout", &format!("-{which}")]);
    let value = out.trim().split_once('=').expect("name=value").1;
    let f: Vec<&str> = value.split_whitespace().collect();
    assert_eq!(f.len(), 5, "unexpected openssl date {value:?}");
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == f[0]).expect("month") as u32 + 1;
    (f[3].parse().unwrap(), month, f[1].parse().unwrap(), f[2].to_string())
}

/// The same date from an RFC 3339 string such as `2026-11-25T16:38:16Z`.
fn rfc3339_date(v: &str) -> (u32, u32, u32, String) {
    (v[0..4].parse().unwrap(), v[5..7].parse().unwrap(), v[8..10].parse().unwrap(), v[11..19].to_string())
}

fn openssl_serial(p: &Path) -> String {
    let out = openssl(&["x509", "-in", s(p), "-noout", "-serial"]);
    let hex = out.trim().strip_prefix("serial=").expect("serial=...");
    let hex = hex.trim_start_matches('0').to_ascii_lowercase();
    if hex.is_empty() {
        "0".into()
    } else {
        hex
    }
}

fn is_rfc3339_utc(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// One istiod line, split into its fields after checking the exact shape
/// `x509 cert - Issuer: "...", Subject: "...", SN: <hex>, NotBefore: "<rfc3339>", NotAfter: "<rfc3339>"`.
struct Line {
    issuer: String,
    subject: String,
    serial: String,
    not_before: String,
    not_after: String,
}

fn bad_line<T>(line: &str) -> T {
    panic!("not in istiod's format: {line:?}")
}

fn parse_line(line: &str) -> Line {
    let rest = line.strip_prefix("x509 cert - Issuer: \"").unwrap_or_else(|| bad_line(line));
    let (issuer, rest) = rest.split_once("\", Subject: \"").unwrap_or_else(|| bad_line(line));
    let (subject, rest) = rest.split_once("\", SN: ").unwrap_or_else(|| bad_line(line));
    let (serial, rest) = rest.split_once(", NotBefore: \"").unwrap_or_else(|| bad_line(line));
    let (not_before, rest) = rest.split_once("\", NotAfter: \"").unwrap_or_else(|| bad_line(line));
    let not_after = rest.strip_suffix('"').unwrap_or_else(|| bad_line(line));
    assert!(
        !serial.is_empty()
            && serial.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            && (serial == "0" || !serial.starts_with('0')),
        "SN must be lowercase hex without leading zeros: {line:?}"
    );
    assert!(is_rfc3339_utc(not_before) && is_rfc3339_utc(not_after), "bad timestamps: {line:?}");
    Line {
        issuer: issuer.into(),
        subject: subject.into(),
        serial: serial.into(),
        not_before: not_before.into(),
        not_after: not_after.into(),
    }
}

fn cert_lines(stdout: &str) -> Vec<Line> {
    stdout.lines().filter(|l| l.starts_with("x509 cert")).map(parse_line).collect()
}

fn count_certs(p: &Path) -> usize {
    fs::read_to_string(p).unwrap().matches("-----BEGIN CERTIFICATE-----").count()
}

struct Pki {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
}

/// A root (valid 48h) and intermediates for cluster1 (default --ttl) and
/// cluster2 (--ttl 87600h), both longer than the root's lifetime.
fn pki() -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let root = dir.join("root");
    ok(&["certs", "root", "--out", s(&root), "--ttl", "48h"]);
    ok(&["certs", "intermediate", "--root", s(&root), "--out", s(&dir.join("cluster1")), "--cluster", "cluster1"]);
    ok(&[
        "certs",
        "intermediate",
        "--root",
        s(&root),
        "--out",
        s(&dir.join("cluster2")),
        "--cluster",
        "cluster2",
        "--ttl",
        "87600h",
    ]);
    Pki { _tmp: tmp, dir, root }
}

#[test]
fn root_and_intermediates_verify_with_openssl() {
    let p = pki();
    let root_cert = p.root.join("root-cert.pem");
    assert_eq!(mode(&p.root.join("root-key.pem")), 0o600);
    assert_eq!(mode(&root_cert), 0o644);
    let root_text = x509_text(&root_cert);
    assert_eq!(name(&root_cert, "subject"), "CN=Root CA,O=Istio");
    assert!(root_text.contains("CA:TRUE"), "{root_text}");
    let root_not_after = openssl_date(&root_cert, "enddate");

    for cluster in ["cluster1", "cluster2"] {
        let d = p.dir.join(cluster);
        let ca_cert = d.join("ca-cert.pem");
        let verified = openssl(&["verify", "-CAfile", s(&root_cert), s(&ca_cert)]);
        assert!(verified.contains(": OK"), "{verified}");

        let text = x509_text(&ca_cert);
        assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert_eq!(name(&ca_cert, "subject"), format!("CN=Intermediate CA - {cluster},O=Istio,L={cluster}"));
        assert_eq!(name(&ca_cert, "issuer"), "CN=Root CA,O=Istio");

        // Both --ttl values outlive the 48h root: NotAfter is clamped to the root's.
        let not_after = openssl_date(&ca_cert, "enddate");
        assert!(not_after <= root_not_after, "{cluster}: {not_after:?} > root {root_not_after:?}");

        assert_eq!(mode(&d.join("ca-key.pem")), 0o600);
        for public in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
            assert_eq!(mode(&d.join(public)), 0o644, "{public}");
        }
        // Istio's layout: cert-chain.pem = ca-cert.pem + root-cert.pem; root-cert.pem = the root.
        let chain = fs::read_to_string(d.join("cert-chain.pem")).unwrap();
        let expected = fs::read_to_string(&ca_cert).unwrap() + &fs::read_to_string(&root_cert).unwrap();
        assert_eq!(chain, expected);
        assert_eq!(fs::read(d.join("root-cert.pem")).unwrap(), fs::read(&root_cert).unwrap());

        // openssl can sign with ca-key.pem, and the leaf verifies through the chain.
        let ext = d.join("leaf.ext");
        fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=DNS:web.example,URI:spiffe://cluster.local/ns/default/sa/web\n",
        )
        .unwrap();
        let (csr, leaf_key, leaf) = (d.join("leaf.csr"), d.join("leaf-key.pem"), d.join("leaf.pem"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&leaf_key),
            "-subj",
            "/CN=web",
            "-out",
            s(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca_cert),
            "-CAkey",
            s(&d.join("ca-key.pem")),
            "-set_serial",
            "7",
            "-days",
            "1",
            "-extfile",
            s(&ext),
            "-out",
            s(&leaf),
        ]);
        let verified =
            openssl(&["verify", "-CAfile", s(&root_cert), "-untrusted", s(&d.join("cert-chain.pem")), s(&leaf)]);
        assert!(verified.contains(": OK"), "{verified}");

        let verbose = ok(&["certs", "inspect", "--verbose", s(&leaf)]);
        assert!(verbose.contains("    SPIFFE ID: spiffe://cluster.local/ns/default/sa/web"), "{verbose}");
        assert!(verbose.contains("DNS:web.example"), "{verbose}");
        assert!(verbose.contains("Extended key usage: serverAuth, clientAuth"), "{verbose}");
        assert!(verbose.contains("CA: false"), "{verbose}");
        assert!(verbose.contains("Self-signed: no"), "{verbose}");
    }
}

#[test]
fn key_types_are_what_openssl_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = tmp.path().join("east");
    ok(&["certs", "root", "--out", s(&root), "--key", "rsa-2048", "--cn", "RSA Root", "--org", "Example"]);
    ok(&[
        "certs",
        "intermediate",
        "--root",
        s(&root),
        "--out",
        s(&out),
        "--cluster",
        "east",
        "--key",
        "ec-p384",
        "--org",
        "Example",
    ]);

    let root_key = openssl(&["pkey", "-in", s(&root.join("root-key.pem")), "-noout", "-text"]);
    assert!(root_key.contains("Private-Key: (2048 bit"), "{root_key}");
    let root_text = x509_text(&root.join("root-cert.pem"));
    assert!(root_text.contains("rsaEncryption") && root_text.contains("(2048 bit)"), "{root_text}");
    assert_eq!(name(&root.join("root-cert.pem"), "subject"), "CN=RSA Root,O=Example");

    let ca_key = openssl(&["pkey", "-in", s(&out.join("ca-key.pem")), "-noout", "-text"]);
    assert!(ca_key.contains("Private-Key: (384 bit)"), "{ca_key}");
    assert!(ca_key.contains("secp384r1") || ca_key.contains("P-384"), "{ca_key}");
    let ca_text = x509_text(&out.join("ca-cert.pem"));
    assert!(ca_text.contains("id-ecPublicKey") && ca_text.contains("(384 bit)"), "{ca_text}");
    assert_eq!(name(&out.join("ca-cert.pem"), "subject"), "CN=Intermediate CA - east,O=Example,L=east");
    let verified = openssl(&["verify", "-CAfile", s(&root.join("root-cert.pem")), s(&out.join("ca-cert.pem"))]);
    assert!(verified.contains(": OK"), "{verified}");

    let verbose = ok(&["certs", "inspect", "-v", s(&out.join("ca-cert.pem")), s(&root.join("root-cert.pem"))]);
    assert!(verbose.contains("Key: ECDSA P-384"), "{verbose}");
    assert!(verbose.contains("Key: RSA 2048"), "{verbose}");
}

#[test]
fn existing_outputs_are_not_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(&["certs", "root", "--out", s(&root)]);
    let files = ["root-cert.pem", "root-key.pem"].map(|f| root.join(f));
    let before = files.clone().map(|f| fs::read(f).unwrap());

    let err = fails(&["certs", "root", "--out", s(&root)]);
    assert!(err.contains("root-key.pem") && err.contains("--force"), "{err}");
    assert_eq!(files.clone().map(|f| fs::read(f).unwrap()), before, "files changed without --force");

    // A key alone is in the way too.
    fs::remove_file(&files[0]).unwrap();
    let err = fails(&["certs", "root", "--out", s(&root)]);
    assert!(err.contains("root-key.pem") && err.contains("--force"), "{err}");
    assert!(!files[0].exists());

    ok(&["certs", "root", "--out", s(&root), "--force"]);
    assert_ne!(fs::read(&files[1]).unwrap(), before[1], "--force should replace the key");
    assert_eq!(mode(&files[1]), 0o600);

    let out = tmp.path().join("c1");
    let args = ["certs", "intermediate", "--root", s(&root), "--out", s(&out), "--cluster", "c1"];
    ok(&args);
    let key_before = fs::read(out.join("ca-key.pem")).unwrap();
    let err = fails(&args);
    assert!(err.contains("ca-key.pem") && err.contains("--force"), "{err}");
    assert_eq!(fs::read(out.join("ca-key.pem")).unwrap(), key_before);
    ok(&[&args[..], &["--force"]].concat());
    assert_ne!(fs::read(out.join("ca-key.pem")).unwrap(), key_before);
}

#[test]
fn bundle_keeps_order_and_drops_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&["certs", "root", "--out", s(&a), "--cn", "Root A"]);
    ok(&["certs", "root", "--out", s(&b), "--cn", "Root B"]);
    let (a_pem, b_pem) = (a.join("root-cert.pem"), b.join("root-cert.pem"));
    let bundle = tmp.path().join("bundle.pem");

    let stdout = ok(&["certs", "bundle", "--out", s(&bundle), s(&a_pem), s(&b_pem), s(&a_pem)]);
    assert!(stdout.contains("2 certificates") && stdout.contains("1 duplicate dropped"), "{stdout}");
    assert_eq!(count_certs(&bundle), 2);
    assert_eq!(
        fs::read_to_string(&bundle).unwrap(),
        fs::read_to_string(&a_pem).unwrap() + &fs::read_to_string(&b_pem).unwrap()
    );
    assert_eq!(mode(&bundle), 0o644);

    // openssl reads both, in order A, B.
    let p7 = tmp.path().join("bundle.p7");
    openssl(&["crl2pkcs7", "-nocrl", "-certfile", s(&bundle), "-out", s(&p7)]);
    let printed = openssl(&["pkcs7", "-in", s(&p7), "-print_certs", "-noout"]);
    let subjects: Vec<&str> = printed.lines().filter(|l| l.starts_with("subject=")).collect();
    assert_eq!(subjects.len(), 2, "{printed}");
    assert!(subjects[0].contains("Root A") && subjects[1].contains("Root B"), "{printed}");

    // The bundle is an output too, and inputs must hold certificates.
    let err = fails(&["certs", "bundle", "--out", s(&bundle), s(&b_pem)]);
    assert!(err.contains("bundle.pem") && err.contains("--force"), "{err}");
    let key = a.join("root-key.pem");
    let other = tmp.path().join("other.pem");
    let err = fails(&["certs", "bundle", "--out", s(&other), s(&a_pem), s(&key)]);
    assert!(err.contains("root-key.pem") && err.contains("no PEM certificate"), "{err}");
    assert!(!other.exists());
    let stdout = ok(&["certs", "bundle", "--force", "--out", s(&bundle), s(&b_pem)]);
    assert!(stdout.contains("1 certificate ") && stdout.contains("0 duplicates"), "{stdout}");
    assert_eq!(fs::read(&bundle).unwrap(), fs::read(&b_pem).unwrap());
}

#[test]
fn inspect_prints_istiod_lines_matching_openssl() {
    let p = pki();
    let d = p.dir.join("cluster1");
    let ca_cert = d.join("ca-cert.pem");
    let root_cert = p.root.join("root-cert.pem");

    let stdout = ok(&["certs", "inspect", s(&d.join("cert-chain.pem"))]);
    assert_eq!(stdout.lines().count(), 2, "one line per certificate:\n{stdout}");
    let lines = cert_lines(&stdout);
    assert_eq!(lines.len(), 2);
    let (inter, root) = (&lines[0], &lines[1]);
    assert_eq!(inter.subject, "CN=Intermediate CA - cluster1,O=Istio,L=cluster1");
    assert_eq!(inter.issuer, "CN=Root CA,O=Istio");
    assert_eq!((root.subject.as_str(), root.issuer.as_str()), ("CN=Root CA,O=Istio", "CN=Root CA,O=Istio"));
    assert_eq!(inter.serial, openssl_serial(&ca_cert));
    assert_eq!(root.serial, openssl_serial(&root_cert));
    assert_eq!(rfc3339_date(&inter.not_after), openssl_date(&ca_cert, "enddate"));
    assert_eq!(rfc3339_date(&inter.not_before), openssl_date(&ca_cert, "startdate"));
    assert_eq!(rfc3339_date(&root.not_after), openssl_date(&root_cert, "enddate"));

    let verbose = ok(&["certs", "inspect", "--verbose", s(&ca_cert)]);
    let fingerprint = openssl(&["x509", "-in", s(&ca_cert), "-noout", "-fingerprint", "-sha256"]);
    let fingerprint = fingerprint.trim().split_once('=').unwrap().1;
    for want in [
        "    CA: true, path length: 0",
        "    Key usage: digitalSignature, keyCertSign, cRLSign",
        "    Key: ECDSA P-256",
        "    Self-signed: no",
        "    SANs: none",
        &format!("    SHA-256 fingerprint: {fingerprint}"),
    ] {
        assert!(verbose.lines().any(|l| l == want), "missing {want:?} in\n{verbose}");
    }
    assert_eq!(cert_lines(&verbose).len(), 1);
    let root_verbose = ok(&["certs", "inspect", "-v", s(&root_cert)]);
    assert!(root_verbose.contains("    Self-signed: yes"), "{root_verbose}");
    assert!(root_verbose.contains("    CA: true, path length: unlimited"), "{root_verbose}");
}

#[test]
fn inspect_json() {
    let p = pki();
    let chain = p.dir.join("cluster2").join("cert-chain.pem");
    let root_cert = p.root.join("root-cert.pem");
    let stdout = ok(&["certs", "inspect", "--output", "json", s(&chain), s(&root_cert)]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let certs = v.as_array().expect("a JSON array");
    assert_eq!(certs.len(), 3);
    let inter = &certs[0];
    assert_eq!(inter["file"], s(&chain));
    assert_eq!(inter["index"], 0);
    assert_eq!(inter["is_ca"], true);
    assert_eq!(inter["path_len"], 0);
    assert_eq!(inter["subject"], "CN=Intermediate CA - cluster2,O=Istio,L=cluster2");
    assert_eq!(inter["serial"], openssl_serial(&p.dir.join("cluster2").join("ca-cert.pem")).as_str());
    assert_eq!(inter["self_signed"], false);
    assert_eq!(inter["key"], "ECDSA P-256");
    assert!(inter["key_usage"].as_array().unwrap().iter().any(|u| u == "keyCertSign"));
    assert!(inter["not_after_unix"].as_i64().unwrap() <= certs[1]["not_after_unix"].as_i64().unwrap());
    assert_eq!((certs[1]["file"].as_str(), certs[1]["index"].as_u64()), (Some(s(&chain)), Some(1)));
    assert_eq!(certs[1]["self_signed"], true);
    assert_eq!((certs[2]["file"].as_str(), certs[2]["index"].as_u64()), (Some(s(&root_cert)), Some(0)));
    assert_eq!(certs[2]["sha256_fingerprint"], certs[1]["sha256_fingerprint"]);
}

#[test]
fn inspect_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let err = fails(&["certs", "inspect", s(&missing)]);
    assert!(err.contains("missing.pem"), "{err}");

    let junk = tmp.path().join("junk.txt");
    fs::write(&junk, "this is not PEM\n").unwrap();
    let err = fails(&["certs", "inspect", s(&junk)]);
    assert!(err.contains("junk.txt") && err.contains("no PEM certificate"), "{err}");

    // A good file before a bad one: an error, and nothing half-printed.
    let root = tmp.path().join("root");
    ok(&["certs", "root", "--out", s(&root)]);
    let out = meshca(&["certs", "inspect", "-o", "json", s(&root.join("root-cert.pem")), s(&junk)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.txt"), "{}", show(&out));
}

#[test]
fn intermediate_with_foreign_root_key_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, mixed) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("mixed"));
    ok(&["certs", "root", "--out", s(&a)]);
    ok(&["certs", "root", "--out", s(&b)]);
    fs::create_dir(&mixed).unwrap();
    fs::copy(a.join("root-cert.pem"), mixed.join("root-cert.pem")).unwrap();
    fs::copy(b.join("root-key.pem"), mixed.join("root-key.pem")).unwrap();

    let out = tmp.path().join("c1");
    let err = fails(&["certs", "intermediate", "--root", s(&mixed), "--out", s(&out), "--cluster", "c1"]);
    assert!(err.contains("root-key.pem") && err.contains("does not match"), "{err}");
    assert!(!out.exists(), "nothing may be written");

    // Same with an existing, empty output directory: it stays empty.
    fs::create_dir(&out).unwrap();
    fails(&["certs", "intermediate", "--root", s(&mixed), "--out", s(&out), "--cluster", "c1", "--force"]);
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);

    // A root directory without a key names the missing file.
    fs::remove_file(mixed.join("root-key.pem")).unwrap();
    let err = fails(&["certs", "intermediate", "--root", s(&mixed), "--out", s(&out), "--cluster", "c1"]);
    assert!(err.contains("root-key.pem"), "{err}");
}

#[test]
fn bad_arguments_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = meshca(&["certs", "root", "--out", s(&root), "--ttl", "0s"]);
    assert!(!out.status.success(), "{}", show(&out));
    let out = meshca(&["certs", "root", "--out", s(&root), "--key", "dsa-1024"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("ec-p256"), "{}", show(&out));
    let err = fails(&["certs", "root", "--out", s(&root), "--ttl", "20000y"]);
    assert!(err.contains("--ttl"), "{err}");
    assert!(!root.exists());
    ok(&["certs", "root", "--out", s(&root), "--ttl", "90d"]);
    let json = ok(&["certs", "inspect", "-o", "json", s(&root.join("root-cert.pem"))]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let life = v[0]["not_after_unix"].as_i64().unwrap() - v[0]["not_before_unix"].as_i64().unwrap();
    assert_eq!(life, 90 * 86_400 + 120, "90d plus the 2-minute backdate");
}
