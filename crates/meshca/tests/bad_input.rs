//! Hostile and broken requests against one running TLS server. Each case
//! must get the exact gRPC code (authentication -> Unauthenticated with the
//! fixed message, bad CSR or TTL -> InvalidArgument), no certificate, one new
//! audit line "refused" with a reason, and must leave the server alive and
//! issuing. The refusal counters must grow by exactly the number of cases.

mod support;

use meshca_jwt::SigningKey;
use meshca_pki::authority::{new_root, AuthorityOptions};
use meshca_pki::{CaMaterial, KeyKind, LeafProfile, PrivateKey};
use meshca_testkit::{connect, make_csr, openssl, request, CaClient, KeyType, Server, ServerOptions};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::*;
use tonic::Code;

const ISS: &str = "https://issuer.example";
const ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const MAX_TTL: i64 = 90 * 24 * 3600;

/// A CSR made by the openssl CLI with a throwaway key.
fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], extra: &[&str]) -> String {
    let cfg = dir.join("req.cnf");
    std::fs::write(&cfg, "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nO = meshca-test\n").unwrap();
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let mut args = vec!["req", "-new", "-config", cfg.to_str().unwrap(), "-nodes", "-keyout", &key, "-out", &csr];
    args.extend_from_slice(newkey);
    args.extend_from_slice(extra);
    openssl_in(dir, &args);
    std::fs::read_to_string(dir.join(&csr)).unwrap()
}

const P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A valid CSR whose signature's last byte is flipped, re-encoded as PEM.
fn broken_signature_csr() -> String {
    use base64::Engine as _;
    let (csr, _) = make_csr(KeyType::EcP256, Some(ID));
    let b64: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    *der.last_mut().unwrap() ^= 0x01;
    meshca_pki::pem::encode("CERTIFICATE REQUEST", &der)
}

/// A client certificate for ID issued by a CA the mesh has never seen.
fn foreign_client_cert() -> (String, String) {
    let now = SystemTime::now();
    let opts = AuthorityOptions {
        common_name: "Foreign Root".into(),
        organization: "elsewhere".into(),
        locality: None,
        ttl: Duration::from_secs(365 * 86400),
        key: KeyKind::EcP256,
        path_len: None,
    };
    let ca = CaMaterial::self_signed(new_root(&opts, now).unwrap()).unwrap();
    let key = PrivateKey::generate(KeyKind::EcP256).unwrap();
    let profile = LeafProfile { uris: vec![ID.into()], dns_names: vec![], ttl: Duration::from_secs(3600) };
    let leaf = ca.signer().issue(&key.public_key_spki(), &profile, now).unwrap();
    (meshca_pki::pem::cert_to_pem(&leaf.cert), key.to_pkcs8_pem().to_string())
}

struct Case {
    name: &'static str,
    csr: String,
    ttl: i64,
    token: Option<String>,
    impersonate: Option<&'static str>,
    foreign_client: bool,
    code: Code,
    /// Substring the audit line's reason must contain.
    reason: &'static str,
}

fn auth_case(name: &'static str, token: Option<String>, reason: &'static str) -> Case {
    let (csr, _) = make_csr(KeyType::EcP256, None);
    Case { name, csr, ttl: 3600, token, impersonate: None, foreign_client: false, code: Code::Unauthenticated, reason }
}

fn csr_case(name: &'static str, csr: String, token: &str, reason: &'static str) -> Case {
    let token = Some(token.to_string());
    Case { name, csr, ttl: 3600, token, impersonate: None, foreign_client: false, code: Code::InvalidArgument, reason }
}

async fn good_request(client: &mut CaClient, token: &str) -> Vec<String> {
    let (csr, _) = make_csr(KeyType::EcP256, Some(ID));
    client
        .create_certificate(request(&csr, 3600, Some(token), None))
        .await
        .expect("good request")
        .into_inner()
        .cert_chain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_exact_codes_and_the_server_keeps_serving() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let es = SigningKey::generate_es256().unwrap();
    let rs = SigningKey::generate_rs256().unwrap();
    let jwks = dir.join("jwks.json");
    write_jwks(&jwks, &[&es, &rs]);
    let opts = ServerOptions {
        args: vec![
            "--jwt-issuer".into(),
            format!("{ISS}={}", jwks.display()),
            "--trusted-node-accounts".into(),
            "istio-system/ztunnel".into(),
        ],
        ..Default::default()
    };
    let mut server = Server::start(&bin(), dir, opts).unwrap();
    let roots = server.root_pem();
    let mut client = connect(server.grpc, &roots, None).await.unwrap();
    let token = k8s_token(&es, ISS, "default", "sleep");
    let rs_token = k8s_token(&rs, ISS, "default", "sleep");

    // Positive controls: both algorithms, an openssl-made CSR, negative TTL
    // meaning the default, exactly the maximum TTL, and a trusted node agent
    // asking for a workload's identity.
    for t in [&token, &rs_token] {
        let chain = good_request(&mut client, t).await;
        assert_eq!(chain.len(), 2);
        openssl::verify_response(dir, &chain).unwrap();
    }
    let ossl_good = openssl_csr(dir, "good", P256, &["-addext", &format!("subjectAltName=URI:{ID}")]);
    let resp = client.create_certificate(request(&ossl_good, -1, Some(&token), None)).await.unwrap().into_inner();
    assert_eq!(leaf_facts(&resp.cert_chain[0]), (Some(ID.to_string()), 24 * 3600 + 120), "negative TTL = 24h");
    let (csr, _) = make_csr(KeyType::EcP256, None);
    let resp = client.create_certificate(request(&csr, MAX_TTL, Some(&token), None)).await.unwrap().into_inner();
    assert_eq!(leaf_facts(&resp.cert_chain[0]).1, MAX_TTL + 120, "exactly the maximum TTL is allowed");
    let node = k8s_token(&es, ISS, "istio-system", "ztunnel");
    let target = "spiffe://cluster.local/ns/prod/sa/api";
    let (csr, _) = make_csr(KeyType::EcP256, None);
    let resp = client.create_certificate(request(&csr, 3600, Some(&node), Some(target))).await.unwrap().into_inner();
    assert_eq!(leaf_facts(&resp.cert_chain[0]).0.as_deref(), Some(target), "ztunnel gets the impersonated identity");
    openssl::verify_response(dir, &resp.cert_chain).unwrap();
    let text = openssl::text(dir, &resp.cert_chain[0]);
    assert!(text.contains(&format!("URI:{target}")) && !text.contains("ztunnel"), "{text}");

    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = k8s_claims(ISS, "default", "sleep");
        f(&mut c);
        c
    };
    let now = now_secs();
    let rs_public = serde_json::to_vec(&rs.public_jwk()).unwrap();
    let stranger = SigningKey::generate_es256().unwrap();
    let big = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}-----END CERTIFICATE REQUEST-----\n",
        "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n".repeat(100 * 1024 / 65)
    );
    assert!(big.len() > 64 * 1024 && big.len() < 128 * 1024 - 1024, "{}", big.len());
    let other_id = "spiffe://cluster.local/ns/prod/sa/api";
    let san = |v: &str| vec!["-addext".to_string(), format!("subjectAltName={v}")];
    let ossl = |name: &str, newkey: &[&str], extra: Vec<String>| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        openssl_csr(dir, name, newkey, &extra)
    };

    let mut cases = vec![
        csr_case(
            "malformed PEM",
            "-----BEGIN CERTIFICATE REQUEST-----\n!!not*base64!!\n-----END CERTIFICATE REQUEST-----\n".into(),
            &token,
            "could not be parsed",
        ),
        csr_case("not PEM at all", "hello, CA".into(), &token, "not PEM"),
        csr_case("broken signature", broken_signature_csr(), &token, "signature does not verify"),
        csr_case("RSA-1024", ossl("rsa1024", &["-newkey", "rsa:1024"], san(&format!("URI:{ID}"))), &token, "1024"),
        csr_case(
            "secp256k1",
            ossl("k1", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"], vec![]),
            &token,
            "unsupported CSR key",
        ),
        csr_case(
            "CA:TRUE",
            ossl("ca", P256, vec!["-addext".into(), "basicConstraints=critical,CA:TRUE".into()]),
            &token,
            "CA certificate",
        ),
        csr_case(
            "keyCertSign",
            ossl("kcs", P256, vec!["-addext".into(), "keyUsage=critical,keyCertSign".into()]),
            &token,
            "CA certificate",
        ),
        csr_case("other identity", make_csr(KeyType::EcP256, Some(other_id)).0, &token, "but the caller is"),
        csr_case("DNS SAN", ossl("dns", P256, san("DNS:evil.example")), &token, "SAN of type DNS"),
        csr_case("IP SAN", ossl("ip", P256, san(&format!("URI:{ID},IP:10.0.0.1"))), &token, "SAN of type IP address"),
        csr_case("two URI SANs", ossl("uris", P256, san(&format!("URI:{ID},URI:{other_id}"))), &token, "more than one"),
        csr_case("email SAN", ossl("email", P256, san("email:root@cluster.local")), &token, "SAN of type email"),
        csr_case(
            "unknown critical extension",
            ossl("crit", P256, vec!["-addext".into(), "1.3.6.1.4.1.55555.1=critical,ASN1:UTF8String:x".into()]),
            &token,
            "unknown critical extension",
        ),
        csr_case("SHA-1 signature", ossl("sha1", P256, vec!["-sha1".into()]), &token, "is not accepted"),
        csr_case("empty CSR", String::new(), &token, "empty CSR"),
        csr_case("100 KiB CSR (over the CSR policy, under --grpc-max-message-size)", big, &token, "too large"),
        Case {
            ttl: 10 * 365 * 86400,
            code: Code::InvalidArgument,
            ..auth_case("10-year TTL", Some(token.clone()), "max")
        },
        Case { ttl: MAX_TTL + 1, code: Code::InvalidArgument, ..auth_case("max TTL + 1s", Some(token.clone()), "max") },
        auth_case("missing token", None, "no credential"),
        auth_case("expired token", Some(es.sign(&claims(&|c| c["exp"] = json!(now - 3600))).unwrap()), "expired"),
        auth_case(
            "not-yet-valid token",
            Some(es.sign(&claims(&|c| c["nbf"] = json!(now + 3600))).unwrap()),
            "not yet valid",
        ),
        auth_case("wrong audience", Some(es.sign(&claims(&|c| c["aud"] = json!(["kubernetes"]))).unwrap()), "audience"),
        auth_case("unknown issuer", Some(k8s_token(&es, "https://evil.example", "default", "sleep")), "not trusted"),
        auth_case("alg none", Some(alg_none_token(&claims(&|_| {}))), "bearer token"),
        auth_case(
            "alg none with a signature",
            Some(format!("{}{}", alg_none_token(&claims(&|_| {})), b64url(b"signature"))),
            "unsupported algorithm",
        ),
        auth_case("HS256", Some(hs256_token(&claims(&|_| {}), rs.kid(), &rs_public)), "unsupported algorithm"),
        auth_case("unknown kid", Some(k8s_token(&stranger, ISS, "default", "sleep")), "unknown key id"),
        auth_case("garbage bearer", Some("not-a-jwt".into()), "malformed"),
        auth_case(
            "right kid, wrong key",
            Some(es256_token_with_foreign_key(&claims(&|_| {}), es.kid())),
            "bad signature",
        ),
        auth_case(
            "sub with five parts",
            Some(es.sign(&claims(&|c| c["sub"] = json!("system:serviceaccount:default:sleep:x"))).unwrap()),
            "no Kubernetes service account",
        ),
        Case {
            impersonate: Some(other_id),
            ..auth_case("untrusted impersonation", Some(token.clone()), "trusted node")
        },
        Case {
            impersonate: Some("spiffe://other.domain/ns/default/sa/sleep"),
            ..auth_case("impersonation across trust domains", Some(node.clone()), "invalid")
        },
        Case { foreign_client: true, ..auth_case("foreign client certificate", None, "client certificate") },
    ];
    assert!(cases.len() >= 25);
    let count = |code| cases.iter().filter(|c| c.code == code).count() as f64;
    let (n_auth, n_invalid) = (count(Code::Unauthenticated), count(Code::InvalidArgument));
    let n_ttl = cases.iter().filter(|c| c.name.contains("TTL")).count() as f64;

    let foreign = foreign_client_cert();
    let mut foreign_client = connect(server.grpc, &roots, Some((&foreign.0, &foreign.1))).await.unwrap();
    let before = scrape(&server);
    for case in cases.drain(..) {
        let n0 = server.audit().len();
        let c = if case.foreign_client { &mut foreign_client } else { &mut client };
        let req = request(&case.csr, case.ttl, case.token.as_deref(), case.impersonate);
        let status = match c.create_certificate(req).await {
            Ok(resp) => panic!("{}: expected {:?}, got a certificate: {:?}", case.name, case.code, resp.into_inner()),
            Err(s) => s,
        };
        assert_eq!(status.code(), case.code, "{}: {status:?}", case.name);
        if case.code == Code::Unauthenticated {
            assert_eq!(status.message(), "request authenticate failure", "{}: details must not leak", case.name);
        } else {
            assert!(!status.message().is_empty(), "{}", case.name);
        }
        let audit = audit_after(&server, n0);
        let line = &audit[n0];
        assert_eq!(line["outcome"], "refused", "{}: {line}", case.name);
        assert_eq!(line["code"], format!("{:?}", case.code), "{}: {line}", case.name);
        let reason = line["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(case.reason), "{}: reason {reason:?} should mention {:?}", case.name, case.reason);
        assert!(line["serial"].is_null(), "{}: {line}", case.name);
        if let Some(t) = &case.token {
            let raw = std::fs::read_to_string(server.data_dir.join("audit.jsonl")).unwrap();
            assert!(t.len() < 20 || !raw.contains(t.as_str()), "{}: the token leaked into the audit log", case.name);
        }

        assert!(server.alive(), "{}: the server died", case.name);
        let chain = good_request(&mut client, &token).await;
        assert_eq!(leaf_facts(&chain[0]).0.as_deref(), Some(ID), "{}", case.name);
        let audit = audit_after(&server, n0 + 1);
        assert_eq!(audit[n0 + 1]["outcome"], "issued", "{}", case.name);
    }
    assert!(server.alive());

    let after = scrape(&server);
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(delta("citadel_server_authentication_failure_count_total"), n_auth);
    assert_eq!(delta("meshca_requests_refused_total{reason=\"authentication\"}"), n_auth);
    assert_eq!(delta("meshca_requests_refused_total{reason=\"ttl\"}"), n_ttl);
    assert_eq!(delta("meshca_requests_refused_total{reason=\"csr\"}"), n_invalid - n_ttl);
    assert_eq!(delta("meshca_requests_refused_total{reason=\"signing\"}"), 0.0);
    assert_eq!(delta("citadel_server_csr_count_total"), 2.0 * (n_auth + n_invalid));
    assert_eq!(delta("citadel_server_success_cert_issuance_count_total"), n_auth + n_invalid);
    let log = server.logs();
    assert!(log.contains("certificate request refused"), "refusals are logged with their reason");
}
