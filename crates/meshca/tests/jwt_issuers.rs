//! External JWT issuers: keys from a JWKS file, a JWKS URL and OIDC
//! discovery, served by a tiny HTTP server in the test that counts every
//! GET. Key rotation at the issuer costs exactly one refetch; a flood of
//! unknown key IDs costs at most one fetch per 10 s window.

mod support;

use meshca_jwt::SigningKey;
use meshca_testkit::{connect, make_csr, request, CaClient, KeyType, Server, ServerOptions};
use std::time::{Duration, Instant};
use support::*;
use tonic::Code;

#[path = "support/tiny_http.rs"]
mod tiny_http;
use tiny_http::Tiny;

const DISCOVERY: &str = "/.well-known/openid-configuration";
const FILE_ISS: &str = "https://file.example";
const URL_ISS: &str = "https://url.example";

/// A tiny server publishing `url_keys` at /url/jwks and an OIDC issuer (its
/// own base URL) whose discovery document points at /oidc/jwks.
fn issuers(tiny: &Tiny, url_keys: &[&SigningKey], oidc_keys: &[&SigningKey]) -> String {
    let oidc_iss = tiny.url("");
    tiny.set("/url/jwks", jwks_json(url_keys));
    tiny.set("/oidc/jwks", jwks_json(oidc_keys));
    let doc = serde_json::json!({ "issuer": oidc_iss, "jwks_uri": tiny.url("/oidc/jwks") });
    tiny.set(DISCOVERY, doc.to_string());
    oidc_iss
}

fn start(work: &std::path::Path, jwks_file: &std::path::Path, tiny: &Tiny, oidc_iss: &str) -> Server {
    let opts = ServerOptions {
        args: vec![
            "--jwt-issuer".into(),
            format!("{FILE_ISS}={}", jwks_file.display()),
            "--jwt-issuer".into(),
            format!("{URL_ISS}={}", tiny.url("/url/jwks")),
            "--jwt-issuer".into(),
            format!("{oidc_iss}=oidc"),
            // The tiny JWKS/OIDC server is plain HTTP on loopback.
            "--jwt-allow-http".into(),
        ],
        ..Default::default()
    };
    Server::start(&bin(), work, opts).unwrap()
}

/// Ask for a certificate with `token`; Ok(SPIFFE ID of the leaf) or the gRPC code.
async fn ask(client: &mut CaClient, token: &str) -> Result<String, Code> {
    let (csr, _) = make_csr(KeyType::EcP256, None);
    match client.create_certificate(request(&csr, 3600, Some(token), None)).await {
        Ok(r) => Ok(leaf_facts(&r.into_inner().cert_chain[0]).0.expect("SPIFFE ID")),
        Err(s) => {
            if s.code() == Code::Unauthenticated {
                assert_eq!(s.message(), "request authenticate failure");
            }
            Err(s.code())
        }
    }
}

fn id(ns: &str, sa: &str) -> Result<String, Code> {
    Ok(format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_a_file_a_url_and_oidc_discovery() {
    let work = tempfile::tempdir().unwrap();
    let (kf, ku, ko) = (
        SigningKey::generate_es256().unwrap(),
        SigningKey::generate_rs256().unwrap(),
        SigningKey::generate_es256().unwrap(),
    );
    let jwks_file = work.path().join("jwks.json");
    write_jwks(&jwks_file, &[&kf]);
    let tiny = Tiny::start();
    let oidc_iss = issuers(&tiny, &[&ku], &[&ko]);
    let server = start(work.path(), &jwks_file, &tiny, &oidc_iss);
    assert_eq!(
        (tiny.hits("/url/jwks"), tiny.hits(DISCOVERY), tiny.hits("/oidc/jwks")),
        (1, 1, 1),
        "one fetch each at start"
    );
    let log = server.logs();
    for iss in [FILE_ISS, URL_ISS, oidc_iss.as_str()] {
        assert!(
            log.lines().any(|l| l.contains("trusting JWT issuer") && l.contains(iss) && l.contains("keys=1")),
            "{iss}: {log}"
        );
    }

    let mut client = connect(server.grpc, &server.root_pem(), None).await.unwrap();
    assert_eq!(ask(&mut client, &k8s_token(&kf, FILE_ISS, "files", "a")).await, id("files", "a"));
    assert_eq!(ask(&mut client, &k8s_token(&ku, URL_ISS, "urls", "b")).await, id("urls", "b"), "RS256 from a URL");
    assert_eq!(ask(&mut client, &k8s_token(&ko, &oidc_iss, "oidc", "c")).await, id("oidc", "c"), "ES256 via OIDC");
    for _ in 0..3 {
        assert!(ask(&mut client, &k8s_token(&ko, &oidc_iss, "oidc", "c")).await.is_ok());
    }
    assert_eq!(
        (tiny.hits("/url/jwks"), tiny.hits(DISCOVERY), tiny.hits("/oidc/jwks")),
        (1, 1, 1),
        "known kids: no fetch"
    );

    // A key trusted for one issuer proves nothing for another.
    assert_eq!(ask(&mut client, &k8s_token(&kf, URL_ISS, "urls", "b")).await, Err(Code::Unauthenticated));
    assert_eq!(ask(&mut client, &k8s_token(&ku, &oidc_iss, "oidc", "c")).await, Err(Code::Unauthenticated));
    assert_eq!(ask(&mut client, &k8s_token(&ko, FILE_ISS, "files", "a")).await, Err(Code::Unauthenticated));
    // The audience must be istio-ca.
    let mut claims = k8s_claims(URL_ISS, "urls", "b");
    claims["aud"] = serde_json::json!("https://kubernetes.default.svc");
    assert_eq!(ask(&mut client, &ku.sign(&claims).unwrap()).await, Err(Code::Unauthenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_refetches_once_and_unknown_kids_are_rate_limited() {
    let work = tempfile::tempdir().unwrap();
    let old = SigningKey::generate_es256().unwrap();
    let new = SigningKey::generate_rs256().unwrap();
    let jwks_file = work.path().join("jwks.json");
    write_jwks(&jwks_file, &[&old]);
    let tiny = Tiny::start();
    let oidc_iss = issuers(&tiny, &[&old], &[&old]);
    let server = start(work.path(), &jwks_file, &tiny, &oidc_iss);
    let ready = Instant::now();
    let mut client = connect(server.grpc, &server.root_pem(), None).await.unwrap();
    let all = [FILE_ISS, URL_ISS, oidc_iss.as_str()];
    for iss in all {
        assert_eq!(ask(&mut client, &k8s_token(&old, iss, "default", "sleep")).await, id("default", "sleep"), "{iss}");
    }
    let fetches = || (tiny.hits("/url/jwks"), tiny.hits(DISCOVERY), tiny.hits("/oidc/jwks"));
    assert_eq!(fetches(), (1, 1, 1));

    // The issuers rotate: the new key is published next to the old one.
    write_jwks(&jwks_file, &[&old, &new]);
    issuers(&tiny, &[&old, &new], &[&old, &new]);
    // Within 10 s of the start-up fetch, an unknown kid does not refetch.
    for iss in all {
        assert_eq!(
            ask(&mut client, &k8s_token(&new, iss, "default", "sleep")).await,
            Err(Code::Unauthenticated),
            "{iss}"
        );
    }
    assert_eq!(fetches(), (1, 1, 1), "rate-limited: no fetch within 10 s of the last one");

    tokio::time::sleep((ready + Duration::from_millis(10_500)).saturating_duration_since(Instant::now())).await;
    for iss in all {
        assert_eq!(ask(&mut client, &k8s_token(&new, iss, "rotated", "app")).await, id("rotated", "app"), "{iss}");
    }
    let refreshed = Instant::now();
    assert_eq!(fetches(), (2, 2, 2), "exactly one refetch per issuer for the new kid");
    for iss in all {
        assert!(
            ask(&mut client, &k8s_token(&new, iss, "rotated", "app")).await.is_ok(),
            "{iss}: no further fetch needed"
        );
        assert!(
            ask(&mut client, &k8s_token(&old, iss, "default", "sleep")).await.is_ok(),
            "{iss}: old key still published"
        );
    }
    assert_eq!(fetches(), (2, 2, 2));
    assert!(server.logs().contains("refreshed JWKS"));

    // Once the window has passed, a burst of 20 unknown kids costs one fetch, not 20.
    tokio::time::sleep((refreshed + Duration::from_millis(10_500)).saturating_duration_since(Instant::now())).await;
    let burst_started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut c = client.clone();
        let iss = if i % 2 == 0 { URL_ISS.to_string() } else { oidc_iss.clone() };
        tasks.push(tokio::spawn(async move {
            let stranger = SigningKey::generate_es256().unwrap();
            ask(&mut c, &k8s_token(&stranger, &iss, "default", "sleep")).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(Code::Unauthenticated));
    }
    assert!(burst_started.elapsed() < Duration::from_secs(10), "the burst must fit in one window");
    let (url, discovery, oidc) = fetches();
    assert!(url <= 3 && oidc <= 3 && discovery <= 3, "at most one further fetch per issuer: {:?}", fetches());
    assert_eq!(
        (url, oidc),
        (3, 3),
        "the window had reopened, so the first unknown kid refetches once: {:?}",
        fetches()
    );
    assert!(server.get("/healthz").is_ok());
}
