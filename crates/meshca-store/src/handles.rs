//! Handles returned by a [`crate::Store`]: a watch, a lease-bound registry
//! entry and a leadership. Each owns a background task; dropping the handle
//! stops it (a registration or leadership dropped is revoked, best effort).

use crate::error::{Result, StoreError};
use crate::Entry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Entry),
    Delete { key: String, revision: i64 },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(e) => &e.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// A stream of changes; reconnects by itself after store errors.
pub struct Watch {
    rx: mpsc::Receiver<WatchEvent>,
    task: JoinHandle<()>,
}

impl Watch {
    pub(crate) fn new(rx: mpsc::Receiver<WatchEvent>, task: JoinHandle<()>) -> Self {
        Self { rx, task }
    }

    /// The next change; `None` once the watch has stopped for good.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Commands to the task that keeps a lease-bound key alive.
pub(crate) enum KeeperCmd {
    Update(Vec<u8>, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// The task side of a lease-bound key.
pub(crate) struct Keeper {
    pub cmds: mpsc::Sender<KeeperCmd>,
    pub task: JoinHandle<()>,
    /// true while the key is known to be held.
    pub alive: watch::Receiver<bool>,
}

fn stopped(key: &str) -> StoreError {
    StoreError::Backend { store: "lease keeper".into(), op: format!("update {key}"), message: "stopped".into() }
}

async fn send(
    cmds: &mpsc::Sender<KeeperCmd>,
    key: &str,
    make: impl FnOnce(oneshot::Sender<Result<()>>) -> KeeperCmd,
) -> Result<()> {
    let (tx, rx) = oneshot::channel();
    cmds.send(make(tx)).await.map_err(|_| stopped(key))?;
    rx.await.map_err(|_| stopped(key))?
}

/// A key held through a lease by a keeper task (shared by both handles).
struct Held {
    key: String,
    keeper: Option<Keeper>,
}

impl Held {
    fn alive(&self) -> bool {
        self.keeper.as_ref().is_some_and(|k| *k.alive.borrow())
    }

    /// Revoke the lease now and wait for the task to end.
    async fn close(mut self) -> Result<()> {
        let k = self.keeper.take().ok_or_else(|| stopped(&self.key))?;
        let r = send(&k.cmds, &self.key, KeeperCmd::Close).await;
        let _ = k.task.await;
        r
    }

    /// Stop renewing without revoking, as a crashed process would.
    fn abandon(mut self) {
        if let Some(k) = self.keeper.take() {
            k.task.abort();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropping the command sender makes the task revoke the lease and exit.
        self.keeper.take();
    }
}

/// A registry entry bound to a lease that a background task keeps alive. If
/// the lease is lost (store outage longer than the TTL), the task registers
/// the entry again as soon as the store answers.
pub struct Registration {
    held: Held,
}

impl Registration {
    pub(crate) fn new(key: String, keeper: Keeper) -> Self {
        Self { held: Held { key, keeper: Some(keeper) } }
    }

    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// Whether the entry is currently known to be in the store.
    pub fn is_alive(&self) -> bool {
        self.held.alive()
    }

    /// Replace the entry's value (same lease).
    pub async fn update(&self, value: Vec<u8>) -> Result<()> {
        let k = self.held.keeper.as_ref().ok_or_else(|| stopped(&self.held.key))?;
        send(&k.cmds, &self.held.key, |tx| KeeperCmd::Update(value, tx)).await
    }

    /// Remove the entry now (revokes the lease).
    pub async fn close(self) -> Result<()> {
        self.held.close().await
    }

    /// Stop keeping the lease alive without revoking it, as a crashed replica
    /// would: the entry disappears when the TTL runs out.
    pub fn abandon(self) {
        self.held.abandon()
    }
}

/// Leadership of an election, held through a lease. Once lost (lease expired
/// or revoked), it is never regained by this handle: campaign again.
pub struct Leadership {
    election: String,
    id: String,
    held: Held,
}

impl Leadership {
    pub(crate) fn new(election: String, id: String, keeper: Keeper) -> Self {
        Self { held: Held { key: election.clone(), keeper: Some(keeper) }, election, id }
    }

    pub fn election(&self) -> &str {
        &self.election
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this handle still holds the leadership, as far as it knows.
    /// A write that must only happen under leadership still needs its own
    /// compare in the store (a lease can expire before the holder notices).
    pub fn is_leader(&self) -> bool {
        self.held.alive()
    }

    /// Resolves when the leadership is lost.
    pub async fn lost(&mut self) {
        let Some(k) = self.held.keeper.as_mut() else { return };
        let _ = k.alive.wait_for(|alive| !*alive).await;
    }

    /// Give the leadership up now.
    pub async fn resign(self) -> Result<()> {
        self.held.close().await
    }

    /// Stop renewing without resigning, as a crashed leader would.
    pub fn abandon(self) {
        self.held.abandon()
    }
}
