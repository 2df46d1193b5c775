//! Replays the fuzz corpus of meshca-pki's parsers (fuzz/corpus/{pem_certs,
//! csr_pem,csr_der,ca_material}) with the calls of the fuzz targets
//! (fuzz/src/lib.rs): no input panics, and the named seeds keep their verdicts.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use meshca_pki::csr::{validate, validate_der, CsrPolicy};
use meshca_pki::material::Part;
use meshca_pki::{pem, CaMaterial, CsrError, CsrKey, MaterialError, MaterialInput, ValidatedCsr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const IDENTITY: &str = "spiffe://cluster.local/ns/default/sa/httpbin";

/// The fuzz targets' fixed time (2027-01-15).
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn checked(result: Result<ValidatedCsr, CsrError>) -> Result<ValidatedCsr, CsrError> {
    if let Ok(v) = &result {
        assert!(!v.spki_der.is_empty());
        assert!(v.uri_sans.is_empty() || v.uri_sans == [IDENTITY], "accepted a CSR for {:?}", v.uri_sans);
        assert!(meshca_pki::inspect::describe_spki(&v.spki_der).is_some());
    }
    result
}

fn csr_pem(data: &[u8]) -> Result<ValidatedCsr, CsrError> {
    checked(validate(&String::from_utf8_lossy(data), IDENTITY, &CsrPolicy::default()))
}

fn csr_der(data: &[u8]) -> Result<ValidatedCsr, CsrError> {
    checked(validate_der(data, IDENTITY, &CsrPolicy::default()))
}

/// The four files separated by NUL bytes: certificate, key, chain (empty: none), roots.
fn material(data: &[u8]) -> Result<CaMaterial, MaterialError> {
    let mut parts = data.splitn(4, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (cert, key, chain, roots) = (next(), next(), next(), next());
    let input = MaterialInput {
        cert: Part { name: "ca-cert.pem", pem: cert },
        key: Part { name: "ca-key.pem", pem: key },
        chain: (!chain.is_empty()).then_some(Part { name: "cert-chain.pem", pem: chain }),
        roots: Part { name: "root-cert.pem", pem: roots },
    };
    let result = CaMaterial::from_input(&input, now());
    match &result {
        Ok(m) => {
            assert!(!m.roots().is_empty(), "an accepted CA set has no root");
            m.probe(now()).expect("an accepted CA set signs a verifiable leaf");
        }
        Err(e) => assert!(!e.file.is_empty() && !e.problem.is_empty(), "error without file or problem: {e:?}"),
    }
    result
}

#[test]
fn pem_certs_corpus_parses_or_errors() {
    let n = replay::replay("pem_certs", |_, data| {
        if let Ok(certs) = pem::parse_certs(data) {
            assert!(!certs.is_empty());
            let again = pem::parse_certs(pem::certs_to_pem(&certs).as_bytes()).expect("re-encoded PEM parses");
            assert_eq!(certs, again);
            for der in &certs {
                let _ = meshca_pki::inspect::cert_info(der);
                let _ = meshca_pki::inspect::istiod_line(der);
            }
        }
    });
    assert!(n >= 10, "pem_certs corpus has only {n} inputs");
    assert_eq!(pem::parse_certs(&replay::input("pem_certs", "chain3.pem")).map(|c| c.len()), Ok(3));
    assert!(matches!(pem::parse_certs(&replay::input("pem_certs", "truncated.pem")), Err(pem::PemError::Malformed(_))));
    assert_eq!(pem::parse_certs(&replay::input("pem_certs", "text")), Err(pem::PemError::NoCertificate));
}

#[test]
fn csr_corpus_is_accepted_or_refused_as_expected() {
    replay::replay("csr_pem", |_, data| drop(csr_pem(data)));
    replay::replay("csr_der", |_, data| drop(csr_der(data)));
    let pem = |name: &str| csr_pem(&replay::input("csr_pem", &format!("{name}.pem")));
    assert_eq!(pem("ec_uri").map(|v| (v.key, v.uri_sans)), Ok((CsrKey::EcP256, vec![IDENTITY.to_string()])));
    assert_eq!(pem("p384_uri").map(|v| v.key), Ok(CsrKey::EcP384));
    assert_eq!(pem("rsa_uri").map(|v| v.key), Ok(CsrKey::Rsa(2048)));
    assert_eq!(pem("ec_plain").map(|v| v.uri_sans.len()), Ok(0));
    assert_eq!(pem("ec_dns").err(), Some(CsrError::ForbiddenSan("DNS")));
    assert_eq!(pem("ec_two_uri").err(), Some(CsrError::MultipleUris));
    assert!(matches!(pem("ec_other_id"), Err(CsrError::IdentityMismatch { .. })));
    assert_eq!(pem("ec_ca").err(), Some(CsrError::CaRequested));
    assert_eq!(pem("ec_ku").err(), Some(CsrError::CaRequested));
    assert!(matches!(pem("ec_crit"), Err(CsrError::UnknownCriticalExtension(_))));
    assert!(matches!(pem("ec_sha1"), Err(CsrError::WeakSignature(_))));
    assert_eq!(pem("rsa_small").err(), Some(CsrError::RsaTooSmall(1024)));
    assert!(matches!(pem("ed25519"), Err(CsrError::UnsupportedKey(_))));
    assert!(matches!(pem("k1"), Err(CsrError::UnsupportedKey(_))));
    assert_eq!(csr_der(&replay::input("csr_der", "ec_uri.der")).map(|v| v.key), Ok(CsrKey::EcP256));
}

#[test]
fn ca_material_corpus_is_accepted_or_refused_as_expected() {
    let n = replay::replay("ca_material", |_, data| drop(material(data)));
    assert!(n >= 10, "ca_material corpus has only {n} inputs");
    for ok in
        ["ec_root_int", "ec_two_ints", "ec_chain_with_root", "rsa_root_int_pkcs1", "ec_sec1_key", "self_signed_root"]
    {
        if let Err(e) = material(&replay::input("ca_material", ok)) {
            panic!("{ok}: a valid CA set was refused: {e}");
        }
    }
    for (bad, file) in [
        ("wrong_key", "ca-key.pem"),
        ("leaf_as_ca", "ca-cert.pem"),
        ("wrong_root", "root-cert.pem"),
        ("chain_out_of_order", "cert-chain.pem"),
        ("pathlen_root", "root-cert.pem"),
        ("leaf_in_roots", "root-cert.pem"),
        ("short_lived", "ca-cert.pem"),
        ("empty", "ca-cert.pem"),
    ] {
        match material(&replay::input("ca_material", bad)) {
            Ok(_) => panic!("{bad}: an invalid CA set was accepted"),
            Err(e) => assert_eq!(e.file, file, "{bad}: {e}"),
        }
    }
}
