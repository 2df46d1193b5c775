//! `meshca serve --policy-dir`: the CA side of policy delivery, with real
//! `meshca serve` processes and a tonic PolicyDelivery client. What a caller
//! reads is decided by its namespace; changes are pushed (also while a
//! neighbouring file is rewritten constantly); a broken file keeps the old
//! set and is reported in the log, /status, metrics and the stream; JWKS are
//! fetched by the server from a local IdP (OIDC discovery), refreshed on
//! demand with a rate limit, and a failed fetch fails closed.

#[path = "policy_serve_support/mod.rs"]
mod pss;
mod support;
#[path = "support/tiny_http.rs"]
mod tiny_http;

use meshca_jwt::SigningKey;
use meshca_proto::{PolicyReport, ResourceState};
use meshca_testkit::http::metric;
use pss::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{jwks_json, meshca, scrape};
use tiny_http::Tiny;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_reads_its_namespace_and_the_root_namespace_only() {
    let Setup { server, .. } = &setup(&[
        ("a.yaml", ap("a", "allow-a", "ALLOW")),
        ("b.yaml", ap("b", "allow-b", "ALLOW")),
        ("mesh.yaml", ap("istio-system", "mesh-deny", "DENY")),
    ]);
    let mut c = client(server).await;

    // No credential, or a forged one: refused before anything is registered or sent.
    assert_eq!(watch(&mut c, None).await.err().expect("refused").code(), Code::Unauthenticated);
    assert_eq!(watch(&mut c, Some("not.a.token")).await.err().expect("refused").code(), Code::Unauthenticated);
    assert_eq!(refresh(&mut c, None, "x").await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(policy_status(server)["agents"].as_array().unwrap().len(), 0);

    let (ta, tb) = (server.token("a", "web"), server.token("b", "db"));
    let mut wa = watch(&mut c, Some(&ta)).await.unwrap();
    let mut wb = watch(&mut c, Some(&tb)).await.unwrap();
    let (ua, ub) = (wa.next().await, wb.next().await);
    assert_eq!(names(&ua), ["a/allow-a", "istio-system/mesh-deny"]);
    assert_eq!(names(&ub), ["b/allow-b", "istio-system/mesh-deny"]);
    assert_eq!(
        (ua.trust_domain.as_str(), ua.root_namespace.as_str(), ua.refused.as_str()),
        ("cluster.local", "istio-system", "")
    );
    assert_ne!(ua.version, ub.version);
    let obj = ua.objects.iter().find(|o| o.name == "allow-a").unwrap();
    assert_eq!((obj.kind.as_str(), obj.source.as_str()), ("AuthorizationPolicy", "a.yaml:1"));
    let json: serde_json::Value = serde_json::from_str(&obj.json).unwrap();
    assert_eq!(json["spec"]["action"], "ALLOW");

    // Reports: a's Envoy runs the latest, b's Envoy refused a resource.
    let resource = |state: &str, error: &str| ResourceState {
        name: "meshca.http.8080".into(),
        version: ua.version.clone(),
        state: state.into(),
        error: error.into(),
    };
    wa.reports
        .send(PolicyReport {
            labels: [("app".to_string(), "web".to_string())].into(),
            version_received: ua.version.clone(),
            version_applied: ua.version.clone(),
            resources: vec![resource("acked", "")],
            error: String::new(),
        })
        .await
        .unwrap();
    wb.reports
        .send(PolicyReport {
            version_received: ub.version.clone(),
            resources: vec![resource("nacked", "Proto constraint validation failed")],
            error: "Envoy NACK".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let p = status_until(server, "both agents' reports", |p| {
        p["agents"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| !x["reported_at"].as_str().unwrap_or("").is_empty()))
    })
    .await;
    let agents = p["agents"].as_array().unwrap();
    let a = agents.iter().find(|x| x["namespace"] == "a").unwrap();
    assert_eq!(a["identity"], "spiffe://cluster.local/ns/a/sa/web");
    assert_eq!((a["state"].as_str(), a["labels"]["app"].as_str()), (Some("current"), Some("web")));
    assert_eq!(a["version_sent"], ua.version.as_str());
    assert_eq!(
        a["objects"],
        serde_json::json!(["AuthorizationPolicy/a/allow-a", "AuthorizationPolicy/istio-system/mesh-deny"])
    );
    let b = agents.iter().find(|x| x["namespace"] == "b").unwrap();
    assert_eq!(b["state"], "nacked");
    assert_eq!(b["resources"][0]["error"], "Proto constraint validation failed");
    let m = scrape(server);
    assert_eq!(metric(&m, "meshca_policy_agents{state=\"current\"}"), 1.0);
    assert_eq!(metric(&m, "meshca_policy_agents{state=\"nacked\"}"), 1.0);
    assert_eq!(metric(&m, "meshca_policy_objects"), 3.0);
    assert_eq!(metric(&m, "meshca_policy_set_ok"), 1.0);

    // The CLI: text and JSON, with an agent whose /status has no policy section.
    let agent = Tiny::start();
    agent.set("/status", "{}".into());
    let ca = server.http.to_string();
    let agent_addr = agent.addr.to_string();
    let text = meshca(&["policy", "status", "--ca", &ca, "--agent", &agent_addr]);
    assert!(text.contains(&format!("version {}", p["version"].as_str().unwrap())), "{text}");
    assert!(text.contains("spiffe://cluster.local/ns/a/sa/web"), "{text}");
    assert!(text.contains("NACK meshca.http.8080"), "{text}");
    assert!(text.contains("no policy section"), "{text}");
    let j: serde_json::Value = serde_json::from_str(&meshca(&["policy", "status", "--ca", &ca, "--json"])).unwrap();
    assert_eq!(j["ca"]["agents"].as_array().unwrap().len(), 2);
    assert!(j["agent"].is_null());

    // A stream that ends is forgotten.
    drop(wb);
    status_until(server, "b's stream gone", |p| p["agents"].as_array().is_some_and(|a| a.len() == 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_pushed_while_a_neighbouring_file_is_rewritten_constantly() {
    let Setup { server, dir, .. } = &setup(&[("x.yaml", ap("a", "x", "ALLOW"))]);
    let stop = Arc::new(AtomicBool::new(false));
    let (s, busy_file) = (stop.clone(), dir.join("busy.log"));
    let busy = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(Ordering::Relaxed) {
            std::fs::write(&busy_file, format!("line {n}\n")).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        n
    });
    let (_c, _, mut w) = agent(server, "a", "web").await;
    let first = w.next().await;
    assert_eq!(names(&first), ["a/x"]);

    put(dir, "y.yaml", &ap("a", "y", "DENY"));
    let second = w.until("the new object", |u| names(u) == ["a/x", "a/y"]).await;
    assert_ne!(second.version, first.version);

    // Another namespace's change moves the set's version but not this caller's view: nothing is pushed.
    let before = policy_status(server)["version"].as_str().unwrap().to_string();
    put(dir, "z.yaml", &ap("b", "z", "ALLOW"));
    status_until(server, "the set with b/z", |p| p["version"] != before.as_str() && p["object_count"] == 3).await;
    assert!(w.next_within(Duration::from_secs(2)).await.is_none(), "a change in namespace b was pushed to a");

    // A removed file is a change too.
    std::fs::remove_file(dir.join("y.yaml")).unwrap();
    let third = w.until("y removed", |u| names(u) == ["a/x"]).await;
    assert_eq!(third.version, first.version, "same content, same version");
    stop.store(true, Ordering::Relaxed);
    let rewrites = busy.join().unwrap();
    assert!(rewrites > 100, "the neighbour was rewritten only {rewrites} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_set_and_is_reported_everywhere() {
    let Setup { server, dir, .. } = &setup(&[("good.yaml", ap("a", "good", "ALLOW"))]);
    let (_c, _, mut w) = agent(server, "a", "web").await;
    let v1 = w.next().await;
    assert_eq!(names(&v1), ["a/good"]);

    put(dir, "bad.yaml", &ap("a", "bad", "ALOW"));
    let refused = w.until("a refusal", |u| !u.refused.is_empty()).await;
    assert_eq!(refused.version, v1.version, "the previous set stays served");
    assert_eq!(names(&refused), ["a/good"]);
    assert!(refused.refused.starts_with("bad.yaml:7: spec.action"), "{}", refused.refused);
    let p = policy_status(server);
    assert_eq!(p["refused"], refused.refused.as_str());
    assert!(!p["refused_at"].as_str().unwrap().is_empty());
    let m = scrape(server);
    assert!(metric(&m, "meshca_policy_refused_total") >= 1.0);
    assert_eq!(metric(&m, "meshca_policy_set_ok"), 0.0);
    assert!(server.logs().contains("policy directory refused"), "{}", server.logs());
    assert!(server.logs().contains("bad.yaml:7"), "{}", server.logs());

    put(dir, "bad.yaml", &ap("a", "fixed", "DENY"));
    let fixed = w.until("the fixed set", |u| u.refused.is_empty()).await;
    assert_eq!(names(&fixed), ["a/fixed", "a/good"]);
    assert_ne!(fixed.version, v1.version);
    let p = policy_status(server);
    assert_eq!(p["refused"], "");
    assert_eq!(metric(&scrape(server), "meshca_policy_set_ok"), 1.0);
}

const DISCOVERY: &str = "/.well-known/openid-configuration";

fn request_authentication(ns: &str, issuer: &str, failing_uri: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: {ns}\n\
         spec:\n  jwtRules:\n  - issuer: \"{issuer}\"\n  - issuer: https://broken.example\n    jwksUri: \"{failing_uri}\"\n"
    )
}

fn kids(doc: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_are_discovered_refreshed_on_demand_rate_limited_and_fail_closed() {
    let idp = Tiny::start();
    let issuer = idp.url("");
    let (k1, k2) = (SigningKey::generate_es256().unwrap(), SigningKey::generate_es256().unwrap());
    idp.set(DISCOVERY, serde_json::json!({"issuer": issuer, "jwks_uri": idp.url("/jwks")}).to_string());
    idp.set("/jwks", jwks_json(&[&k1]));
    let failing = idp.url("/gone");

    let Setup { server, .. } = &setup(&[("ra.yaml", request_authentication("a", &issuer, &failing))]);
    let (mut c, token, mut w) = agent(server, "a", "web").await;

    // The first update already carries the keys (fetched before the set was published).
    let first = w.next().await;
    assert_eq!(kids(&first.jwks[&issuer]), [k1.kid()]);
    assert!(!first.jwks.contains_key(&failing), "a failed fetch has no keys");
    assert!(first.jwks_errors[&failing].contains("HTTP 404"), "{:?}", first.jwks_errors);
    let p = policy_status(server);
    let failed = p["jwks"].as_array().unwrap().iter().find(|j| j["key"] == failing.as_str()).unwrap();
    assert_eq!(failed["ok"], false);
    assert!(metric(&scrape(server), "meshca_policy_jwks_fetch_failures_total") >= 1.0);
    assert_eq!(metric(&scrape(server), "meshca_policy_jwks_errors"), 1.0);

    // The IdP rotates its key; an agent that saw the new kid asks for a refresh.
    idp.set("/jwks", jwks_json(&[&k2]));
    let r = refresh(&mut c, Some(&token), &issuer).await.unwrap();
    assert!(r.started, "{r:?}");
    let again = refresh(&mut c, Some(&token), &issuer).await.unwrap();
    assert_eq!((again.started, again.reason.as_str()), (false, "rate limited"));
    let rotated = w.until("the rotated key", |u| u.jwks.get(&issuer).is_some_and(|d| kids(d) == [k2.kid()])).await;
    assert_ne!(rotated.version, first.version);
    assert!(idp.hits(DISCOVERY) >= 2, "discovery is followed on each fetch");

    // Keys the caller is not served are unknown to it.
    let unknown = refresh(&mut c, Some(&token), "https://nobody.example").await.unwrap();
    assert!(!unknown.started && unknown.reason.starts_with("unknown key"), "{unknown:?}");
    let other = server.token("b", "db");
    let not_yours = refresh(&mut c, Some(&other), &issuer).await.unwrap();
    assert!(!not_yours.started && not_yours.reason.starts_with("unknown key"), "{not_yours:?}");

    // The failing source recovers on demand too.
    idp.set("/gone", jwks_json(&[&k1]));
    assert!(refresh(&mut c, Some(&token), &failing).await.unwrap().started);
    let healed = w.until("the recovered JWKS", |u| u.jwks_errors.is_empty()).await;
    assert_eq!(kids(&healed.jwks[&failing]), [k1.kid()]);
    assert_eq!(metric(&scrape(server), "meshca_policy_jwks_errors"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_swap_is_followed_and_read_once() {
    use std::os::unix::fs::symlink;
    let Setup { server, dir, .. } = &setup(&[]);
    // The kubelet's layout: files in a timestamped directory, `..data` pointing at it, visible links through `..data`.
    let version_dir = |n: u32, files: &[(&str, String)]| {
        let d = dir.join(format!("..2026_11_29_{n}"));
        std::fs::create_dir(&d).unwrap();
        for (name, text) in files {
            std::fs::write(d.join(name), text).unwrap();
            let _ = symlink(format!("..data/{name}"), dir.join(name));
        }
        d.file_name().unwrap().to_owned()
    };
    let first = version_dir(1, &[("p.yaml", ap("a", "one", "ALLOW"))]);
    symlink(&first, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let (_c, _, mut w) = agent(server, "a", "web").await;
    w.until("the first ConfigMap version, each object once", |u| names(u) == ["a/one"]).await;

    let second = version_dir(2, &[("p.yaml", ap("a", "two", "ALLOW")), ("q.yaml", ap("a", "three", "DENY"))]);
    symlink(&second, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let u = w.until("the swapped ConfigMap", |u| names(u) == ["a/three", "a/two"]).await;
    assert!(u.objects.iter().any(|o| o.source == "q.yaml:1"), "{:?}", u.objects);
}
