//! Shared helpers for the meshca-pki integration tests: real keys and
//! certificates, and the `openssl` CLI as an independent verifier.
//!
//! The openssl CLI is required: every helper panics loudly when it is
//! missing instead of skipping the check.
#![allow(dead_code)]

use meshca_pki::authority::{self, AuthorityOptions, NewAuthority};
use meshca_pki::material::{MaterialInput, Part};
use meshca_pki::pem::cert_to_pem;
use meshca_pki::{CaMaterial, KeyKind, LeafProfile, MaterialError, PrivateKey, Signer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);

pub const CERT_FILE: &str = "ca-cert.pem";
pub const KEY_FILE: &str = "ca-key.pem";
pub const CHAIN_FILE: &str = "cert-chain.pem";
pub const ROOTS_FILE: &str = "root-cert.pem";

/// The current time rounded down to a whole second, so that certificate
/// times (whole seconds) can be compared for equality.
pub fn now_s() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs())
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Output of one openssl run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `openssl args...` in `dir`. Panics if the CLI cannot be started.
pub fn openssl_run(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("the `openssl` CLI is required by these tests and could not be started ({e}); install openssl")
    });
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run openssl and return stdout; panics (with stderr) if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let r = openssl_run(dir, args);
    assert!(r.ok, "openssl {args:?} failed:\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    r.stdout
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write test file");
    p
}

pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read test file")
}

/// `openssl verify -CAfile roots -untrusted chain leaf` (optionally at a
/// given unix time). Returns whether openssl printed "<leaf>: OK".
pub fn openssl_verify(dir: &Path, roots_pem: &str, untrusted_pem: Option<&str>, leaf_pem: &str) -> Run {
    openssl_verify_at(dir, roots_pem, untrusted_pem, leaf_pem, None)
}

pub fn openssl_verify_at(
    dir: &Path,
    roots_pem: &str,
    untrusted_pem: Option<&str>,
    leaf_pem: &str,
    at: Option<i64>,
) -> Run {
    write(dir, "v-roots.pem", roots_pem);
    write(dir, "v-leaf.pem", leaf_pem);
    let at_s = at.map(|t| t.to_string());
    let mut args = vec!["verify", "-x509_strict", "-CAfile", "v-roots.pem"];
    if let Some(u) = untrusted_pem {
        write(dir, "v-chain.pem", u);
        args.extend(["-untrusted", "v-chain.pem"]);
    }
    if let Some(t) = &at_s {
        args.extend(["-attime", t.as_str()]);
    }
    args.push("v-leaf.pem");
    let r = openssl_run(dir, &args);
    Run { ok: r.ok && r.stdout.trim() == "v-leaf.pem: OK", ..r }
}

/// Assert that openssl accepts the chain.
pub fn assert_openssl_verifies(dir: &Path, roots_pem: &str, untrusted_pem: Option<&str>, leaf_pem: &str) {
    let r = openssl_verify(dir, roots_pem, untrusted_pem, leaf_pem);
    assert!(r.ok, "openssl verify failed:\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
}

/// `openssl x509 -noout <args>` on one PEM certificate.
pub fn x509_cli(dir: &Path, pem: &str, args: &[&str]) -> String {
    write(dir, "x-cert.pem", pem);
    let mut all = vec!["x509", "-in", "x-cert.pem", "-noout"];
    all.extend_from_slice(args);
    openssl(dir, &all)
}

pub fn opts(cn: &str, key: KeyKind, ttl: Duration, path_len: Option<u8>) -> AuthorityOptions {
    AuthorityOptions {
        common_name: cn.to_string(),
        organization: "Istio".to_string(),
        locality: None,
        ttl,
        key,
        path_len,
    }
}

pub fn root(cn: &str, key: KeyKind, now: SystemTime, ttl: Duration) -> NewAuthority {
    authority::new_root(&opts(cn, key, ttl, None), now).expect("new root")
}

/// A signer for a CA, from its DER and key (the key is copied through PEM).
pub fn signer_of(ca: &NewAuthority) -> Signer {
    Signer::new(ca.cert.clone(), clone_key(&ca.key)).expect("signer")
}

pub fn clone_key(key: &PrivateKey) -> PrivateKey {
    PrivateKey::from_pem(key.to_pkcs8_pem().as_bytes()).expect("key round trip")
}

/// An intermediate signed by `parent`.
pub fn intermediate(cn: &str, key: KeyKind, parent: &NewAuthority, now: SystemTime, ttl: Duration) -> NewAuthority {
    authority::new_intermediate(&opts(cn, key, ttl, Some(0)), &signer_of(parent), now).expect("new intermediate")
}

/// A root (made an hour ago, valid ten years) and an intermediate with
/// pathlen 0 (made an hour ago, valid a year), both of `kind`.
pub fn root_and_intermediate(kind: KeyKind, now: SystemTime) -> (NewAuthority, NewAuthority) {
    let made = now - HOUR;
    let r = root("Root CA", kind, made, 3650 * DAY);
    let i = intermediate("Intermediate CA", kind, &r, made, 365 * DAY);
    (r, i)
}

pub fn pem(ca: &NewAuthority) -> String {
    cert_to_pem(&ca.cert)
}

pub fn key_pem(ca: &NewAuthority) -> String {
    ca.key.to_pkcs8_pem().to_string()
}

/// `CaMaterial::from_input` with Istio's file names.
pub fn material(
    cert: &str,
    key: &str,
    chain: Option<&str>,
    roots: &str,
    now: SystemTime,
) -> Result<CaMaterial, MaterialError> {
    let input = MaterialInput {
        cert: Part { name: CERT_FILE, pem: cert.as_bytes() },
        key: Part { name: KEY_FILE, pem: key.as_bytes() },
        chain: chain.map(|c| Part { name: CHAIN_FILE, pem: c.as_bytes() }),
        roots: Part { name: ROOTS_FILE, pem: roots.as_bytes() },
    };
    CaMaterial::from_input(&input, now)
}

/// The usual plug-in set for an intermediate under a root.
pub fn material_for(int: &NewAuthority, roots_pem: &str, now: SystemTime) -> CaMaterial {
    material(&pem(int), &key_pem(int), Some(&pem(int)), roots_pem, now).expect("CA material accepted")
}

pub fn profile(uri: &str, ttl: Duration) -> LeafProfile {
    LeafProfile { uris: vec![uri.to_string()], dns_names: vec![], ttl }
}

/// A fresh workload key and its SubjectPublicKeyInfo.
pub fn workload_key(kind: KeyKind) -> (PrivateKey, Vec<u8>) {
    let k = PrivateKey::generate(kind).expect("workload key");
    let spki = k.public_key_spki();
    (k, spki)
}

/// Issue a leaf for a fresh P-256 key.
pub fn issue(signer: &Signer, ttl: Duration, now: SystemTime) -> Vec<u8> {
    let (_k, spki) = workload_key(KeyKind::EcP256);
    signer.sign_leaf(&spki, &profile(ID, ttl), now).expect("sign leaf").to_vec()
}

pub fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    let (rest, c) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    assert!(rest.is_empty(), "trailing bytes after certificate");
    c
}

pub fn pem_to_ders(pem: &str) -> Vec<Vec<u8>> {
    meshca_pki::pem::parse_certs(pem.as_bytes()).expect("PEM certificates").into_iter().map(|c| c.to_vec()).collect()
}

/// Lines of a text with leading/trailing blanks trimmed, empty lines dropped.
pub fn lines(s: &str) -> Vec<String> {
    s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// An openssl config for CA certificates: PrintableString subjects
/// (`string_mask = default`), a root and an intermediate profile.
pub const OPENSSL_CA_CNF: &str = "\
[ req ]
distinguished_name = req_dn
string_mask = default
utf8 = no
[ req_dn ]
[ v3_root ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
[ v3_int ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
[ v3_nosign ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, cRLSign
";

/// Make a root (`root.pem`, `root.key`) and an intermediate (`int.pem`,
/// `int.key`) with the openssl CLI in `dir`, P-256 keys, PKCS#8.
pub fn openssl_root_and_intermediate(dir: &Path, root_subj: &str, int_subj: &str, int_ext: &str) {
    write(dir, "ca.cnf", OPENSSL_CA_CNF);
    for k in ["root.key", "int.key"] {
        openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k]);
    }
    openssl(
        dir,
        &[
            "req",
            "-config",
            "ca.cnf",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            root_subj,
            "-days",
            "3650",
            "-sha256",
            "-extensions",
            "v3_root",
            "-set_serial",
            "0x0102",
            "-out",
            "root.pem",
        ],
    );
    openssl(
        dir,
        &["req", "-config", "ca.cnf", "-new", "-key", "int.key", "-subj", int_subj, "-sha256", "-out", "int.csr"],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-set_serial",
            "0x0abc",
            "-days",
            "365",
            "-sha256",
            "-extfile",
            "ca.cnf",
            "-extensions",
            int_ext,
            "-out",
            "int.pem",
        ],
    );
}
