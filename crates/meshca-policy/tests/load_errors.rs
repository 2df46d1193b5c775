//! Loader diagnostics: every error names file, line and field path; Istio's validation rules.

use meshca_policy::load::{load_report, load_report_with_limits, load_str, Limits};

fn errors(text: &str) -> Vec<String> {
    load_report("policies.yaml", text).errors.iter().map(ToString::to_string).collect()
}

fn warnings(text: &str) -> Vec<String> {
    load_report("policies.yaml", text).warnings.iter().map(ToString::to_string).collect()
}

const HEADER: &str =
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: foo\n";

#[test]
fn unknown_field_names_file_line_path_and_suggestion() {
    let text = format!(
        "{HEADER}spec:\n  selector:\n    matchLabels:\n      app: httpbin\n  rules:\n  - from:\n    - source:\n        principal: [\"cluster.local/ns/a/sa/b\"]\n"
    );
    assert_eq!(
        errors(&text),
        vec![
            "policies.yaml:13: spec.rules[0].from[0].source.principal: unknown field \"principal\", did you mean \"principals\"?"
        ]
    );
}

#[test]
fn unknown_fields_everywhere_get_suggestions() {
    let text = format!("{HEADER}spec:\n  acton: DENY\n  rules:\n  - to:\n    - operation:\n        method: [GET]\n");
    let e = errors(&text);
    assert!(
        e.contains(&"policies.yaml:7: spec.acton: unknown field \"acton\", did you mean \"action\"?".to_string()),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with("policies.yaml:11: spec.rules[0].to[0].operation.method: unknown field")
            && m.ends_with("did you mean \"methods\"?")),
        "{e:?}"
    );
    let top = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetdata: {name: x}\nspec: {}\n";
    let e = errors(top);
    assert!(
        e.iter().any(|m| m.contains("policies.yaml:3: metdata: unknown field \"metdata\", did you mean \"metadata\"?")),
        "{e:?}"
    );
}

#[test]
fn wrong_types_and_enum_values() {
    let text =
        format!("{HEADER}spec:\n  action: deny\n  rules:\n  - from:\n    - source:\n        principals: just-one\n");
    let e = errors(&text);
    assert!(
        e.iter().any(|m| m.starts_with("policies.yaml:7: spec.action: invalid value \"deny\"")
            && m.contains("did you mean \"DENY\"")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m == "policies.yaml:11: spec.rules[0].from[0].source.principals: expected a list, found a scalar"),
        "{e:?}"
    );
}

#[test]
fn istio_validation_errors() {
    let deny_no_rules = format!("{HEADER}spec:\n  action: DENY\n");
    assert!(errors(&deny_no_rules)[0].contains("DENY action without `rules` is meaningless"));

    let bad_values = format!(
        "{HEADER}spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\", \"1.2.3\"]\n        serviceAccounts: [a]\n        principals: [b]\n    to:\n    - operation:\n        ports: [\"http\"]\n    when:\n    - key: request.foo\n      values: [x]\n    - key: source.ip\n"
    );
    let e = errors(&bad_values);
    let has = |s: &str| e.iter().any(|m| m.contains(s));
    assert!(has("policies.yaml:10: spec.rules[0].from[0].source.ipBlocks[0]: bad CIDR range (10.0.0.0/33)"), "{e:?}");
    assert!(has("spec.rules[0].from[0].source.ipBlocks[1]: bad IP address (1.2.3)"), "{e:?}");
    assert!(has("cannot set serviceAccounts with namespaces or principals"), "{e:?}");
    assert!(has("policies.yaml:15: spec.rules[0].to[0].operation.ports[0]: bad port (http)"), "{e:?}");
    assert!(has("policies.yaml:17: spec.rules[0].when[0].key: unknown attribute: request.foo"), "{e:?}");
    assert!(has("at least one of `values` or `notValues` must be set for key source.ip"), "{e:?}");

    let empty_source = format!("{HEADER}spec:\n  rules:\n  - from:\n    - source: {{}}\n    to: []\n");
    let e = errors(&empty_source);
    assert!(e.iter().any(|m| m.contains("`from.source` must not be empty")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("spec.rules[0].to: `to` must not be empty")), "{e:?}");

    let custom =
        format!("{HEADER}spec:\n  action: CUSTOM\n  rules:\n  - from:\n    - source:\n        principals: [a]\n");
    let e = errors(&custom);
    assert!(e.iter().any(|m| m.contains("must specify a provider name for CUSTOM action")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("From.Principals is currently not supported with CUSTOM action")), "{e:?}");

    let null_rule = format!("{HEADER}spec:\n  rules:\n  - null\n");
    assert!(errors(&null_rule)[0].contains("spec.rules[0]: must not be null"));

    let template =
        format!("{HEADER}spec:\n  rules:\n  - to:\n    - operation:\n        paths: [\"/a/{{**}}/b/{{*}}\"]\n");
    assert!(errors(&template)[0].contains("{**} is not the last operator"), "{:?}", errors(&template));
}

#[test]
fn istio_validation_warnings_keep_the_object() {
    let text = format!("{HEADER}spec:\n  selector:\n    matchLabels: {{}}\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n");
    let report = load_report("policies.yaml", &text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects.len(), 1);
    let w = warnings(&text);
    assert!(w.iter().any(|m| m.contains("workload selector specified without labels")), "{w:?}");
    assert!(
        w.iter()
            .any(|m| m.contains("spec.rules[0]: configured AuthorizationPolicy will deny all traffic to TCP ports")),
        "{w:?}"
    );
    let dry = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  annotations:\n    istio.io/dry-run: yes\nspec: {}\n";
    let w = warnings(dry);
    assert!(
        w.iter()
            .any(|m| m.starts_with("policies.yaml:6: metadata.annotations[istio.io/dry-run]: invalid value \"yes\"")),
        "{w:?}"
    );
}

#[test]
fn api_version_and_kind_checks() {
    let e = errors("apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n");
    assert!(e[0].contains("apiVersion \"security.istio.io/v1alpha1\" is not valid for AuthorizationPolicy; use security.istio.io/v1 or security.istio.io/v1beta1"), "{e:?}");
    let e = errors("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicies\nmetadata: {name: a}\n");
    assert!(
        e[0].contains("unknown kind \"AuthorizationPolicies\"")
            && e[0].contains("did you mean \"AuthorizationPolicy\""),
        "{e:?}"
    );
    let e = errors("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nspec: {}\n");
    assert!(e[0].contains("metadata.name: missing field \"name\""), "{e:?}");
    let e = errors("- just\n- a list\n");
    assert!(e[0].contains("expected a Kubernetes object"), "{e:?}");
    let r = load_report("x.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n");
    assert!(r.errors.is_empty() && r.objects.is_empty());
    assert!(r.warnings[0].to_string().contains("skipped Deployment (apps/v1): not a security policy"));
}

#[test]
fn syntax_errors_have_lines() {
    let e = errors("apiVersion: v1\nkind: List\nitems:\n  - a: [1, 2\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("policies.yaml:") && e[0].contains("invalid YAML"), "{e:?}");
    let e = errors("a: 1\na: 2\n");
    assert!(e[0].contains("policies.yaml:2: duplicate key \"a\""), "{e:?}");
    assert!(load_str("bad.json", "{\"apiVersion\": ").is_err());
}

#[test]
fn limits_are_errors() {
    let small = Limits { max_bytes: 100, ..Limits::default() };
    let r = load_report_with_limits("big.yaml", &"#".repeat(101), small);
    assert!(r.errors[0].to_string().contains("input too large"), "{:?}", r.errors);

    let deep = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
    let r = load_report("deep.yaml", &deep);
    assert!(r.errors[0].message.contains("nesting") || r.errors[0].message.contains("recursion"), "{:?}", r.errors);

    let few = Limits { max_documents: 3, ..Limits::default() };
    let docs = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n".repeat(5);
    let r = load_report_with_limits("many.yaml", &docs, few);
    assert!(r.errors[0].message.contains("too many documents"), "{:?}", r.errors);

    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, c) in ["b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g"][i];
        bomb.push_str(&format!("{c}: &{c} [{}]\n", vec![format!("*{prev}"); 10].join(", ")));
    }
    let r = load_report("bomb.yaml", &bomb);
    assert!(r.errors[0].message.contains("too many nodes"), "{:?}", r.errors);
}

#[test]
fn request_and_peer_authentication_validation() {
    let ra = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: r, namespace: foo}\nspec:\n  jwtRules:\n  - audiences: [\"\"]\n    jwksUri: ftp://x\n    timeout: 5 seconds\n  - issuer: a\n    jwks: not-json\n";
    let e = errors(ra);
    let has = |s: &str| e.iter().any(|m| m.contains(s));
    assert!(has("empty value not allowed, found in audiences"), "{e:?}");
    assert!(has("spec.jwtRules[0].jwksUri: invalid jwksUri \"ftp://x\""), "{e:?}");
    assert!(has("spec.jwtRules[0].timeout: invalid duration"), "{e:?}");
    assert!(has("spec.jwtRules[1].jwks: jwks parse error"), "{e:?}");

    let pa = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: foo}\nspec:\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n";
    assert!(
        errors(pa)[0].contains("mesh/namespace peer authentication cannot have port level mTLS"),
        "{:?}",
        errors(pa)
    );
    let pa_bad = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  mtls: {mode: STRICTLY}\n";
    assert!(errors(pa_bad)[0].contains("did you mean \"STRICT\""), "{:?}", errors(pa_bad));
}
