//! `policy_resources`: one resource per bootstrap slot, of the slot's declared type, filled from
//! the compiled policies and the PeerAuthentication mode.

mod support;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::rbac::v3::rbac::Action;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::JwtAuthentication;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use meshca_envoy::{
    bootstrap, policy_resources, BootstrapOptions, EncodeError, PolicyInputs, PortProtocol, PortSpec, Resource,
    HTTP_RBAC_TYPE, JWT_AUTHN_TYPE, NETWORK_RBAC_TYPE,
};
use meshca_policy::load::load_str;
use meshca_policy::model::{MeshSettings, PolicySet, Workload};
use prost::Message;
use serde_json::Value;

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/client"]}}]
    to: [{operation: {methods: [GET], paths: ["/get"]}}]
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/db-client"]}}]
    to: [{operation: {ports: ["9000"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwksUri: https://issuer.example/jwks.json
"#;

fn ports() -> Vec<PortSpec> {
    vec![
        PortSpec { port: 8080, protocol: PortProtocol::Http, app: "127.0.0.1:18080".parse().expect("addr") },
        PortSpec { port: 9000, protocol: PortProtocol::Tcp, app: "127.0.0.1:19000".parse().expect("addr") },
    ]
}

fn resources(text: &str) -> Result<Vec<Resource>, EncodeError> {
    let set = if text.trim().is_empty() {
        PolicySet::default()
    } else {
        PolicySet::from_objects(load_str("policies.yaml", text).unwrap_or_else(|e| panic!("{e:?}")))
    };
    let workload = Workload::new("foo", BTreeMap::from([("app".to_string(), "httpbin".to_string())]));
    let jwks = BTreeMap::from([("https://issuer.example/jwks.json".to_string(), support::TEST_JWKS.to_string())]);
    let ports = ports();
    policy_resources(&PolicyInputs {
        set: &set,
        workload: &workload,
        mesh: &MeshSettings::default(),
        ports: &ports,
        jwks: &jwks,
    })
}

fn get<'a>(rs: &'a [Resource], name: &str) -> &'a Resource {
    rs.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no resource {name}"))
}

fn network_rbac(r: &Resource) -> NetworkRbac {
    NetworkRbac::decode(r.config.typed_config.as_ref().expect("typed config").value.as_slice()).expect("decode")
}

fn http_rbac(r: &Resource) -> HttpRbac {
    HttpRbac::decode(r.config.typed_config.as_ref().expect("typed config").value.as_slice()).expect("decode")
}

/// Slot name → declared type URL, read from the generated bootstrap.
fn bootstrap_slot_types() -> BTreeMap<String, String> {
    let config = bootstrap(&BootstrapOptions {
        node_id: "n".into(),
        cluster: "c".into(),
        admin: "127.0.0.1:0".parse().expect("addr"),
        agent_socket: "/tmp/agent.sock".into(),
        ports: ports(),
    });
    let mut out = BTreeMap::new();
    fn walk(v: &Value, out: &mut BTreeMap<String, String>) {
        if let (Some(name), Some(cd)) = (v.get("name").and_then(Value::as_str), v.get("config_discovery")) {
            let t = cd["type_urls"][0].as_str().expect("type url").to_string();
            if let Some(old) = out.insert(name.to_string(), t.clone()) {
                assert_eq!(old, t, "{name} declared with two types");
            }
        }
        match v {
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&config, &mut out);
    out
}

#[test]
fn every_resource_decodes_and_matches_its_bootstrap_slot_type() {
    let slots = bootstrap_slot_types();
    assert_eq!(slots.len(), 11, "8080/http: 6 slots, 9000/tcp: 5 slots: {slots:?}");
    for text in ["", POLICIES] {
        let rs = resources(text).expect("resources");
        let names: BTreeMap<String, String> = rs
            .iter()
            .map(|r| {
                let any = r.config.typed_config.as_ref().expect("typed config");
                assert_eq!(r.config.name, r.name, "TypedExtensionConfig.name is the resource name");
                let bytes = any.value.as_slice();
                match any.type_url.as_str() {
                    HTTP_RBAC_TYPE => drop(HttpRbac::decode(bytes).expect("decode http rbac")),
                    NETWORK_RBAC_TYPE => drop(NetworkRbac::decode(bytes).expect("decode network rbac")),
                    JWT_AUTHN_TYPE => drop(JwtAuthentication::decode(bytes).expect("decode jwt_authn")),
                    other => panic!("{}: unexpected type {other}", r.name),
                }
                (r.name.clone(), any.type_url.clone())
            })
            .collect();
        assert_eq!(names, slots, "one resource per bootstrap slot, same type");
    }
}

#[test]
fn ecds_type_url_is_typed_extension_config() {
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use prost::Name;
    assert_eq!(meshca_envoy::ECDS_TYPE_URL, format!("type.googleapis.com/{}", TypedExtensionConfig::full_name()));
}

#[test]
fn no_policies_means_pass_through_everywhere() {
    let rs = resources("").expect("resources");
    for r in &rs {
        let any = r.config.typed_config.as_ref().expect("typed config");
        match any.type_url.as_str() {
            HTTP_RBAC_TYPE => assert!(http_rbac(r).rules.is_none(), "{}", r.name),
            NETWORK_RBAC_TYPE => assert!(network_rbac(r).rules.is_none(), "{}", r.name),
            _ => {
                let jwt = JwtAuthentication::decode(any.value.as_slice()).expect("decode");
                assert!(jwt.providers.is_empty() && jwt.rules.is_empty(), "{}", r.name);
            }
        }
    }
}

#[test]
fn compiled_filters_fill_their_slots() {
    let rs = resources(POLICIES).expect("resources");
    let allow = http_rbac(get(&rs, "meshca.8080.rbac_allow")).rules.expect("ALLOW rules");
    assert_eq!(allow.action(), Action::Allow);
    assert_eq!(allow.policies.len(), 2, "{:?}", allow.policies.keys());
    let deny = http_rbac(get(&rs, "meshca.8080.rbac_deny")).rules.expect("DENY rules");
    assert_eq!(deny.action(), Action::Deny);
    assert!(deny.policies.contains_key("ns[foo]-policy[deny-admin]-rule[0]"));
    assert!(http_rbac(get(&rs, "meshca.8080.rbac_audit")).rules.is_none(), "no AUDIT policy: pass-through");
    let jwt = get(&rs, "meshca.8080.jwt_authn");
    let jwt = JwtAuthentication::decode(jwt.config.typed_config.as_ref().expect("any").value.as_slice()).expect("jwt");
    let provider = jwt.providers.values().next().expect("a provider");
    assert_eq!(provider.issuer, "https://issuer.example");
    assert!(format!("{:?}", provider.jwks_source_specifier).contains("LocalJwks"), "JWKS inlined");

    // TCP: the ALLOW rule with HTTP-only fields is skipped, the port-only rule stays; the DENY
    // rule loses its path condition and denies every connection (Istio's semantics).
    let tcp_allow = network_rbac(get(&rs, "meshca.9000.rbac_allow")).rules.expect("ALLOW rules");
    assert_eq!(tcp_allow.policies.len(), 1, "{:?}", tcp_allow.policies.keys());
    let tcp_deny = network_rbac(get(&rs, "meshca.9000.rbac_deny")).rules.expect("DENY rules");
    assert_eq!(tcp_deny.action(), Action::Deny);
    assert!(get(&rs, "meshca.9000.rbac_deny").json.to_string().contains("deny-admin"));
}

fn peer_denies(rs: &[Resource], name: &str) -> bool {
    match network_rbac(get(rs, name)).rules {
        None => false,
        Some(r) => r.action() == Action::Deny && !r.policies.is_empty(),
    }
}

#[test]
fn peer_authentication_modes_open_and_close_the_chains() {
    let pa = |spec: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: foo}}\nspec: {spec}\n")
    };
    let rs = resources("").expect("resources");
    assert!(!peer_denies(&rs, "meshca.8080.peer_tls") && !peer_denies(&rs, "meshca.8080.peer_plaintext"), "PERMISSIVE");

    let rs = resources(&pa("{mtls: {mode: STRICT}}")).expect("resources");
    for port in [8080, 9000] {
        assert!(!peer_denies(&rs, &format!("meshca.{port}.peer_tls")), "STRICT keeps TLS open");
        assert!(peer_denies(&rs, &format!("meshca.{port}.peer_plaintext")), "STRICT closes plaintext");
    }

    let rs = resources(&pa("{mtls: {mode: DISABLE}}")).expect("resources");
    assert!(peer_denies(&rs, "meshca.8080.peer_tls"), "DISABLE closes TLS");
    assert!(!peer_denies(&rs, "meshca.8080.peer_plaintext"), "DISABLE keeps plaintext open");

    let port_level = pa(
        "{selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}, portLevelMtls: {9000: {mode: PERMISSIVE}}}",
    );
    let rs = resources(&port_level).expect("resources");
    assert!(peer_denies(&rs, "meshca.8080.peer_plaintext"), "8080 STRICT");
    assert!(!peer_denies(&rs, "meshca.9000.peer_plaintext"), "9000 PERMISSIVE by port-level override");
}

#[test]
fn custom_policies_are_refused_with_the_policy_named() {
    let custom = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: my-authz}
  rules: [{to: [{operation: {paths: ["/x"]}}]}]
"#;
    let err = resources(custom).expect_err("CUSTOM is unsupported");
    assert!(
        matches!(&err, EncodeError::Unsupported(m) if m.contains("ext.foo") && m.contains("policies.yaml")),
        "{err}"
    );
}

#[test]
fn a_port_declared_twice_is_refused() {
    let set = PolicySet::default();
    let workload = Workload::new("foo", BTreeMap::new());
    let mut ports = ports();
    ports.push(ports[0].clone());
    let jwks = BTreeMap::new();
    let inputs =
        PolicyInputs { set: &set, workload: &workload, mesh: &MeshSettings::default(), ports: &ports, jwks: &jwks };
    let err = policy_resources(&inputs).expect_err("duplicate port");
    assert_eq!(err, EncodeError::Unsupported("port 8080 is declared twice".into()));
}
