//! [`Store`] on files under one directory, for a single replica (no
//! `--store`). Every value is written atomically with mode 0600 in 0700
//! directories. Revisions are kept in memory and restart at 1 with the
//! process, which is enough for one writer; leases and elections are local.

use crate::error::{Result, StoreError};
use crate::handles::{Keeper, KeeperCmd, Leadership, Registration, Watch, WatchEvent};
use crate::{check_key, check_prefix, election_key, Created, Entry, Store, Swap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch, Notify};

#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    events: broadcast::Sender<WatchEvent>,
    leader_gone: Notify,
}

#[derive(Default)]
struct State {
    revision: i64,
    /// (create, mod) revisions of keys written or read since start.
    revs: HashMap<String, (i64, i64)>,
}

impl LocalStore {
    /// A store in `dir` (created 0700 if missing).
    pub fn open(dir: &Path) -> Result<Self> {
        meshca_files::ensure_private_dir(dir)
            .map_err(|e| StoreError::Io { path: dir.to_path_buf(), problem: format!("cannot be created: {e}") })?;
        // Elections of a previous process are over: its leadership ended with it.
        let stale = dir.join("election");
        if stale.exists() {
            std::fs::remove_dir_all(&stale)
                .map_err(|e| StoreError::Io { path: stale.clone(), problem: format!("cannot be removed: {e}") })?;
        }
        let (events, _) = broadcast::channel(256);
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                state: Mutex::new(State { revision: 1, revs: HashMap::new() }),
                events,
                leader_gone: Notify::new(),
            }),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.inner.dir.join(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self, st: &mut State, key: &str) -> Result<Option<Entry>> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(value) => {
                let (c, m) = *st.revs.entry(key.to_string()).or_insert((1, 1));
                Ok(Some(Entry { key: key.to_string(), value, create_revision: c, mod_revision: m }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                st.revs.remove(key);
                Ok(None)
            }
            Err(e) => Err(StoreError::Io { path, problem: format!("cannot be read: {e}") }),
        }
    }

    fn write(&self, st: &mut State, key: &str, value: Vec<u8>, create: bool) -> Result<i64> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            meshca_files::ensure_private_dir(parent).map_err(|e| StoreError::Io {
                path: parent.to_path_buf(),
                problem: format!("cannot be created: {e}"),
            })?;
        }
        meshca_files::write_secret(&path, &value)
            .map_err(|e| StoreError::Io { path: path.clone(), problem: format!("cannot be written: {e}") })?;
        st.revision += 1;
        let rev = st.revision;
        let created = if create { rev } else { st.revs.get(key).map(|r| r.0).unwrap_or(rev) };
        st.revs.insert(key.to_string(), (created, rev));
        let entry = Entry { key: key.to_string(), value, create_revision: created, mod_revision: rev };
        let _ = self.inner.events.send(WatchEvent::Put(entry));
        Ok(rev)
    }

    fn remove(&self, st: &mut State, key: &str) -> Result<bool> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                st.revision += 1;
                st.revs.remove(key);
                let _ = self.inner.events.send(WatchEvent::Delete { key: key.to_string(), revision: st.revision });
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io { path, problem: format!("cannot be removed: {e}") }),
        }
    }

    fn collect(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StoreError::Io { path: dir.to_path_buf(), problem: format!("cannot be listed: {e}") })
            }
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // temp files of atomic writes
            }
            let key = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                self.collect(&ent.path(), &key, out)?;
            } else {
                out.push(key);
            }
        }
        Ok(())
    }

    /// A keeper whose key is deleted when the handle closes or is dropped.
    fn keeper(&self, key: String, on_close: impl Fn(&LocalStore) + Send + 'static) -> Keeper {
        let (cmds_tx, mut cmds) = mpsc::channel::<KeeperCmd>(8);
        let (alive_tx, alive) = watch::channel(true);
        let store = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match cmds.recv().await {
                    Some(KeeperCmd::Update(v, ack)) => {
                        let r = {
                            let mut st = store.lock();
                            store.write(&mut st, &key, v, false).map(|_| ())
                        };
                        let _ = ack.send(r);
                    }
                    Some(KeeperCmd::Close(ack)) => {
                        on_close(&store);
                        let _ = alive_tx.send(false);
                        let _ = ack.send(Ok(()));
                        return;
                    }
                    None => {
                        on_close(&store);
                        let _ = alive_tx.send(false);
                        return;
                    }
                }
            }
        });
        Keeper { cmds: cmds_tx, task, alive }
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local store {}", self.inner.dir.display())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let mut st = self.lock();
        self.read(&mut st, key)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_prefix(prefix)?;
        let mut keys = Vec::new();
        self.collect(&self.inner.dir, "", &mut keys)?;
        keys.sort();
        let mut st = self.lock();
        let mut out = Vec::new();
        for k in keys.iter().filter(|k| k.starts_with(prefix)) {
            if let Some(e) = self.read(&mut st, k)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Created> {
        check_key(key)?;
        let mut st = self.lock();
        if let Some(e) = self.read(&mut st, key)? {
            return Ok(Created::Exists(e));
        }
        let revision = self.write(&mut st, key, value, true)?;
        Ok(Created::Won { revision })
    }

    async fn compare_and_swap(&self, key: &str, mod_revision: i64, value: Vec<u8>) -> Result<Swap> {
        check_key(key)?;
        let mut st = self.lock();
        let current = self.read(&mut st, key)?;
        match current {
            Some(e) if e.mod_revision == mod_revision => {
                let rev = self.write(&mut st, key, value, false)?;
                Ok(Swap::Swapped { mod_revision: rev })
            }
            other => Ok(Swap::Conflict(other)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let mut st = self.lock();
        self.remove(&mut st, key)
    }

    async fn watch(&self, prefix: &str, _after_revision: i64) -> Result<Watch> {
        check_prefix(prefix)?;
        let mut events = self.inner.events.subscribe();
        let (tx, rx) = mpsc::channel(256);
        let prefix = prefix.to_string();
        let task = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.key().starts_with(&prefix) => {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "local store watch lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Watch::new(rx, task))
    }

    async fn register(&self, key: &str, value: Vec<u8>, _ttl: Duration) -> Result<Registration> {
        check_key(key)?;
        {
            let mut st = self.lock();
            self.write(&mut st, key, value, true)?;
        }
        let k = key.to_string();
        let keeper = self.keeper(key.to_string(), move |s| {
            let mut st = s.lock();
            if let Err(e) = s.remove(&mut st, &k) {
                tracing::warn!(error = %e, "could not remove a registry entry");
            }
        });
        Ok(Registration::new(key.to_string(), keeper))
    }

    async fn campaign(&self, election: &str, id: &str, _ttl: Duration) -> Result<Leadership> {
        check_key(election)?;
        let key = election_key(election);
        loop {
            let notified = self.inner.leader_gone.notified();
            if let Created::Won { .. } = self.create(&key, id.as_bytes().to_vec()).await? {
                let k = key.clone();
                let keeper = self.keeper(key.clone(), move |s| {
                    let mut st = s.lock();
                    let _ = s.remove(&mut st, &k);
                    drop(st);
                    s.inner.leader_gone.notify_waiters();
                });
                return Ok(Leadership::new(election.to_string(), id.to_string(), keeper));
            }
            notified.await;
        }
    }

    async fn leader(&self, election: &str) -> Result<Option<String>> {
        check_key(election)?;
        Ok(self.get(&election_key(election)).await?.map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }
}
