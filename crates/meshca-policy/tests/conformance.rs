//! Istio's authorization-builder goldens: every case of
//! `shared/conformance/istio-authz/cases.yaml` must compile to the golden filters, compared as data.
//!
//! The only normalisation is the filter element's `typed_config` key, which meshca prints in the
//! snake_case spelling of Envoy's listener config while the goldens use `typedConfig` (both are
//! accepted by Envoy); see the crate README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshca_policy::compile::compile;
use meshca_policy::load::{load_report, mesh_settings_str, yaml_to_json};
use meshca_policy::model::{PolicySet, Protocol, Workload};
use serde_json::{json, Value};

fn conformance_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/istio-authz");
    assert!(
        dir.join("cases.yaml").is_file(),
        "conformance goldens not found at {} (expected the shared/ folder beside the repository)",
        dir.display()
    );
    dir
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut docs = yaml_to_json(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

/// First difference between two JSON values, as `path: want X, got Y`.
fn first_diff(path: &str, want: &Value, got: &Value) -> Option<String> {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                let p = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_diff(&p, x, y),
                    (x, y) => Some(format!("{p}: want {x:?}, got {y:?}")),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("{path}: want {} items, got {}: want {want}, got {got}", a.len(), b.len()));
            }
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| first_diff(&format!("{path}[{i}]"), x, y))
        }
        _ if want == got => None,
        _ => Some(format!("{path}: want {want}, got {got}")),
    }
}

fn normalise(mut filter: Value) -> Value {
    if let Some(obj) = filter.as_object_mut() {
        if let Some(tc) = obj.remove("typed_config") {
            obj.insert("typedConfig".to_string(), tc);
        }
    }
    filter
}

struct CaseOutput {
    protocol: Protocol,
    /// The compiled filters as meshca prints them.
    got: Vec<Value>,
    want: Vec<Value>,
}

fn compile_case(dir: &Path, case: &Value, defaults: &Value, providers: &Value) -> Result<CaseOutput, String> {
    let get = |k: &str| case.get(k).or_else(|| defaults.get(k)).cloned().unwrap_or(Value::Null);
    let mut mesh = json!({
        "rootNamespace": get("root_namespace"),
        "trustDomain": get("trust_domain"),
        "trustDomainAliases": get("aliases"),
    });
    if let Some(p) = case.get("providers").and_then(Value::as_str) {
        let list = providers.get(p).ok_or_else(|| format!("unknown providers set {p}"))?;
        mesh["extensionProviders"] = list.clone();
    }
    let mesh = mesh_settings_str("mesh.json", &mesh.to_string()).map_err(|e| format!("mesh settings: {e:?}"))?;
    let labels: BTreeMap<String, String> = serde_json::from_value(get("labels")).map_err(|e| e.to_string())?;
    let workload = Workload::new(get("namespace").as_str().unwrap_or_default(), labels);
    let protocol = match case["protocol"].as_str() {
        Some("http") => Protocol::Http,
        Some("tcp") => Protocol::Tcp,
        other => return Err(format!("bad protocol {other:?}")),
    };
    let input = case["input"].as_str().ok_or("case without input")?;
    let text = std::fs::read_to_string(dir.join(input)).map_err(|e| format!("{input}: {e}"))?;
    let report = load_report(input, &text);
    if !report.errors.is_empty() {
        return Err(format!("load errors: {:?}", report.errors.iter().map(ToString::to_string).collect::<Vec<_>>()));
    }
    let set = PolicySet::from_objects(report.objects);
    let got = compile(&set, &workload, &mesh, protocol, None).map_err(|e| e.to_string())?;
    let key = if protocol == Protocol::Http { "http_filters" } else { "network_filters" };
    let got: Vec<Value> = got[key].as_array().ok_or("no filter list")?.clone();
    let want: Vec<Value> = case["want"]
        .as_array()
        .ok_or("case without want")?
        .iter()
        .map(|w| read_yaml(&dir.join(w.as_str().unwrap_or(""))))
        .collect();
    Ok(CaseOutput { protocol, got, want })
}

fn run_case(dir: &Path, case: &Value, defaults: &Value, providers: &Value) -> Result<(), String> {
    let CaseOutput { got, want, .. } = compile_case(dir, case, defaults, providers)?;
    let got: Vec<Value> = got.into_iter().map(normalise).collect();
    if got.len() != want.len() {
        let names: Vec<&Value> = got.iter().map(|f| &f["name"]).collect();
        return Err(format!("want {} filters, got {}: {names:?}", want.len(), got.len()));
    }
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        if let Some(d) = first_diff(&format!("filter[{i}]"), w, g) {
            return Err(d);
        }
    }
    Ok(())
}

#[test]
fn every_istio_golden_case_compiles_to_the_golden_filters() {
    let dir = conformance_dir();
    let cases_doc = read_yaml(&dir.join("cases.yaml"));
    let cases = cases_doc["cases"].as_array().expect("cases list");
    assert!(cases.len() >= 29, "expected at least 29 cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        if let Err(e) = run_case(&dir, case, &cases_doc["defaults"], &cases_doc["providers"]) {
            failures.push(format!("{name}: {e}"));
        }
    }
    let passed = cases.len() - failures.len();
    eprintln!("conformance: {passed}/{} cases pass", cases.len());
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

use meshca_testkit::envoy::bin as envoy_bin;

fn listener(name: &str, protocol: Protocol, filters: Vec<Value>) -> Value {
    let chain = match protocol {
        Protocol::Http => {
            let mut http = filters;
            http.push(json!({"name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
            vec![json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                "http_filters": http,
            }})]
        }
        Protocol::Tcp => {
            let mut net = filters;
            net.push(json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name, "cluster": "backend"}}));
            net
        }
    };
    json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
           "filter_chains": [{"filters": chain}]})
}

fn static_cluster(name: &str, port: u16, http2: bool) -> Value {
    let mut c = json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
            {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}});
    if http2 {
        c["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}});
    }
    c
}

/// Every compiled case (plus jwt_authn from RequestAuthentications) goes into one bootstrap that
/// a real Envoy 1.40 must accept in `--mode validate`.
#[test]
fn compiled_filters_are_accepted_by_envoy() {
    let dir = conformance_dir();
    let cases_doc = read_yaml(&dir.join("cases.yaml"));
    let mut listeners = Vec::new();
    for (i, case) in cases_doc["cases"].as_array().expect("cases list").iter().enumerate() {
        let out = compile_case(&dir, case, &cases_doc["defaults"], &cases_doc["providers"])
            .unwrap_or_else(|e| panic!("case {}: {e}", case["name"]));
        listeners.push(listener(&format!("case{i}"), out.protocol, out.got));
    }
    let jwt_policies = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [api]
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"YJiG7cBHeOCU3DzuPiUMyWXVNxp8RCtbbSx2DLxqKT4","y":"VXSMS6ftmXgv-JQB8nbEXwVk_FLX35dREsxuKIrxI10"}]}'
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
  - issuer: https://other.example
    jwksUri: https://keys.other.example:8443/jwks.json
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt-only, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
"#;
    let objects = meshca_policy::load::load_str("jwt.yaml", jwt_policies).unwrap_or_else(|e| panic!("{e:?}"));
    let set = PolicySet::from_objects(objects);
    let workload = Workload::new("foo", BTreeMap::new());
    let mesh = meshca_policy::model::MeshSettings::default();
    let compiled = compile(&set, &workload, &mesh, Protocol::Http, None).expect("compile jwt");
    let http = compiled["http_filters"].as_array().expect("filters").clone();
    assert_eq!(http[0]["name"], "envoy.filters.http.jwt_authn");
    listeners.push(listener("jwt", Protocol::Http, http));
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": [
            static_cluster("backend", 9, false),
            static_cluster("outbound|9000||my-custom-ext-authz.foo.svc.cluster.local", 9000, true),
            static_cluster("outbound|8443||keys.other.example", 8443, false),
        ]},
    });
    let tmp = std::env::temp_dir().join(format!("meshca-policy-envoy-{}.json", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&bootstrap).expect("json")).expect("write bootstrap");
    let out = std::process::Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&tmp)
        .output()
        .expect("run envoy");
    let _ = std::fs::remove_file(&tmp);
    assert!(
        out.status.success(),
        "Envoy rejected the compiled filters:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Beyond the goldens: jwt_authn shape (providers sorted by issuer, Istio's requirement tree),
/// the HTTP filter order (CUSTOM, jwt_authn, AUDIT, DENY, ALLOW) and the notes for TCP chains.
#[test]
fn jwt_authn_order_and_tcp_notes() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - {issuer: z-issuer, jwks: '{"keys":[]}'}
  - {issuer: a-issuer, jwksUri: "http://keys.local/jwks", timeout: 2s, spaceDelimitedClaims: [roles]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: foo}
spec: {action: CUSTOM, provider: {name: authz}, rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: foo}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec: {action: DENY, rules: [{from: [{source: {requestPrincipals: ["*"]}}], to: [{operation: {ports: ["80"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: istio-system}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}, {from: [{source: {namespaces: [bar]}}]}]}
"#;
    let set =
        PolicySet::from_objects(meshca_policy::load::load_str("p.yaml", text).unwrap_or_else(|e| panic!("{e:?}")));
    let mesh = mesh_settings_str(
        "mesh.yaml",
        "extensionProviders: [{name: authz, envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}}]",
    )
    .expect("mesh");
    let workload = Workload::new("foo", BTreeMap::new());
    let http = compile(&set, &workload, &mesh, Protocol::Http, None).expect("http");
    let names: Vec<&str> =
        http["http_filters"].as_array().expect("list").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.rbac",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac"
        ]
    );
    let jwt = &http["http_filters"][2]["typed_config"];
    assert_eq!(jwt["providers"]["origins-0"]["issuer"], "a-issuer");
    assert_eq!(jwt["providers"]["origins-0"]["remoteJwks"]["httpUri"]["cluster"], "outbound|80||keys.local");
    assert_eq!(jwt["providers"]["origins-0"]["remoteJwks"]["httpUri"]["timeout"], "2s");
    assert_eq!(
        jwt["providers"]["origins-0"]["normalizePayloadInMetadata"]["spaceDelimitedClaims"],
        json!(["scope", "permission", "roles"])
    );
    assert_eq!(jwt["providers"]["origins-1"]["localJwks"]["inlineString"], "{\"keys\":[]}");
    let reqs = &jwt["rules"][0]["requires"]["requiresAny"]["requirements"];
    assert_eq!(reqs[0], json!({"providerName": "origins-0"}));
    assert_eq!(
        reqs[2]["requiresAll"]["requirements"][1],
        json!({"requiresAny": {"requirements": [{"providerName": "origins-1"}, {"allowMissing": {}}]}})
    );
    assert_eq!(http["http_filters"][3]["typed_config"]["rules"]["action"], "LOG");

    let tcp = meshca_policy::compile::compile_report(
        &set,
        &workload,
        &mesh,
        Protocol::Tcp,
        Some(80),
        &meshca_policy::compile::CompileOptions::default(),
    )
    .expect("tcp");
    let filters = tcp.filters["network_filters"].as_array().expect("list");
    assert!(filters.iter().all(|f| f["name"] != "envoy.filters.http.jwt_authn"));
    let allow = &filters.last().expect("allow filter")["typed_config"]["rules"]["policies"];
    assert!(
        allow.get("ns[istio-system]-policy[allow]-rule[0]").is_none(),
        "methods-only ALLOW rule must vanish on TCP"
    );
    assert!(allow.get("ns[istio-system]-policy[allow]-rule[1]").is_some());
    let deny = &filters[filters.len() - 2]["typed_config"]["rules"]["policies"]["ns[foo]-policy[deny]-rule[0]"];
    assert_eq!(deny["principals"], json!([{"andIds": {"ids": [{"any": true}]}}]), "DENY loses the HTTP-only condition");
    let notes = tcp.notes.join("\n");
    assert!(notes.contains("skipped rule ns[istio-system]-policy[allow]-rule[0] (p.yaml:25) on TCP filter chain: \":method\" is HTTP only"), "{notes}");
    assert!(
        notes.contains("ns[foo]-policy[deny]-rule[0] (p.yaml:20): HTTP-only conditions request.auth.principal dropped"),
        "{notes}"
    );
}
