//! istiod's `x509 cert - ...` log line and Go-style names, compared with
//! what openssl prints for the same certificates.

mod common;

use common::*;
use meshca_pki::authority::{self, AuthorityOptions};
use meshca_pki::inspect::{cert_info, istiod_line};
use meshca_pki::name::to_go_string;
use meshca_pki::KeyKind;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// openssl's `-serial` as Go's `%x` prints a big.Int: lowercase, no leading zeros.
fn openssl_serial_go(dir: &Path, pem: &str) -> String {
    let out = x509_cli(dir, pem, &["-serial"]);
    let hex = out.trim().strip_prefix("serial=").expect("serial=").to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

fn rfc2253(dir: &Path, pem: &str, which: &str) -> String {
    let out = x509_cli(dir, pem, &[&format!("-{which}"), "-nameopt", "RFC2253"]);
    out.trim().strip_prefix(&format!("{which}=")).unwrap().to_string()
}

fn intermediate_with_locality(now: SystemTime) -> (meshca_pki::NewAuthority, meshca_pki::NewAuthority) {
    let root = root("Root CA", KeyKind::EcP256, now - HOUR, 3650 * DAY);
    let o = AuthorityOptions {
        locality: Some("cluster-A1".into()),
        ..opts("Intermediate CA - A1", KeyKind::EcP256, 365 * DAY, Some(0))
    };
    let int = authority::new_intermediate(&o, &signer_of(&root), now).unwrap();
    (root, int)
}

#[test]
fn istiod_line_matches_openssl() {
    let dir = tempdir();
    let d = dir.path();
    let now = now_s();
    let (root, int) = intermediate_with_locality(now);
    let sn = openssl_serial_go(d, &pem(&int));
    assert_eq!(sn.len(), 32, "16-byte serial starting with a non-zero nibble: {sn}");
    let line = istiod_line(&int.cert).unwrap();
    assert_eq!(
        line,
        format!(
            "x509 cert - Issuer: \"CN=Root CA,O=Istio\", Subject: \"CN=Intermediate CA - A1,O=Istio,L=cluster-A1\", \
             SN: {sn}, NotBefore: \"{}\", NotAfter: \"{}\"",
            rfc3339(now - Duration::from_secs(120)),
            rfc3339(now + 365 * DAY)
        )
    );
    assert!(line.contains("NotBefore: \"20") && line.contains("Z\", NotAfter"), "{line}");
    // Root line: issuer == subject.
    let rline = istiod_line(&root.cert).unwrap();
    let rsn = openssl_serial_go(d, &pem(&root));
    assert!(
        rline.starts_with(&format!(
            "x509 cert - Issuer: \"CN=Root CA,O=Istio\", Subject: \"CN=Root CA,O=Istio\", SN: {rsn}, NotBefore: \""
        )),
        "{rline}"
    );
    assert!(istiod_line(b"not a certificate").is_err());
}

#[test]
fn serial_without_leading_zeros_like_go() {
    let dir = tempdir();
    let d = dir.path();
    openssl_root_and_intermediate(d, "/O=Example/CN=Root", "/O=Example/CN=Int", "v3_int");
    let (root_pem, int_pem) = (read(d, "root.pem"), read(d, "int.pem"));
    // openssl prints 0102 and 0ABC; Go (and istiod) print 102 and abc.
    assert_eq!(x509_cli(d, &root_pem, &["-serial"]).trim(), "serial=0102");
    assert_eq!(x509_cli(d, &int_pem, &["-serial"]).trim(), "serial=0ABC");
    let root_der = pem_to_ders(&root_pem).remove(0);
    let int_der = pem_to_ders(&int_pem).remove(0);
    let line = istiod_line(&int_der).unwrap();
    assert!(
        line.starts_with("x509 cert - Issuer: \"CN=Root,O=Example\", Subject: \"CN=Int,O=Example\", SN: abc, "),
        "{line}"
    );
    assert!(istiod_line(&root_der).unwrap().contains(", SN: 102, "));
    assert_eq!(cert_info(&int_der).unwrap().serial, "abc");
}

#[test]
fn go_string_order_for_an_intermediate_with_locality() {
    let dir = tempdir();
    let d = dir.path();
    let now = now_s();
    let (root, int) = intermediate_with_locality(now);
    let c = parse(&int.cert);
    assert_eq!(to_go_string(c.subject()), "CN=Intermediate CA - A1,O=Istio,L=cluster-A1");
    assert_eq!(to_go_string(c.issuer()), "CN=Root CA,O=Istio");
    // Encoded as Go encodes pkix.Name: L, then O, then CN.
    let oneline = x509_cli(d, &pem(&int), &["-subject", "-nameopt", "oneline"]);
    assert_eq!(oneline.trim(), "subject=L = cluster-A1, O = Istio, CN = Intermediate CA - A1");
    // RFC 2253 order (last RDN first) is the Go order.
    assert_eq!(rfc2253(d, &pem(&int), "subject"), to_go_string(c.subject()));
    assert_eq!(rfc2253(d, &pem(&int), "issuer"), to_go_string(c.issuer()));
    assert_eq!(rfc2253(d, &pem(&root), "subject"), "CN=Root CA,O=Istio");
}

#[test]
fn go_string_escapes_like_rfc2253() {
    let dir = tempdir();
    let d = dir.path();
    let now = now_s();
    for cn in ["Acme, Inc.", "a+b", "#hash", "semi;colon", "quote\"d", "back\\slash", "<angle>"] {
        let r = root(cn, KeyKind::EcP256, now, DAY);
        let c = parse(&r.cert);
        let go = to_go_string(c.subject());
        assert_eq!(go, rfc2253(d, &pem(&r), "subject"), "CN {cn:?}");
        assert!(go.starts_with("CN=") && go.ends_with(",O=Istio"), "{go}");
    }
}

#[test]
fn cert_info_agrees_with_openssl() {
    let dir = tempdir();
    let d = dir.path();
    let now = now_s();
    let (_root, int) = intermediate_with_locality(now);
    let i = cert_info(&int.cert).unwrap();
    assert!(i.is_ca && !i.self_signed);
    assert_eq!(i.path_len, Some(0));
    assert_eq!(i.key_usage, vec!["digitalSignature", "keyCertSign", "cRLSign"]);
    assert_eq!(i.key, "ECDSA P-256");
    assert_eq!(i.serial, openssl_serial_go(d, &pem(&int)));
    let fp = x509_cli(d, &pem(&int), &["-fingerprint", "-sha256"]);
    let fp = fp.trim().split_once('=').unwrap().1.replace(':', "").to_ascii_lowercase();
    assert_eq!(i.sha256_fingerprint, fp);
    assert_eq!(i.not_before_unix, unix(now) - 120);

    let leaf = issue(&signer_of(&int), HOUR, now);
    let l = cert_info(&leaf).unwrap();
    assert!(!l.is_ca && !l.self_signed);
    assert_eq!(l.subject, "");
    assert_eq!(l.issuer, "CN=Intermediate CA - A1,O=Istio,L=cluster-A1");
    assert_eq!(l.key_usage, vec!["digitalSignature", "keyEncipherment"]);
    assert_eq!(l.extended_key_usage, vec!["serverAuth", "clientAuth"]);
    assert_eq!(l.uris, vec![ID]);
    assert_eq!(l.spiffe_id.as_deref(), Some(ID));
    assert_eq!(l.not_after_unix - l.not_before_unix, 3600 + 120);
}
