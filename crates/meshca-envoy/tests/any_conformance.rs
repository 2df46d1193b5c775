//! `json_to_any` on every `typedConfig` of Istio's authorization goldens
//! (`shared/conformance/istio-authz/{http,tcp}/*-out*.yaml`) and on a compiled jwt_authn filter:
//! each converts, decodes into the envoy-types struct of its type, and keeps its content.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz as HttpExtAuthz;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::JwtAuthentication;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3::ExtAuthz as NetworkExtAuthz;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use meshca_envoy::{json_to_any, EncodeError};
use meshca_policy::compile::{compile_report, CompileOptions};
use meshca_policy::load::{load_str, yaml_to_json};
use meshca_policy::model::{MeshSettings, PolicySet, Protocol, Workload};
use prost::Message;
use serde_json::{json, Value};

fn conformance_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/istio-authz");
    assert!(dir.join("cases.yaml").is_file(), "conformance goldens not found at {}", dir.display());
    dir
}

fn golden_outputs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for sub in ["http", "tcp"] {
        let dir = conformance_dir().join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("-out")))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            for doc in yaml_to_json(&f.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}")) {
                out.push((format!("{sub}/{}", f.file_name().unwrap_or_default().to_string_lossy()), doc));
            }
        }
    }
    out
}

/// The policy names of an RBAC JSON config's `rules` (or `shadowRules`).
fn json_policy_names(config: &Value, key: &str) -> Vec<String> {
    let mut names: Vec<String> =
        config[key]["policies"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    names.sort();
    names
}

fn sorted<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = keys.cloned().collect();
    v.sort();
    v
}

/// Converts and decodes one typed config, checking fields that must survive; returns its type URL.
fn check_round_trip(origin: &str, config: &Value) -> String {
    let any = json_to_any(config).unwrap_or_else(|e| panic!("{origin}: {e}"));
    assert_eq!(any.type_url, config["@type"].as_str().expect("@type"), "{origin}");
    let bytes = any.value.as_slice();
    match any.type_url.rsplit('/').next().unwrap_or_default() {
        "envoy.extensions.filters.http.rbac.v3.RBAC" => {
            let rbac = HttpRbac::decode(bytes).unwrap_or_else(|e| panic!("{origin}: decode: {e}"));
            let rules = rbac.rules.unwrap_or_default();
            assert_eq!(sorted(rules.policies.keys()), json_policy_names(config, "rules"), "{origin}");
            let shadow = rbac.shadow_rules.unwrap_or_default();
            assert_eq!(sorted(shadow.policies.keys()), json_policy_names(config, "shadowRules"), "{origin}");
            let action = config["rules"]["action"].as_str().unwrap_or("ALLOW");
            assert_eq!(rules.action().as_str_name(), action, "{origin}");
            assert_eq!(rbac.shadow_rules_stat_prefix, config["shadowRulesStatPrefix"].as_str().unwrap_or(""));
        }
        "envoy.extensions.filters.network.rbac.v3.RBAC" => {
            let rbac = NetworkRbac::decode(bytes).unwrap_or_else(|e| panic!("{origin}: decode: {e}"));
            assert_eq!(rbac.stat_prefix, config["statPrefix"].as_str().unwrap_or(""), "{origin}");
            let rules = rbac.rules.unwrap_or_default();
            assert_eq!(sorted(rules.policies.keys()), json_policy_names(config, "rules"), "{origin}");
        }
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz" => {
            let ext = HttpExtAuthz::decode(bytes).unwrap_or_else(|e| panic!("{origin}: decode: {e}"));
            assert_eq!(ext.failure_mode_allow, config["failureModeAllow"].as_bool().unwrap_or(false), "{origin}");
            assert!(ext.services.is_some(), "{origin}: ext_authz without a service");
        }
        "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz" => {
            let ext = NetworkExtAuthz::decode(bytes).unwrap_or_else(|e| panic!("{origin}: decode: {e}"));
            assert_eq!(ext.stat_prefix, config["statPrefix"].as_str().unwrap_or(""), "{origin}");
            assert!(ext.grpc_service.is_some(), "{origin}: network ext_authz without a gRPC service");
        }
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication" => {
            let jwt = JwtAuthentication::decode(bytes).unwrap_or_else(|e| panic!("{origin}: decode: {e}"));
            let want: Vec<String> =
                config["providers"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            assert_eq!(sorted(jwt.providers.keys()), want, "{origin}");
        }
        other => panic!("{origin}: unexpected type {other}"),
    }
    any.type_url
}

#[test]
fn every_golden_typed_config_converts_and_round_trips() {
    let mut types = BTreeMap::<String, usize>::new();
    let goldens = golden_outputs();
    assert!(goldens.len() >= 35, "expected at least 35 golden filters, found {}", goldens.len());
    for (origin, filter) in &goldens {
        let config = &filter["typedConfig"];
        assert!(config.is_object(), "{origin}: no typedConfig");
        *types.entry(check_round_trip(origin, config)).or_default() += 1;
    }
    eprintln!("converted {} golden filters: {types:?}", goldens.len());
    assert!(types.len() >= 4, "the goldens cover RBAC and ext_authz, HTTP and network: {types:?}");
}

#[test]
fn compiled_jwt_authn_with_inlined_jwks_converts() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [api]
    jwksUri: https://issuer.example/jwks.json
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 3s
"#;
    let set = PolicySet::from_objects(load_str("jwt.yaml", text).expect("load"));
    let jwks = support::TEST_JWKS;
    let options = CompileOptions { jwks: BTreeMap::from([("https://issuer.example/jwks.json".into(), jwks.into())]) };
    let workload = Workload::new("foo", BTreeMap::new());
    let compiled = compile_report(&set, &workload, &MeshSettings::default(), Protocol::Http, Some(8080), &options)
        .expect("compile");
    let filter = &compiled.filters["http_filters"][0];
    assert_eq!(filter["name"], "envoy.filters.http.jwt_authn");
    check_round_trip("compiled jwt_authn", &filter["typed_config"]);
    let any = json_to_any(&filter["typed_config"]).expect("convert");
    let jwt = JwtAuthentication::decode(any.value.as_slice()).expect("decode");
    let provider = jwt.providers.values().next().expect("one provider");
    assert_eq!(provider.issuer, "https://issuer.example");
    assert_eq!(provider.audiences, vec!["api".to_string()]);
    let inline = format!("{:?}", provider.jwks_source_specifier);
    assert!(inline.contains("LocalJwks") && inline.contains("k1"), "JWKS inlined: {inline}");
}

#[test]
fn errors_name_the_type_and_the_field_path() {
    let bad = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"policies": {"p": {"permissions": [{"any": true}], "principals": [{"bogus": 1}]}}}});
    let err = json_to_any(&bad).expect_err("unknown field");
    let EncodeError::Json { type_url, path, message } = &err else { panic!("wrong error {err:?}") };
    assert!(type_url.ends_with("http.rbac.v3.RBAC"), "{err}");
    assert!(path.contains("rules.policies.p.principals[0]"), "path {path:?} in {err}");
    assert!(message.contains("bogus"), "{err}");

    let wrong_type = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "statPrefix": 7});
    let err = json_to_any(&wrong_type).expect_err("number for a string");
    assert!(err.to_string().contains("statPrefix"), "{err}");

    let err = json_to_any(&json!({"rules": {}})).expect_err("no @type");
    assert!(matches!(err, EncodeError::MissingType { .. }), "{err}");
    let err = json_to_any(&json!({"@type": "type.googleapis.com/envoy.NoSuch"})).expect_err("unknown type");
    assert_eq!(err, EncodeError::UnknownType { type_url: "type.googleapis.com/envoy.NoSuch".into() });
}
