//! Evaluates 2,000 requests (twice: decisions only, then with explanations) against a 100-policy set (compiled once) and prints decisions per
//! second; asserts every request got a verdict and that both outcomes occur (speed is reported,
//! not asserted).

use std::time::Instant;

use meshca_policy::eval::{evaluate, Chain, Decision, EvalOptions, Request};
use meshca_policy::model::{MeshSettings, PolicySet, Protocol, Workload};
use serde_json::json;

#[test]
fn decisions_per_second_for_100_policies() {
    let mut yaml = String::new();
    for i in 0..100 {
        let action = if i % 5 == 0 { "DENY" } else { "ALLOW" };
        yaml.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: foo}}\nspec:\n  action: {action}\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/ns{i}/sa/*\"]\n        namespaces: [\"ns{i}\", \"team-{i}-*\"]\n    to:\n    - operation:\n        methods: [GET, POST]\n        paths: [\"/api/v{i}/*\", \"/items/{{*}}\"]\n    when:\n    - key: request.headers[x-tenant]\n      values: [\"t{i}\"]\n"
        ));
    }
    let set = PolicySet::from_objects(meshca_policy::load::load_str("bench.yaml", &yaml).unwrap());
    let w = Workload::new("foo", Default::default());
    let v = meshca_policy::compile::compile(&set, &w, &MeshSettings::default(), Protocol::Http, None).unwrap();
    let chain = Chain::from_json(&v).unwrap();
    let requests: Vec<Request> = (0..2_000)
        .map(|n| {
            let i = n % 120;
            serde_json::from_value(json!({
                "source": {"principal": format!("spiffe://cluster.local/ns/ns{i}/sa/x"), "ip": "10.0.0.1"},
                "method": if n % 3 == 0 { "DELETE" } else { "GET" },
                "path": format!("/api/v{i}/x"),
                "headers": {"x-tenant": format!("t{i}")}
            }))
            .unwrap()
        })
        .collect();
    let mut counts = Vec::new();
    for explain in [false, true] {
        let opts = EvalOptions { explain, ..EvalOptions::default() };
        let start = Instant::now();
        let mut allowed = 0;
        for r in &requests {
            if evaluate(&chain, r, &opts).unwrap().decision == Decision::Allow {
                allowed += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let n = requests.len();
        println!(
            "explain={explain}: {n} decisions against 100 policies in {secs:.2}s: {:.0}/s ({allowed} allowed)",
            n as f64 / secs
        );
        counts.push(allowed);
    }
    assert!(counts[0] > 0 && counts[0] < requests.len());
    assert_eq!(counts[0], counts[1], "explaining does not change decisions");
}
