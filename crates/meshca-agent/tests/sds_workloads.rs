//! Several workloads on one SDS stream, against a fake CA (the `Signer`
//! seam) issuing short-lived certificates: each name gets its own
//! certificate, a renewal of any subscribed workload is pushed on the stream,
//! and a resubscription follows the new set of names.

use meshca_agent::sds::SdsService;
use meshca_agent::sds_client::{self, SdsStream};
use meshca_agent::workloads::{Workload, WorkloadSet};
use meshca_agent::{AgentError, CertManager, Identity, ManagerConfig, Metrics, Signer, SystemClock};
use rcgen::{CertifiedIssuer, KeyPair};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

/// Signs every CSR for `spiffe://cluster.local/ns/test/sa/<resource name>`, valid `validity`.
struct FakeCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    validity: Duration,
}

impl Signer for FakeCa {
    async fn sign(&self, id: &Identity, csr: String, _ttl: Duration) -> Result<Vec<String>, AgentError> {
        Ok(support::sign(&self.issuer, &csr, &id.name, self.validity))
    }
}

/// name -> leaf serial (hex of the DER) of the TLS certificates in a response, and whether ROOTCA came too.
fn contents(
    r: &meshca_agent::envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
) -> (BTreeMap<String, String>, bool) {
    use meshca_agent::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    let mut certs = BTreeMap::new();
    let mut root = false;
    for s in sds_client::secrets(r).unwrap() {
        match (sds_client::tls_chain(&s).unwrap(), &s.r#type) {
            (Some(chain), _) => {
                let der = meshca_pki::pem::parse_certs(chain.as_bytes()).unwrap().remove(0);
                let info = meshca_pki::inspect::cert_info(&der).unwrap();
                let want = format!("spiffe://cluster.local/ns/test/sa/{}", s.name);
                assert_eq!(info.spiffe_id.as_deref(), Some(want.as_str()), "{} carries another identity", s.name);
                certs.insert(s.name, info.serial);
            }
            (None, Some(Type::ValidationContext(_))) => root = true,
            (None, other) => panic!("unexpected secret {other:?}"),
        }
    }
    (certs, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_follows_several_workloads_and_their_renewals() {
    let ca = FakeCa { issuer: support::issuer(), validity: Duration::from_secs(4) };
    let cfg = ManagerConfig { ttl: Duration::from_secs(4), ..Default::default() };
    let manager = CertManager::start(ca, cfg, Arc::new(Metrics::default()), Arc::new(SystemClock));
    let extra = ["a", "b"].map(|n| Workload { name: n.into(), token_file: "/dev/null".into(), origin: "test".into() });
    let set = Arc::new(WorkloadSet::new("/dev/null".into(), extra.to_vec()).unwrap());
    let primary = set.primary().clone();
    let service = SdsService::new(manager.clone(), primary, Arc::new(Metrics::default())).with_workloads(set);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.clone();
        async move { meshca_agent::sds::serve(&socket, service, async { drop(stopped.await) }).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the SDS socket did not appear");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing fetched before a request names a workload.
    let idle = Identity { name: "a".into(), token_file: "/dev/null".into() };
    assert!(manager.peek(&idle).is_none(), "a workload nobody asked for is not fetched");

    // One stream, two workloads, the bundle and a name not served: pushes until all three are there.
    let mut s = SdsStream::open(&socket).await.unwrap();
    s.send(&["a", "b", "ROOTCA", "nope"], "", "", None).await.unwrap();
    let first = loop {
        let r = s.recv(Duration::from_secs(10)).await.unwrap().expect("a push as the certificates arrive");
        s.send(&["a", "b", "ROOTCA", "nope"], &r.version_info, &r.nonce, None).await.unwrap();
        let (certs, root) = contents(&r);
        assert!(!certs.contains_key("nope"));
        if certs.len() == 2 && root {
            break certs;
        }
    };
    assert_ne!(first["a"], first["b"]);

    // Renewal (at half of the 4 s lifetime) of either workload is pushed on the same stream.
    let r = s.recv(Duration::from_secs(10)).await.unwrap().expect("a renewal is pushed");
    let (renewed, _) = contents(&r);
    assert!(renewed.iter().any(|(n, serial)| first[n] != *serial), "a new certificate: {first:?} -> {renewed:?}");
    s.send(&["a", "b", "ROOTCA", "nope"], &r.version_info, &r.nonce, None).await.unwrap();

    // Resubscribe to `b` only: answered with b alone. A renewal push the server sent before it
    // read the resubscription (the two certificates renew about together) may come first.
    s.send(&["b"], &r.version_info, "", None).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let r = s.recv(Duration::from_secs(5)).await.unwrap().expect("resubscription answered");
        let (certs, root) = contents(&r);
        let names: Vec<String> = certs.keys().cloned().collect();
        if names == ["b"] && !root {
            break;
        }
        seen.push((names, root));
        assert!(seen.len() < 3, "still not b alone after the resubscription: {seen:?}");
    }

    drop(s);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
