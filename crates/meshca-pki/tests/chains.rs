//! Chains: root -> intermediate -> leaf, the Istio `cert_chain` response
//! layout, multi-root bundles, RSA / P-384 CAs and CA sets made by openssl,
//! all verified with `openssl verify`.

mod common;

use common::*;
use meshca_pki::authority::{self, AuthorityOptions};
use meshca_pki::pem::cert_to_pem;
use meshca_pki::verify::Usage;
use meshca_pki::KeyKind;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::OID_DOMAIN_COMPONENT;

/// Split an Istio response into (leaf, intermediates joined, roots) and
/// check the element layout.
fn split_response(rc: &[String]) -> (String, String, String) {
    assert!(rc.len() >= 2, "Istio clients reject a chain of one element");
    for (i, e) in rc.iter().enumerate() {
        assert!(e.ends_with("-----END CERTIFICATE-----\n"), "element {i} must end with a newline: {e:?}");
    }
    for (i, e) in rc[..rc.len() - 1].iter().enumerate() {
        assert_eq!(pem_to_ders(e).len(), 1, "element {i} must hold exactly one certificate");
    }
    (rc[0].clone(), rc[1..rc.len() - 1].concat(), rc[rc.len() - 1].clone())
}

fn ski(der: &[u8]) -> Vec<u8> {
    parse(der)
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("SKI")
}

fn aki(der: &[u8]) -> Vec<u8> {
    parse(der)
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
        .expect("AKI")
}

#[test]
fn root_intermediate_leaf_and_response_chain() {
    let dir = tempdir();
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);

    // The intermediate is a CA with pathlen 0, signed by the root.
    let ic = parse(&int.cert);
    let bc = ic.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    assert_eq!(aki(&int.cert), ski(&root.cert));
    let text = x509_cli(dir.path(), &pem(&int), &["-ext", "basicConstraints"]);
    assert_eq!(lines(&text), vec!["X509v3 Basic Constraints: critical", "CA:TRUE, pathlen:0"]);

    let m = material_for(&int, &pem(&root), now);
    assert_eq!(m.chain().iter().map(|c| c.to_vec()).collect::<Vec<_>>(), vec![int.cert.to_vec()]);
    assert_eq!(m.roots().iter().map(|c| c.to_vec()).collect::<Vec<_>>(), vec![root.cert.to_vec()]);
    assert_eq!(m.roots_pem(), pem(&root));

    let leaf = issue(m.signer(), DAY, now);
    let rc = m.response_chain(&leaf);
    assert_eq!(rc.len(), 3);
    assert_eq!(rc[0], cert_to_pem(&leaf));
    assert_eq!(rc[1], pem(&int));
    assert_eq!(rc[2], pem(&root));
    let (leaf_pem, middle, roots) = split_response(&rc);

    assert_openssl_verifies(dir.path(), &roots, Some(&middle), &leaf_pem);
    // The verifier is real: without the intermediate it fails.
    let v = openssl_verify(dir.path(), &roots, None, &leaf_pem);
    let said = format!("{}{}", v.stdout, v.stderr);
    assert!(!v.ok && said.contains("unable to get local issuer certificate"), "{said}");
    // Both TLS purposes.
    for purpose in ["sslclient", "sslserver"] {
        let r = openssl_run(
            dir.path(),
            &["verify", "-purpose", purpose, "-CAfile", "v-roots.pem", "-untrusted", "v-chain.pem", "v-leaf.pem"],
        );
        assert!(r.ok, "{purpose}: {} {}", r.stdout, r.stderr);
    }
    // And meshca's own (webpki) verification agrees.
    let leaf_der = meshca_pki::CertDer::from(leaf.clone());
    m.verify(&leaf_der, &[], now, Usage::Client).unwrap();
    m.verify(&leaf_der, &[], now, Usage::Server).unwrap();
}

#[test]
fn two_intermediates_are_two_elements() {
    let dir = tempdir();
    let now = now_s();
    let made = now - HOUR;
    let root = root("Root CA", KeyKind::EcP256, made, 3650 * DAY);
    let upper =
        authority::new_intermediate(&opts("Upper CA", KeyKind::EcP256, 900 * DAY, Some(1)), &signer_of(&root), made)
            .unwrap();
    let lower = intermediate("Lower CA", KeyKind::EcP256, &upper, made, 365 * DAY);
    let chain = format!("{}{}", pem(&lower), pem(&upper));
    let m = material(&pem(&lower), &key_pem(&lower), Some(&chain), &pem(&root), now).unwrap();
    let leaf = issue(m.signer(), HOUR, now);
    let rc = m.response_chain(&leaf);
    assert_eq!(rc.len(), 4);
    assert_eq!(rc[1], pem(&lower));
    assert_eq!(rc[2], pem(&upper));
    assert_eq!(rc[3], pem(&root));
    let (leaf_pem, middle, roots) = split_response(&rc);
    assert_openssl_verifies(dir.path(), &roots, Some(&middle), &leaf_pem);
}

#[test]
fn multi_root_bundle_stays_one_element_and_verifies() {
    let dir = tempdir();
    let now = now_s();
    let made = now - HOUR;
    let root_a = root("Root A", KeyKind::EcP256, made, 3650 * DAY);
    let root_b = root("Root B", KeyKind::EcP384, made, 3650 * DAY);
    let bundle = format!("{}{}", pem(&root_a), pem(&root_b));

    for (signing_root, name) in [(&root_a, "A"), (&root_b, "B")] {
        let int = intermediate(&format!("Intermediate under {name}"), KeyKind::EcP256, signing_root, made, 365 * DAY);
        let m = material_for(&int, &bundle, now);
        assert_eq!(m.roots().len(), 2);
        let leaf = issue(m.signer(), HOUR, now);
        let rc = m.response_chain(&leaf);
        assert_eq!(rc.len(), 3, "leaf, intermediate, one bundle element");
        assert_eq!(rc[2], bundle, "the bundle is passed through whole and in order");
        assert_eq!(pem_to_ders(&rc[2]), vec![root_a.cert.to_vec(), root_b.cert.to_vec()]);
        let (leaf_pem, middle, roots) = split_response(&rc);
        assert_openssl_verifies(dir.path(), &roots, Some(&middle), &leaf_pem);
        // Only the signing root makes the chain verify.
        let other = if name == "A" { pem(&root_b) } else { pem(&root_a) };
        let v = openssl_verify(dir.path(), &other, Some(&middle), &leaf_pem);
        assert!(!v.ok, "leaf under root {name} verified against the other root");
        assert_openssl_verifies(dir.path(), &pem(signing_root), Some(&middle), &leaf_pem);
    }
}

#[test]
fn rsa_2048_and_p384_authorities() {
    let dir = tempdir();
    let now = now_s();
    for (kind, sig_alg, bits) in
        [(KeyKind::Rsa2048, "sha256WithRSAEncryption", "2048 bit"), (KeyKind::EcP384, "ecdsa-with-SHA384", "384 bit")]
    {
        let (root, int) = root_and_intermediate(kind, now);
        let m = material_for(&int, &pem(&root), now);
        let leaf = issue(m.signer(), HOUR, now);
        let (leaf_pem, middle, roots) = split_response(&m.response_chain(&leaf));
        assert_openssl_verifies(dir.path(), &roots, Some(&middle), &leaf_pem);

        let text = x509_cli(dir.path(), &leaf_pem, &["-text"]);
        assert!(lines(&text).contains(&format!("Signature Algorithm: {sig_alg}")), "{kind}: {text}");
        let itext = x509_cli(dir.path(), &middle, &["-text"]);
        assert!(itext.contains(&format!("Public-Key: ({bits})")), "{kind}: {itext}");
        assert_eq!(aki(&leaf), ski(&int.cert));
        assert_eq!(parse(&leaf).issuer().as_raw(), parse(&int.cert).subject().as_raw());
    }
}

/// Asserts that every attribute value of `der`'s subject is a
/// PrintableString (domainComponent is always an IA5String).
fn assert_printable_subject(der: &[u8]) {
    let c = parse(der);
    let mut n = 0;
    for rdn in c.subject().iter_rdn() {
        for atv in rdn.iter() {
            let want = if *atv.attr_type() == OID_DOMAIN_COMPONENT { Tag::Ia5String } else { Tag::PrintableString };
            assert_eq!(atv.attr_value().header.tag(), want, "attribute {} has another string type", atv.attr_type());
            n += 1;
        }
    }
    assert!(n > 0);
}

/// Plug a CA set made by the openssl CLI and check leaves chain to it.
fn check_openssl_made_set(root_subj: &str, int_subj: &str) {
    let dir = tempdir();
    let d = dir.path();
    openssl_root_and_intermediate(d, root_subj, int_subj, "v3_int");
    let (root_pem, int_pem, int_key) = (read(d, "root.pem"), read(d, "int.pem"), read(d, "int.key"));
    let int_der = pem_to_ders(&int_pem).remove(0);
    let root_der = pem_to_ders(&root_pem).remove(0);
    // The set really uses PrintableString names.
    assert_printable_subject(&int_der);
    assert_printable_subject(&root_der);
    // openssl itself accepts the CA set.
    let r = openssl_run(d, &["verify", "-x509_strict", "-CAfile", "root.pem", "int.pem"]);
    assert!(r.ok, "{} {}", r.stdout, r.stderr);

    let now = now_s();
    // The signer alone: the leaf's issuer as openssl prints it.
    let key = meshca_pki::PrivateKey::from_pem(int_key.as_bytes()).unwrap();
    let signer = meshca_pki::Signer::new(meshca_pki::CertDer::from(int_der.clone()), key).unwrap();
    let direct = cert_to_pem(&issue(&signer, HOUR, now));
    let issuer = x509_cli(d, &direct, &["-issuer", "-nameopt", "RFC2253"]);
    let subject = x509_cli(d, &int_pem, &["-subject", "-nameopt", "RFC2253"]);
    assert_eq!(issuer.trim().strip_prefix("issuer="), subject.trim().strip_prefix("subject="));

    let m = material(&int_pem, &int_key, Some(&int_pem), &root_pem, now)
        .unwrap_or_else(|e| panic!("CA set made by openssl refused: {e}"));
    let leaf = issue(m.signer(), HOUR, now);
    assert_eq!(
        hex::encode(parse(&leaf).issuer().as_raw()),
        hex::encode(parse(&int_der).subject().as_raw()),
        "the leaf's issuer must be the intermediate's subject byte for byte"
    );
    assert_eq!(aki(&leaf), ski(&int_der));
    let (leaf_pem, middle, roots) = split_response(&m.response_chain(&leaf));
    assert_eq!(roots, root_pem);
    assert_openssl_verifies(d, &roots, Some(&middle), &leaf_pem);
    // openssl prints the leaf's issuer exactly as the intermediate's subject.
    let issuer = x509_cli(d, &leaf_pem, &["-issuer", "-nameopt", "RFC2253"]);
    let subject = x509_cli(d, &int_pem, &["-subject", "-nameopt", "RFC2253"]);
    assert_eq!(issuer.trim().strip_prefix("issuer="), subject.trim().strip_prefix("subject="));
}

#[test]
fn openssl_made_ca_with_printable_string_names() {
    check_openssl_made_set(
        "/C=US/O=Example Org/CN=Example Root CA",
        "/C=US/O=Example Org/OU=Mesh/CN=Example Intermediate CA",
    );
}

/// Enterprise CAs (Vault, AD CS) often repeat an attribute type: DC=...,DC=...
/// or two OUs. The issuer name of a leaf must still be the intermediate's
/// subject byte for byte, or no verifier will build the chain.
#[test]
fn openssl_made_ca_with_repeated_attribute_types() {
    check_openssl_made_set(
        "/DC=com/DC=example/O=Example Org/CN=Example Root CA",
        "/DC=com/DC=example/O=Example Org/OU=Platform/OU=Mesh/CN=Example Intermediate CA",
    );
}

#[test]
fn authority_options_with_locality_are_in_the_subject() {
    let dir = tempdir();
    let now = now_s();
    let root = root("Root CA", KeyKind::EcP256, now - HOUR, 10 * DAY);
    let o = AuthorityOptions {
        locality: Some("cluster-A1".into()),
        ..opts("Intermediate CA - A1", KeyKind::EcP256, DAY, Some(0))
    };
    let int = authority::new_intermediate(&o, &signer_of(&root), now).unwrap();
    let m = material_for(&int, &pem(&root), now);
    let leaf = issue(m.signer(), HOUR, now);
    let (leaf_pem, middle, roots) = split_response(&m.response_chain(&leaf));
    assert_openssl_verifies(dir.path(), &roots, Some(&middle), &leaf_pem);
    let issuer = x509_cli(dir.path(), &leaf_pem, &["-issuer", "-nameopt", "RFC2253"]);
    assert_eq!(issuer.trim(), "issuer=CN=Intermediate CA - A1,O=Istio,L=cluster-A1");
    // The intermediate never outlives its parent's ten days, nor asks past its own one day.
    assert_eq!(parse(&int.cert).validity().not_after.timestamp(), unix(now) + 86_400);
}
