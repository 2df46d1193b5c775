//! Each lint id fires on the trap it describes, at the right line, and not on clean policies.

use meshca_policy::lint::{lint, LintOptions, Severity};
use meshca_policy::model::{PolicySet, Protocol};

fn ids(yaml: &str, opts: &LintOptions) -> Vec<(&'static str, Severity, u32)> {
    let objects = meshca_policy::load::load_str("t.yaml", yaml).expect("valid policies");
    lint(&PolicySet::from_objects(objects), opts).into_iter().map(|f| (f.id, f.severity, f.line)).collect()
}

const HEAD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n";

#[test]
fn semantic_traps_are_found_with_lines() {
    let yaml = format!(
        "{HEAD}spec:\n  rules:\n  - from:\n    - source:\n        principals: [\"spiffe://cluster.local/ns/a/sa/b\"]\n        requestPrincipals: [\"issuer-only\", \"*@example.com\", \"https://iss.example.com\"]\n    to:\n    - operation:\n        hosts: [\"a.example.com\"]\n        methods: [\"G*T\"]\n"
    );
    let got = ids(&yaml, &LintOptions::default());
    for (id, line) in
        [("POL001", 8), ("POL003", 9), ("POL004", 9), ("POL005", 12), ("POL002", 11), ("POL006", 5), ("POL010", 6)]
    {
        assert!(got.iter().any(|(i, _, l)| *i == id && *l == line), "{id} at line {line} missing in {got:?}");
    }
}

#[test]
fn tcp_context_makes_http_only_allow_rules_errors() {
    let yaml = format!("{HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n");
    let tcp = LintOptions { protocol: Some(Protocol::Tcp), ..LintOptions::default() };
    assert!(ids(&yaml, &tcp).contains(&("POL010", Severity::Error, 6)));
    assert!(ids(&yaml, &LintOptions::default()).contains(&("POL010", Severity::Warning, 6)));
    let deny =
        format!("{HEAD}spec:\n  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x]\n      values: [a]\n");
    assert!(ids(&deny, &LintOptions::default()).iter().any(|(i, _, _)| *i == "POL011"));
    let deny_ports = format!("{HEAD}spec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        ports: [\"80\"]\n        methods: [GET]\n");
    assert!(!ids(&deny_ports, &LintOptions::default()).iter().any(|(i, _, _)| *i == "POL011"));
}

#[test]
fn jwt_and_scope_traps() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: foo}\nspec:\n  jwtRules:\n  - issuer: https://iss.example.com/\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"https://iss.example.com/*\"]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nothing, namespace: foo}\nspec: {}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: cp, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: istiod}}\n  rules: [{}]\n";
    let got = ids(yaml, &LintOptions::default());
    for id in ["POL007", "POL008", "POL009", "POL012"] {
        assert!(got.iter().any(|(i, _, _)| *i == id), "{id} missing in {got:?}");
    }
    assert!(!got.iter().any(|(i, _, _)| *i == "POL006"), "{got:?}");
}

#[test]
fn legacy_pitfalls() {
    let yaml = "apiVersion: rbac.istio.io/v1alpha1\nkind: ClusterRbacConfig\nmetadata: {name: default}\nspec: {mode: \"ON\"}\n---\napiVersion: rbac.istio.io/v1alpha1\nkind: ClusterRbacConfig\nmetadata: {name: other}\nspec: {mode: \"OFF\"}\n---\napiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRole\nmetadata: {name: viewer, namespace: a}\nspec:\n  rules:\n  - services: [\"productpage.default.svc.cluster.local\"]\n    methods: [GET]\n---\napiVersion: rbac.istio.io/v1alpha1\nkind: ServiceRoleBinding\nmetadata: {name: bind, namespace: b}\nspec:\n  subjects: [{user: \"*\"}]\n  roleRef: {kind: ServiceRole, name: viewer}\n";
    let got = ids(yaml, &LintOptions::default());
    for id in ["POL013", "POL014", "POL015", "POL016"] {
        assert!(
            got.iter().any(|(i, s, _)| *i == id && (id == "POL015" || id == "POL016" || *s == Severity::Error)),
            "{id} in {got:?}"
        );
    }
}

#[test]
fn clean_policies_have_no_findings() {
    let yaml = format!(
        "{HEAD}spec:\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/a/sa/b\"]\n    to:\n    - operation:\n        ports: [\"8080\"]\n"
    );
    assert_eq!(ids(&yaml, &LintOptions::default()), vec![]);
}

#[test]
fn inventory_checks() {
    let inv: meshca_policy::lint::Inventory = serde_json::from_value(serde_json::json!({
        "namespaces": ["foo", "bar"],
        "workloads": [{"namespace": "foo", "labels": {"app": "db"}, "ports": [{"port": 3306, "protocol": "tcp"}]}]
    }))
    .unwrap();
    let opts = LintOptions { inventory: Some(inv), ..LintOptions::default() };
    let yaml = format!(
        "{HEAD}spec:\n  selector: {{matchLabels: {{app: db}}}}\n  rules:\n  - from:\n    - source:\n        namespaces: [\"bar\", \"ba*\", \"nope\"]\n    to:\n    - operation:\n        methods: [GET]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: q, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: missing}}}}\n  rules: [{{}}]\n"
    );
    let got = ids(&yaml, &opts);
    assert!(got.contains(&("POL017", Severity::Error, 9)), "{got:?}");
    assert_eq!(got.iter().filter(|(i, _, _)| *i == "POL017").count(), 1, "bar and ba* exist: {got:?}");
    assert!(got.contains(&("POL019", Severity::Error, 7)), "{got:?}");
    assert!(got.iter().any(|(i, _, l)| *i == "POL018" && *l == 18), "{got:?}");
}
