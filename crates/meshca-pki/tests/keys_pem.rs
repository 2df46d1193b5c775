//! Plug-in CA keys in the PEM forms openssl writes (PKCS#8, PKCS#1 "RSA
//! PRIVATE KEY", SEC1 "EC PRIVATE KEY" with an "EC PARAMETERS" block), and
//! `PrivateKey::to_pkcs8_pem`, checked with `openssl pkey`.

mod common;

use common::*;
use meshca_pki::PrivateKey;
use std::path::Path;

/// DER SubjectPublicKeyInfo of the private key in `file`, as openssl reads it.
fn openssl_spki(dir: &Path, file: &str) -> Vec<u8> {
    openssl(dir, &["pkey", "-in", file, "-pubout", "-outform", "DER", "-out", "spki.der"]);
    std::fs::read(dir.join("spki.der")).unwrap()
}

/// Key files made by openssl: (file, first PEM label, description).
fn openssl_keys(d: &Path) -> Vec<(&'static str, &'static str, &'static str)> {
    openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa8.pem"]);
    openssl(d, &["pkey", "-in", "rsa8.pem", "-traditional", "-out", "rsa1.pem"]);
    openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", "ec8.pem"]);
    openssl(d, &["pkey", "-in", "ec8.pem", "-traditional", "-out", "sec1.pem"]);
    openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-out", "ecparam.pem"]);
    vec![
        ("rsa8.pem", "-----BEGIN PRIVATE KEY-----", "RSA 2048"),
        ("rsa1.pem", "-----BEGIN RSA PRIVATE KEY-----", "RSA 2048"),
        ("ec8.pem", "-----BEGIN PRIVATE KEY-----", "ECDSA P-384"),
        ("sec1.pem", "-----BEGIN EC PRIVATE KEY-----", "ECDSA P-384"),
        ("ecparam.pem", "-----BEGIN EC PARAMETERS-----", "ECDSA P-256"),
    ]
}

#[test]
fn loads_every_openssl_key_form() {
    let dir = tempdir();
    let d = dir.path();
    for (file, label, desc) in openssl_keys(d) {
        let text = read(d, file);
        assert!(text.starts_with(label), "{file}: {text}");
        let k = PrivateKey::from_pem(text.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(k.description(), desc, "{file}");
        assert_eq!(k.public_key_spki(), openssl_spki(d, file), "{file}: public key");
        assert_eq!(format!("{k:?}"), format!("PrivateKey({desc})"));
    }
}

/// `to_pkcs8_pem` promises PKCS#8 whatever form the key was read from:
/// openssl must read it back as the same key.
#[test]
fn to_pkcs8_pem_writes_pkcs8_for_every_form() {
    let dir = tempdir();
    let d = dir.path();
    let mut wrong = Vec::new();
    for (file, _, _) in openssl_keys(d) {
        let k = PrivateKey::from_pem(read(d, file).as_bytes()).unwrap();
        let out = k.to_pkcs8_pem();
        assert!(out.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{file}");
        write(d, "out.pem", out.as_bytes());
        let r = openssl_run(d, &["pkey", "-in", "out.pem", "-pubout", "-outform", "DER", "-out", "out-spki.der"]);
        let same = r.ok && std::fs::read(d.join("out-spki.der")).ok() == Some(openssl_spki(d, file));
        // And it is PKCS#8 by structure: openssl asn1parse sees version 0 then an AlgorithmIdentifier.
        let asn1 = openssl_run(d, &["asn1parse", "-in", "out.pem"]);
        let pkcs8_shape = asn1.ok && {
            let l: Vec<&str> = asn1.stdout.lines().collect();
            l.len() > 3 && l[1].contains("INTEGER") && l[2].contains("SEQUENCE") && l[3].contains("OBJECT")
        };
        // meshca reads its own output back.
        let again = PrivateKey::from_pem(out.as_bytes());
        let round_trip = again.as_ref().map(|a| a.public_key_spki()).ok() == Some(k.public_key_spki());
        if !same || !pkcs8_shape || !round_trip {
            wrong.push(format!(
                "{file}: openssl reads same key={same}, PKCS#8 structure={pkcs8_shape}, \
                 PrivateKey::from_pem reads it back={round_trip} ({:?})",
                again.err()
            ));
        }
    }
    assert!(wrong.is_empty(), "to_pkcs8_pem output is not PKCS#8:\n{}", wrong.join("\n"));
}

/// A CA set whose key is SEC1 or PKCS#1 (as `openssl ecparam -genkey` and
/// older tooling write them) is accepted and signs verifiable leaves.
#[test]
fn ca_material_with_traditional_key_forms() {
    let dir = tempdir();
    let d = dir.path();
    openssl_root_and_intermediate(d, "/O=Example/CN=Root", "/O=Example/CN=Int", "v3_int");
    openssl(d, &["pkey", "-in", "int.key", "-traditional", "-out", "int.sec1"]);
    let sec1 = read(d, "int.sec1");
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let now = now_s();
    let (int_pem, root_pem) = (read(d, "int.pem"), read(d, "root.pem"));
    let m = material(&int_pem, &sec1, None, &root_pem, now).unwrap();
    let leaf = issue(m.signer(), HOUR, now);
    let rc = m.response_chain(&leaf);
    assert_openssl_verifies(d, &rc[2], Some(&rc[1]), &rc[0]);

    // RSA intermediate with a PKCS#1 key, under the same root.
    openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key"]);
    openssl(d, &["pkey", "-in", "rsa.key", "-traditional", "-out", "rsa.pkcs1"]);
    openssl(
        d,
        &["req", "-config", "ca.cnf", "-new", "-key", "rsa.key", "-subj", "/O=Example/CN=RSA Int", "-out", "rsa.csr"],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "rsa.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-set_serial",
            "7",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            "ca.cnf",
            "-extensions",
            "v3_int",
            "-out",
            "rsa.pem",
        ],
    );
    let pkcs1 = read(d, "rsa.pkcs1");
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // openssl dates the certificate from its own clock: take "now" after it.
    let now = now_s();
    let m = material(&read(d, "rsa.pem"), &pkcs1, None, &root_pem, now).unwrap();
    let leaf = issue(m.signer(), HOUR, now);
    let rc = m.response_chain(&leaf);
    assert_openssl_verifies(d, &rc[2], Some(&rc[1]), &rc[0]);
    let text = x509_cli(d, &rc[0], &["-text"]);
    assert!(text.contains("Signature Algorithm: sha256WithRSAEncryption"), "{text}");
}
