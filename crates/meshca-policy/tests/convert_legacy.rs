//! Legacy objects convert to valid modern objects with the reference mapping, and what cannot be
//! converted is reported.

use meshca_policy::convert::convert;
use meshca_policy::model::PolicySet;

fn run(yaml: &str) -> meshca_policy::convert::Conversion {
    let set = PolicySet::from_objects(meshca_policy::load::load_str("legacy.yaml", yaml).expect("loads"));
    convert(&set, "istio-system")
}

/// Converted objects must load (and validate) as modern policies.
fn reload(c: &meshca_policy::convert::Conversion) {
    for o in &c.objects {
        let text = serde_json::to_string(o).unwrap();
        meshca_policy::load::load_str("converted.json", &text).unwrap_or_else(|e| panic!("{o}: {e:?}"));
    }
}

#[test]
fn rbac_config_modes() {
    let c = run("apiVersion: rbac.istio.io/v1alpha1\nkind: ClusterRbacConfig\nmetadata: {name: default}\nspec:\n  mode: ON_WITH_EXCLUSION\n  exclusion: {namespaces: [a], services: [x.a.svc.cluster.local]}\n");
    let names: Vec<(&str, &str)> = c
        .objects
        .iter()
        .map(|o| (o["metadata"]["name"].as_str().unwrap(), o["metadata"]["namespace"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec![("global-deny-all", "istio-system"), ("a-allow-all", "a")]);
    assert_eq!(c.objects[0]["spec"], serde_json::json!({}));
    assert_eq!(c.objects[1]["spec"]["rules"], serde_json::json!([{}]));
    assert!(c.issues.iter().any(|i| i.message.contains("service-level exclusion")), "{:?}", c.issues);
    reload(&c);
}

#[test]
fn service_role_and_binding() {
    let c = run("apiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRole\nmetadata: {name: r, namespace: ns}\nspec:\n  rules:\n  - services: [\"web.ns.svc.cluster.local\"]\n    methods: [GET]\n    paths: [\"/api/*\"]\n    constraints: [{key: destination.port, values: [\"80\"]}]\n---\napiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRoleBinding\nmetadata: {name: b, namespace: ns}\nspec:\n  subjects:\n  - user: cluster.local/ns/x/sa/y\n  - properties: {source.namespace: other, \"request.auth.claims[groups]\": admin}\n  roleRef: {kind: ServiceRole, name: r}\n");
    assert_eq!(c.objects.len(), 1);
    let p = &c.objects[0];
    assert_eq!(p["metadata"]["name"], "service-web-rule0-target0");
    assert_eq!(p["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(p["spec"]["rules"][0]["from"][0]["source"]["principals"][0], "cluster.local/ns/x/sa/y");
    assert_eq!(p["spec"]["rules"][0]["from"][1]["source"]["namespaces"][0], "other");
    assert_eq!(p["spec"]["rules"][0]["to"][0]["operation"]["paths"][0], "/api/*");
    for want in ["constraints", "request.auth.claims[groups]", "assumed to select"] {
        assert!(c.issues.iter().any(|i| i.message.contains(want)), "{want}: {:?}", c.issues);
    }
    reload(&c);
}

#[test]
fn authentication_policy_with_required_origin() {
    let c = run("apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec:\n  peers:\n  - mtls: {}\n---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: jwt, namespace: foo}\nspec:\n  targets: [{name: httpbin}]\n  origins:\n  - jwt: {issuer: \"https://iss\", jwksUri: \"https://iss/keys\", audiences: [a]}\n  principalBinding: USE_ORIGIN\n");
    let kinds: Vec<&str> = c.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy"]);
    assert_eq!(c.objects[0]["metadata"]["namespace"], "istio-system");
    assert_eq!(c.objects[0]["spec"]["mtls"]["mode"], "STRICT");
    assert_eq!(c.objects[2]["spec"]["action"], "DENY");
    assert_eq!(c.objects[2]["spec"]["rules"][0]["from"][0]["source"]["notRequestPrincipals"][0], "*");
    assert!(c.issues.iter().any(|i| i.message.contains("USE_ORIGIN")));
    reload(&c);
}
