//! Plug-in CA material in both of Istio's layouts, made with `meshca certs`
//! and with the openssl CLI: the server logs istiod's lines, issues chains
//! that openssl verifies (leaf, intermediate, root bundle), and refuses to
//! start on every kind of broken set with a message naming the file.

mod support;

use meshca_pki::authority::{new_intermediate, new_root, AuthorityOptions};
use meshca_pki::material::Part;
use meshca_pki::{pem, CaMaterial, KeyKind, LeafProfile, MaterialInput, PrivateKey};
use meshca_testkit::{connect, make_csr, openssl, request, KeyType, Server, ServerOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use support::*;

const ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";

fn certs_root(dir: &Path, cn: &str) -> PathBuf {
    meshca(&["certs", "root", "--out", dir.to_str().unwrap(), "--cn", cn]);
    dir.to_path_buf()
}

fn certs_intermediate(root: &Path, out: &Path, cluster: &str) -> PathBuf {
    meshca(&[
        "certs",
        "intermediate",
        "--root",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cluster",
        cluster,
    ]);
    out.to_path_buf()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ders(text: &str) -> Vec<meshca_pki::CertDer> {
    pem::parse_certs(text.as_bytes()).expect("PEM certificates")
}

/// Start on `ca_dir`, check istiod's log lines and /status, issue one
/// certificate and verify it with openssl. Returns the response chain.
async fn check_plugged(work: &Path, ca_dir: &Path, key_file: &str, roots: usize) -> Vec<String> {
    std::fs::create_dir_all(work).unwrap();
    let opts = ServerOptions { ca_dir: Some(ca_dir.to_path_buf()), ..Default::default() };
    let server = Server::start(&bin(), work, opts).unwrap();
    let log = server.logs();
    let lines: Vec<&str> = log.lines().collect();
    let marker = format!("Use plugged-in cert at {}", ca_dir.join(key_file).display());
    let at = lines.iter().position(|l| l.contains(&marker)).unwrap_or_else(|| panic!("no {marker:?} in:\n{log}"));
    let x509: Vec<&&str> = lines[at + 1..].iter().take_while(|l| l.contains("x509 cert - Issuer: \"")).collect();
    assert!(x509.len() > roots, "signer and {roots} root(s) must follow {marker:?}:\n{log}");
    assert!(x509.iter().all(|l| l.contains("SN: ") && l.contains("NotAfter: \"")), "{x509:?}");
    assert!(!log.contains("self-signed cert is used"), "{log}");
    assert!(log.contains(&format!("spiffe  Added {roots} certs to trust domain cluster.local")), "{log}");

    let status = server.status();
    assert_eq!(status["source"], "plugged", "{status}");
    assert_eq!(status["roots"].as_array().unwrap().len(), roots, "{status}");
    assert!(status["last_error"].is_null(), "{status}");

    let bundle = server.root_pem();
    assert_eq!(pem_count(&bundle), roots);
    let token = server.token("default", "sleep");
    let mut client = connect(server.grpc, &bundle, None).await.unwrap();
    let (csr, _) = make_csr(KeyType::EcP256, Some(ID));
    let chain =
        client.create_certificate(request(&csr, 3600, Some(&token), None)).await.unwrap().into_inner().cert_chain;
    assert_eq!(chain.len(), 3, "leaf, intermediate, root bundle: {chain:#?}");
    assert_eq!(chain[2], bundle, "the last element is the whole bundle");
    assert_eq!(pem_count(&chain[1]), 1);
    assert!(chain.iter().all(|c| c.ends_with('\n')));
    assert_eq!(status["signer"]["sha256"], status["chain"][0]["sha256"], "{status}");
    openssl::verify_response(work, &chain).unwrap();
    assert_eq!(leaf_facts(&chain[0]).0.as_deref(), Some(ID));
    chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_a_from_meshca_certs_and_a_multi_root_bundle() {
    openssl::require();
    let t = tempfile::tempdir().unwrap();
    let root = certs_root(&t.path().join("root"), "Root A");
    let ca = certs_intermediate(&root, &t.path().join("cacerts"), "cluster1");
    let chain = check_plugged(&t.path().join("w1"), &ca, "ca-key.pem", 1).await;
    assert_eq!(ders(&chain[1]), ders(&read(&ca.join("ca-cert.pem"))), "element 1 is the intermediate");
    assert_eq!(ders(&chain[2]), ders(&read(&root.join("root-cert.pem"))));

    // Roots A and B in one bundle, the signer under A.
    let root_b = certs_root(&t.path().join("root-b"), "Root B");
    let both = format!("{}{}", read(&root.join("root-cert.pem")), read(&root_b.join("root-cert.pem")));
    std::fs::write(ca.join("root-cert.pem"), &both).unwrap();
    let chain = check_plugged(&t.path().join("w2"), &ca, "ca-key.pem", 2).await;
    assert_eq!(pem_count(&chain[2]), 2, "the last element holds both roots");
    assert_eq!(ders(&chain[2]), ders(&both));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_a_from_the_openssl_cli() {
    openssl::require();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let cnf = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nO = Istio\n\
        [v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\n\
        subjectKeyIdentifier = hash\n\
        [v3_inter]\nbasicConstraints = critical, CA:TRUE, pathlen:0\n\
        keyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash\n\
        authorityKeyIdentifier = keyid:always\n";
    std::fs::write(d.join("ca.cnf"), cnf).unwrap();
    let ca = d.join("cacerts");
    std::fs::create_dir_all(&ca).unwrap();
    #[rustfmt::skip]
    openssl_in(d, &["req", "-x509", "-new", "-config", "ca.cnf", "-extensions", "v3_ca", "-newkey", "rsa:2048",
        "-nodes", "-keyout", "root-key.pem", "-out", "cacerts/root-cert.pem", "-days", "3650",
        "-subj", "/O=Istio/CN=Root CA"]);
    #[rustfmt::skip]
    openssl_in(d, &["req", "-new", "-config", "ca.cnf", "-newkey", "rsa:2048", "-nodes",
        "-keyout", "cacerts/ca-key.pem", "-out", "inter.csr", "-subj", "/O=Istio/CN=Intermediate CA/L=cluster1"]);
    #[rustfmt::skip]
    openssl_in(d, &["x509", "-req", "-in", "inter.csr", "-CA", "cacerts/root-cert.pem", "-CAkey", "root-key.pem",
        "-set_serial", "0x5f2a9c01", "-days", "730", "-sha256", "-extfile", "ca.cnf", "-extensions", "v3_inter",
        "-out", "cacerts/ca-cert.pem"]);
    std::fs::copy(ca.join("ca-cert.pem"), ca.join("cert-chain.pem")).unwrap();
    let text = openssl_in(d, &["x509", "-noout", "-text", "-in", "cacerts/ca-cert.pem"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");

    let chain = check_plugged(&d.join("w"), &ca, "ca-key.pem", 1).await;
    assert_eq!(ders(&chain[1]), ders(&read(&ca.join("ca-cert.pem"))));
    let leaf = openssl::text(d, &chain[0]);
    assert!(leaf.contains("Issuer: O = Istio, CN = Intermediate CA, L = cluster1"), "{leaf}");
    assert!(leaf.contains("sha256WithRSAEncryption"), "signed by the RSA intermediate: {leaf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_b_kubernetes_tls_secret() {
    openssl::require();
    let t = tempfile::tempdir().unwrap();
    let root = certs_root(&t.path().join("root"), "Root CA");
    let src = certs_intermediate(&root, &t.path().join("src"), "cluster2");
    let inter = read(&src.join("ca-cert.pem"));
    let root_pem = read(&root.join("root-cert.pem"));
    for (i, tls_crt) in [format!("{inter}{root_pem}"), inter.clone()].into_iter().enumerate() {
        let ca = t.path().join(format!("tls{i}"));
        std::fs::create_dir_all(&ca).unwrap();
        std::fs::write(ca.join("tls.crt"), tls_crt).unwrap();
        std::fs::copy(src.join("ca-key.pem"), ca.join("tls.key")).unwrap();
        std::fs::write(ca.join("ca.crt"), &root_pem).unwrap();
        let chain = check_plugged(&t.path().join(format!("w{i}")), &ca, "tls.key", 1).await;
        assert_eq!(ders(&chain[1]), ders(&inter), "tls.crt variant {i}");
        assert_eq!(ders(&chain[2]), ders(&root_pem));
    }
}

fn write_set(dir: &Path, cert: &str, key: &str, chain: &str, roots: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in
        [("ca-cert.pem", cert), ("ca-key.pem", key), ("cert-chain.pem", chain), ("root-cert.pem", roots)]
    {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir.to_path_buf()
}

fn load_root(dir: &Path) -> CaMaterial {
    let (c, k) = (read(&dir.join("root-cert.pem")), read(&dir.join("root-key.pem")));
    let cert = Part { name: "root-cert.pem", pem: c.as_bytes() };
    let input = MaterialInput { cert, key: Part { name: "root-key.pem", pem: k.as_bytes() }, chain: None, roots: cert };
    CaMaterial::from_input(&input, SystemTime::now()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sets_refuse_to_start_naming_the_file() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let root = certs_root(&d.join("root"), "Root CA");
    let good = certs_intermediate(&root, &d.join("good"), "c1");
    let other = certs_intermediate(&root, &d.join("other"), "c2");
    let stranger_root = certs_root(&d.join("stranger"), "Stranger Root");
    let f = |dir: &Path, n: &str| read(&dir.join(n));
    let (cert, key, chain, roots) =
        (f(&good, "ca-cert.pem"), f(&good, "ca-key.pem"), f(&good, "cert-chain.pem"), f(&good, "root-cert.pem"));
    let half = |s: &str| s[..s.len() / 2].to_string();

    // A leaf (CA:FALSE) signed by the root, used as the signing certificate.
    let root_ca = load_root(&root);
    let leaf_key = PrivateKey::generate(KeyKind::EcP256).unwrap();
    let profile = LeafProfile { uris: vec![ID.into()], dns_names: vec![], ttl: Duration::from_secs(86400) };
    let leaf = pem::cert_to_pem(
        &root_ca.signer().issue(&leaf_key.public_key_spki(), &profile, SystemTime::now()).unwrap().cert,
    );

    // An intermediate that expired a year ago, under a root that is still valid.
    let year = Duration::from_secs(365 * 86400);
    let opts = |cn: &str, ttl| AuthorityOptions {
        common_name: cn.into(),
        organization: "Istio".into(),
        locality: None,
        ttl,
        key: KeyKind::EcP256,
        path_len: None,
    };
    let now = SystemTime::now();
    let old_root = CaMaterial::self_signed(new_root(&opts("Old Root", 10 * year), now - 3 * year).unwrap()).unwrap();
    let expired = new_intermediate(&opts("Expired Intermediate", year), old_root.signer(), now - 2 * year).unwrap();
    let expired_pem = pem::cert_to_pem(&expired.cert);
    let old_root_pem = pem::cert_to_pem(old_root.signer().cert());

    let missing = write_set(&d.join("missing"), &cert, &key, &chain, &roots);
    std::fs::remove_file(missing.join("cert-chain.pem")).unwrap();
    let missing_b = d.join("missing-b");
    std::fs::create_dir_all(&missing_b).unwrap();
    std::fs::write(missing_b.join("tls.crt"), &cert).unwrap();
    std::fs::write(missing_b.join("tls.key"), &key).unwrap();

    const TRUNC: &str = "truncated or not PEM";
    let cases: Vec<(&str, PathBuf, &str, &str)> = vec![
        ("missing file", missing, "cert-chain.pem", "incomplete signing CA bundle: missing cert-chain.pem"),
        ("missing file, layout B", missing_b, "ca.crt", "incomplete signing CA bundle: missing ca.crt"),
        (
            "key not matching the cert",
            write_set(&d.join("mismatch"), &cert, &f(&other, "ca-key.pem"), &chain, &roots),
            "ca-key.pem",
            "does not match",
        ),
        (
            "chain not reaching a root of the bundle",
            write_set(&d.join("noroot"), &cert, &key, &cert, &f(&stranger_root, "root-cert.pem")),
            "root-cert.pem",
            "does not reach a trusted root",
        ),
        (
            "not a CA",
            write_set(&d.join("notca"), &leaf, &leaf_key.to_pkcs8_pem(), &leaf, &roots),
            "ca-cert.pem",
            "is not a CA certificate",
        ),
        (
            "expired intermediate",
            write_set(&d.join("expired"), &expired_pem, &expired.key.to_pkcs8_pem(), &expired_pem, &old_root_pem),
            "ca-cert.pem",
            "expired at",
        ),
        ("truncated cert", write_set(&d.join("trunc-cert"), &half(&cert), &key, &chain, &roots), "ca-cert.pem", TRUNC),
        (
            "truncated key",
            write_set(&d.join("trunc-key"), &cert, &half(&key), &chain, &roots),
            "ca-key.pem",
            "no private key",
        ),
        (
            "truncated chain",
            write_set(&d.join("trunc-chain"), &cert, &key, &half(&chain), &roots),
            "cert-chain.pem",
            TRUNC,
        ),
        (
            "truncated roots",
            write_set(&d.join("trunc-roots"), &cert, &key, &chain, &half(&roots)),
            "root-cert.pem",
            TRUNC,
        ),
    ];
    for (name, ca_dir, file, problem) in cases {
        let work = d.join(format!("work-{}", name.replace(' ', "-")));
        std::fs::create_dir_all(&work).unwrap();
        let opts = ServerOptions { ca_dir: Some(ca_dir.clone()), ..Default::default() };
        let err = match Server::start(&bin(), &work, opts) {
            Ok(_) => panic!("{name}: the server started on a broken set"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("exited with exit status: 1"), "{name}: must exit non-zero: {err}");
        let path = ca_dir.join(file).display().to_string();
        let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{name}: {err}"));
        assert!(line.contains(&path), "{name}: the message must name {path}: {line}");
        assert!(line.contains(problem), "{name}: expected {problem:?} in {line}");
        assert!(!err.contains("Use plugged-in cert"), "{name}: {err}");
        assert!(!work.join("data/ca/root-key.pem").exists(), "{name}: no silent fallback to self-signed");
    }
}
