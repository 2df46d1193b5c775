//! Compile time for 1,000 AuthorizationPolicies (plus loading them), HTTP and TCP chains.
//!
//! Run: `cargo bench -p meshca-policy --bench compile`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meshca_policy::compile::compile;
use meshca_policy::load::load_str;
use meshca_policy::model::{MeshSettings, PolicySet, Protocol, Workload};

/// `n` policies for `foo/httpbin`, mixing actions and every kind of field.
fn policies(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let action = ["ALLOW", "DENY", "AUDIT", "ALLOW"][i % 4];
        let dry_run = if i % 10 == 0 { "  annotations: {istio.io/dry-run: \"true\"}\n" } else { "" };
        let _ = write!(
            text,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p{i}\n  \
             namespace: foo\n{dry_run}spec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  action: {action}\n  rules:\n  \
             - from:\n    - source:\n        principals: [\"cluster.local/ns/ns{i}/sa/sa{i}\", \"cluster.local/ns/x/sa/*\"]\n        \
             requestPrincipals: [\"https://issuer{i}.example/*\"]\n        namespaces: [\"ns{i}\"]\n        \
             ipBlocks: [\"10.{}.0.0/16\"]\n    to:\n    - operation:\n        methods: [GET, POST]\n        \
             paths: [\"/api/v{i}/*\", \"/items/{{*}}\"]\n        hosts: [\"svc{i}.example.com\", \"svc{i}.example.com:*\"]\n        \
             ports: [\"8080\"]\n    when:\n    - key: request.headers[x-tenant]\n      values: [\"t{i}\"]\n    \
             - key: request.auth.claims[groups]\n      values: [admin, \"dev-*\"]\n",
            i % 256
        );
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = policies(1000);
    let objects = load_str("bench.yaml", &text).expect("generated policies load");
    assert_eq!(objects.len(), 1000);
    let set = PolicySet::from_objects(objects);
    let workload = Workload::new("foo", BTreeMap::from([("app".to_string(), "httpbin".to_string())]));
    let mesh = MeshSettings { trust_domain_aliases: vec!["old-td".to_string()], ..MeshSettings::default() };
    let mut group = c.benchmark_group("policy");
    group.sample_size(10);
    group.bench_function("compile_1000_policies_http", |b| {
        b.iter(|| compile(black_box(&set), &workload, &mesh, Protocol::Http, None).expect("compile"))
    });
    group.bench_function("compile_1000_policies_tcp", |b| {
        b.iter(|| compile(black_box(&set), &workload, &mesh, Protocol::Tcp, None).expect("compile"))
    });
    group.bench_function("load_1000_policies", |b| b.iter(|| load_str("bench.yaml", black_box(&text)).expect("load")));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
