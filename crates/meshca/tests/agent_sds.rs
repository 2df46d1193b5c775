//! The node agent's SDS protocol, output directory, health/metrics and
//! failure handling, driven by a gRPC SDS client (what Envoy does) against
//! the real `meshca agent` and `meshca serve` binaries.

mod agent_support;

use agent_support::*;
use meshca_agent::envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use meshca_agent::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use meshca_agent::envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use meshca_agent::sds_client::SdsStream;
use meshca_testkit::{Server, ServerOptions};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Test wrapper: panics instead of errors.
struct Stream(SdsStream);

impl Stream {
    async fn open(socket: &std::path::Path) -> Self {
        Self(SdsStream::open(socket).await.expect("open an SDS stream"))
    }

    async fn send(&self, names: &[&str], version: &str, nonce: &str, error: Option<&str>) {
        self.0.send(names, version, nonce, error).await.expect("send an SDS request");
    }

    async fn recv(&mut self, within: Duration) -> Option<DiscoveryResponse> {
        self.0.recv(within).await.expect("SDS stream")
    }

    async fn must_recv(&mut self, what: &str) -> DiscoveryResponse {
        self.recv(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("no SDS response: {what}"))
    }
}

fn secrets(resp: &DiscoveryResponse) -> Vec<Secret> {
    meshca_agent::sds_client::secrets(resp).expect("secrets")
}

fn inline(ds: &Option<meshca_agent::envoy_types::pb::envoy::config::core::v3::DataSource>) -> String {
    match ds.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// (chain, key) of a `default` secret.
fn tls(s: &Secret) -> (String, String) {
    assert_eq!(s.name, "default");
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => (inline(&t.certificate_chain), inline(&t.private_key)),
        other => panic!("default is not a TLS certificate: {other:?}"),
    }
}

fn roots(s: &Secret) -> String {
    assert_eq!(s.name, "ROOTCA");
    match &s.r#type {
        Some(secret::Type::ValidationContext(v)) => inline(&v.trusted_ca),
        other => panic!("ROOTCA is not a validation context: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_protocol_output_dir_and_trust_change() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root_a = make_root(w, "rootA");
    let root_b = make_root(w, "rootB");
    let a1 = make_inter(w, &root_a, "a1");
    let ca_dir = w.join("cacerts");
    install_set(&ca_dir, &a1, None);
    let ca = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca_dir.clone()), ..Default::default() }).unwrap();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();
    let agent = Agent::start(w, "app", &ca, &ca_root, &ca.token("shop", "cart"), &[]);

    // Subscribe to `default`: answered at once with chain + key.
    let mut s1 = Stream::open(&agent.socket).await;
    s1.send(&["default"], "", "", None).await;
    let r1 = s1.must_recv("first default").await;
    assert!(!r1.version_info.is_empty() && !r1.nonce.is_empty());
    let got = secrets(&r1);
    assert_eq!(got.len(), 1);
    let (chain, key) = tls(&got[0]);
    let leaf = meshca_pki::inspect::cert_info(&ders(&chain)[0]).unwrap();
    assert_eq!(leaf.spiffe_id.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/cart"));
    assert!(key.contains("BEGIN PRIVATE KEY"));

    // ACK: nothing more to send.
    s1.send(&["default"], &r1.version_info, &r1.nonce, None).await;
    assert!(s1.recv(Duration::from_millis(700)).await.is_none(), "an ACK must not trigger a response");

    // Output directory: same chain and key; key 0600; root bundle = the CA's.
    poll("output files", Duration::from_secs(5), || (agent.out_chain() == chain).then_some(())).await;
    assert_eq!(std::fs::read_to_string(agent.out.join("key.pem")).unwrap(), key);
    let mode = std::fs::metadata(agent.out.join("key.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key.pem must be 0600");
    assert_eq!(std::fs::read_to_string(agent.out.join("root-cert.pem")).unwrap().trim(), ca.root_pem().trim());

    // A second stream on the same socket for ROOTCA.
    let mut s2 = Stream::open(&agent.socket).await;
    s2.send(&["ROOTCA"], "", "", None).await;
    let r2 = s2.must_recv("first ROOTCA").await;
    let bundle = roots(&secrets(&r2)[0]);
    assert_eq!(bundle.trim(), ca.root_pem().trim());
    s2.send(&["ROOTCA"], &r2.version_info, &r2.nonce, None).await;

    // NACK: logged with Envoy's message, nothing resent, the stream lives on.
    s2.send(&["ROOTCA"], &r2.version_info, &r2.nonce, Some("nack-marker: bad trusted_ca")).await;
    assert!(s2.recv(Duration::from_millis(500)).await.is_none(), "a NACK must not trigger a resend");
    // A stale nonce is ignored too.
    s2.send(&["ROOTCA"], "", "stale-nonce", None).await;
    assert!(s2.recv(Duration::from_millis(300)).await.is_none(), "a stale nonce is ignored");
    poll("NACK in the agent log", Duration::from_secs(5), || {
        agent.proc.logs().contains("nack-marker: bad trusted_ca").then_some(())
    })
    .await;
    let m = agent.metrics();
    assert_eq!(metric(&m, "meshca_agent_sds_nacks_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "meshca_agent_sds_connections"), 2.0, "{m}");
    assert!(metric(&m, "meshca_agent_sds_acks_total") >= 2.0, "{m}");

    // Trust change at the CA (A -> A+B): ROOTCA is pushed at once, and the
    // certificate is renewed early.
    let ab = make_bundle(&w.join("ab.pem"), &[&root_a.join("root-cert.pem"), &root_b.join("root-cert.pem")]);
    let t0 = Instant::now();
    install_set(&ca_dir, &a1, Some(&ab));
    let r3 = s2.must_recv("ROOTCA after the bundle change").await;
    let rootca_latency = t0.elapsed();
    assert_eq!(ders(&roots(&secrets(&r3)[0])).len(), 2, "ROOTCA now holds A and B");
    assert_ne!(r3.version_info, r2.version_info);
    s2.send(&["ROOTCA"], &r3.version_info, &r3.nonce, None).await;
    let r4 = s1.must_recv("default after the CA change").await;
    let renew_latency = t0.elapsed();
    let (chain2, _) = tls(&secrets(&r4)[0]);
    assert_ne!(serial(&chain2), serial(&chain), "renewed early with a new certificate");
    println!(
        "figure: trust change -> ROOTCA pushed in {:?}, early renewal pushed in {:?} (status poll 250ms, jitter 200ms)",
        rootca_latency, renew_latency
    );
    // The `default`-only stream saw no ROOTCA; the ROOTCA stream no renewal.
    assert!(secrets(&r4).iter().all(|s| s.name == "default"));
    assert!(s2.recv(Duration::from_millis(300)).await.is_none(), "ROOTCA unchanged by a renewal");

    // Reconnect: a new stream gets the current resources at once, both in one response.
    drop(s1);
    let mut s3 = Stream::open(&agent.socket).await;
    s3.send(&["ROOTCA", "default"], &r4.version_info, "", None).await;
    let r5 = s3.must_recv("resubscribe after reconnect").await;
    let names: Vec<String> = secrets(&r5).iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, vec!["ROOTCA".to_string(), "default".to_string()]);
    // Unknown names are not invented.
    s3.send(&["ROOTCA", "default", "file-cert:/nope"], &r5.version_info, &r5.nonce, None).await;
    let r6 = s3.must_recv("re-subscription with an extra name").await;
    assert_eq!(secrets(&r6).len(), 2);

    // Health and metrics.
    let (code, body) = http_get(agent.http, "/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    let m = agent.metrics();
    assert!(metric(&m, "meshca_agent_cert_expiry_timestamp_seconds") > 0.0, "{m}");
    assert!(metric(&m, "meshca_agent_renewals_total") >= 2.0, "{m}");
    assert!(metric(&m, "meshca_agent_sds_pushes_total") >= 5.0, "{m}");
    assert!(m.contains("identity=\"spiffe://cluster.local/ns/shop/sa/cart\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_down_keeps_valid_cert_backs_off_and_recovers() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut ca = Server::start(&bin(), w, ServerOptions::default()).unwrap();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();
    let extra = ["--ttl", "8s", "--retry-initial", "200ms", "--retry-max", "1600ms"];
    let agent = Agent::start(w, "short", &ca, &ca_root, &ca.token("shop", "short"), &extra);
    let mut s = Stream::open(&agent.socket).await;
    s.send(&["default"], "", "", None).await;
    let r1 = s.must_recv("first default").await;
    let first = serial(&tls(&secrets(&r1)[0]).0);
    s.send(&["default"], &r1.version_info, &r1.nonce, None).await;

    // The CA goes away before the renewal point (~4s after issue).
    ca.stop();
    let down = Instant::now();
    poll("renewal failures while the CA is down", Duration::from_secs(15), || {
        (metric(&agent.metrics(), "meshca_agent_renewal_failures_total") >= 3.0).then_some(())
    })
    .await;
    // Still serving the valid certificate: healthy, nothing pushed.
    let (code, body) = http_get(agent.http, "/healthz").unwrap();
    assert_eq!(code, 200, "the still-valid certificate keeps the agent healthy: {body}");
    assert!(body.contains(&first), "{body}");
    assert!(s.recv(Duration::from_millis(200)).await.is_none(), "nothing to push while the CA is down");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failures = metric(&agent.metrics(), "meshca_agent_renewal_failures_total");
    let downtime = down.elapsed();
    // Backoff: 200ms doubling to 1.6s with jitter makes far fewer attempts than a tight loop.
    assert!(failures <= 12.0, "{failures} attempts in {downtime:?}: not backing off");

    ca.restart().unwrap();
    let r2 = s.must_recv("renewed certificate after the CA is back").await;
    let second = serial(&tls(&secrets(&r2)[0]).0);
    assert_ne!(first, second);
    println!(
        "figure: CA down {:?}: {failures} failed attempts (backoff 200ms..1.6s), recovered {:?} after restart",
        downtime,
        down.elapsed() - downtime
    );
    let logs = agent.proc.logs();
    assert!(logs.contains("kept_valid_cert=true"), "{logs}");
}
