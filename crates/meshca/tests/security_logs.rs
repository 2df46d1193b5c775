//! Issue 15, findings 2 and 4 against the real binary: a flood of refused
//! requests with huge hostile strings writes a bounded number of bytes per
//! refusal, forged log lines stay on one escaped line, and an audit log that
//! cannot be written turns /readyz red and raises the metric.

mod security_support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use security_support::*;
use std::time::Duration;
use tonic::Code;

fn size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A ~14 KB token whose unverified `iss` is 1,900 control characters.
fn garbage_issuer_token() -> String {
    let iss: String = (0..1900).map(|i| char::from(1 + (i % 30) as u8)).collect();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::json!({"iss": iss, "sub": "x", "aud": "istio-ca"}).to_string());
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]))
}

async fn ask(client: &mut meshca_testkit::CaClient, token: &str, impersonate: Option<&str>) -> Result<(), Code> {
    let (csr, _) = meshca_testkit::make_csr(meshca_testkit::KeyType::EcP256, None);
    client
        .create_certificate(meshca_testkit::request(&csr, 3600, Some(token), impersonate))
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_floods_write_a_bounded_number_of_bytes_each() {
    let work = tempfile::tempdir().unwrap();
    let server = start(work.path(), &[]);
    let audit = server.data_dir.join("audit.jsonl");
    let mut client = meshca_testkit::connect(server.grpc, &server.root_pem(), None).await.unwrap();
    let token = garbage_issuer_token();
    assert!((13_000..16_384).contains(&token.len()), "token of {} bytes", token.len());
    let valid = server.token("default", "valid");
    let huge_identity = format!("spiffe://cluster.local/ns/x/sa/{}", "\u{1b}[31m\n".repeat(12_000));

    let (log0, audit0) = (size(&server.log), size(&audit));
    let n = 400;
    let sent: u64 = (token.len() * 300 + huge_identity.len() * 100) as u64;
    for i in 0..n {
        let r = if i < 300 {
            ask(&mut client, &token, None).await
        } else {
            ask(&mut client, &valid, Some(&huge_identity)).await
        };
        assert_eq!(r, Err(Code::Unauthenticated), "request {i}");
    }
    let lines = wait_for("every refusal audited", 20, || {
        let l = std::fs::read_to_string(&audit).unwrap_or_default().lines().count();
        (l >= n).then_some(l)
    });
    std::thread::sleep(Duration::from_millis(300));
    let (log_bytes, audit_bytes) = (size(&server.log) - log0, size(&audit) - audit0);
    let per = (log_bytes + audit_bytes) / n as u64;
    println!(
        "flood: {n} refusals ({} KiB of hostile input): log +{log_bytes} B, audit +{audit_bytes} B ({lines} lines) \
         = {per} B per refusal",
        sent / 1024
    );
    assert!(per <= 1024, "{per} bytes written per refusal");
    for line in std::fs::read_to_string(&audit).unwrap().lines() {
        assert!(line.len() <= 2048, "audit line of {} bytes", line.len());
    }
    let metrics = server.get("/metrics").unwrap();
    assert!(meshca_testkit::http::metric(&metrics, "meshca_log_lines_suppressed_total") > 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_log_lines_are_escaped() {
    let work = tempfile::tempdir().unwrap();
    let server = start(work.path(), &["--trusted-node-accounts", "kube-system/node"]);
    let mut client = meshca_testkit::connect(server.grpc, &server.root_pem(), None).await.unwrap();
    let forged = "2026-01-01T00:00:00.000000Z  INFO meshca_ca::service: certificate issued \
                  identity=spiffe://cluster.local/ns/prod/sa/admin";
    let target = format!("spiffe://cluster.local/ns/a/sa/b\n{forged}\u{1b}[2K\r");
    for token in [server.token("kube-system", "node"), server.token("default", "plain")] {
        assert_eq!(ask(&mut client, &token, Some(&target)).await, Err(Code::Unauthenticated));
    }
    let audit = wait_for("two refusals audited", 20, || {
        let a = server.audit();
        (a.len() >= 2).then_some(a)
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = server.logs();
    assert!(log.contains("ns/a/sa/b\\n2026-01-01"), "the refusal must be logged, escaped:\n{log}");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")), "a forged line made it into the log:\n{log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "raw control characters in the log");
    for a in &audit {
        for field in ["identity", "reason"] {
            let v = a[field].as_str().unwrap_or_default();
            assert!(!v.chars().any(char::is_control), "raw control characters in audit {field}: {v:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_fails_readiness_and_counts() {
    let work = tempfile::tempdir().unwrap();
    // A full disk: the audit file is /dev/full (every write fails with ENOSPC).
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink("/dev/full", data.join("audit.jsonl")).unwrap();
    let server = start(work.path(), &[]);
    let roots = server.root_pem();
    let token = server.token("default", "app");
    // Issuance goes on (documented: --audit-required turns that off) ...
    legit_request(&server, &roots, &token).await.expect("issuance continues without audit by default");
    // ... but readiness fails and the metrics say why.
    let body = wait_for("/readyz to fail", 20, || {
        let (status, _, body) = meshca_testkit::http::http(server.http, "/readyz", &[]);
        (status == 503).then_some(body)
    });
    assert!(body.contains("audit log not writable") && body.contains("No space left"), "{body}");
    let metrics = server.get("/metrics").unwrap();
    assert!(meshca_testkit::http::metric(&metrics, "meshca_audit_write_failures_total") >= 1.0, "{metrics}");
    assert_eq!(meshca_testkit::http::metric(&metrics, "meshca_audit_failing"), 1.0);
    assert!(server.logs().contains("audit log write failed"), "{}", server.logs());
    drop(server);

    let work2 = tempfile::tempdir().unwrap();
    let data = work2.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink("/dev/full", data.join("audit.jsonl")).unwrap();
    let server = start(work2.path(), &["--audit-required"]);
    let roots = server.root_pem();
    let token = server.token("default", "app");
    let _ = legit_request(&server, &roots, &token).await; // its audit line is the first write that fails
    wait_for("/readyz to fail", 20, || {
        (meshca_testkit::http::http(server.http, "/readyz", &[]).0 == 503).then_some(())
    });
    let err =
        legit_request(&server, &roots, &token).await.expect_err("--audit-required refuses issuance without audit");
    assert!(err.contains("Unavailable"), "{err}");
}
