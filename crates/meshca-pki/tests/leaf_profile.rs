//! The workload certificate profile of the Istio compat doc, checked with
//! x509-parser and with `openssl x509 -text`/`-ext`.

mod common;

use common::*;
use meshca_pki::pem::cert_to_pem;
use meshca_pki::{KeyKind, LeafProfile, SignerError};
use std::collections::HashSet;
use std::time::Duration;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE,
    OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
};

#[test]
fn leaf_profile_seen_by_x509_parser() {
    let now = now_s();
    let (_root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let signer = signer_of(&int);
    let (_k, spki) = workload_key(KeyKind::EcP256);
    let der = signer.sign_leaf(&spki, &profile(ID, 6 * HOUR), now).unwrap();
    let leaf = parse(&der);

    assert_eq!(leaf.version().0, 2, "X.509 v3");
    // Empty subject.
    assert_eq!(leaf.subject().iter_rdn().count(), 0, "subject must be empty");
    assert_eq!(leaf.subject().as_raw(), &[0x30, 0x00], "subject must be an empty SEQUENCE");
    // Issuer name byte-identical to the intermediate's subject.
    let issuer = parse(&int.cert);
    assert_eq!(leaf.issuer().as_raw(), issuer.subject().as_raw());
    // The public key is the one asked for, verbatim.
    assert_eq!(leaf.public_key().raw, spki.as_slice());

    // Exactly one SAN extension with exactly one URI, marked critical.
    let sans: Vec<_> = leaf.extensions().iter().filter(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME).collect();
    assert_eq!(sans.len(), 1);
    assert!(sans[0].critical, "SAN must be critical because the subject is empty");
    let ParsedExtension::SubjectAlternativeName(san) = sans[0].parsed_extension() else { panic!("SAN not parsed") };
    assert_eq!(san.general_names, vec![GeneralName::URI(ID)]);

    // Key usage: digitalSignature + keyEncipherment only, critical.
    let ku = leaf.key_usage().unwrap().expect("keyUsage present");
    assert!(ku.critical, "keyUsage must be critical");
    assert!(ku.value.digital_signature());
    assert!(ku.value.key_encipherment());
    assert!(!ku.value.non_repudiation());
    assert!(!ku.value.data_encipherment());
    assert!(!ku.value.key_agreement());
    assert!(!ku.value.key_cert_sign());
    assert!(!ku.value.crl_sign());
    assert_eq!(ku.value.flags, 0b101, "digitalSignature(bit 0) | keyEncipherment(bit 2)");

    // EKU: serverAuth + clientAuth, nothing else.
    let eku = leaf.extended_key_usage().unwrap().expect("EKU present").value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing && !eku.email_protection && !eku.time_stamping && !eku.ocsp_signing);
    assert!(eku.other.is_empty());

    // basicConstraints present with CA:FALSE.
    let bc = leaf.basic_constraints().unwrap().expect("basicConstraints must be present");
    assert!(!bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, None);

    // AKI present and equal to the issuer's SKI.
    let aki = leaf.extensions().iter().find(|e| e.oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).expect("AKI present");
    let ParsedExtension::AuthorityKeyIdentifier(aki) = aki.parsed_extension() else { panic!("AKI not parsed") };
    let ski = issuer
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("issuer has SKI");
    assert_eq!(aki.key_identifier.as_ref().map(|k| k.0.to_vec()), Some(ski));

    // No extension appears twice.
    let oids: Vec<String> = leaf.extensions().iter().map(|e| e.oid.to_id_string()).collect();
    let unique: HashSet<&String> = oids.iter().collect();
    assert_eq!(unique.len(), oids.len(), "duplicate extensions: {oids:?}");
    for oid in [OID_X509_EXT_KEY_USAGE, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_BASIC_CONSTRAINTS] {
        assert!(leaf.extensions().iter().any(|e| e.oid == oid), "missing {oid}");
    }

    // Validity: NotBefore = now - 120 s, NotAfter = now + ttl.
    assert_eq!(leaf.validity().not_before.timestamp(), unix(now) - 120);
    assert_eq!(leaf.validity().not_after.timestamp(), unix(now) + 6 * 3600);

    // The signature is the intermediate's.
    leaf.verify_signature(Some(issuer.public_key())).expect("leaf signed by the intermediate");
}

#[test]
fn leaf_profile_seen_by_openssl_text() {
    let dir = tempdir();
    let now = now_s();
    let (_root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let leaf_pem = cert_to_pem(&issue(&signer_of(&int), DAY, now));

    let text = x509_cli(dir.path(), &leaf_pem, &["-text"]);
    let l = lines(&text);
    let after = |header: &str| -> String {
        let i = l.iter().position(|x| x == header).unwrap_or_else(|| panic!("{header:?} not in:\n{text}"));
        l[i + 1].clone()
    };
    assert!(l.contains(&"Version: 3 (0x2)".to_string()), "{text}");
    assert!(l.contains(&"Subject:".to_string()), "subject must print empty:\n{text}");
    assert_eq!(after("X509v3 Subject Alternative Name: critical"), format!("URI:{ID}"));
    assert_eq!(after("X509v3 Key Usage: critical"), "Digital Signature, Key Encipherment");
    assert_eq!(after("X509v3 Extended Key Usage:"), "TLS Web Server Authentication, TLS Web Client Authentication");
    assert!(
        l.contains(&"X509v3 Basic Constraints: critical".to_string())
            || l.contains(&"X509v3 Basic Constraints:".to_string()),
        "{text}"
    );
    let bc_line = l.iter().position(|x| x.starts_with("X509v3 Basic Constraints:")).unwrap();
    assert_eq!(l[bc_line + 1], "CA:FALSE");
    assert!(l.contains(&"X509v3 Authority Key Identifier:".to_string()), "{text}");

    // `-subject` prints nothing after "subject=".
    assert_eq!(x509_cli(dir.path(), &leaf_pem, &["-subject"]).trim(), "subject=");
    // The AKI equals the intermediate's SKI as openssl prints them.
    let aki = x509_cli(dir.path(), &leaf_pem, &["-ext", "authorityKeyIdentifier"]);
    let ski = x509_cli(dir.path(), &pem(&int), &["-ext", "subjectKeyIdentifier"]);
    let ski_hex = lines(&ski)[1].clone();
    assert!(ski_hex.len() >= 40, "SKI: {ski}");
    let aki_hex = lines(&aki)[1].trim_start_matches("keyid:").to_string();
    assert_eq!(aki_hex, ski_hex);

    // Dates as openssl reads them.
    let dates = x509_cli(dir.path(), &leaf_pem, &["-startdate", "-enddate", "-dateopt", "iso_8601"]);
    let fmt = |t: std::time::SystemTime| {
        let t = time::OffsetDateTime::from(t);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    assert_eq!(
        lines(&dates),
        vec![format!("notBefore={}", fmt(now - Duration::from_secs(120))), format!("notAfter={}", fmt(now + DAY))]
    );
}

#[test]
fn serials_are_16_bytes_positive_and_distinct() {
    let dir = tempdir();
    let now = now_s();
    let r = root("Root CA", KeyKind::EcP256, now - HOUR, 10 * DAY);
    let signer = signer_of(&r);
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let der = issue(&signer, HOUR, now);
        let c = parse(&der);
        let raw = c.raw_serial();
        assert_eq!(raw.len(), 16, "serial {} is not 16 bytes", hex::encode(raw));
        assert!(raw[0] & 0x80 == 0, "serial must be positive");
        assert_ne!(raw[0], 0, "no leading zero byte (fixed length)");
        assert!(seen.insert(raw.to_vec()), "serial repeated");
    }
    // openssl reads the same 16 bytes.
    let der = issue(&signer, HOUR, now);
    let out = x509_cli(dir.path(), &cert_to_pem(&der), &["-serial"]);
    let hexs = out.trim().strip_prefix("serial=").unwrap();
    assert_eq!(hexs.len(), 32);
    assert_eq!(hexs.to_ascii_lowercase(), hex::encode(parse(&der).raw_serial()));
}

#[test]
fn not_after_is_clamped_to_the_signer() {
    let dir = tempdir();
    let now = now_s();
    // A root that ends in one hour signs a leaf asking for 24 h.
    let r = root("Short Root", KeyKind::EcP256, now - HOUR, 2 * HOUR);
    let root_na = parse(&r.cert).validity().not_after.timestamp();
    assert_eq!(root_na, unix(now) + 3600);
    let signer = signer_of(&r);
    let der = issue(&signer, DAY, now);
    assert_eq!(parse(&der).validity().not_after.timestamp(), root_na);
    let enddate_leaf = x509_cli(dir.path(), &cert_to_pem(&der), &["-enddate"]);
    let enddate_root = x509_cli(dir.path(), &pem(&r), &["-enddate"]);
    assert_eq!(enddate_leaf, enddate_root);
    // A ttl that overflows the clock is clamped too.
    let der = issue(&signer, Duration::MAX, now);
    assert_eq!(parse(&der).validity().not_after.timestamp(), root_na);
    // One second before the signer's end still works, clamped.
    let der = issue(&signer, DAY, now + Duration::from_secs(3599));
    let c = parse(&der);
    assert_eq!(c.validity().not_after.timestamp(), root_na);
    assert_eq!(c.validity().not_before.timestamp(), unix(now) + 3599 - 120);
    // And the clamped leaf verifies (openssl at a time inside both validities).
    let leaf_pem = cert_to_pem(&issue(&signer, DAY, now));
    let v = openssl_verify_at(dir.path(), &pem(&r), None, &leaf_pem, Some(unix(now) + 1800));
    assert!(v.ok, "{} {}", v.stdout, v.stderr);
}

#[test]
fn not_before_never_precedes_the_signer() {
    let now = now_s();
    // Root made right now: its NotBefore is now - 120 s.
    let r = root("Fresh Root", KeyKind::EcP256, now, DAY);
    let signer = signer_of(&r);
    // Issuing with a clock 60 s behind: now - 180 s would precede the root; clamp to it.
    let der = issue(&signer, HOUR, now - Duration::from_secs(60));
    let c = parse(&der);
    assert_eq!(c.validity().not_before.timestamp(), unix(now) - 120);
    assert_eq!(c.validity().not_after.timestamp(), unix(now) - 60 + 3600);
    // 30 s later, now - 120 s is after the root's start: no clamping.
    let der = issue(&signer, HOUR, now + Duration::from_secs(30));
    assert_eq!(parse(&der).validity().not_before.timestamp(), unix(now) + 30 - 120);
}

#[test]
fn issuing_after_the_signer_expired_fails() {
    let now = now_s();
    let r = root("Old Root", KeyKind::EcP256, now - 3 * DAY, DAY);
    let na = parse(&r.cert).validity().not_after.timestamp();
    assert_eq!(na, unix(now) - 2 * 86_400);
    let signer = signer_of(&r);
    let (_k, spki) = workload_key(KeyKind::EcP256);
    let err = signer.sign_leaf(&spki, &profile(ID, HOUR), now).unwrap_err();
    let when = meshca_pki::material::fmt_time(now - 2 * DAY);
    assert_eq!(err, SignerError::IssuerExpired(when.clone()));
    assert!(err.to_string().contains(&when), "{err}");
    // Exactly at NotAfter is already too late.
    let at_end = std::time::UNIX_EPOCH + Duration::from_secs(na as u64);
    assert!(matches!(signer.sign_leaf(&spki, &profile(ID, HOUR), at_end), Err(SignerError::IssuerExpired(_))));
}

#[test]
fn dns_profile_and_bad_spki() {
    let now = now_s();
    let r = root("Root CA", KeyKind::EcP384, now - HOUR, DAY);
    let signer = signer_of(&r);
    let (_k, spki) = workload_key(KeyKind::EcP256);
    let p = LeafProfile { uris: vec![ID.into()], dns_names: vec!["istiod.istio-system.svc".into()], ttl: HOUR };
    let der = signer.sign_leaf(&spki, &p, now).unwrap();
    let c = parse(&der);
    let san = c.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical);
    assert_eq!(san.value.general_names, vec![GeneralName::URI(ID), GeneralName::DNSName("istiod.istio-system.svc")]);
    assert_eq!(c.public_key().raw, spki.as_slice());
    // Not an SPKI at all, or an SPKI with trailing bytes.
    assert!(matches!(signer.sign_leaf(b"garbage", &p, now), Err(SignerError::Params(_))));
    let mut trailing = spki.clone();
    trailing.push(0);
    assert!(matches!(signer.sign_leaf(&trailing, &p, now), Err(SignerError::Params(_))));
}

/// The leaf must carry the requested public key byte for byte, whatever its
/// type: RSA 2048 is istio-agent's default and P-384 is accepted by the CSR
/// rules. Checked with x509-parser and with openssl (`-pubkey`, `verify`).
#[test]
fn leaf_keeps_the_public_key_for_every_accepted_key_type() {
    let dir = tempdir();
    let now = now_s();
    let (root, int) = root_and_intermediate(KeyKind::EcP256, now);
    let signer = signer_of(&int);
    let mut wrong = Vec::new();
    for kind in [KeyKind::EcP256, KeyKind::EcP384, KeyKind::Rsa2048, KeyKind::Rsa3072] {
        let (k, spki) = workload_key(kind);
        let der = signer.sign_leaf(&spki, &profile(ID, HOUR), now).unwrap();
        let leaf_pem = cert_to_pem(&der);
        write(dir.path(), "k.pem", k.to_pkcs8_pem().as_bytes());
        let want = openssl(dir.path(), &["pkey", "-in", "k.pem", "-pubout"]);
        write(dir.path(), "leaf.pem", &leaf_pem);
        let got = openssl_run(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
        let same_spki = parse(&der).public_key().raw == spki.as_slice();
        let v = openssl_verify(dir.path(), &pem(&root), Some(&pem(&int)), &leaf_pem);
        if !same_spki || got.stdout != want || !v.ok {
            wrong.push(format!(
                "{kind}: spki equal={same_spki}, openssl pubkey equal={}, openssl verify ok={} ({})",
                got.stdout == want,
                v.ok,
                format!("{} {}", v.stdout, v.stderr)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
    }
    assert!(wrong.is_empty(), "leaf public key is not the requested one:\n{}", wrong.join("\n"));
}
