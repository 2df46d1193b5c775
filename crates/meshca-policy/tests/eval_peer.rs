//! PeerAuthentication in `evaluate`'s front: the effective mode of a port, where it comes from
//! (file:line), and the connection refusals (plaintext under STRICT, mTLS under DISABLE).

use std::collections::BTreeMap;

use meshca_policy::eval::{effective_mtls, effective_mtls_source, peer_gate, Decision, Request, Source, Stage};
use meshca_policy::explain::render;
use meshca_policy::load::load_str;
use meshca_policy::model::{MeshSettings, MtlsMode, PolicySet, Workload};

const POLICIES: &str = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: backend
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: api-ports
  namespace: backend
spec:
  selector:
    matchLabels:
      app: api
  portLevelMtls:
    9000:
      mode: DISABLE
    9001:
      mode: PERMISSIVE
";

fn set(text: &str) -> PolicySet {
    PolicySet::from_objects(load_str("pa.yaml", text).unwrap_or_else(|e| panic!("{e:?}")))
}

fn api() -> Workload {
    Workload::new("backend", BTreeMap::from([("app".to_string(), "api".to_string())]))
}

fn request(principal: Option<&str>) -> Request {
    Request {
        method: Some("GET".into()),
        path: Some("/".into()),
        source: principal.map(|p| Source { principal: Some(p.into()), ip: None }),
        ..Request::default()
    }
}

const WEB: &str = "spiffe://cluster.local/ns/frontend/sa/web";

#[test]
fn strict_closes_plaintext_and_names_the_policy() {
    let m = effective_mtls_source(&set(POLICIES), &api(), &MeshSettings::default(), 8080);
    assert_eq!(m.mode, MtlsMode::Strict);
    let v = peer_gate(&m, &request(None)).expect("plaintext under STRICT must be refused");
    assert_eq!((v.decision, v.stage, v.status), (Decision::Deny, Stage::Peer, None));
    assert_eq!(v.policy.as_deref(), Some("meshca-mtls-strict"));
    let s = &v.explanation.summary;
    assert!(
        s.contains("STRICT") && s.contains("PeerAuthentication backend/default (pa.yaml:8, namespace level)"),
        "{s}"
    );
    assert!(
        render(1, &v).starts_with("#1: DENY (connection closed) [stage peer] by meshca-mtls-strict"),
        "{}",
        render(1, &v)
    );
    assert_eq!(peer_gate(&m, &request(Some(WEB))), None, "mTLS under STRICT reaches the filters");
}

#[test]
fn port_level_disable_closes_mtls_and_names_the_port() {
    let m = effective_mtls_source(&set(POLICIES), &api(), &MeshSettings::default(), 9000);
    assert_eq!(m.mode, MtlsMode::Disable);
    let v = peer_gate(&m, &request(Some(WEB))).expect("mTLS under DISABLE must be refused");
    assert_eq!((v.decision, v.stage, v.policy.as_deref()), (Decision::Deny, Stage::Peer, Some("meshca-mtls-disabled")));
    let s = &v.explanation.summary;
    assert!(
        s.contains("DISABLE") && s.contains("PeerAuthentication backend/api-ports (pa.yaml:21, port 9000 level)"),
        "{s}"
    );
    assert_eq!(peer_gate(&m, &request(None)), None, "plaintext under DISABLE reaches the filters");
}

#[test]
fn permissive_lets_both_through() {
    let m = effective_mtls_source(&set(POLICIES), &api(), &MeshSettings::default(), 9001);
    assert_eq!(m.mode, MtlsMode::Permissive);
    assert_eq!(m.source.as_ref().map(|s| s.level.as_str()), Some("port 9001"));
    assert_eq!(peer_gate(&m, &request(None)), None);
    assert_eq!(peer_gate(&m, &request(Some(WEB))), None);
    // Nothing set anywhere: PERMISSIVE by default, no source.
    let none = effective_mtls_source(&PolicySet::default(), &api(), &MeshSettings::default(), 8080);
    assert_eq!((none.mode, none.source.clone()), (MtlsMode::Permissive, None));
    assert_eq!(peer_gate(&none, &request(None)), None);
}

#[test]
fn another_namespace_or_workload_is_not_affected() {
    let other = Workload::new("frontend", BTreeMap::from([("app".to_string(), "api".to_string())]));
    assert_eq!(effective_mtls(&set(POLICIES), &other, &MeshSettings::default(), 8080), MtlsMode::Permissive);
    let web = Workload::new("backend", BTreeMap::from([("app".to_string(), "web".to_string())]));
    // The namespace's STRICT applies; the port-level DISABLE belongs to app=api only.
    assert_eq!(effective_mtls(&set(POLICIES), &web, &MeshSettings::default(), 9000), MtlsMode::Strict);
}
