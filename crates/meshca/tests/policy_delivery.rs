//! Policies from `meshca serve --policy-dir` through `meshca agent` (ADS/ECDS on its socket) to a
//! real Envoy 1.40 started from `meshca agent envoy-bootstrap`: ALLOW/DENY by principal,
//! namespace, method, path and header over mTLS with certificates of the same CA; plaintext
//! refused under STRICT and accepted under PERMISSIVE; network RBAC on a TCP port; a live change
//! (timed from the file write to the first request decided by the new version) and a broken file
//! refused while the previous policies stay enforced. Envoy is required: a missing binary is a
//! loud failure.

mod agent_support;
mod policy_delivery_support;
mod policy_support;
#[path = "support/tiny_http.rs"]
mod tiny_http;

use policy_delivery_support::{status_of, wait, World, INTRUDER, OPS, WEB};
use std::time::{Duration, Instant};

const MESH_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

const AUTHZ: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow, namespace: backend}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/frontend/sa/web"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]
  - from: [{source: {namespaces: ["ops"]}}]
  - to: [{operation: {paths: ["/public"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-deny, namespace: backend}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules:
  # Scoped to the HTTP port: on a TCP port Istio ignores HTTP-only fields of a DENY rule, which
  # would make it deny every connection.
  - to: [{operation: {ports: ["{HTTP_PORT}"], paths: ["/admin*"]}}]
  - to: [{operation: {ports: ["{HTTP_PORT}"]}}]
    when: [{key: "request.headers[x-block]", values: ["yes"]}]
"#;

/// The HTTP decisions of the fixed matrix: (who, method, path, extra header, expected status).
fn http_matrix(w: &World, plaintext_public: u16) -> Vec<String> {
    type Case<'a> = (Option<&'a str>, &'a str, &'a str, Option<(&'a str, &'a str)>, u16);
    let cases: [Case; 8] = [
        (Some(WEB), "GET", "/api/items", None, 200),
        (Some(WEB), "POST", "/api/items", None, 403),
        (Some(WEB), "GET", "/admin/users", None, 403),
        (Some(WEB), "GET", "/api/items", Some(("x-block", "yes")), 403),
        (Some(INTRUDER), "GET", "/api/items", None, 403),
        (Some(OPS), "DELETE", "/anything", None, 200),
        (Some(INTRUDER), "GET", "/public", None, 200),
        (None, "GET", "/public", None, plaintext_public),
    ];
    let mut bad = Vec::new();
    for (who, method, path, header, want) in cases {
        let got = w.http_with(who, method, path, header, None);
        if got.status != want {
            bad.push(format!("{who:?} {method} {path} {header:?}: want {want}, got {} {:?}", got.status, got.body));
        }
    }
    bad
}

#[test]
fn mtls_rbac_and_peer_authentication_from_the_policy_dir() {
    let w = World::start(&[("mesh.yaml", MESH_STRICT), ("backend.yaml", AUTHZ)]);
    let v1 = w.wait_applied("Envoy to ACK the first policy version");
    let st = w.agent_status()["policy"].clone();
    assert_eq!(st["namespace"], "backend", "{st}");
    let objects = st["objects"].to_string();
    assert!(objects.contains("api-allow") && objects.contains("api-deny") && objects.contains("default"), "{st}");
    for (name, r) in st["resources"].as_object().expect("per-resource states") {
        assert_eq!(r["state"], "acked", "{name}: {r}");
        assert_eq!(r["version"], v1.as_str(), "{name}: {r}");
    }

    // The other agent (frontend/web) sees the mesh-wide policy but none of backend's.
    let other = wait(
        "the second agent to receive its policies",
        Duration::from_secs(30),
        || {
            let p = status_of(&w.other)["policy"].clone();
            (!p["version_received"].as_str().unwrap_or("").is_empty()).then_some(p)
        },
        || w.detail(),
    );
    assert_eq!(other["namespace"], "frontend", "{other}");
    let objs = other["objects"].to_string();
    assert!(objs.contains("default") && !objs.contains("api-allow"), "another namespace's policies leaked: {other}");

    // STRICT: every decision of the matrix, plaintext refused at the connection.
    let bad = http_matrix(&w, 0);
    assert!(bad.is_empty(), "STRICT decisions:\n{}\n{}", bad.join("\n"), w.detail());

    // The TCP port: network RBAC from the same policies (HTTP-only rules do not apply).
    assert_eq!(w.tcp(Some(OPS)), 200, "ops may connect to the TCP port\n{}", w.detail());
    assert_eq!(w.tcp(Some(WEB)), 0, "web's TCP connection must be closed\n{}", w.detail());
    assert_eq!(w.tcp(None), 0, "plaintext TCP under STRICT must be closed");

    // A live change: PERMISSIVE; timed from the write to the first plaintext request let through.
    let t0 = Instant::now();
    w.write_policy("mesh.yaml", &MESH_STRICT.replace("STRICT", "PERMISSIVE"));
    wait(
        "plaintext accepted under PERMISSIVE",
        Duration::from_secs(30),
        || (w.http(None, "GET", "/public", None).status == 200).then_some(()),
        || w.detail(),
    );
    let took = t0.elapsed();
    println!("PERMISSIVE enforced {} ms after the file write", took.as_millis());
    let v2 = w.wait_applied("Envoy to ACK the PERMISSIVE version");
    assert_ne!(v1, v2);
    let bad = http_matrix(&w, 200);
    assert!(bad.is_empty(), "PERMISSIVE decisions:\n{}\n{}", bad.join("\n"), w.detail());
    assert_eq!(w.http(None, "GET", "/api/items", None).status, 403, "plaintext has no principal");

    // A broken file: refused everywhere it is visible, the previous policies stay enforced.
    w.write_policy("zz-broken.yaml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: backend}\nspec:\n  action: MAYBE\n");
    let refused = wait(
        "the agent to see the server's refusal",
        Duration::from_secs(30),
        || {
            let p = w.agent_status()["policy"].clone();
            let r = p["server_refused"].as_str().unwrap_or("").to_string();
            (!r.is_empty()).then_some(r)
        },
        || w.detail(),
    );
    assert!(refused.contains("zz-broken.yaml"), "the refusal names the file: {refused}");
    let server = w.ca.status().to_string();
    assert!(server.contains("zz-broken.yaml"), "server /status shows the refusal: {server}");
    let (ca_http, agent_http) = (w.ca.http.to_string(), w.agent.http.to_string());
    let cli = agent_support::meshca(&["policy", "status", "--ca", &ca_http, "--agent", &agent_http, "--json"]);
    let cli: serde_json::Value = serde_json::from_str(&cli).unwrap();
    assert!(cli["ca"]["refused"].as_str().unwrap_or("").contains("zz-broken.yaml"), "meshca policy status: {cli}");
    assert_eq!(cli["agent"]["version_acked"], v2.as_str(), "meshca policy status shows what Envoy runs: {cli}");
    assert_eq!(w.agent_status()["policy"]["version_acked"], v2.as_str(), "Envoy keeps the last good version");
    let bad = http_matrix(&w, 200);
    assert!(bad.is_empty(), "decisions after the broken file:\n{}\n{}", bad.join("\n"), w.detail());

    // Fixed: the refusal clears.
    std::fs::remove_file(w.policy_dir.join("zz-broken.yaml")).unwrap();
    wait(
        "the refusal to clear",
        Duration::from_secs(30),
        || w.agent_status()["policy"]["server_refused"].as_str().unwrap_or("x").is_empty().then_some(()),
        || w.detail(),
    );
    let m = w.agent.metrics();
    assert!(m.contains("meshca_agent_policy_version_acked{version=\""), "{m}");
    assert_eq!(policy_support_metric(&m, "meshca_agent_policy_nacks_total"), 0.0, "{m}");
}

const JWT_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: backend}
spec:
  selector: {matchLabels: {app: api}}
  jwtRules:
  - issuer: "{ISSUER}"
    audiences: ["api"]
  - issuer: "https://broken.test"
    jwksUri: "{BROKEN_JWKS}"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt-allow, namespace: backend}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/open*"]}}]
  - from: [{source: {requestPrincipals: ["{ISSUER}/*"]}}]
    to: [{operation: {paths: ["/secure*"]}}]
"#;

/// End-user JWT through Envoy's jwt_authn filled over ECDS, keys from the test's OIDC issuer
/// (discovery + JWKS over HTTP) inlined by the server; an IdP key rotation is picked up through
/// Envoy's access log to the agent (unknown `kid`) and `RefreshJwks`.
#[test]
fn end_user_jwt_and_idp_key_rotation() {
    let idp = tiny_http::Tiny::start();
    let issuer = idp.url("");
    let old = meshca_jwt::SigningKey::generate_es256().unwrap();
    let jwks = |k: &meshca_jwt::SigningKey| serde_json::json!({ "keys": [k.public_jwk()] }).to_string();
    idp.set("/jwks", jwks(&old));
    let doc = serde_json::json!({ "issuer": issuer, "jwks_uri": idp.url("/jwks") });
    idp.set("/.well-known/openid-configuration", doc.to_string());
    // The second issuer's JWKS cannot be fetched yet (404).
    let broken_uri = idp.url("/broken-jwks");
    let policy = JWT_POLICY.replace("{ISSUER}", &issuer).replace("{BROKEN_JWKS}", &broken_uri);
    let w = World::start(&[("mesh.yaml", MESH_STRICT), ("jwt.yaml", &policy)]);
    w.wait_applied("Envoy to ACK the JWT policy");
    assert_eq!(w.agent_status()["policy"]["jwks"][0], issuer.as_str(), "the server inlined the issuer's keys");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims =
        |iss: &str, aud: &str, exp: i64| serde_json::json!({ "iss": iss, "sub": "alice", "aud": aud, "exp": exp });
    let valid = old.sign(&claims(&issuer, "api", now + 3600)).unwrap();
    let expired = old.sign(&claims(&issuer, "api", now - 3600)).unwrap();
    let unknown_iss = old.sign(&claims("https://unknown.test", "api", now + 3600)).unwrap();
    let wrong_aud = old.sign(&claims(&issuer, "other", now + 3600)).unwrap();

    let r = w.http(Some(WEB), "GET", "/secure/a", Some(&valid));
    assert_eq!(r.status, 200, "valid token: {r:?}\n{}", w.detail());
    let r = w.http(Some(WEB), "GET", "/secure/a", Some(&expired));
    assert_eq!((r.status, r.body.as_str()), (401, "Jwt is expired"), "expired token");
    let r = w.http(Some(WEB), "GET", "/secure/a", Some(&unknown_iss));
    assert_eq!(r.status, 401, "unknown issuer: {r:?}");
    let r = w.http(Some(WEB), "GET", "/secure/a", Some(&wrong_aud));
    println!("wrong audience: {} {:?}", r.status, r.body);
    assert_eq!(r.status, 403, "wrong audience: {r:?}");
    assert_eq!(w.http(Some(WEB), "GET", "/open", None).status, 200, "missing token where none is required");
    assert_eq!(
        w.http(Some(WEB), "GET", "/secure/a", None).status,
        403,
        "missing token where requestPrincipals is required"
    );

    // The IdP rotates to a new key; a token with the new kid is accepted within a couple of seconds.
    let new = meshca_jwt::SigningKey::generate_es256().unwrap();
    assert_ne!(new.kid(), old.kid());
    let rotated = new.sign(&claims(&issuer, "api", now + 3600)).unwrap();
    let t0 = Instant::now();
    idp.set("/jwks", jwks(&new));
    let mut first = None;
    wait(
        "a token signed with the IdP's new key to be accepted",
        Duration::from_secs(30),
        || {
            let r = w.http(Some(WEB), "GET", "/secure/b", Some(&rotated));
            first.get_or_insert((r.status, r.body.clone()));
            (r.status == 200).then_some(())
        },
        || w.detail(),
    );
    let took = t0.elapsed();
    println!("IdP key rotation: first answer {first:?}, new key accepted after {} ms", took.as_millis());
    assert!(agent_support::metric(&w.agent.metrics(), "meshca_agent_jwks_refreshes_total") >= 1.0);

    // An issuer whose keys could not be fetched fails closed, visibly, and recovers on demand.
    let st = w.agent_status()["policy"].clone();
    assert!(st["jwks_errors"][broken_uri.as_str()].is_string(), "the failed fetch is shown: {st}");
    let broken_key = meshca_jwt::SigningKey::generate_es256().unwrap();
    let broken_token = broken_key.sign(&claims("https://broken.test", "api", now + 3600)).unwrap();
    let r = w.http(Some(WEB), "GET", "/open", Some(&broken_token));
    assert_eq!(r.status, 401, "a token of an issuer without keys is refused: {r:?}");
    idp.set("/broken-jwks", jwks(&broken_key));
    let t0 = Instant::now();
    wait(
        "the repaired issuer's token to be accepted",
        Duration::from_secs(30),
        || (w.http(Some(WEB), "GET", "/open", Some(&broken_token)).status == 200).then_some(()),
        || w.detail(),
    );
    println!("JWKS fetch repaired: token accepted {} ms after the IdP recovered", t0.elapsed().as_millis());
    assert!(w.agent_status()["policy"]["jwks_errors"].as_object().is_none_or(|m| m.is_empty()));
}

/// Version `i` of the changing policy: web may call `/v{i}/*`, ops may use one method, and a DENY
/// rule for `/v{i}/deny*` which only a half-applied set (new ALLOW, old DENY) would let through.
fn versioned(i: usize) -> String {
    let method = if i.is_multiple_of(2) { "GET" } else { "POST" };
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: api-allow, namespace: backend}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/frontend/sa/web"]}}}}]
    to: [{{operation: {{paths: ["/v{i}/*"]}}}}]
  - from: [{{source: {{namespaces: ["ops"]}}}}]
    to: [{{operation: {{methods: ["{method}"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: api-deny, namespace: backend}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  action: DENY
  rules:
  - to: [{{operation: {{ports: ["{{HTTP_PORT}}"], paths: ["/v{i}/deny*"]}}}}]
"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// 20 policy changes at the server while requests keep arriving: each new version is enforced
/// (latency from the file write to the first request it decided), no request is ever decided by
/// a half-applied set, and `meshca policy check` agrees with Envoy on every request of the
/// per-version batches.
#[test]
fn twenty_policy_changes_under_traffic_agree_with_policy_check() {
    let w = World::start(&[("mesh.yaml", MESH_STRICT), ("backend.yaml", &versioned(0))]);
    w.wait_applied("the first version");
    let snapshots = w.work().join("versions");
    let (mut latencies, mut compared, mut probes, mut half_applied) = (Vec::new(), 0usize, 0usize, Vec::new());
    let mut disagreements = Vec::new();
    for i in 1..=20 {
        let t0 = Instant::now();
        w.write_policy("backend.yaml", &versioned(i));
        // Traffic during the change: the new version's path, and the half-applied detector.
        let new_path = format!("/v{i}/x");
        let deny_path = format!("/v{i}/deny");
        let mut enforced = None;
        let deadline = t0 + Duration::from_secs(30);
        while enforced.is_none() || w.agent_status()["policy"]["up_to_date"] != true {
            assert!(Instant::now() < deadline, "version {i} not enforced in 30 s\n{}", w.detail());
            let r = w.http(Some(WEB), "GET", &new_path, None);
            probes += 1;
            if r.status == 200 && enforced.is_none() {
                enforced = Some(t0.elapsed());
            }
            let d = w.http(Some(WEB), "GET", &deny_path, None);
            probes += 1;
            if d.status == 200 {
                half_applied.push(format!("version {i}: {deny_path} allowed"));
            }
        }
        latencies.push(enforced.unwrap());

        // The batch, after Envoy ACKed version i: every decision must be `meshca policy check`'s.
        let snap = snapshots.join(format!("v{i}"));
        std::fs::create_dir_all(&snap).unwrap();
        for f in ["mesh.yaml", "backend.yaml"] {
            std::fs::copy(w.policy_dir.join(f), snap.join(f)).unwrap();
        }
        let paths = [new_path.clone(), format!("/v{}/x", i - 1), deny_path.clone(), "/other".to_string()];
        let mut reqs = Vec::new();
        // `None`: plaintext, closed at the connection under STRICT (status 0 here, `null` in check).
        for who in [Some(WEB), Some(INTRUDER), Some(OPS), None] {
            for path in &paths {
                for method in ["GET", "POST"] {
                    let mut req = serde_json::json!({
                        "name": format!("{} {method} {path}", who.unwrap_or("plaintext")), "method": method,
                        "path": path, "host": "api.backend"
                    });
                    if let Some(p) = who {
                        req["source"] = serde_json::json!({ "principal": p });
                    }
                    reqs.push(req);
                }
            }
        }
        let labels = "app=api,version=v1";
        let source = ["--policies", snap.to_str().unwrap(), "--namespace", "backend", "--labels", labels];
        let verdicts = policy_support::check(w.work(), &format!("batch-v{i}"), w.http_port, &reqs, &source);
        for (req, v) in reqs.iter().zip(&verdicts) {
            let seen = w.pki.borrow_mut().send(w.http_port, req, false);
            compared += 1;
            if u64::from(seen.status) != v["status"].as_u64().unwrap_or(0) {
                disagreements
                    .push(format!("v{i} {}: envoy {}, meshca policy check {}", req["name"], seen.status, v["status"]));
            }
        }
    }
    let mut sorted = latencies.clone();
    sorted.sort();
    println!(
        "20 policy changes: write -> first request decided by the new version p50 {} ms, p99 {} ms, max {} ms; \
         {probes} probe requests during the changes, {} half-applied; {compared} batch requests compared with \
         meshca policy check, {} disagreements",
        percentile(&sorted, 0.5).as_millis(),
        percentile(&sorted, 0.99).as_millis(),
        sorted.last().unwrap().as_millis(),
        half_applied.len(),
        disagreements.len()
    );
    // Envoy applies ECDS resources one filter at a time; the agent stages DENY changes
    // (old ∪ new DENY first) so no intermediate state lets through what both versions refuse.
    assert!(half_applied.is_empty(), "requests decided by a half-applied set:\n{}", half_applied.join("\n"));
    assert!(disagreements.is_empty(), "Envoy and meshca policy check disagree:\n{}", disagreements.join("\n"));
    assert_eq!(compared, 20 * 32);
    assert!(w.agent.proc.logs().contains("~deny-union-2"), "DENY changes went through the staged union");
    assert_eq!(w.agent_status()["policy"]["nacks"], 0);
}

/// Envoy's bootstrap names a port the agent was not told about: that port's filters keep their
/// deny-all defaults (fail closed), and the agent reports the resources it cannot serve in its
/// `/status` and to the server (`meshca policy status`), while the declared ports work.
#[test]
fn a_bootstrap_port_the_agent_does_not_serve_stays_closed_and_is_reported() {
    let extra_port = policy_support::free_ports(1)[0];
    let app = policy_support::echo_server();
    let extra = format!("{extra_port}/http={app}");
    let w = World::start_with(&[("mesh.yaml", MESH_STRICT), ("backend.yaml", AUTHZ)], &[&extra]);
    w.wait_applied("Envoy to ACK the policy of the declared ports");
    let unserved = wait(
        "the agent to report the unserved filters",
        Duration::from_secs(30),
        || {
            let p = w.agent_status()["policy"]["resources"].clone();
            let names: Vec<String> =
                p.as_object()?.iter().filter(|(_, r)| r["state"] == "unserved").map(|(n, _)| n.clone()).collect();
            (!names.is_empty()).then_some(names)
        },
        || w.detail(),
    );
    assert!(unserved.iter().all(|n| n.starts_with(&format!("meshca.{extra_port}."))), "{unserved:?}");
    assert_eq!(w.http(Some(WEB), "GET", "/api/items", None).status, 200, "the declared port works");
    let req = serde_json::json!({ "method": "GET", "path": "/api/items", "source": { "principal": WEB } });
    let r = w.pki.borrow_mut().send(extra_port, &req, false);
    // The bootstrap's deny-all defaults: the peer filter closes the connection (0) or RBAC answers 403.
    assert!(matches!(r.status, 0 | 403), "the undeclared port stays closed: {r:?}");
    let (ca_http, agent_http) = (w.ca.http.to_string(), w.agent.http.to_string());
    let out = agent_support::meshca(&["policy", "status", "--ca", &ca_http, "--agent", &agent_http, "--json"]);
    assert!(out.contains("unserved"), "meshca policy status shows the unserved filters: {out}");
}

fn policy_support_metric(text: &str, name: &str) -> f64 {
    agent_support::metric(text, name)
}
