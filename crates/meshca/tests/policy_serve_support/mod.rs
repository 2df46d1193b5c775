//! Helpers of policy_serve.rs: a `meshca serve --policy-dir` process, a
//! tonic PolicyDelivery client with bearer tokens, policy files, and waits.
#![allow(dead_code)]

use crate::support::bin;
use meshca_proto::{PolicyDeliveryClient, PolicyReport, PolicyUpdate, RefreshJwksRequest, RefreshJwksResponse};
use meshca_testkit::{Server, ServerOptions};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Streaming;

/// A policy directory holding `files` and a server serving it (both gone on drop).
pub struct Setup {
    pub server: Server,
    pub dir: std::path::PathBuf,
    _work: tempfile::TempDir,
}

pub fn setup(files: &[(&str, String)]) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        put(&dir, name, text);
    }
    Setup { server: start(work.path(), &dir), dir, _work: work }
}

/// `meshca serve --plaintext --policy-dir DIR` (JWKS over plain HTTP allowed: the test IdP is loopback HTTP).
pub fn start(work: &Path, dir: &Path) -> Server {
    let args =
        ["--plaintext", "--policy-dir", &dir.display().to_string(), "--jwt-allow-http", "--policy-jwks-refresh", "1h"];
    let opts = ServerOptions { args: args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    Server::start(&bin(), work, opts).expect("start meshca serve")
}

pub async fn client(server: &Server) -> PolicyDeliveryClient<Channel> {
    let ch = Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.expect("connect");
    PolicyDeliveryClient::new(ch)
}

fn authorized<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

/// An open policy stream: updates in, reports out.
pub struct Watch {
    pub updates: Streaming<PolicyUpdate>,
    pub reports: mpsc::Sender<PolicyReport>,
}

pub async fn watch(c: &mut PolicyDeliveryClient<Channel>, token: Option<&str>) -> Result<Watch, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let resp = c.watch(authorized(tokio_stream::wrappers::ReceiverStream::new(rx), token)).await?;
    Ok(Watch { updates: resp.into_inner(), reports: tx })
}

impl Watch {
    /// The next update within `timeout`, or `None` when none came.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<PolicyUpdate> {
        match tokio::time::timeout(timeout, self.updates.message()).await {
            Ok(Ok(Some(u))) => Some(u),
            Ok(other) => panic!("policy stream ended: {other:?}"),
            Err(_) => None,
        }
    }

    pub async fn next(&mut self) -> PolicyUpdate {
        self.next_within(Duration::from_secs(30)).await.expect("a policy update within 30 s")
    }

    /// Updates until one satisfies `f` (30 s in all).
    pub async fn until(&mut self, what: &str, f: impl Fn(&PolicyUpdate) -> bool) -> PolicyUpdate {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(u) if f(&u) => return u,
                Some(_) => continue,
                None => panic!("no policy update with {what} within 30 s"),
            }
        }
    }
}

/// A client, a token for `ns/sa`, and the stream it opened.
pub async fn agent(server: &Server, ns: &str, sa: &str) -> (PolicyDeliveryClient<Channel>, String, Watch) {
    let mut c = client(server).await;
    let token = server.token(ns, sa);
    let w = watch(&mut c, Some(&token)).await.expect("policy stream");
    (c, token, w)
}

pub async fn refresh(
    c: &mut PolicyDeliveryClient<Channel>,
    token: Option<&str>,
    key: &str,
) -> Result<RefreshJwksResponse, tonic::Status> {
    c.refresh_jwks(authorized(RefreshJwksRequest { key: key.to_string() }, token)).await.map(|r| r.into_inner())
}

/// `kind/namespace/name` of the objects of an update, sorted.
pub fn names(u: &PolicyUpdate) -> Vec<String> {
    let mut v: Vec<String> = u.objects.iter().map(|o| format!("{}/{}", o.namespace, o.name)).collect();
    v.sort();
    v
}

/// An AuthorizationPolicy YAML.
pub fn ap(ns: &str, name: &str, action: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  action: {action}\n  rules:\n  - to:\n    - operation:\n        paths: [\"/{name}\"]\n"
    )
}

/// Write `text` to `dir/name` atomically (a hidden temporary file, then a rename).
pub fn put(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The `policy` section of `/status`.
pub fn policy_status(server: &Server) -> Value {
    server.status()["policy"].clone()
}

/// Poll `/status`'s policy section until `f` holds (30 s).
pub async fn status_until(server: &Server, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    meshca_testkit::http::poll_every(what, Duration::from_secs(30), Duration::from_millis(50), || {
        let p = policy_status(server);
        f(&p).then_some(p)
    })
    .await
}
