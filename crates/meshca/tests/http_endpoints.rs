//! The HTTP port: health, readiness, Prometheus metrics (checked by
//! promtool), the trust bundle with its ETag and long-poll, and /status.
//! Then configuration precedence (file < environment < flag), a typo in the
//! file, and JSON logs.

mod support;

use meshca_testkit::{connect, make_csr, openssl, request, KeyType, Server, ServerOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// `promtool check metrics` on `text`; panics loudly when promtool is missing.
fn promtool_check(text: &str) {
    use std::io::Write;
    let present = Command::new("promtool").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(present, "`promtool` is required by this test but was not found on PATH (apt-get install -y prometheus)");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn approx(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!((actual - expected).abs() <= tolerance, "{what}: {actual} is not within {tolerance} of {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_bundle_and_status_on_the_self_signed_default() {
    openssl::require();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&bin(), work.path(), ServerOptions::default()).unwrap();
    let (status, _, body) = http(server.http, "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = http(server.http, "/readyz", &[]);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(http(server.http, "/no-such-page", &[]).0, 404);

    // One issuance, so the histogram and counters have something to show.
    let roots = server.root_pem();
    let token = server.token("default", "sleep");
    let mut client = connect(server.grpc, &roots, None).await.unwrap();
    let (csr, _) = make_csr(KeyType::EcP256, None);
    client.create_certificate(request(&csr, 3600, Some(&token), None)).await.unwrap();
    assert!(client.create_certificate(request(&csr, 3600, Some("bad"), None)).await.is_err());

    let (status, headers, text) = http(server.http, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type").unwrap_or_default().starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    promtool_check(&text);
    for (name, value) in [
        ("citadel_server_csr_count_total", 2.0),
        ("citadel_server_authentication_failure_count_total", 1.0),
        ("citadel_server_csr_sign_err_count_total", 0.0),
        ("citadel_server_success_cert_issuance_count_total", 1.0),
        ("meshca_requests_refused_total{reason=\"authentication\"}", 1.0),
        ("meshca_issuance_duration_seconds_bucket{le=\"+Inf\"}", 1.0),
        ("meshca_issuance_duration_seconds_count", 1.0),
        ("meshca_trust_roots", 1.0),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
    }
    for (name, kind) in [
        ("citadel_server_csr_count_total", "counter"),
        ("citadel_server_authentication_failure_count_total", "counter"),
        ("citadel_server_csr_sign_err_count_total", "counter"),
        ("citadel_server_success_cert_issuance_count_total", "counter"),
        ("citadel_server_root_cert_expiry_timestamp", "gauge"),
        ("citadel_server_root_cert_expiry_seconds", "gauge"),
        ("citadel_server_cert_chain_expiry_timestamp", "gauge"),
        ("citadel_server_cert_chain_expiry_seconds", "gauge"),
    ] {
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} {kind}:\n{text}");
    }
    assert!(text.contains("# TYPE meshca_issuance_duration_seconds histogram"), "{text}");
    let sum = metric(&text, "meshca_issuance_duration_seconds_sum");
    assert!(sum > 0.0 && sum < 5.0, "issuance took {sum}s");
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("meshca_issuance_duration_seconds_bucket{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() > 5 && buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative buckets: {buckets:?}");

    // Expiry gauges: the default root lives 10 years; for a self-signed root
    // the signing chain expires with it.
    let now = now_secs() as f64;
    let ten_years = 10.0 * 365.0 * 86400.0;
    let root_ts = metric(&text, "citadel_server_root_cert_expiry_timestamp");
    approx(root_ts, now + ten_years, 3.0 * 86400.0, "root expiry timestamp");
    approx(metric(&text, "citadel_server_root_cert_expiry_seconds"), root_ts - now, 120.0, "root expiry seconds");
    approx(metric(&text, "citadel_server_cert_chain_expiry_timestamp"), root_ts, 1.0, "chain expiry timestamp");
    approx(metric(&text, "citadel_server_cert_chain_expiry_seconds"), root_ts - now, 120.0, "chain expiry seconds");
    let root_info =
        meshca_pki::inspect::cert_info(&meshca_pki::pem::parse_certs(roots.as_bytes()).unwrap()[0]).unwrap();
    assert_eq!(root_ts, root_info.not_after_unix as f64, "the gauge is the root's NotAfter");

    // The trust bundle: an ETag, conditional GETs and the long-poll.
    let (status, headers, body) = http(server.http, "/root-cert.pem", &[]);
    assert_eq!((status, body.as_str()), (200, roots.as_str()));
    let etag = header(&headers, "etag").expect("ETag header").to_string();
    assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let t = Instant::now();
    let (status, headers, body) = http(server.http, "/root-cert.pem", &[("If-None-Match", &etag)]);
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    assert!(t.elapsed() < Duration::from_millis(900), "no wait asked, no wait: {:?}", t.elapsed());
    let t = Instant::now();
    let (status, _, body) = http(server.http, "/root-cert.pem?wait=1", &[("If-None-Match", &etag)]);
    let waited = t.elapsed();
    assert_eq!((status, body.as_str()), (304, ""));
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
        "long-poll of 1 s took {waited:?}"
    );
    let t = Instant::now();
    let (status, _, body) = http(server.http, "/root-cert.pem?wait=5", &[("If-None-Match", "\"stale\"")]);
    assert_eq!((status, body.as_str()), (200, roots.as_str()));
    assert!(t.elapsed() < Duration::from_secs(1), "a stale ETag is answered at once");

    // /status, cross-checked with openssl.
    let st = server.status();
    assert_eq!(st["source"], "self-signed", "{st}");
    assert_eq!(st["trust_domain"], "cluster.local");
    assert!(st["last_error"].is_null(), "{st}");
    assert_eq!(st["root_bundle_etag"].as_str(), Some(etag.as_str()));
    let signer = &st["signer"];
    assert_eq!(signer["subject"], "CN=meshca self-signed root,O=cluster.local", "{st}");
    assert_eq!(signer["not_before"], root_info.not_before.as_str());
    assert_eq!(signer["not_after"], root_info.not_after.as_str());
    let ossl = openssl::run(&[
        "x509",
        "-noout",
        "-serial",
        "-fingerprint",
        "-sha256",
        "-in",
        &work.path().join("data/ca/root-cert.pem").display().to_string(),
    ])
    .unwrap();
    let ossl_serial =
        ossl.lines().find_map(|l| l.strip_prefix("serial=")).unwrap().trim_start_matches('0').to_lowercase();
    assert_eq!(signer["serial"].as_str().unwrap().trim_start_matches('0'), ossl_serial, "{ossl}");
    let ossl_sha = ossl.lines().find_map(|l| l.split_once("Fingerprint=")).unwrap().1.replace(':', "").to_lowercase();
    let st_roots = st["roots"].as_array().unwrap();
    assert_eq!(st_roots.len(), 1);
    assert_eq!(st_roots[0]["sha256"].as_str(), Some(ossl_sha.as_str()), "{st}");
    assert_eq!(signer["sha256"].as_str(), Some(ossl_sha.as_str()));
    assert!(st["chain"].as_array().unwrap().is_empty(), "a self-signed root has no intermediates: {st}");
}

fn trust_domain_of(server: &Server) -> String {
    server.status()["trust_domain"].as_str().unwrap().to_string()
}

async fn issued_id(server: &Server) -> String {
    let mut client = connect(server.grpc, &server.root_pem(), None).await.unwrap();
    let (csr, _) = make_csr(KeyType::EcP256, None);
    let token = server.token("default", "sleep");
    let resp = client.create_certificate(request(&csr, 0, Some(&token), None)).await.unwrap().into_inner();
    leaf_facts(&resp.cert_chain[0]).0.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_precedence_file_then_env_then_flag_and_json_logs() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("meshca.toml");
    std::fs::write(&cfg, "trust_domain = \"file.example\"\nmax_ttl = \"30d\"\n").unwrap();
    let config = vec!["--config".to_string(), cfg.display().to_string()];
    let env = vec![("MESHCA_TRUST_DOMAIN".to_string(), "env.example".to_string())];

    let work = t.path().join("file");
    std::fs::create_dir_all(&work).unwrap();
    let server = Server::start(&bin(), &work, ServerOptions { args: config.clone(), ..Default::default() }).unwrap();
    assert_eq!(trust_domain_of(&server), "file.example");
    assert_eq!(issued_id(&server).await, "spiffe://file.example/ns/default/sa/sleep");
    // max_ttl from the file applies too.
    let mut client = connect(server.grpc, &server.root_pem(), None).await.unwrap();
    let (csr, _) = make_csr(KeyType::EcP256, None);
    let token = server.token("default", "sleep");
    let err = client.create_certificate(request(&csr, 31 * 86400, Some(&token), None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "max_ttl = 30d from the file");
    drop(server);

    let work = t.path().join("env");
    std::fs::create_dir_all(&work).unwrap();
    let opts = ServerOptions { args: config.clone(), env: env.clone(), ..Default::default() };
    let server = Server::start(&bin(), &work, opts).unwrap();
    assert_eq!(trust_domain_of(&server), "env.example", "the environment overrides the file");
    assert_eq!(issued_id(&server).await, "spiffe://env.example/ns/default/sa/sleep");
    drop(server);

    let work = t.path().join("flag");
    std::fs::create_dir_all(&work).unwrap();
    let mut args = config.clone();
    args.extend(["--trust-domain".into(), "flag.example".into(), "--log-format".into(), "json".into()]);
    let server = Server::start(&bin(), &work, ServerOptions { args, env, ..Default::default() }).unwrap();
    assert_eq!(trust_domain_of(&server), "flag.example", "the flag overrides the environment");
    assert_eq!(issued_id(&server).await, "spiffe://flag.example/ns/default/sa/sleep");
    // JSON logs: every line is a JSON object; the istiod lines are messages.
    let log = server.logs();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    assert!(lines.iter().all(|l| l.is_object() && l["level"].is_string() && l["timestamp"].is_string()), "{log}");
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or_default().to_string();
    assert!(lines.iter().any(|l| message(l).contains("self-signed cert is used")), "{log}");
    assert!(lines.iter().any(|l| message(l).starts_with("x509 cert - Issuer: ")), "{log}");
    assert!(
        lines.iter().any(|l| message(l) == "spiffe  Added 1 certs to trust domain flag.example in peer cert verifier"),
        "{log}"
    );
    drop(server);

    // A typo in the file is an error naming the key and the file, not a silent default.
    let bad = t.path().join("typo.toml");
    std::fs::write(&bad, "trust_domian = \"typo.example\"\n").unwrap();
    let work = t.path().join("typo");
    std::fs::create_dir_all(&work).unwrap();
    let opts = ServerOptions { args: vec!["--config".into(), bad.display().to_string()], ..Default::default() };
    let err = match Server::start(&bin(), &work, opts) {
        Ok(_) => panic!("started with an unknown key in the config file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("exited with exit status: 1"), "{err}");
    assert!(err.contains("unknown field") && err.contains("trust_domian"), "{err}");
    assert!(err.contains(&bad.display().to_string()), "the error names the file: {err}");
}
