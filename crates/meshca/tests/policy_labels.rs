//! The workload labels file (`--workload-labels-file`, Kubernetes downward-API format) is watched:
//! with the real `meshca serve --policy-dir`, `meshca agent` and Envoy 1.40, a DENY policy that
//! selects `app=reviews` does not apply while the file says `app="ratings"`, applies within 20 s
//! of a kubelet-style `..data` symlink swap to `app="reviews"`, and a broken file keeps the
//! previous labels (still denied) while the agent's `/status` names the error's `file:line`, and a
//! relabel that changes only the ALLOW side (same server version) reaches Envoy too.

mod agent_support;
mod policy_delivery_support;
mod policy_support;

use agent_support::envoy::Envoy;
use agent_support::{bin, echo_server, install_set, make_inter, make_root, Agent};
use meshca_testkit::{Server, ServerOptions};
use policy_delivery_support::{status_of, wait, write_atomic, SERVER_NS};
use policy_support::client::Pki;
use policy_support::free_ports;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const DENY_REVIEWS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-deny-secret, namespace: backend}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/secret"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v2-allow-other, namespace: backend}
spec:
  selector: {matchLabels: {version: v2}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/other"]}}]
"#;

/// Publish `text` as `dir/labels` the way the kubelet does: a new `..<timestamp>` directory, then
/// an atomic rename of a `..data` symlink onto it (`labels` itself links to `..data/labels`).
fn kubelet_write(dir: &Path, generation: u32, text: &str) {
    let ts = format!("..2026_11_30_00_00_{generation:02}.{generation}");
    std::fs::create_dir(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("labels"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("labels").exists() {
        std::os::unix::fs::symlink("..data/labels", dir.join("labels")).unwrap();
    }
}

#[test]
fn relabelled_workload_gets_the_policies_of_its_new_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let root = make_root(w, "root");
    let inter = make_inter(w, &root, "inter");
    let ca_dir = w.join("cacerts");
    install_set(&ca_dir, &inter, None);
    let policy_dir = w.join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    write_atomic(&policy_dir, "reviews.yaml", DENY_REVIEWS);
    let args = vec!["--policy-dir".into(), policy_dir.display().to_string()];
    let ca = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca_dir), args, ..Default::default() }).unwrap();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, ca.root_pem()).unwrap();

    let podinfo = w.join("podinfo");
    std::fs::create_dir_all(&podinfo).unwrap();
    kubelet_write(&podinfo, 1, "app=\"ratings\"\npod-template-hash=\"5d8f\"\n");
    let labels_file = podinfo.join("labels").display().to_string();

    let ports = free_ports(2);
    let (http_port, admin) = (ports[0], ports[1]);
    let (app, _) = rt.block_on(echo_server());
    let http_spec = format!("{http_port}/http={app}");
    let token = ca.token(SERVER_NS, "api");
    let extra = ["--port", &http_spec, "--workload-labels", "tier=backend", "--workload-labels-file", &labels_file];
    let agent = Agent::start(w, "api", &ca, &ca_root, &token, &extra);
    let (socket, admin_addr) = (agent.socket.display().to_string(), format!("127.0.0.1:{admin}"));
    let bootstrap = agent_support::meshca(&[
        "agent",
        "envoy-bootstrap",
        "--port",
        &http_spec,
        "--socket",
        &socket,
        "--admin",
        &admin_addr,
        "--node-id",
        "api",
        "--output",
        "json",
    ]);
    let envoy = Envoy::start(w, "api", &bootstrap, admin);
    let mut pki = Pki::from_ca(&inter);
    // Plaintext (PERMISSIVE by default): only the DENY policy decides.
    let mut get =
        |path: &str| pki.send(http_port, &json!({"method": "GET", "path": path, "host": "api.backend"}), false);
    let policy = || status_of(&agent)["policy"].clone();
    let detail = || {
        let tail = |s: String| s.chars().rev().take(5000).collect::<Vec<_>>().into_iter().rev().collect::<String>();
        format!(
            "agent policy status: {}\nagent log:\n{}\nenvoy log:\n{}",
            status_of(&agent)["policy"],
            tail(agent.proc.logs()),
            tail(envoy.proc.logs())
        )
    };

    // app=ratings: the policy does not select the workload; Envoy lets /secret through.
    wait(
        "Envoy to ACK the first policy version",
        Duration::from_secs(30),
        || {
            let p = policy();
            (p["up_to_date"] == true && !p["version_acked"].as_str().unwrap_or("").is_empty()).then_some(())
        },
        detail,
    );
    assert_eq!(policy()["labels"], json!({"app": "ratings", "pod-template-hash": "5d8f", "tier": "backend"}));
    let first = wait(
        "Envoy to let /secret through for app=ratings",
        Duration::from_secs(20),
        || Some(get("/secret").status).filter(|s| *s != 403 && *s != 0),
        detail,
    );
    assert_eq!(first, 200, "app=ratings: /secret must reach the application\n{}", detail());

    // The kubelet relabels the pod: the DENY policy now applies, without any reconnection.
    let t0 = Instant::now();
    kubelet_write(&podinfo, 2, "app=\"reviews\"\npod-template-hash=\"5d8f\"\n");
    wait(
        "Envoy to deny /secret after the relabel to app=reviews",
        Duration::from_secs(20),
        || (get("/secret").status == 403).then_some(()),
        detail,
    );
    println!("relabel enforced {} ms after the ..data swap", t0.elapsed().as_millis());
    assert_eq!(get("/other").status, 200, "only /secret is denied\n{}", detail());
    let p = policy();
    assert_eq!(p["labels"]["app"], "reviews", "{p}");
    assert!(p["labels_error"].is_null(), "{p}");

    // A broken file: the previous labels stay, Envoy keeps denying, /status names file:line.
    kubelet_write(&podinfo, 3, "app=\"reviews\"\nthis line is not a label\n");
    let err: Value = wait(
        "the agent's /status to show the broken labels file",
        Duration::from_secs(20),
        || Some(policy()["labels_error"].clone()).filter(|e| !e.is_null()),
        detail,
    );
    let msg = err["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("{labels_file}:2")), "the error names file:line: {err}");
    assert_eq!(policy()["labels"]["app"], "reviews", "the previous labels are kept");
    assert_eq!(get("/secret").status, 403, "still denied under the kept labels\n{}", detail());
    assert!(agent.proc.logs().contains(&format!("{labels_file}:2")), "the warning names file:line");

    // Repaired with a new label that only changes the ALLOW side (same server version, DENY slot
    // unchanged): the recompiled set still reaches Envoy, and the error is cleared.
    kubelet_write(&podinfo, 4, "app=\"reviews\"\nversion=\"v2\"\n");
    wait(
        "Envoy to apply the ALLOW policy of version=v2",
        Duration::from_secs(20),
        || (get("/third").status == 403).then_some(()),
        detail,
    );
    assert_eq!(get("/other").status, 200, "the ALLOW policy lets /other through\n{}", detail());
    assert_eq!(get("/secret").status, 403, "the DENY policy still applies\n{}", detail());
    let p = policy();
    assert!(p["labels_error"].is_null() && p["labels"]["version"] == "v2", "{p}");
}
