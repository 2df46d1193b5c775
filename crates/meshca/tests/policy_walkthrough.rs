//! The README's "Walkthrough: a policy from the CA to Envoy", step by step on real processes
//! (`meshca serve --policy-dir`, `meshca agent --port`, Envoy 1.40 from `meshca agent
//! envoy-bootstrap`): a request denied, `meshca policy check` explaining it, the fix in the
//! policy directory, the request allowed, `meshca policy status`, then a STRICT mesh closing the
//! plaintext client with `policy check` naming the PeerAuthentication. Envoy is required: a
//! missing binary is a loud failure.

mod agent_support;
mod policy_delivery_support;
mod policy_support;

use policy_delivery_support::{wait, World, WEB};
use std::time::Duration;

/// The README's policy (`policies/api.yaml`), before the fix.
const API: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: api-readers
  namespace: backend
spec:
  selector:
    matchLabels:
      app: api
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/frontend/sa/web"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/api/*"]
"#;

/// The README's `policies/mesh.yaml`.
const MESH_STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
";

/// `meshca policy check` as the README runs it (text output), on the world's policy directory.
fn check(w: &World, extra: &[&str]) -> String {
    let (dir, port) = (w.policy_dir.display().to_string(), w.http_port.to_string());
    let mut args = vec!["policy", "check", "--policies", &dir, "--namespace", "backend", "--labels", "app=api"];
    args.extend(["--port", &port, "--method", "GET"]);
    args.extend(extra);
    agent_support::meshca(&args)
}

#[test]
fn readme_policy_walkthrough() {
    let w = World::start(&[("api.yaml", API)]);
    w.wait_applied("Envoy to ACK the walkthrough's first policy");

    // Denied, and why.
    assert_eq!(w.http(Some(WEB), "GET", "/api/x", None).status, 200, "web may GET /api/*\n{}", w.detail());
    let denied = w.http(Some(WEB), "GET", "/", None);
    assert_eq!((denied.status, denied.body.as_str()), (403, "RBAC: access denied"), "{}", w.detail());
    assert_eq!(w.http(None, "GET", "/api/x", None).status, 403, "plaintext has no principal");
    let why = check(&w, &["--source-principal", WEB, "--path", "/"]);
    assert!(why.starts_with("#1: DENY 403 [stage no-allow-match]"), "{why}");
    assert!(why.contains("ns[backend]-policy[api-readers]-rule[0]: paths [/api/*] but request had /"), "{why}");
    let why = check(&w, &["--path", "/api/x"]);
    assert!(why.contains("but request had (plaintext: no peer certificate)"), "{why}");

    // The fix: checked before the CA takes it, then enforced by Envoy.
    w.write_policy("api.yaml", &API.replace(r#"paths: ["/api/*"]"#, r#"paths: ["/", "/api/*"]"#));
    let ok = check(&w, &["--source-principal", WEB, "--path", "/", "--expect", "allow"]);
    assert!(ok.starts_with("#1: ALLOW 200 [stage allow] by ns[backend]-policy[api-readers]-rule[0]"), "{ok}");
    assert!(ok.contains("expect allow: ok"), "{ok}");
    wait(
        "the fixed policy to let web GET /",
        Duration::from_secs(30),
        || (w.http(Some(WEB), "GET", "/", None).status == 200).then_some(()),
        || w.detail(),
    );
    let version = w.wait_applied("Envoy to ACK the fix");
    let (ca, agent) = (w.ca.http.to_string(), w.agent.http.to_string());
    let status = agent_support::meshca(&["policy", "status", "--ca", &ca, "--agent", &agent]);
    let row = status.lines().find(|l| l.starts_with("spiffe://cluster.local/ns/backend/sa/api")).unwrap_or("");
    for want in [version.as_str(), "yes", "current", "AuthorizationPolicy/backend/api-readers"] {
        assert!(row.contains(want), "policy status row lacks {want:?}:\n{status}");
    }
    assert!(status.contains("refused      - "), "{status}");

    // STRICT: the plaintext client is cut off at the connection, mTLS still passes.
    w.write_policy("mesh.yaml", MESH_STRICT);
    wait(
        "STRICT to close the plaintext connection",
        Duration::from_secs(30),
        || (w.http(None, "GET", "/api/x", None).status == 0).then_some(()),
        || w.detail(),
    );
    assert_eq!(w.http(Some(WEB), "GET", "/", None).status, 200, "mTLS under STRICT\n{}", w.detail());
    let closed = check(&w, &["--path", "/api/x"]);
    assert!(closed.starts_with("#1: DENY (connection closed) [stage peer] by meshca-mtls-strict"), "{closed}");
    assert!(closed.contains("set by PeerAuthentication istio-system/default ("), "{closed}");
    assert!(closed.contains("mesh.yaml:8, mesh level), refuses a plaintext connection"), "{closed}");
}
