//! The evaluator on Istio's own golden filters and on hand-made chains: decisions, stages,
//! policy names and explanations (matched values, nearest misses, JWT messages).

use std::path::Path;

use meshca_policy::eval::{evaluate, Chain, Decision, EvalOptions, Request, Stage};
use serde_json::{json, Value};

const CONFORMANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/istio-authz");

fn golden(files: &[&str], tcp: bool) -> Chain {
    let filters: Vec<Value> = files
        .iter()
        .map(|f| {
            let p = Path::new(CONFORMANCE).join(f);
            let text = std::fs::read_to_string(&p).unwrap();
            meshca_policy::load::yaml_to_json(f, &text).unwrap().remove(0)
        })
        .collect();
    let key = if tcp { "network_filters" } else { "http_filters" };
    Chain::from_json(&json!({ key: filters })).unwrap()
}

fn req(v: Value) -> Request {
    serde_json::from_value(v).unwrap()
}

#[test]
fn deny_then_allow_with_istio_names() {
    let chain = golden(&["http/deny-and-allow-out1.yaml", "http/deny-and-allow-out2.yaml"], false);
    let opts = EvalOptions::default();
    let denied =
        evaluate(&chain, &req(json!({"source": {"principal": "spiffe://deny"}, "method": "GET", "path": "/"})), &opts)
            .unwrap();
    assert_eq!(denied.decision, Decision::Deny);
    assert_eq!(denied.stage, Stage::Deny);
    assert_eq!(denied.status, Some(403));
    assert_eq!(denied.policy.as_deref(), Some("ns[foo]-policy[httpbin-deny]-rule[0]"));
    assert!(denied.explanation.matched.iter().any(|c| c.actual == "spiffe://deny"), "{denied:?}");

    let allowed = evaluate(&chain, &req(json!({"source": {"principal": "spiffe://allow"}})), &opts).unwrap();
    assert_eq!((allowed.decision, allowed.stage), (Decision::Allow, Stage::Allow));
    assert_eq!(allowed.policy.as_deref(), Some("ns[foo]-policy[httpbin-allow]-rule[0]"));

    let plaintext = evaluate(&chain, &req(json!({"name": "plain"})), &opts).unwrap();
    assert_eq!((plaintext.decision, plaintext.stage), (Decision::Deny, Stage::NoAllowMatch));
    assert_eq!(plaintext.policy, None);
    assert_eq!(plaintext.name.as_deref(), Some("plain"));
    let miss = &plaintext.explanation.nearest_misses[0];
    assert_eq!(miss.policy, "ns[foo]-policy[httpbin-allow]-rule[0]");
    assert_eq!(miss.failed.field, "source.principal");
    assert!(miss.failed.actual.contains("plaintext"), "{miss:?}");
}

#[test]
fn tcp_allow_rules_that_vanished_deny_everything() {
    let chain = golden(&["tcp/allow-only-http-out.yaml"], true);
    let v = evaluate(
        &chain,
        &req(json!({"source": {"principal": "spiffe://cluster.local/ns/a/sa/b"}})),
        &EvalOptions::default(),
    )
    .unwrap();
    assert_eq!((v.decision, v.stage, v.status), (Decision::Deny, Stage::NoAllowMatch, None));
    assert!(v.explanation.summary.contains("allow-nothing"), "{}", v.explanation.summary);
}

#[test]
fn dry_run_is_reported_but_does_not_decide() {
    let chain = golden(&["http/dry-run-allow-out.yaml"], false);
    let v = evaluate(&chain, &req(json!({"path": "/other"})), &EvalOptions::default()).unwrap();
    assert_eq!((v.decision, v.stage), (Decision::Allow, Stage::NoPolicy));
    assert_eq!(v.explanation.dry_run.len(), 1);
    assert_eq!(v.explanation.dry_run[0].result, "denied");
}

#[test]
fn jwt_stage_uses_envoy_messages() {
    let key = meshca_jwt::SigningKey::generate_es256().unwrap();
    let jwks = json!({"keys": [key.public_jwk()]}).to_string();
    let chain = Chain::from_json(&json!({"http_filters": [
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"origins-0": {"issuer": "https://iss", "audiences": ["svc"], "local_jwks": {"inline_string": jwks},
                "payload_in_metadata": "payload"}}}},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"policies": {"ns[foo]-policy[jwt]-rule[0]": {
                "permissions": [{"and_rules": {"rules": [{"any": true}]}}],
                "principals": [{"and_ids": {"ids": [{"metadata": {"filter": "envoy.filters.http.jwt_authn",
                    "path": [{"key": "payload"}, {"key": "sub"}], "value": {"string_match": {"exact": "alice"}}}}]}}]}}}}}
    ]}))
    .unwrap();
    let now = 1_800_000_000;
    let opts = EvalOptions { now, ..EvalOptions::default() };
    let tok = |claims: Value| key.sign(&claims).unwrap();
    let check = |t: Option<String>| evaluate(&chain, &req(json!({"jwt": t, "path": "/"})), &opts).unwrap();

    let ok = check(Some(tok(json!({"iss": "https://iss", "sub": "alice", "aud": "svc", "exp": now + 60}))));
    assert_eq!((ok.decision, ok.stage), (Decision::Allow, Stage::Allow));
    let jwt = ok.explanation.jwt.unwrap();
    assert_eq!(jwt.request_principal.as_deref(), Some("https://iss/alice"));

    let expired = check(Some(tok(json!({"iss": "https://iss", "sub": "alice", "aud": "svc", "exp": now - 3600}))));
    assert_eq!((expired.stage, expired.status), (Stage::Jwt, Some(401)));
    assert_eq!(expired.explanation.jwt.unwrap().message, "Jwt is expired");

    let skewed = check(Some(tok(json!({"iss": "https://iss", "sub": "alice", "aud": "svc", "exp": now - 30}))));
    assert_eq!(skewed.decision, Decision::Allow, "60 s of clock skew are allowed");

    let foreign = check(Some(tok(json!({"iss": "https://other", "sub": "alice", "exp": now + 60}))));
    assert_eq!(foreign.explanation.jwt.unwrap().message, "Jwt issuer is not configured");

    let aud = check(Some(tok(json!({"iss": "https://iss", "sub": "alice", "aud": "x", "exp": now + 60}))));
    assert_eq!(
        (aud.status, aud.explanation.jwt.unwrap().message.as_str()),
        (Some(403), "Audiences in Jwt are not allowed")
    );

    let garbage = check(Some("a.b".into()));
    assert!(garbage.explanation.jwt.unwrap().message.contains("two dots"));

    let missing = check(None);
    assert_eq!((missing.decision, missing.stage), (Decision::Deny, Stage::NoAllowMatch));
    assert_eq!(missing.status, Some(403), "a missing token is not a jwt_authn failure");
    let miss = &missing.explanation.nearest_misses[0].failed;
    assert_eq!(miss.actual, "(no verified JWT)");
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let chain = golden(&["http/allow-path-out.yaml"], false);
    for bad in [json!({"source": {"ip": "not-an-ip"}}), json!({"path": "no-slash"}), json!({"headers": {"": "x"}})] {
        let e = evaluate(&chain, &req(bad.clone()), &EvalOptions::default()).unwrap_err();
        assert!(!e.is_empty(), "{bad}");
    }
    let unknown: Result<Request, _> = serde_json::from_value(json!({"methd": "GET"}));
    assert!(unknown.unwrap_err().to_string().contains("methd"));
}
