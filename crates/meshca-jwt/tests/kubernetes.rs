//! `Claims::kubernetes_service_account` for the token layouts Kubernetes uses.

mod common;

use common::*;
use meshca_jwt::{verify, Claims, SigningKey};
use serde_json::{json, Value};

fn sa(claims: Value) -> Option<(String, String)> {
    let map = claims.as_object().cloned().expect("object");
    Claims::from_map(map).kubernetes_service_account()
}

fn some(ns: &str, name: &str) -> Option<(String, String)> {
    Some((ns.to_string(), name.to_string()))
}

fn projected(ns: &str, name: &str) -> Value {
    json!({
        "namespace": ns,
        "pod": {"name": "httpbin-5b9d7b9f8-abcde", "uid": "2f0c0a5e-1111-2222-3333-444455556666"},
        "serviceaccount": {"name": name, "uid": "8d9c4f6a-1111-2222-3333-444455556666"}
    })
}

#[test]
fn subject_form() {
    assert_eq!(sa(json!({"sub": "system:serviceaccount:istio-system:istiod"})), some("istio-system", "istiod"));
}

#[test]
fn projected_token_form() {
    assert_eq!(sa(json!({"kubernetes.io": projected("foo", "bar")})), some("foo", "bar"));
    // The real shape: sub and nested claims together, agreeing.
    let both = json!({
        "sub": "system:serviceaccount:foo:bar",
        "kubernetes.io": projected("foo", "bar"),
    });
    assert_eq!(sa(both), some("foo", "bar"));
}

#[test]
fn legacy_form() {
    let legacy = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/secret.name": "sleep-token-xyz",
        "kubernetes.io/serviceaccount/service-account.name": "sleep",
        "kubernetes.io/serviceaccount/service-account.uid": "0b6b4f3e",
    });
    assert_eq!(sa(legacy.clone()), some("default", "sleep"));
    let mut with_sub = legacy;
    with_sub["sub"] = json!("system:serviceaccount:default:sleep");
    assert_eq!(sa(with_sub), some("default", "sleep"));
}

#[test]
fn mismatched_sub_and_nested_claims() {
    let mismatch = json!({
        "sub": "system:serviceaccount:foo:bar",
        "kubernetes.io": projected("foo", "other"),
    });
    assert_eq!(sa(mismatch), None);
    let other_ns = json!({
        "sub": "system:serviceaccount:foo:bar",
        "kubernetes.io": projected("kube-system", "bar"),
    });
    assert_eq!(sa(other_ns), None);
    let legacy_mismatch = json!({
        "sub": "system:serviceaccount:foo:bar",
        "kubernetes.io/serviceaccount/namespace": "foo",
        "kubernetes.io/serviceaccount/service-account.name": "baz",
    });
    assert_eq!(sa(legacy_mismatch), None);
}

#[test]
fn malformed_subjects() {
    for sub in [
        "system:serviceaccount:foo",
        "system:serviceaccount:foo:bar:baz",
        "system:serviceaccount::bar",
        "system:serviceaccount:foo:",
        "system:serviceaccounts:foo:bar",
        "system:node:foo:bar",
        "alice",
        "",
    ] {
        assert_eq!(sa(json!({"sub": sub})), None, "{sub}");
    }
    // A malformed sub is not rescued by nested claims.
    let five = json!({
        "sub": "system:serviceaccount:foo:bar:baz",
        "kubernetes.io": projected("foo", "bar"),
    });
    assert_eq!(sa(five), None);
    assert_eq!(sa(json!({"sub": 42})), None);
}

#[test]
fn malformed_nested_claims() {
    assert_eq!(sa(json!({})), None);
    assert_eq!(sa(json!({"kubernetes.io": {"namespace": "foo"}})), None);
    assert_eq!(sa(json!({"kubernetes.io": {"namespace": "", "serviceaccount": {"name": "x"}}})), None);
    assert_eq!(sa(json!({"kubernetes.io": {"namespace": "foo", "serviceaccount": "bar"}})), None);
    assert_eq!(sa(json!({"kubernetes.io": "foo/bar"})), None);
    assert_eq!(sa(json!({"kubernetes.io/serviceaccount/namespace": "foo"})), None);
}

#[test]
fn verified_projected_token() {
    let key = SigningKey::generate_rs256().expect("generate");
    let token = key
        .sign(&json!({
            "aud": ["istio-ca"],
            "exp": NOW + 3600,
            "iat": NOW,
            "iss": ISS,
            "kubernetes.io": projected("bookinfo", "reviews"),
            "nbf": NOW,
            "sub": "system:serviceaccount:bookinfo:reviews",
        }))
        .expect("sign");
    let claims = verify(&token, &keyset(&[&key]), &validation()).expect("verify");
    assert_eq!(claims.kubernetes_service_account(), some("bookinfo", "reviews"));
}
