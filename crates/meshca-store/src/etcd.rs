//! [`Store`] on etcd v3 through the `etcd-client` crate. Every unary call is
//! bounded by `op_timeout` (a lost majority is an error in bounded time, not a
//! hang); `require_leader` makes a member cut off from its leader refuse
//! instead of serving stale state. Transient transport errors are retried
//! within the same deadline.

use crate::error::{Result, StoreError};
use crate::handles::{Leadership, Registration, Watch, WatchEvent};
use crate::{check_key, check_prefix, Created, Entry, Store, Swap};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue, TlsOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Client TLS to etcd: CA bundle, and optionally a client certificate.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct EtcdOptions {
    /// `host:port` or full URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/meshca/cluster.local/`.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    /// User name and password (etcd's own auth).
    pub user: Option<(String, String)>,
    pub connect_timeout: Duration,
    /// Deadline of every single request.
    pub op_timeout: Duration,
}

impl std::fmt::Debug for EtcdOptions {
    // Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        Self {
            endpoints,
            prefix: prefix.into(),
            tls: None,
            user: None,
            connect_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct EtcdStore {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) describe: String,
    pub(crate) op_timeout: Duration,
}

/// A message for an etcd client error, with the gRPC status text when there is one.
pub(crate) fn describe_error(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{} ({:?})", s.message(), s.code()),
        etcd_client::Error::TransportError(t) => {
            let mut msg = t.to_string();
            let mut src = std::error::Error::source(t);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
        other => other.to_string(),
    }
}

/// Errors worth retrying within the deadline: no member could serve the
/// request (unreachable, no leader, leader changed) or the connection broke
/// under it (tonic reports that as `Unknown`). Every write meshca makes is
/// safe to repeat: `create` recognises its own earlier value, the rest are
/// idempotent or guarded by a revision compare.
fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        _ => false,
    }
}

fn read_file(p: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| StoreError::Io { path: p.clone(), problem: format!("{what} cannot be read: {e}") })
}

impl EtcdStore {
    pub async fn connect(opts: EtcdOptions) -> Result<Self> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::Config("etcd store: no endpoints given".into()));
        }
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = opts
            .endpoints
            .iter()
            .map(|e| if e.contains("://") { e.clone() } else { format!("{scheme}://{e}") })
            .collect();
        let describe = format!("etcd {}", endpoints.join(","));
        let mut co = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(tls) = &opts.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_file {
                t = t.ca_certificate(Certificate::from_pem(read_file(ca, "etcd CA file")?));
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(c), Some(k)) => {
                    t = t.identity(Identity::from_pem(
                        read_file(c, "etcd client certificate")?,
                        read_file(k, "etcd client key")?,
                    ))
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "etcd client TLS: give both the client certificate and its key, or neither".into(),
                    ))
                }
            }
            co = co.with_tls(t);
        }
        if let Some((user, password)) = &opts.user {
            co = co.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
        }
        let op = "connect";
        let client =
            match tokio::time::timeout(opts.connect_timeout + opts.op_timeout, Client::connect(&endpoints, Some(co)))
                .await
            {
                Err(_) => {
                    return Err(StoreError::Timeout {
                        store: describe,
                        op: op.into(),
                        timeout: opts.connect_timeout + opts.op_timeout,
                    })
                }
                Ok(Err(e)) => {
                    return Err(StoreError::Backend { store: describe, op: op.into(), message: describe_error(&e) })
                }
                Ok(Ok(c)) => c,
            };
        Ok(Self { client, prefix: String::new(), describe, op_timeout: opts.op_timeout }.with_prefix(&opts.prefix))
    }

    /// The same connection under another key prefix.
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix, ..self.clone() }
    }

    pub(crate) fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn entry(&self, kv: &KeyValue) -> Entry {
        let key = String::from_utf8_lossy(kv.key());
        Entry {
            key: key.strip_prefix(&self.prefix).unwrap_or(&key).to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }

    /// Run `call` (on a fresh client handle) until it succeeds, fails for good, or the deadline passes.
    pub(crate) async fn call<T, F, Fut>(&self, op: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.op_timeout;
        let mut last: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = || StoreError::Timeout {
                store: self.describe.clone(),
                op: match &last {
                    Some(l) => format!("{op} (last error: {l})"),
                    None => op.to_string(),
                },
                timeout: self.op_timeout,
            };
            if left.is_zero() {
                return Err(timeout());
            }
            match tokio::time::timeout(left, call(self.client.clone())).await {
                Err(_) => return Err(timeout()),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if retryable(&e) => {
                    last = Some(describe_error(&e));
                    tokio::time::sleep(Duration::from_millis(200).min(left)).await;
                }
                Ok(Err(e)) => {
                    return Err(StoreError::Backend {
                        store: self.describe.clone(),
                        op: op.to_string(),
                        message: describe_error(&e),
                    })
                }
            }
        }
    }

    /// The current store revision (to start a watch from "now").
    async fn revision(&self) -> Result<i64> {
        let probe = self.full("");
        let resp = self
            .call("read revision", |mut c| {
                let probe = probe.clone();
                async move { c.get(probe, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }
}

impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("{} prefix {}", self.describe, self.prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let full = self.full(key);
        let resp = self
            .call(&format!("get {full}"), |mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| self.entry(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_prefix(prefix)?;
        let full = self.full(prefix);
        let resp = self
            .call(&format!("list {full}"), |mut c| {
                let full = full.clone();
                async move { c.get(full, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp.kvs().iter().map(|kv| self.entry(kv)).collect())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Created> {
        check_key(key)?;
        let full = self.full(key);
        let resp = self
            .call(&format!("create {full}"), |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(full.clone(), value.clone(), None)])
                    .or_else([TxnOp::get(full.clone(), None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if resp.succeeded() {
            return Ok(Created::Won { revision });
        }
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                if let Some(kv) = g.kvs().first() {
                    let e = self.entry(kv);
                    // A retried request whose first attempt did commit finds its own value.
                    if e.value == value && e.create_revision == e.mod_revision {
                        return Ok(Created::Won { revision: e.mod_revision });
                    }
                    return Ok(Created::Exists(e));
                }
            }
        }
        // Deleted between the compare and the read: extremely unlikely; report it as a conflict-free retry.
        Err(StoreError::Backend {
            store: self.describe.clone(),
            op: format!("create {full}"),
            message: "the key existed but vanished before it could be read; retry".into(),
        })
    }

    async fn compare_and_swap(&self, key: &str, mod_revision: i64, value: Vec<u8>) -> Result<Swap> {
        check_key(key)?;
        let full = self.full(key);
        let resp = self
            .call(&format!("compare-and-swap {full}"), |mut c| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(full.clone(), CompareOp::Equal, mod_revision)])
                    .and_then([TxnOp::put(full.clone(), value.clone(), None)])
                    .or_else([TxnOp::get(full.clone(), None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(Swap::Swapped { mod_revision: resp.header().map(|h| h.revision()).unwrap_or(0) });
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.entry(kv)),
            _ => None,
        });
        Ok(Swap::Conflict(current))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let full = self.full(key);
        let resp = self
            .call(&format!("delete {full}"), |mut c| {
                let full = full.clone();
                async move { c.delete(full, None).await }
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<Watch> {
        check_prefix(prefix)?;
        let start = if after_revision > 0 { after_revision + 1 } else { self.revision().await? + 1 };
        let (tx, rx) = mpsc::channel(256);
        let store = self.clone();
        let full = self.full(prefix);
        let task = tokio::spawn(async move { watch_loop(store, full, start, tx).await });
        Ok(Watch::new(rx, task))
    }

    async fn register(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<Registration> {
        check_key(key)?;
        crate::etcd_lease::register(self, key, value, ttl).await
    }

    async fn campaign(&self, election: &str, id: &str, ttl: Duration) -> Result<Leadership> {
        check_key(election)?;
        crate::etcd_lease::campaign(self, election, id, ttl).await
    }

    async fn leader(&self, election: &str) -> Result<Option<String>> {
        check_key(election)?;
        Ok(self.get(&crate::election_key(election)).await?.map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }
}

/// Forward events under `full` from revision `next` on; reconnect after errors.
async fn watch_loop(store: EtcdStore, full: String, mut next: i64, tx: mpsc::Sender<WatchEvent>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opts = WatchOptions::new().with_prefix().with_start_revision(next);
        let mut client = store.client.clone();
        match client.watch(full.clone(), Some(opts)).await {
            Err(e) => tracing::warn!(store = %store.describe, error = %describe_error(&e), "watch failed; retrying"),
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        backoff = Duration::from_millis(100);
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                tracing::warn!(store = %store.describe, from = next, to = resp.compact_revision(),
                                    "watch start revision was compacted; resuming at the oldest kept revision");
                                next = resp.compact_revision();
                            } else {
                                tracing::warn!(store = %store.describe, reason = resp.cancel_reason(), "watch canceled; re-watching");
                            }
                            break;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            next = next.max(kv.mod_revision() + 1);
                            let event = match ev.event_type() {
                                EventType::Put => WatchEvent::Put(store.entry(kv)),
                                EventType::Delete => {
                                    WatchEvent::Delete { key: store.entry(kv).key, revision: kv.mod_revision() }
                                }
                            };
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(store = %store.describe, error = %describe_error(&e), "watch stream broke; re-watching");
                        break;
                    }
                }
            },
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
