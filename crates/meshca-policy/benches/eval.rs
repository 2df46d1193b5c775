//! Decisions per second against a 100-policy set (compiled once), with and
//! without explanations.
//!
//! Run: `cargo bench -p meshca-policy --bench eval`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshca_policy::eval::{evaluate, Chain, EvalOptions, Request};
use meshca_policy::model::{MeshSettings, PolicySet, Protocol, Workload};
use serde_json::json;

fn policies() -> String {
    let mut yaml = String::new();
    for i in 0..100 {
        let action = if i % 5 == 0 { "DENY" } else { "ALLOW" };
        yaml.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: foo}}\n\
             spec:\n  action: {action}\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/ns{i}/sa/*\"]\n        \
             namespaces: [\"ns{i}\", \"team-{i}-*\"]\n    to:\n    - operation:\n        methods: [GET, POST]\n        \
             paths: [\"/api/v{i}/*\", \"/items/{{*}}\"]\n    when:\n    - key: request.headers[x-tenant]\n      values: [\"t{i}\"]\n"
        ));
    }
    yaml
}

fn bench(c: &mut Criterion) {
    let set = PolicySet::from_objects(meshca_policy::load::load_str("bench.yaml", &policies()).expect("load"));
    let w = Workload::new("foo", Default::default());
    let v = meshca_policy::compile::compile(&set, &w, &MeshSettings::default(), Protocol::Http, None).expect("compile");
    let chain = Chain::from_json(&v).expect("chain");
    let requests: Vec<Request> = (0..200)
        .map(|n| {
            let i = n % 120;
            serde_json::from_value(json!({
                "source": {"principal": format!("spiffe://cluster.local/ns/ns{i}/sa/x"), "ip": "10.0.0.1"},
                "method": if n % 3 == 0 { "DELETE" } else { "GET" },
                "path": format!("/api/v{i}/x"),
                "headers": {"x-tenant": format!("t{i}")}
            }))
            .expect("request")
        })
        .collect();
    let mut group = c.benchmark_group("policy_eval_100_policies");
    group.sample_size(10);
    group.throughput(Throughput::Elements(requests.len() as u64));
    for explain in [false, true] {
        let opts = EvalOptions { explain, ..EvalOptions::default() };
        let name = if explain { "decisions_with_explanation" } else { "decisions" };
        group.bench_function(name, |b| {
            b.iter(|| {
                for r in &requests {
                    black_box(evaluate(&chain, black_box(r), &opts).expect("evaluate"));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
