//! `diff` finds the requests a change newly allows and newly denies.

use meshca_policy::diff::{diff, example_requests};
use meshca_policy::eval::{Chain, EvalOptions};
use meshca_policy::model::{MeshSettings, PolicySet, Protocol, Workload};

fn set(yaml: &str) -> PolicySet {
    PolicySet::from_objects(meshca_policy::load::load_str("t.yaml", yaml).unwrap())
}

fn chain(s: &PolicySet) -> Chain {
    let w = Workload::new("foo", [("app".to_string(), "web".to_string())].into());
    let v = meshca_policy::compile::compile(s, &w, &MeshSettings::default(), Protocol::Http, Some(8080)).unwrap();
    Chain::from_json(&v).unwrap()
}

const P: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules:\n";

#[test]
fn widening_a_method_list_is_newly_allowed_and_adding_a_source_is_newly_denied() {
    let old = set(&format!("{P}  - to: [{{operation: {{methods: [GET]}}}}]\n"));
    let new = set(&format!(
        "{P}  - from: [{{source: {{namespaces: [frontend]}}}}]\n    to: [{{operation: {{methods: [GET, DELETE]}}}}]\n"
    ));
    let (reqs, jwt) = example_requests(&[&old, &new], "cluster.local", Some(8080));
    assert!(!jwt);
    let r = diff(&chain(&old), &chain(&new), reqs, &EvalOptions { port: Some(8080), ..EvalOptions::default() });
    assert!(r.requests > 5);
    assert!(
        r.newly_allowed.iter().any(|c| c.request.method.as_deref() == Some("DELETE")
            && c.request.source.as_ref().and_then(|s| s.principal.as_deref())
                == Some("spiffe://cluster.local/ns/frontend/sa/default")),
        "{:#?}",
        r.newly_allowed
    );
    assert!(
        r.newly_denied.iter().any(|c| c.request.source.as_ref().and_then(|s| s.principal.as_ref()).is_none()),
        "{:#?}",
        r.newly_denied
    );
    assert!(r.newly_denied.iter().all(|c| c.old.starts_with("allow") && c.new == "no-allow-match"));
}

#[test]
fn identical_sets_have_no_changes() {
    let s = set(&format!("{P}  - to: [{{operation: {{paths: [\"/api/*\"], hosts: [\"a.example.com\"]}}}}]\n"));
    let (reqs, _) = example_requests(&[&s], "cluster.local", None);
    let r = diff(&chain(&s), &chain(&s), reqs, &EvalOptions::default());
    assert!(r.newly_allowed.is_empty() && r.newly_denied.is_empty());
}
