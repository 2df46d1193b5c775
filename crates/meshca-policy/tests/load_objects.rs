//! Loading every supported kind from YAML, JSON and `kind: List`, the mesh settings, and which
//! objects apply to a workload.

use std::collections::BTreeMap;

use meshca_policy::load::{load_str, mesh_settings_str};
use meshca_policy::model::{Action, MeshSettings, MtlsMode, PolicySet, RbacMode, Spec, Workload};

const ALL_KINDS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["*"]
        notRequestPrincipals: ["*"]
        trustDomains: [td]
        remoteIpBlocks: [10.0.0.0/8]
    to:
    - operation: {notPaths: ["/healthz"], ports: ["8080"]}
    when:
    - {key: "request.auth.claims[groups]", notValues: [admin]}
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [api]
    jwksUri: https://issuer.example/jwks
    fromHeaders: [{name: x-token, prefix: "Bearer "}]
    fromParams: [tok]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRole
metadata: {name: reader, namespace: foo}
spec:
  rules:
  - services: ["httpbin.foo.svc.cluster.local"]
    methods: [GET]
    paths: ["/status/*"]
    constraints: [{key: "destination.labels[version]", values: [v1]}]
---
apiVersion: rbac.istio.io/v1alpha1
kind: ServiceRoleBinding
metadata: {name: bind, namespace: foo}
spec:
  subjects:
  - user: cluster.local/ns/bar/sa/client
  - properties: {source.namespace: bar}
  roleRef: {kind: ServiceRole, name: reader}
---
apiVersion: rbac.istio.io/v1alpha1
kind: ClusterRbacConfig
metadata: {name: default}
spec:
  mode: ON_WITH_INCLUSION
  inclusion: {namespaces: [foo]}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: default, namespace: foo}
spec:
  targets: [{name: httpbin, ports: [{number: 8000}]}]
  peers: [{mtls: {}}]
  origins:
  - jwt:
      issuer: https://issuer.example
      jwksUri: https://issuer.example/jwks
      triggerRules: [{excludedPaths: [{exact: /health}]}]
  principalBinding: USE_ORIGIN
---
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec:
  peers: [{mtls: {mode: PERMISSIVE}}]
"#;

#[test]
fn every_kind_loads_with_lines() {
    let objects = load_str("all.yaml", ALL_KINDS).unwrap_or_else(|e| panic!("{e:?}"));
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        [
            "AuthorizationPolicy",
            "RequestAuthentication",
            "PeerAuthentication",
            "ServiceRole",
            "ServiceRoleBinding",
            "ClusterRbacConfig",
            "Policy",
            "MeshPolicy"
        ]
    );
    let ap = &objects[0];
    assert_eq!(ap.source.line, 2);
    assert!(ap.is_dry_run());
    assert_eq!(ap.line_of("spec.rules[0].to[0].operation.notPaths"), 19);
    assert_eq!(ap.line_of("spec.rules[0].when[0].notValues"), 21);
    let Spec::AuthorizationPolicy(p) = &ap.spec else { panic!("not an AuthorizationPolicy") };
    assert_eq!(p.action, Action::Deny);
    let src = p.rules()[0].from()[0].source.as_ref().expect("source");
    assert_eq!(src.not_principals, ["*"]);
    assert_eq!(src.trust_domains, ["td"]);
    assert_eq!(p.rules()[0].when[0].not_values, ["admin"]);

    let Spec::RequestAuthentication(ra) = &objects[1].spec else { panic!() };
    let r = &ra.jwt_rules[0];
    assert!(r.forward_original_token);
    assert_eq!(r.from_headers[0].prefix, "Bearer ");
    assert_eq!(r.output_claim_to_headers[0].claim, "sub");
    let Spec::PeerAuthentication(pa) = &objects[2].spec else { panic!() };
    assert_eq!(pa.mtls.as_ref().map(|m| m.mode), Some(MtlsMode::Strict));
    assert_eq!(pa.port_level_mtls.as_ref().and_then(|m| m.get(&8080)).map(|m| m.mode), Some(MtlsMode::Permissive));
    let Spec::ServiceRoleBinding(b) = &objects[4].spec else { panic!() };
    assert_eq!(b.subjects[1].properties["source.namespace"], "bar");
    let Spec::ClusterRbacConfig(c) = &objects[5].spec else { panic!() };
    assert_eq!(c.mode, RbacMode::OnWithInclusion);
    let Spec::Policy(pol) = &objects[6].spec else { panic!() };
    assert_eq!(pol.targets[0].ports[0].number, Some(8000));
    assert_eq!(pol.origins[0].jwt.as_ref().map(|j| j.trigger_rules.len()), Some(1));
    assert!(objects[6].spec.is_legacy());
    // Round trip: printing an object and loading it again gives the same object.
    for o in &objects {
        let text = o.to_json().to_string();
        let again = load_str("again.json", &text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(again[0].spec, o.spec, "{text}");
        assert_eq!(again[0].meta, o.meta);
    }
}

#[test]
fn json_and_list_documents() {
    let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "a", "namespace": "foo"}, "spec": {}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "b", "namespace": "foo"},
         "spec": {"rules": [{"to": [{"operation": {"ports": [8080]}}]}]}}
    ]}"#;
    let objects = load_str("list.json", json).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[1].source.line, 4);
    let Spec::AuthorizationPolicy(p) = &objects[1].spec else { panic!() };
    assert_eq!(p.rules()[0].to()[0].operation.as_ref().map(|o| o.ports.clone()), Some(vec!["8080".to_string()]));

    let bad = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "a"},
         "spec": {"rule": []}}]}"#;
    let e = load_str("list.json", bad).expect_err("unknown field");
    assert_eq!(e[0].to_string(), "list.json:3: items[0].spec.rule: unknown field \"rule\", did you mean \"rules\"?");
}

#[test]
fn crlf_bom_and_empty_documents() {
    let text = "\u{feff}---\r\n# comment only\r\n---\r\napiVersion: security.istio.io/v1\r\nkind: AuthorizationPolicy\r\nmetadata:\r\n  name: a\r\n  namespace: foo\r\nspec:\r\n  rules:\r\n  - to:\r\n    - operation:\r\n        paths: [\"/x\"]\r\n---\r\n";
    let objects = load_str("crlf.yaml", text).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].source.line, 4);
    assert_eq!(objects[0].line_of("spec.rules[0].to[0].operation.paths"), 13);
}

#[test]
fn mesh_settings_from_mesh_config_forms() {
    let plain = "rootNamespace: istio-config\ntrustDomain: td1\ntrustDomainAliases: [old]\nextensionProviders:\n- name: authz\n  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}\n- name: zipkin\n  zipkin: {service: z, port: 9411}\ndefaultConfig: {discoveryAddress: istiod:15012}\n";
    let m = mesh_settings_str("mesh.yaml", plain).expect("mesh");
    assert_eq!(m.root_namespace, "istio-config");
    assert_eq!(m.trust_domain_aliases, ["old"]);
    assert_eq!(m.provider("authz").and_then(|p| p.envoy_ext_authz_grpc.as_ref()).map(|g| g.port), Some(9000));
    assert_eq!(m.provider("zipkin").and_then(|p| p.other_kind.clone()).as_deref(), Some("zipkin"));

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |\n    trustDomain: corp\n";
    assert_eq!(mesh_settings_str("cm.yaml", cm).expect("cm").trust_domain, "corp");
    let values = "meshConfig:\n  trustDomain: t2\n";
    let m = mesh_settings_str("values.yaml", values).expect("values");
    assert_eq!((m.trust_domain.as_str(), m.root_namespace.as_str()), ("t2", "istio-system"));

    let typo = "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: s, port: 1, pathPrefx: /x}\n";
    let e = mesh_settings_str("mesh.yaml", typo).expect_err("typo");
    assert!(e[0].to_string().contains("did you mean \"pathPrefix\""), "{e:?}");
}

#[test]
fn applicable_follows_istio_attachment_rules() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: foo}
spec: {selector: {matchLabels: {app: other}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: this-app, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-only, namespace: foo}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec: {selector: {matchLabels: {app: httpbin}}, mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
"#;
    let set = PolicySet::from_objects(load_str("scope.yaml", text).unwrap_or_else(|e| panic!("{e:?}")));
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    let workload = Workload::new("foo", labels);
    let a = set.applicable(&workload, &MeshSettings::default());
    let names: Vec<&str> = a.authorization.iter().map(|o| o.meta.name.as_str()).collect();
    assert_eq!(names, ["mesh-wide", "ns-wide", "this-app"]);
    let pa: Vec<&str> = a.peer_authentication.iter().map(|o| o.meta.name.as_str()).collect();
    assert_eq!(pa, ["ns"]);

    let mut gw = workload.clone();
    gw.labels.insert("gateway.networking.k8s.io/gateway-name".to_string(), "gw".to_string());
    let names: Vec<String> =
        set.applicable(&gw, &MeshSettings::default()).authorization.iter().map(|o| o.meta.name.clone()).collect();
    assert!(names.contains(&"gateway-only".to_string()), "{names:?}");
}
