//! Envoy is the judge: the filters of Istio's conformance goldens and of meshca's compiler are
//! loaded into a real Envoy 1.40, requests are sent over mTLS (client certificates minted by
//! meshca-pki) or plaintext, and `meshca policy check` must agree with Envoy's status code and
//! with the RBAC debug line `enforced allowed|denied, matched policy <name>` for every request.

mod policy_support;

use std::path::Path;
use std::time::Instant;

use policy_support::client::Pki;
use policy_support::gen::{policy_set, Rng, Tokens};
use policy_support::{check, check_filters, echo_server, meshca, rbac_log_by_client, Case, Envoy};
use serde_json::{json, Value};

const CONFORMANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/istio-authz");

fn read_yaml(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    meshca_policy::load::yaml_to_json(&p.display().to_string(), &text).unwrap()
}

/// The name of the last `enforced ...` RBAC line for a connection, `None` when no RBAC filter ran.
fn envoy_matched(lines: Option<&Vec<String>>) -> Option<String> {
    let last = lines?.iter().rev().find(|l| l.starts_with("enforced "))?;
    Some(last.rsplit("matched policy ").next().unwrap_or("").trim().to_string())
}

/// Send every request of every case to Envoy, compare with the verdicts; returns (pairs, disagreements).
fn judge(dir: &Path, cases: &[Case], requests: &[Vec<Value>], verdicts: &[Vec<Value>]) -> (usize, Vec<String>) {
    let echo = echo_server();
    let mut pki = Pki::new_in(dir);
    let t0 = Instant::now();
    let envoy = Envoy::start(dir, cases, echo);
    let started = t0.elapsed();
    let mut seen = Vec::new();
    for (case, reqs) in cases.iter().zip(requests) {
        for r in reqs {
            seen.push(pki.send(case.port, r, case.is_tcp()));
        }
    }
    println!("envoy start {started:?}, requests {:?}", t0.elapsed() - started);
    // Envoy writes its log asynchronously: wait (up to 30 s) until every connection whose verdict
    // was decided by an RBAC filter has its `enforced` line.
    let needed: Vec<&str> = verdicts
        .iter()
        .flatten()
        .zip(&seen)
        .filter(|(v, _)| matches!(v["stage"].as_str(), Some("allow" | "deny" | "no-allow-match")))
        .map(|(_, s)| s.addr.as_str())
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let logs = loop {
        let logs = rbac_log_by_client(&envoy.logs());
        if needed.iter().all(|a| logs.contains_key(*a)) || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut pairs = 0;
    let mut bad = Vec::new();
    let mut it = seen.iter();
    for ((case, reqs), vs) in cases.iter().zip(requests).zip(verdicts) {
        for (r, v) in reqs.iter().zip(vs) {
            let s = it.next().unwrap();
            pairs += 1;
            let want_status = if case.is_tcp() {
                if v["decision"] == "allow" {
                    200
                } else {
                    0
                }
            } else {
                v["status"].as_u64().unwrap_or(0) as u16
            };
            let mut problems = Vec::new();
            if s.status != want_status {
                problems.push(format!("status: envoy {} (body {:?}), meshca {want_status}", s.status, s.body));
            }
            let stage = v["stage"].as_str().unwrap_or("");
            if matches!(stage, "allow" | "deny" | "no-allow-match") {
                let want = v["policy"].as_str().unwrap_or("none").to_string();
                let got = envoy_matched(logs.get(&s.addr));
                if got.as_deref() != Some(want.as_str()) {
                    problems.push(format!("matched policy: envoy {got:?}, meshca {want:?}"));
                }
            }
            if stage == "jwt" && !case.is_tcp() {
                let msg = v["explanation"]["jwt"]["message"].as_str().unwrap_or("");
                if s.body != msg {
                    problems.push(format!("jwt body: envoy {:?}, meshca {msg:?}", s.body));
                }
            }
            if !problems.is_empty() {
                bad.push(format!("{} {}: {}\n  request {r}\n  verdict {v}", case.name, r["name"], problems.join("; ")));
            }
        }
    }
    (pairs, bad)
}

/// Istio's conformance cases twice: the golden filters as Istio generated them (evaluated with
/// `check --filters`), and meshca's own compilation of the case inputs (with the case's trust
/// domain and aliases, evaluated with `check --policies`).
#[test]
fn conformance_cases_agree_with_envoy() {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = Path::new(CONFORMANCE);
    let cases_doc = read_yaml(&root.join("cases.yaml")).remove(0);
    let all: Vec<&Value> = cases_doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        // CUSTOM needs an external authorizer; meshca reports "depends on the external authorizer".
        .filter(|c| c.get("providers").is_none())
        .collect();
    let mut ports = policy_support::free_ports(2 * all.len()).into_iter();
    let (mut cases, mut requests, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
    for c in &all {
        let name = c["name"].as_str().unwrap().to_string();
        let tcp = c["protocol"] == "tcp";
        let key = if tcp { "network_filters" } else { "http_filters" };
        let filters: Vec<Value> = c["want"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| read_yaml(&root.join(w.as_str().unwrap())).remove(0))
            .collect();
        let golden =
            Case { name: format!("{name}-golden"), chain: json!({ key: filters }), port: ports.next().unwrap() };
        let reqs = policy_support::gen::conformance_requests();
        verdicts.push(check_filters(dir, &golden, &reqs));
        cases.push(golden);
        requests.push(reqs.clone());

        let input = root.join(c["input"].as_str().unwrap());
        let td = c["trust_domain"].as_str().unwrap_or("cluster.local");
        let mut flags =
            vec!["--policies", input.to_str().unwrap(), "--namespace", "foo", "--labels", "app=httpbin,version=v1"];
        flags.extend(["--protocol", if tcp { "tcp" } else { "http" }, "--trust-domain", td]);
        for a in c["aliases"].as_array().into_iter().flatten() {
            flags.extend(["--trust-domain-alias", a.as_str().unwrap()]);
        }
        let port = ports.next().unwrap();
        let mut compile = vec!["policy", "compile", "--output", "json"];
        compile.extend(&flags);
        let chain: Value = serde_json::from_str(&meshca(&compile)).unwrap();
        let compiled = Case { name: format!("{name}-compiled"), chain, port };
        verdicts.push(check(dir, &compiled.name, port, &reqs, &flags));
        cases.push(compiled);
        requests.push(reqs);
    }
    let (pairs, bad) = judge(dir, &cases, &requests, &verdicts);
    println!("coverage: {:#?}", coverage(&cases, &verdicts));
    println!("conformance: {} cases x 2, {pairs} pairs, {} disagreements, {:?}", all.len(), bad.len(), start.elapsed());
    assert!(pairs > 400, "only {pairs} pairs");
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}

/// Counts of (stage, decision, protocol) over all verdicts, to show what the run covered.
fn coverage(cases: &[Case], verdicts: &[Vec<Value>]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (c, vs) in cases.iter().zip(verdicts) {
        for v in vs {
            let proto = if c.is_tcp() { "tcp" } else { "http" };
            *m.entry(format!(
                "{proto}/{}/{}",
                v["stage"].as_str().unwrap_or("?"),
                v["decision"].as_str().unwrap_or("?")
            ))
            .or_insert(0) += 1;
            if let Some(msg) = v["explanation"]["jwt"]["message"].as_str() {
                *m.entry(format!("jwt: {msg}")).or_insert(0) += 1;
            }
            if v["explanation"]["dry_run"].is_array() {
                *m.entry("dry-run reported".to_string()).or_insert(0) += 1;
            }
            if v["explanation"]["audit"].is_string() {
                *m.entry("audit matched".to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// POLICY_JUDGE_SETS (default 100) random policy sets of 20 requests each, compiled by
/// `meshca policy compile`, judged by Envoy against `meshca policy check`.
#[test]
fn generated_policy_sets_agree_with_envoy() {
    let start = Instant::now();
    let sets: usize = std::env::var("POLICY_JUDGE_SETS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let seed: u64 = std::env::var("POLICY_JUDGE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_129);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let tokens = Tokens::new(now);
    let mut rng = Rng::new(seed);
    let now_s = now.to_string();
    let mut cases = Vec::new();
    let mut requests = Vec::new();
    let mut verdicts = Vec::new();
    let ports = policy_support::free_ports(sets);
    for (i, &port) in ports.iter().enumerate() {
        let g = policy_set(&mut rng, i, port, &tokens, 20);
        let file = dir.join(format!("set{i}.json"));
        std::fs::write(
            &file,
            serde_json::to_vec_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": g.objects})).unwrap(),
        )
        .unwrap();
        let port_s = port.to_string();
        let mut flags =
            vec!["--policies", file.to_str().unwrap(), "--namespace", "foo", "--labels", "app=httpbin,version=v1"];
        flags.extend(["--protocol", if g.tcp { "tcp" } else { "http" }]);
        flags.extend(g.extra_args.iter().map(String::as_str));
        let mut compile = vec!["policy", "compile", "--port", &port_s, "--output", "json"];
        compile.extend(&flags);
        let chain: Value = serde_json::from_str(&meshca(&compile)).unwrap();
        let mut check_flags = flags.clone();
        check_flags.extend(["--jwt-now", &now_s]);
        verdicts.push(check(dir, &format!("set{i}"), port, &g.requests, &check_flags));
        cases.push(Case { name: format!("set{i}"), chain, port });
        requests.push(g.requests);
    }
    let prepared = start.elapsed();
    let (pairs, bad) = judge(dir, &cases, &requests, &verdicts);
    let cov = coverage(&cases, &verdicts);
    for key in
        ["http/allow/allow", "http/deny/deny", "http/jwt/deny", "http/no-allow-match/deny", "http/no-policy/allow"]
            .into_iter()
            .chain(["tcp/allow/allow", "tcp/deny/deny", "tcp/no-allow-match/deny", "audit matched", "dry-run reported"])
    {
        assert!(cov.get(key).is_some_and(|n| *n > 0) || sets < 50, "the generated run never reached {key}: {cov:#?}");
    }
    println!("coverage: {cov:#?}");
    println!(
        "generated: seed {seed}, {sets} policy sets, {pairs} pairs, {} disagreements, {:?} total ({prepared:?} compiling and checking)",
        bad.len(),
        start.elapsed()
    );
    assert!(
        bad.is_empty(),
        "{} disagreements:\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
