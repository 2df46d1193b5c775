//! `CaMaterial::from_input`: refusals name the file at fault with a readable
//! problem; accepted sets produce Istio's response layout. openssl is asked
//! to confirm each verdict where it has one.

mod common;

use common::*;
use meshca_pki::material::fmt_time;
use meshca_pki::pem::cert_to_pem;
use meshca_pki::{KeyError, KeyKind, MaterialError};
use std::time::SystemTime;

fn refused(r: Result<meshca_pki::CaMaterial, MaterialError>) -> MaterialError {
    match r {
        Ok(m) => panic!("CA set accepted but should be refused: {m:?}"),
        Err(e) => {
            assert!(!e.problem.is_empty());
            e
        }
    }
}

#[test]
fn refuses_the_key_of_another_certificate() {
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let other = intermediate("Other CA", KeyKind::EcP256, &root, now - HOUR, DAY);
    let e = refused(material(&pem(&int), &key_pem(&other), Some(&pem(&int)), &pem(&root), now));
    assert_eq!(e.file, KEY_FILE);
    assert_eq!(
        e.problem,
        "the private key does not match the certificate in ca-cert.pem (\"CN=Intermediate CA,O=Istio\")"
    );
    assert_eq!(e.fix, "use the key that was generated together with ca-cert.pem");
    assert_eq!(e.to_string(), format!("ca-key.pem: {}. Fix: {}", e.problem, e.fix));
    // Same key type but RSA vs EC mismatch too.
    let rsa = PrivateKeyPem::rsa();
    let e = refused(material(&pem(&int), &rsa.0, Some(&pem(&int)), &pem(&root), now));
    assert_eq!(e.file, KEY_FILE);
    assert!(e.problem.starts_with("the private key does not match"), "{e}");
}

struct PrivateKeyPem(String);
impl PrivateKeyPem {
    fn rsa() -> Self {
        Self(meshca_pki::PrivateKey::generate(KeyKind::Rsa2048).unwrap().to_pkcs8_pem().to_string())
    }
}

#[test]
fn refuses_a_chain_to_an_unknown_root() {
    let dir = tempdir();
    let now = now_s();
    let (root_a, int) = root_and_intermediate(KeyKind::EcP256, now);
    let root_b = root("Root B", KeyKind::EcP256, now - HOUR, DAY);
    let e = refused(material(&pem(&int), &key_pem(&int), Some(&pem(&int)), &pem(&root_b), now));
    assert_eq!(e.file, ROOTS_FILE);
    assert_eq!(
        e.problem,
        "no root in root-cert.pem issued \"CN=Intermediate CA,O=Istio\" (its issuer is \"CN=Root CA,O=Istio\"), \
         so the chain does not reach a trusted root"
    );
    assert!(e.fix.contains("root-cert.pem") && e.fix.contains("cert-chain.pem"), "{}", e.fix);
    // openssl agrees, and accepts the right root.
    assert!(!openssl_verify(dir.path(), &pem(&root_b), None, &pem(&int)).ok);
    assert_openssl_verifies(dir.path(), &pem(&root_a), None, &pem(&int));
    // A root with the same name but another key is not the issuer either.
    let impostor = root("Root CA", KeyKind::EcP256, now - HOUR, DAY);
    let e = refused(material(&pem(&int), &key_pem(&int), None, &pem(&impostor), now));
    assert_eq!(e.file, ROOTS_FILE);
    assert!(!openssl_verify(dir.path(), &pem(&impostor), None, &pem(&int)).ok);
}

#[test]
fn refuses_an_expired_or_future_intermediate() {
    let dir = tempdir();
    let now = now_s();
    let made = now - 10 * DAY;
    let r = root("Root CA", KeyKind::EcP256, made, 100 * DAY);
    let old = intermediate("Expired CA", KeyKind::EcP256, &r, made, 2 * DAY);
    let end = parse(&old.cert).validity().not_after.timestamp();
    assert_eq!(end, unix(now - 8 * DAY));
    let e = refused(material(&pem(&old), &key_pem(&old), Some(&pem(&old)), &pem(&r), now));
    assert_eq!(e.file, CERT_FILE);
    assert_eq!(e.problem, format!("\"CN=Expired CA,O=Istio\" expired at {}", fmt_time(now - 8 * DAY)));
    assert!(e.problem.ends_with('Z'), "RFC 3339 UTC: {}", e.problem);
    assert_eq!(e.fix, "plug in a new intermediate CA");
    // openssl says the same; and it was fine before it expired.
    let v = openssl_verify(dir.path(), &pem(&r), None, &pem(&old));
    assert!(!v.ok && format!("{}{}", v.stdout, v.stderr).contains("certificate has expired"));
    assert!(material(&pem(&old), &key_pem(&old), None, &pem(&r), now - 9 * DAY).is_ok());

    // Not valid yet: made for tomorrow.
    let future = intermediate("Future CA", KeyKind::EcP256, &r, now + DAY, 2 * DAY);
    let e = refused(material(&pem(&future), &key_pem(&future), None, &pem(&r), now));
    assert_eq!(e.file, CERT_FILE);
    assert_eq!(
        e.problem,
        format!(
            "\"CN=Future CA,O=Istio\" is not valid before {}",
            fmt_time(now + DAY - std::time::Duration::from_secs(120))
        )
    );
}

#[test]
fn refuses_a_signer_that_is_not_a_ca() {
    let dir = tempdir();
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    // A workload certificate and its key, plugged in as the CA.
    let (k, spki) = workload_key(KeyKind::EcP256);
    let leaf = signer_of(&int).sign_leaf(&spki, &profile(ID, DAY), now).unwrap();
    let chain = format!("{}{}", cert_to_pem(&leaf), pem(&int));
    let e = refused(material(&cert_to_pem(&leaf), &k.to_pkcs8_pem(), Some(&chain), &pem(&root), now));
    assert_eq!(e.file, CERT_FILE);
    assert_eq!(e.problem, "\"\" is not a CA certificate (basicConstraints CA:TRUE is missing)");
    // openssl agrees that the leaf cannot be an issuer.
    let sub = signer_of_leaf(&leaf, &k);
    let grandchild = issue(&sub, HOUR, now);
    let v = openssl_verify(dir.path(), &pem(&root), Some(&chain), &cert_to_pem(&grandchild));
    assert!(!v.ok, "openssl accepted a certificate issued by a leaf");
}

fn signer_of_leaf(leaf: &[u8], key: &meshca_pki::PrivateKey) -> meshca_pki::Signer {
    meshca_pki::Signer::new(meshca_pki::CertDer::from(leaf.to_vec()), clone_key(key)).unwrap()
}

#[test]
fn refuses_a_ca_without_key_cert_sign() {
    let dir = tempdir();
    let d = dir.path();
    openssl_root_and_intermediate(d, "/O=Example/CN=Root", "/O=Example/CN=No Sign CA", "v3_nosign");
    let text = openssl(d, &["x509", "-in", "int.pem", "-noout", "-ext", "keyUsage"]);
    assert_eq!(lines(&text), vec!["X509v3 Key Usage: critical", "Digital Signature, CRL Sign"]);
    let e = refused(material(&read(d, "int.pem"), &read(d, "int.key"), None, &read(d, "root.pem"), now_s()));
    assert_eq!(e.file, CERT_FILE);
    assert_eq!(e.problem, "\"CN=No Sign CA,O=Example\" may not sign certificates (keyUsage lacks keyCertSign)");
    assert_eq!(e.fix, "issue the CA certificate with keyUsage keyCertSign");
}

#[test]
fn refuses_truncated_and_garbage_files() {
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let (c, k, r) = (pem(&int), key_pem(&int), pem(&root));
    let half = |s: &str| s[..s.len() / 2].to_string();

    let e = refused(material(&half(&c), &k, None, &r, now));
    assert_eq!(e.file, CERT_FILE);
    assert!(e.problem.contains("(truncated or not PEM?)"), "{}", e.problem);
    assert_eq!(e.fix, "write the signing CA certificate as PEM certificates");

    let e = refused(material(&c, &k, Some(&half(&c)), &r, now));
    assert_eq!(e.file, CHAIN_FILE);
    assert!(e.problem.contains("(truncated or not PEM?)"), "{}", e.problem);

    let e = refused(material(&c, &k, None, &half(&r), now));
    assert_eq!(e.file, ROOTS_FILE);
    assert!(e.problem.contains("(truncated or not PEM?)"), "{}", e.problem);

    let e = refused(material(&c, &k, None, "", now));
    assert_eq!(e.file, ROOTS_FILE);
    assert!(e.problem.starts_with("no PEM certificate found"), "{}", e.problem);

    // A PEM block whose base64 is intact but whose DER lost its tail.
    let der = int.cert.to_vec();
    let short = meshca_pki::pem::encode("CERTIFICATE", &der[..der.len() - 40]);
    let e = refused(material(&short, &k, None, &r, now));
    assert_eq!(e.file, CERT_FILE);
    assert!(e.problem.starts_with("a certificate could not be parsed"), "{}", e.problem);

    // Garbage keys: no key block at all, and a key block that is no key.
    let e = refused(material(&c, "garbage\n", None, &r, now));
    assert_eq!(e.file, KEY_FILE);
    assert_eq!(e.problem, KeyError::NoKey.to_string());
    let e = refused(material(&c, &half(&k), None, &r, now));
    assert_eq!(e.file, KEY_FILE);
    let junk = meshca_pki::pem::encode("PRIVATE KEY", b"definitely not a key");
    let e = refused(material(&c, &junk, None, &r, now));
    assert_eq!(e.file, KEY_FILE);
    assert_eq!(e.problem, KeyError::Unsupported.to_string());
    // A certificate in the key file.
    let e = refused(material(&c, &c, None, &r, now));
    assert_eq!(e.file, KEY_FILE);
    assert_eq!(e.problem, KeyError::NoKey.to_string());
}

#[test]
fn refuses_a_chain_out_of_order() {
    let now = now_s();
    let made = now - HOUR;
    let root = root("Root CA", KeyKind::EcP256, made, 3650 * DAY);
    let upper = meshca_pki::authority::new_intermediate(
        &opts("Upper CA", KeyKind::EcP256, 900 * DAY, Some(1)),
        &signer_of(&root),
        made,
    )
    .unwrap();
    let lower = intermediate("Lower CA", KeyKind::EcP256, &upper, made, 365 * DAY);
    let unrelated = intermediate("Unrelated CA", KeyKind::EcP256, &root, made, 365 * DAY);
    let chain = format!("{}{}", pem(&lower), pem(&unrelated));
    let e = refused(material(&pem(&lower), &key_pem(&lower), Some(&chain), &pem(&root), now));
    assert_eq!(e.file, CHAIN_FILE);
    assert_eq!(
        e.problem,
        "\"CN=Lower CA,O=Istio\" is not signed by the next certificate in the chain, \"CN=Unrelated CA,O=Istio\""
    );
    // Without the upper intermediate the chain does not reach the root.
    let e = refused(material(&pem(&lower), &key_pem(&lower), None, &pem(&root), now));
    assert_eq!(e.file, ROOTS_FILE);
    // In the right order it is accepted.
    let chain = format!("{}{}", pem(&lower), pem(&upper));
    assert!(material(&pem(&lower), &key_pem(&lower), Some(&chain), &pem(&root), now).is_ok());
}

#[test]
fn chain_that_includes_the_root_is_accepted_without_duplicating_it() {
    let dir = tempdir();
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let chain = format!("{}{}", pem(&int), pem(&root));
    let m = material(&pem(&int), &key_pem(&int), Some(&chain), &pem(&root), now).unwrap();
    assert_eq!(m.chain().iter().map(|c| c.to_vec()).collect::<Vec<_>>(), vec![int.cert.to_vec()]);
    assert_eq!(m.chain_pem(), &[pem(&int)]);
    let leaf = issue(m.signer(), HOUR, now);
    let rc = m.response_chain(&leaf);
    assert_eq!(rc, vec![cert_to_pem(&leaf), pem(&int), pem(&root)]);
    let all: Vec<Vec<u8>> = rc.iter().flat_map(|e| pem_to_ders(e)).collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().filter(|d| **d == root.cert.to_vec()).count(), 1, "root appears once");
    assert_openssl_verifies(dir.path(), &rc[2], Some(&rc[1]), &rc[0]);
    // The log view lists each certificate once too.
    assert_eq!(m.certs_for_log().len(), 2);
}

#[test]
fn layouts_without_chain_and_self_signed_root() {
    let dir = tempdir();
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    // Layout B (tls.crt, tls.key, ca.crt): no cert-chain.pem.
    let m = material(&pem(&int), &key_pem(&int), None, &pem(&root), now).unwrap();
    assert_eq!(m.chain().len(), 1);
    let leaf = issue(m.signer(), HOUR, now);
    let rc = m.response_chain(&leaf);
    assert_eq!(rc.len(), 3);
    assert_openssl_verifies(dir.path(), &rc[2], Some(&rc[1]), &rc[0]);

    // The root itself as the signing CA: leaf + bundle, two elements.
    let m = material(&pem(&root), &key_pem(&root), Some(&pem(&root)), &pem(&root), now).unwrap();
    assert!(m.chain().is_empty());
    let leaf = issue(m.signer(), HOUR, now);
    let rc = m.response_chain(&leaf);
    assert_eq!(rc, vec![cert_to_pem(&leaf), pem(&root)]);
    assert_openssl_verifies(dir.path(), &rc[1], None, &rc[0]);
    assert_eq!(m.certs_for_log().len(), 1);

    // CaMaterial::self_signed gives the same shape.
    let r2 = common::root("Self CA", KeyKind::EcP256, now - HOUR, DAY);
    let r2_pem = pem(&r2);
    let m = meshca_pki::CaMaterial::self_signed(r2).unwrap();
    m.probe(now).unwrap();
    let leaf = issue(m.signer(), HOUR, now);
    assert_eq!(m.response_chain(&leaf), vec![cert_to_pem(&leaf), r2_pem.clone()]);
    assert_openssl_verifies(dir.path(), &r2_pem, None, &cert_to_pem(&leaf));
}

#[test]
fn probe_runs_at_the_given_time() {
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let m = material_for(&int, &pem(&root), now);
    m.probe(now).unwrap();
    let later = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(parse(&int.cert).validity().not_after.timestamp() as u64);
    assert!(m.probe(later).is_err(), "probing after the intermediate's end must fail");
}
