//! End to end: a newcomer's path through the README. Start the real server on
//! its self-signed default, mint a token, get a certificate over TLS with a
//! real tonic client, and have openssl verify it against /root-cert.pem.

use meshca_testkit::{connect, make_csr, openssl, request, KeyType, Server, ServerOptions};
use std::path::PathBuf;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshca"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_certificate_verifies_with_openssl_and_root_survives_restart() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let mut server = Server::start(&bin(), work.path(), ServerOptions::default()).unwrap();
    let roots = server.root_pem();
    let token = server.token("default", "sleep");

    let mut client = connect(server.grpc, &roots, None).await.unwrap();
    let id = "spiffe://cluster.local/ns/default/sa/sleep";
    for kind in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let (csr, _key) = make_csr(kind, Some(id));
        let resp = client.create_certificate(request(&csr, 3600, Some(&token), None)).await.unwrap().into_inner();
        assert_eq!(resp.cert_chain.len(), 2, "self-signed: leaf then root bundle");
        assert_eq!(resp.cert_chain[1], roots, "last element is the bundle served at /root-cert.pem");
        openssl::verify_response(work.path(), &resp.cert_chain).unwrap();
        let text = openssl::text(work.path(), &resp.cert_chain[0]);
        assert!(text.contains(&format!("URI:{id}")), "{text}");
        assert!(text.contains("X509v3 Subject Alternative Name: critical"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{text}");
    }
    // A CSR without SAN gets the identity from the token.
    let (csr, _) = make_csr(KeyType::EcP256, None);
    let resp = client.create_certificate(request(&csr, 0, Some(&token), None)).await.unwrap().into_inner();
    let info = meshca_pki::inspect::cert_info(&meshca_pki::pem::parse_certs(resp.cert_chain[0].as_bytes()).unwrap()[0])
        .unwrap();
    assert_eq!(info.spiffe_id.as_deref(), Some(id));
    assert_eq!(info.not_after_unix - info.not_before_unix, 24 * 3600 + 120, "default TTL 24h plus 2 min backdate");

    // Audit lines: four issuances, no token or key material.
    let audit = server.audit();
    assert_eq!(audit.iter().filter(|a| a["outcome"] == "issued").count(), 4, "{audit:?}");
    let raw = std::fs::read_to_string(server.data_dir.join("audit.jsonl")).unwrap();
    assert!(!raw.contains(&token) && !raw.contains("PRIVATE KEY"));

    // Restart: the same root is reused, and the earlier token still works.
    server.restart().unwrap();
    assert_eq!(server.root_pem(), roots, "self-signed root must persist across restarts");
    let mut client = connect(server.grpc, &roots, None).await.unwrap();
    let resp = client.create_certificate(request(&csr, 0, Some(&token), None)).await.unwrap().into_inner();
    openssl::verify_response(work.path(), &resp.cert_chain).unwrap();
    let log = server.logs();
    assert!(log.contains("; self-signed cert is used"), "{log}");
    assert!(log.contains("x509 cert - Issuer: \"CN=meshca self-signed root,O=cluster.local\""), "{log}");
    assert!(log.contains("spiffe  Added 1 certs to trust domain cluster.local in peer cert verifier"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_a_mesh_client_certificate() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&bin(), work.path(), ServerOptions::default()).unwrap();
    let roots = server.root_pem();
    let token = server.token("prod", "api");
    let id = "spiffe://cluster.local/ns/prod/sa/api";
    let (csr, key) = make_csr(KeyType::EcP256, Some(id));
    let mut client = connect(server.grpc, &roots, None).await.unwrap();
    let first = client.create_certificate(request(&csr, 3600, Some(&token), None)).await.unwrap().into_inner();

    // No token: the certificate itself authenticates the renewal.
    let cert_pem = first.cert_chain[..first.cert_chain.len() - 1].concat();
    let mut mtls = connect(server.grpc, &roots, Some((&cert_pem, &key))).await.unwrap();
    let (csr2, _) = make_csr(KeyType::EcP256, Some(id));
    let renewed = mtls.create_certificate(request(&csr2, 3600, None, None)).await.unwrap().into_inner();
    openssl::verify_response(work.path(), &renewed.cert_chain).unwrap();
    // ...but only for the same identity.
    let (csr3, _) = make_csr(KeyType::EcP256, Some("spiffe://cluster.local/ns/prod/sa/other"));
    let err = mtls.create_certificate(request(&csr3, 3600, None, None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let audit = server.audit();
    assert!(
        audit.iter().any(|a| a["outcome"] == "issued" && a["caller"].as_str().unwrap().contains(" mtls ")),
        "{audit:?}"
    );
}
