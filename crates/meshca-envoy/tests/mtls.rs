//! `effective_mtls`: Istio's mesh → namespace → workload inheritance and port-level overrides.

use std::collections::BTreeMap;

use meshca_envoy::{effective_mtls, MtlsMode};
use meshca_policy::load::load_str;
use meshca_policy::model::{MeshSettings, PolicySet, Workload};

fn pa(name: &str, ns: &str, extra_meta: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}{extra_meta}}}\nspec: {spec}\n---\n"
    )
}

fn mode(docs: &[String], port: u16) -> MtlsMode {
    let text: String = docs.concat();
    let set = if text.is_empty() {
        PolicySet::default()
    } else {
        PolicySet::from_objects(load_str("pa.yaml", &text).unwrap_or_else(|e| panic!("{e:?}\n{text}")))
    };
    let workload = Workload::new("foo", BTreeMap::from([("app".to_string(), "httpbin".to_string())]));
    effective_mtls(&set, &workload, &MeshSettings::default(), port)
}

const SEL: &str = "selector: {matchLabels: {app: httpbin}}";

#[test]
fn nothing_set_is_permissive() {
    assert_eq!(mode(&[], 8080), MtlsMode::Permissive);
    assert_eq!(mode(&[pa("mesh", "istio-system", "", "{mtls: {mode: UNSET}}")], 8080), MtlsMode::Permissive);
    assert_eq!(mode(&[pa("mesh", "istio-system", "", "{}")], 8080), MtlsMode::Permissive);
}

#[test]
fn each_mode_at_mesh_level() {
    for (m, want) in
        [("STRICT", MtlsMode::Strict), ("PERMISSIVE", MtlsMode::Permissive), ("DISABLE", MtlsMode::Disable)]
    {
        let spec = format!("{{mtls: {{mode: {m}}}}}");
        assert_eq!(mode(&[pa("default", "istio-system", "", &spec)], 8080), want, "{m}");
    }
}

#[test]
fn namespace_overrides_mesh_and_unset_inherits() {
    let mesh = pa("default", "istio-system", "", "{mtls: {mode: STRICT}}");
    assert_eq!(mode(&[mesh.clone(), pa("ns", "foo", "", "{mtls: {mode: PERMISSIVE}}")], 8080), MtlsMode::Permissive);
    assert_eq!(mode(&[mesh.clone(), pa("ns", "foo", "", "{mtls: {mode: UNSET}}")], 8080), MtlsMode::Strict);
    // Another namespace's policy does not apply.
    assert_eq!(mode(&[mesh, pa("ns", "bar", "", "{mtls: {mode: DISABLE}}")], 8080), MtlsMode::Strict);
}

#[test]
fn workload_overrides_namespace_and_unset_inherits() {
    let ns = pa("ns", "foo", "", "{mtls: {mode: STRICT}}");
    let wl = |m: &str| pa("wl", "foo", "", &format!("{{{SEL}, mtls: {{mode: {m}}}}}"));
    assert_eq!(mode(&[ns.clone(), wl("DISABLE")], 8080), MtlsMode::Disable);
    assert_eq!(mode(&[ns.clone(), wl("UNSET")], 8080), MtlsMode::Strict);
    // A selector that does not match the workload is ignored.
    let other = pa("other", "foo", "", "{selector: {matchLabels: {app: other}}, mtls: {mode: DISABLE}}");
    assert_eq!(mode(&[ns.clone(), other], 8080), MtlsMode::Strict);
    // A workload selector in the root namespace is ignored for workloads elsewhere.
    let root_sel = pa("rootsel", "istio-system", "", &format!("{{{SEL}, mtls: {{mode: DISABLE}}}}"));
    assert_eq!(mode(&[ns, root_sel], 8080), MtlsMode::Strict);
}

#[test]
fn port_level_overrides_the_workload_mode_for_that_port_only() {
    let ns = pa("ns", "foo", "", "{mtls: {mode: STRICT}}");
    let wl = pa(
        "wl",
        "foo",
        "",
        &format!("{{{SEL}, mtls: {{mode: PERMISSIVE}}, portLevelMtls: {{8080: {{mode: DISABLE}}, 9000: {{mode: STRICT}}, 9100: {{mode: UNSET}}}}}}"),
    );
    assert_eq!(mode(&[ns.clone(), wl.clone()], 8080), MtlsMode::Disable);
    assert_eq!(mode(&[ns.clone(), wl.clone()], 9000), MtlsMode::Strict);
    assert_eq!(mode(&[ns.clone(), wl.clone()], 9100), MtlsMode::Permissive, "UNSET port inherits the workload");
    assert_eq!(mode(&[ns.clone(), wl], 7000), MtlsMode::Permissive);
    // A workload policy without its own mode: ports not listed inherit the namespace.
    let wl_ports_only = pa("wl", "foo", "", &format!("{{{SEL}, portLevelMtls: {{8080: {{mode: DISABLE}}}}}}"));
    assert_eq!(mode(&[ns.clone(), wl_ports_only.clone()], 8080), MtlsMode::Disable);
    assert_eq!(mode(&[ns, wl_ports_only], 7000), MtlsMode::Strict);
}

#[test]
fn the_oldest_policy_of_a_level_wins() {
    let newer = pa("b", "foo", ", creationTimestamp: '2026-02-01T00:00:00Z'", "{mtls: {mode: DISABLE}}");
    let older = pa("a", "foo", ", creationTimestamp: '2026-01-01T00:00:00Z'", "{mtls: {mode: STRICT}}");
    assert_eq!(mode(&[newer.clone(), older.clone()], 8080), MtlsMode::Strict);
    assert_eq!(mode(&[older, newer], 8080), MtlsMode::Strict);
}
