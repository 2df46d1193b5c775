//! The generated bootstrap (one HTTP and one TCP port) passes `envoy --mode validate` with the real
//! Envoy 1.40, including every slot's deny-all `default_config`.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use meshca_envoy::{bootstrap, BootstrapOptions, PortProtocol, PortSpec};
use support::{install_resources, validate, walk_mut};

fn options(dir: &Path) -> BootstrapOptions {
    let app: SocketAddr = "127.0.0.1:18080".parse().expect("addr");
    BootstrapOptions {
        node_id: "sidecar~127.0.0.1~httpbin.foo~foo.svc.cluster.local".into(),
        cluster: "httpbin.foo".into(),
        admin: "127.0.0.1:0".parse().expect("addr"),
        agent_socket: dir.join("agent.sock"),
        ports: vec![
            PortSpec { port: 15080, protocol: PortProtocol::Http, app },
            PortSpec { port: 15090, protocol: PortProtocol::Tcp, app: "127.0.0.1:19000".parse().expect("addr") },
        ],
    }
}

#[test]
fn bootstrap_for_an_http_and_a_tcp_port_passes_envoy_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    validate(dir.path(), &bootstrap(&options(dir.path())));
}

#[test]
fn bootstrap_names_every_slot_with_a_deny_all_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path());
    let config = bootstrap(&opts);
    let text = config.to_string();
    for (port, chain, names) in meshca_envoy::slot_names(&opts.ports) {
        assert!(!names.is_empty(), "port {port} {chain:?} has slots");
        for name in names {
            assert!(text.contains(&format!("\"name\":\"{name}\"")), "{name} is in the bootstrap");
        }
    }
    let listeners = config["static_resources"]["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 2);
    let mut ecds = 0;
    let mut config = config;
    walk_mut(&mut config, &mut |v| {
        if let Some(cd) = v.get("config_discovery") {
            ecds += 1;
            assert_eq!(cd["apply_default_config_without_warming"], true, "{v}");
            assert_eq!(cd["type_urls"][0], cd["default_config"]["@type"], "{v}");
            let default = cd["default_config"].to_string();
            assert!(default.contains(meshca_envoy::NO_POLICY_YET), "default is deny-all: {default}");
            meshca_envoy::json_to_any(&cd["default_config"]).unwrap_or_else(|e| panic!("{e}"));
        }
    });
    // HTTP: 2 chains x (peer + jwt + 3 RBAC); TCP: 2 chains x (peer + 3 RBAC).
    assert_eq!(ecds, 2 * 5 + 2 * 4);
}

/// The resources of a real policy set (STRICT mTLS, JWT with inlined keys, ALLOW and DENY) put in
/// place of the defaults: Envoy accepts every one of them (its schema and validation rules, beyond
/// the protobuf decoding the other tests check).
#[test]
fn policy_resources_pass_envoy_validate_in_their_slots() {
    use meshca_envoy::{policy_resources, PolicyInputs};
    use meshca_policy::model::{MeshSettings, PolicySet, Workload};
    let policies = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - {issuer: "https://issuer.example", jwksUri: "https://issuer.example/jwks.json", audiences: [api]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/client"], requestPrincipals: ["*"]}}]
    to: [{operation: {methods: [GET], ports: ["15080"]}}]
  - from: [{source: {namespaces: [bar]}}]
    to: [{operation: {ports: ["15090"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: foo}
spec:
  action: AUDIT
  rules: [{to: [{operation: {methods: [POST]}}]}]
"#;
    let set = PolicySet::from_objects(meshca_policy::load::load_str("p.yaml", policies).expect("load"));
    let workload = Workload::new("foo", Default::default());
    let jwks = std::collections::BTreeMap::from([(
        "https://issuer.example/jwks.json".to_string(),
        support::TEST_JWKS.to_string(),
    )]);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path());
    let mesh = MeshSettings::default();
    let inputs = PolicyInputs { set: &set, workload: &workload, mesh: &mesh, ports: &opts.ports, jwks: &jwks };
    let resources = policy_resources(&inputs).expect("resources");
    let mut config = bootstrap(&opts);
    assert_eq!(install_resources(&mut config, &resources), 18, "every slot of both chains got its resource");
    validate(dir.path(), &config);
}
