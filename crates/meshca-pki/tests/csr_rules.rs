//! CSR rules (`meshca_pki::csr::validate`): CSRs made with rcgen and with
//! the openssl CLI, accepted or refused with the specific `CsrError`.

mod common;

use common::*;
use meshca_pki::csr::{validate, validate_der};
use meshca_pki::pem::{cert_to_pem, encode};
use meshca_pki::{CsrError, CsrKey, CsrPolicy, KeyKind};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, RsaKeySize, SanType};
use std::path::Path;

const OTHER: &str = "spiffe://cluster.local/ns/default/sa/other";

fn policy() -> CsrPolicy {
    CsrPolicy::default()
}

fn check(pem: &str) -> Result<meshca_pki::ValidatedCsr, CsrError> {
    validate(pem, ID, &policy())
}

/// A CSR with an empty subject and the given URI SANs, made by rcgen.
fn rcgen_csr(key: &KeyPair, uris: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris.iter().map(|u| SanType::URI(u.to_string().try_into().unwrap())).collect();
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap()
}

fn rsa2048() -> KeyPair {
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap()
}

/// Generate `key.pem` with `openssl genpkey <genpkey...>`, then a CSR with
/// `openssl req -new -key key.pem -subj /O=meshca-test <req...>`.
fn openssl_csr(dir: &Path, genpkey: &[&str], req: &[&str]) -> String {
    let mut g = vec!["genpkey"];
    g.extend_from_slice(genpkey);
    g.extend(["-out", "key.pem"]);
    openssl(dir, &g);
    openssl_csr_with_key(dir, req)
}

fn openssl_csr_with_key(dir: &Path, req: &[&str]) -> String {
    let mut r = vec!["req", "-new", "-key", "key.pem", "-subj", "/O=meshca-test", "-out", "csr.pem"];
    r.extend_from_slice(req);
    openssl(dir, &r);
    read(dir, "csr.pem")
}

const EC_P256: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
const RSA_2048: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];

fn csr_der(dir: &Path, pem: &str) -> Vec<u8> {
    write(dir, "in.csr", pem);
    openssl(dir, &["req", "-in", "in.csr", "-outform", "DER", "-out", "out.der"]);
    std::fs::read(dir.join("out.der")).unwrap()
}

#[test]
fn accepts_p256_p384_rsa2048_with_and_without_the_uri() {
    for (name, key, want) in [
        ("P-256", p256(), CsrKey::EcP256),
        ("P-384", p384(), CsrKey::EcP384),
        ("RSA-2048", rsa2048(), CsrKey::Rsa(2048)),
    ] {
        for uris in [vec![ID], vec![]] {
            let v = check(&rcgen_csr(&key, &uris)).unwrap_or_else(|e| panic!("{name} {uris:?} refused: {e}"));
            assert_eq!(v.key, want, "{name}");
            assert_eq!(v.spki_der, key.subject_public_key_info(), "{name}: the CSR's public key, verbatim");
            assert_eq!(v.uri_sans, uris.iter().map(|u| u.to_string()).collect::<Vec<_>>(), "{name}");
        }
    }
}

#[test]
fn accepts_openssl_csrs() {
    let dir = tempdir();
    let d = dir.path();
    let san = format!("subjectAltName=URI:{ID}");
    let v = check(&openssl_csr(d, EC_P256, &["-addext", &san])).unwrap();
    assert_eq!((v.key, v.uri_sans), (CsrKey::EcP256, vec![ID.to_string()]));
    let spki = csr_pubkey_der(d);
    assert_eq!(v.spki_der, spki);

    // RSA 2048 signed with SHA-256, with a non-critical unknown extension.
    let v = check(&openssl_csr(d, RSA_2048, &["-sha256", "-addext", "1.2.3.5=ASN1:NULL"])).unwrap();
    assert_eq!(v.key, CsrKey::Rsa(2048));
    assert!(v.uri_sans.is_empty());
    // A leaf-like CSR: CA:FALSE and digitalSignature are fine.
    let v = check(&openssl_csr_with_key(
        d,
        &[
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
        ],
    ))
    .unwrap();
    assert_eq!(v.key, CsrKey::Rsa(2048));
    // RSA-PSS with SHA-256.
    let v = check(&openssl_csr_with_key(
        d,
        &["-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"],
    ))
    .unwrap();
    assert_eq!(v.key, CsrKey::Rsa(2048));
}

/// The DER SPKI of the CSR in `csr.pem`, as openssl reads it.
fn csr_pubkey_der(d: &Path) -> Vec<u8> {
    openssl(d, &["req", "-in", "csr.pem", "-noout", "-pubkey", "-out", "pub.pem"]);
    openssl(d, &["pkey", "-pubin", "-in", "pub.pem", "-outform", "DER", "-out", "pub.der"]);
    std::fs::read(d.join("pub.der")).unwrap()
}

#[test]
fn refuses_weak_or_unsupported_keys() {
    let dir = tempdir();
    let d = dir.path();
    let csr = openssl_csr(d, &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], &["-sha256"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::RsaTooSmall(1024));

    let csr = openssl_csr(d, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1"], &[]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::UnsupportedKey("ECDSA curve 1.3.132.0.10".into()));

    let csr = openssl_csr(d, &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"], &[]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::UnsupportedKey("ECDSA P-521".into()));

    // Ed25519 is refused; today by its signature algorithm (checked before
    // the key), which would better be reported as an unsupported key.
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let e = check(&rcgen_csr(&ed, &[ID])).unwrap_err();
    assert!(
        e == CsrError::WeakSignature("1.3.101.112".into()) || e == CsrError::UnsupportedKey("Ed25519".into()),
        "{e:?}"
    );

    // The RSA limits come from the policy.
    let strict = CsrPolicy { min_rsa_bits: 3072, ..CsrPolicy::default() };
    assert_eq!(validate(&rcgen_csr(&rsa2048(), &[]), ID, &strict).unwrap_err(), CsrError::RsaTooSmall(2048));
    let small_max = CsrPolicy { max_rsa_bits: 1024, min_rsa_bits: 512, ..CsrPolicy::default() };
    assert_eq!(
        validate(&rcgen_csr(&rsa2048(), &[]), ID, &small_max).unwrap_err(),
        CsrError::UnsupportedKey("RSA 2048".into())
    );
}

#[test]
fn refuses_weak_signatures() {
    let dir = tempdir();
    let d = dir.path();
    let csr = openssl_csr(d, RSA_2048, &["-sha1"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::WeakSignature("1.2.840.113549.1.1.5".into()));
    let csr = openssl_csr(d, EC_P256, &["-sha1"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::WeakSignature("1.2.840.10045.4.1".into()));
}

#[test]
fn refuses_ca_requests() {
    let dir = tempdir();
    let d = dir.path();
    let csr = openssl_csr(d, EC_P256, &["-addext", "basicConstraints=critical,CA:TRUE"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::CaRequested);
    let csr = openssl_csr_with_key(d, &["-addext", "basicConstraints=CA:TRUE,pathlen:0"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::CaRequested);
    let csr = openssl_csr_with_key(d, &["-addext", "keyUsage=critical,digitalSignature,keyCertSign"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::CaRequested);
    let csr = openssl_csr_with_key(d, &["-addext", "keyUsage=cRLSign"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::CaRequested);
}

#[test]
fn refuses_sans_other_than_the_callers_uri() {
    let dir = tempdir();
    let d = dir.path();
    openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "key.pem"]);
    let cases: Vec<(String, CsrError)> = vec![
        ("DNS:sleep.default.svc".into(), CsrError::ForbiddenSan("DNS")),
        (format!("URI:{ID},DNS:sleep.default.svc"), CsrError::ForbiddenSan("DNS")),
        ("IP:10.0.0.1".into(), CsrError::ForbiddenSan("IP address")),
        ("email:sleep@example.com".into(), CsrError::ForbiddenSan("email")),
        ("otherName:1.2.3.4;UTF8:x".into(), CsrError::ForbiddenSan("non-URI")),
        (format!("URI:{ID},URI:{OTHER}"), CsrError::MultipleUris),
        (format!("URI:{ID},URI:{ID}"), CsrError::MultipleUris),
        (format!("URI:{OTHER}"), CsrError::IdentityMismatch { requested: OTHER.into(), authenticated: ID.into() }),
    ];
    for (san, want) in cases {
        let csr = openssl_csr_with_key(d, &["-addext", &format!("subjectAltName={san}")]);
        assert_eq!(check(&csr).unwrap_err(), want, "SAN {san}");
    }
    // The same refusal for rcgen-made CSRs.
    assert_eq!(check(&rcgen_csr(&p256(), &[ID, OTHER])).unwrap_err(), CsrError::MultipleUris);
    assert_eq!(
        check(&rcgen_csr(&rsa2048(), &[OTHER])).unwrap_err(),
        CsrError::IdentityMismatch { requested: OTHER.into(), authenticated: ID.into() }
    );
    // The error message names both identities.
    let msg = check(&rcgen_csr(&p256(), &[OTHER])).unwrap_err().to_string();
    assert!(msg.contains(OTHER) && msg.contains(ID), "{msg}");
}

#[test]
fn refuses_unknown_critical_extensions() {
    let dir = tempdir();
    let csr = openssl_csr(dir.path(), EC_P256, &["-addext", "1.2.3.4=critical,ASN1:NULL"]);
    assert_eq!(check(&csr).unwrap_err(), CsrError::UnknownCriticalExtension("1.2.3.4".into()));
    let csr = openssl_csr_with_key(dir.path(), &["-addext", "1.2.3.4=ASN1:NULL"]);
    assert!(check(&csr).is_ok(), "a non-critical unknown extension is ignored");
}

#[test]
fn refuses_tampered_csrs() {
    let dir = tempdir();
    let d = dir.path();
    // A flipped byte in the signature, P-256 (rcgen) and RSA (openssl).
    let rsa = openssl_csr(d, RSA_2048, &[]);
    for (name, pem) in [("P-256", rcgen_csr(&p256(), &[ID])), ("RSA", rsa)] {
        let mut der = csr_der(d, &pem);
        assert!(validate_der(&der, ID, &policy()).is_ok(), "{name}: untampered DER accepted");
        write(d, "t.csr", &pem);
        let r = openssl_run(d, &["req", "-in", "t.csr", "-noout", "-verify"]);
        assert!(r.stderr.contains("self-signature verify OK"), "{name}: {}", r.stderr);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = encode("CERTIFICATE REQUEST", &der);
        assert_eq!(check(&tampered).unwrap_err(), CsrError::BadSignature, "{name}");
        // openssl agrees that the signature is bad.
        write(d, "t.csr", &tampered);
        let r = openssl_run(d, &["req", "-in", "t.csr", "-noout", "-verify"]);
        assert!(r.stderr.contains("self-signature verify failure"), "{name}: openssl: {}", r.stderr);
    }
    // A changed SAN under the signature: refused for the signature, not the SAN.
    let pem = rcgen_csr(&p256(), &[ID]);
    let mut der = csr_der(d, &pem);
    let at = der.windows(5).position(|w| w == b"sleep").expect("SAN bytes");
    der[at + 4] = b'q';
    assert_eq!(check(&encode("CERTIFICATE REQUEST", &der)).unwrap_err(), CsrError::BadSignature);
}

#[test]
fn refuses_malformed_input() {
    assert_eq!(check("").unwrap_err(), CsrError::Empty);
    assert_eq!(check(" \n\t\n").unwrap_err(), CsrError::Empty);
    assert_eq!(check("this is not a certificate request").unwrap_err(), CsrError::NotPem);
    assert_eq!(check(&"\u{fffd}garbage\0\x01".repeat(100)).unwrap_err(), CsrError::NotPem);
    let huge = "A".repeat(1 << 20);
    assert_eq!(check(&huge).unwrap_err(), CsrError::TooLarge { len: 1 << 20, max: 64 * 1024 });

    // A certificate is not a CSR.
    let r = root("Root", KeyKind::EcP256, now_s(), DAY);
    assert_eq!(check(&cert_to_pem(&r.cert)).unwrap_err(), CsrError::NotPem);
    // Broken base64 inside a CSR block.
    let bad = "-----BEGIN CERTIFICATE REQUEST-----\n!!!not base64!!!\n-----END CERTIFICATE REQUEST-----\n";
    assert!(matches!(check(bad), Err(CsrError::Parse(m)) if m.starts_with("bad PEM")), "{:?}", check(bad));
    // Valid base64 that is not a CSR, and a truncated CSR.
    assert!(matches!(check(&encode("CERTIFICATE REQUEST", b"hello")), Err(CsrError::Parse(_))));
    let dir = tempdir();
    let der = csr_der(dir.path(), &rcgen_csr(&p256(), &[ID]));
    let truncated = encode("CERTIFICATE REQUEST", &der[..der.len() - 10]);
    assert!(matches!(check(&truncated), Err(CsrError::Parse(_))));
    // Trailing bytes after the DER.
    let mut trailing = der.clone();
    trailing.extend_from_slice(&[0, 0]);
    assert_eq!(
        validate_der(&trailing, ID, &policy()).unwrap_err(),
        CsrError::Parse("trailing data after the CSR".into())
    );
}

#[test]
fn size_limit_is_inclusive() {
    let pem = rcgen_csr(&p256(), &[ID]);
    let limit = pem.len() + 100;
    let p = CsrPolicy { max_pem_bytes: limit, ..CsrPolicy::default() };
    let at_limit = format!("{pem}{}", "\n".repeat(100));
    assert_eq!(at_limit.len(), limit);
    assert!(validate(&at_limit, ID, &p).is_ok());
    let over = format!("{at_limit}\n");
    assert_eq!(validate(&over, ID, &p).unwrap_err(), CsrError::TooLarge { len: limit + 1, max: limit });
}

/// End to end: an openssl CSR of each accepted key type is validated, its
/// key is signed into a leaf, and openssl finds the same public key in the
/// leaf and verifies it against the CA set.
#[test]
fn validated_key_ends_up_in_a_verifiable_leaf() {
    let dir = tempdir();
    let d = dir.path();
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let m = material_for(&int, &pem(&root), now);
    let san = format!("subjectAltName=URI:{ID}");
    let mut wrong = Vec::new();
    for (name, genpkey) in [
        ("P-256", EC_P256),
        ("P-384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"][..]),
        ("RSA-2048", RSA_2048),
    ] {
        let csr = openssl_csr(d, genpkey, &["-addext", &san]);
        let v = check(&csr).unwrap_or_else(|e| panic!("{name}: {e}"));
        let leaf = m.signer().sign_leaf(&v.spki_der, &profile(ID, HOUR), now).unwrap();
        write(d, "leaf.pem", cert_to_pem(&leaf));
        let leaf_key = openssl_run(d, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
        let csr_key = openssl(d, &["req", "-in", "csr.pem", "-noout", "-pubkey"]);
        assert!(csr_key.starts_with("-----BEGIN PUBLIC KEY-----"), "{csr_key}");
        let rc = m.response_chain(&leaf);
        let ok = openssl_verify(d, &rc[2], Some(&rc[1]), &rc[0]).ok;
        if leaf_key.stdout != csr_key || !ok {
            let why = leaf_key.stderr.lines().next().unwrap_or("").to_string();
            wrong.push(format!("{name}: same public key={} {why}, openssl verify ok={ok}", leaf_key.stdout == csr_key));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
