//! Lease-bound keys on etcd: registry entries (kept alive, re-registered
//! after a lease loss) and a leader election (create-if-absent of the
//! election key under a lease; losers wait for its deletion).
//!
//! The `etcd-client` keep-alive sends one request per call and has no
//! scheduler of its own: the task below renews every TTL/3.

use crate::error::{Result, StoreError};
use crate::etcd::EtcdStore;
use crate::handles::{Keeper, KeeperCmd, Leadership, Registration, WatchEvent};
use crate::{election_key, Store};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

fn ttl_secs(ttl: Duration) -> i64 {
    // etcd rounds leases up to at least its minimum TTL (1.5 x election timeout).
    ttl.as_secs().max(1) as i64
}

async fn grant(store: &EtcdStore, ttl: Duration) -> Result<i64> {
    let secs = ttl_secs(ttl);
    let resp = store.call("grant lease", |mut c| async move { c.lease_grant(secs, None).await }).await?;
    Ok(resp.id())
}

async fn revoke(store: &EtcdStore, lease: i64) -> Result<()> {
    store.call("revoke lease", |mut c| async move { c.lease_revoke(lease).await.map(|_| ()) }).await
}

async fn put_with_lease(store: &EtcdStore, full: &str, value: &[u8], lease: i64) -> Result<()> {
    store
        .call(&format!("put {full}"), |mut c| {
            let (full, value) = (full.to_string(), value.to_vec());
            async move { c.put(full, value, Some(PutOptions::new().with_lease(lease))).await.map(|_| ()) }
        })
        .await
}

/// One keep-alive round trip. `Ok(false)`: the lease no longer exists.
async fn keep_alive_once(store: &EtcdStore, lease: i64) -> Result<bool> {
    let r = store.call("keep lease alive", |mut c| async move { c.lease_keep_alive(lease).await.map(|_| ()) }).await;
    match r {
        Ok(()) => Ok(true),
        Err(StoreError::Backend { message, .. }) if message.contains("lease not found") => Ok(false),
        Err(e) => Err(e),
    }
}

/// What the keeper does when the lease is lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnLoss {
    /// Registry entry: grant a new lease and write the entry again.
    Reregister,
    /// Leadership: report the loss and stop.
    Stop,
}

fn spawn_keeper(
    store: EtcdStore,
    full: String,
    value: Vec<u8>,
    mut lease: i64,
    ttl: Duration,
    on_loss: OnLoss,
) -> Keeper {
    let (cmds_tx, mut cmds) = mpsc::channel::<KeeperCmd>(8);
    let (alive_tx, alive) = watch::channel(true);
    let interval = (ttl / 3).max(Duration::from_millis(300));
    let task = tokio::spawn(async move {
        let mut value = value;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => {
                        let _ = revoke(&store, lease).await;
                        let _ = alive_tx.send(false);
                        return;
                    }
                    Some(KeeperCmd::Close(ack)) => {
                        let r = revoke(&store, lease).await;
                        let _ = alive_tx.send(false);
                        let _ = ack.send(r);
                        return;
                    }
                    Some(KeeperCmd::Update(v, ack)) => {
                        let r = put_with_lease(&store, &full, &v, lease).await;
                        if r.is_ok() {
                            value = v;
                        }
                        let _ = ack.send(r);
                    }
                },
                _ = tokio::time::sleep(interval) => {
                    match keep_alive_once(&store, lease).await {
                        Ok(true) => {
                            last_ok = Instant::now();
                            let _ = alive_tx.send(true);
                        }
                        Ok(false) => {
                            tracing::warn!(key = %full, "lease expired");
                            let _ = alive_tx.send(false);
                            if on_loss == OnLoss::Stop {
                                return;
                            }
                            match reregister(&store, &full, &value, ttl).await {
                                Ok(l) => {
                                    lease = l;
                                    last_ok = Instant::now();
                                    let _ = alive_tx.send(true);
                                    tracing::info!(key = %full, "registered again after the lease was lost");
                                }
                                Err(e) => tracing::warn!(key = %full, error = %e, "could not register again; retrying"),
                            }
                        }
                        Err(e) => {
                            tracing::warn!(key = %full, error = %e, "could not renew the lease");
                            if last_ok.elapsed() >= ttl {
                                // The lease has run out by now, whatever the store says later.
                                let _ = alive_tx.send(false);
                                if on_loss == OnLoss::Stop {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    Keeper { cmds: cmds_tx, task, alive }
}

async fn reregister(store: &EtcdStore, full: &str, value: &[u8], ttl: Duration) -> Result<i64> {
    let lease = grant(store, ttl).await?;
    put_with_lease(store, full, value, lease).await?;
    Ok(lease)
}

pub(crate) async fn register(store: &EtcdStore, key: &str, value: Vec<u8>, ttl: Duration) -> Result<Registration> {
    let full = store.full(key);
    let lease = reregister(store, &full, &value, ttl).await?;
    Ok(Registration::new(key.to_string(), spawn_keeper(store.clone(), full, value, lease, ttl, OnLoss::Reregister)))
}

/// Try once to take the election key under a new lease.
async fn try_lead(store: &EtcdStore, full: &str, id: &str, ttl: Duration) -> Result<std::result::Result<i64, i64>> {
    let lease = grant(store, ttl).await?;
    let resp = store
        .call(&format!("campaign {full}"), |mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(full.to_string(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    full.to_string(),
                    id.as_bytes().to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(full.to_string(), None)]);
            async move { c.txn(txn).await }
        })
        .await;
    match resp {
        Ok(r) if r.succeeded() => Ok(Ok(lease)),
        Ok(r) => {
            let _ = revoke(store, lease).await;
            Ok(Err(r.header().map(|h| h.revision()).unwrap_or(0)))
        }
        Err(e) => {
            let _ = revoke(store, lease).await;
            Err(e)
        }
    }
}

pub(crate) async fn campaign(store: &EtcdStore, election: &str, id: &str, ttl: Duration) -> Result<Leadership> {
    let key = election_key(election);
    let full = store.full(&key);
    loop {
        match try_lead(store, &full, id, ttl).await {
            Ok(Ok(lease)) => {
                let keeper = spawn_keeper(store.clone(), full, id.as_bytes().to_vec(), lease, ttl, OnLoss::Stop);
                tracing::info!(election, id, "became leader");
                return Ok(Leadership::new(election.to_string(), id.to_string(), keeper));
            }
            Ok(Err(revision)) => {
                // Someone leads: wait until the key is deleted (resign or lease expiry), then try again.
                let mut w = match store.watch(&key, revision).await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(election, error = %e, "cannot watch the leader; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if matches!(store.get(&key).await, Ok(Some(_))) {
                    while let Some(ev) = w.next().await {
                        if matches!(ev, WatchEvent::Delete { .. }) {
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(election, error = %e, "campaign attempt failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
