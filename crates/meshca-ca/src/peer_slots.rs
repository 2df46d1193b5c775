//! In-flight CreateCertificate requests per peer IP address
//! (`--grpc-max-inflight-per-peer`): one client cannot take every slot under
//! `--grpc-max-inflight`, whatever number of connections it opens. A request
//! over the cap waits (its body unread) until the request deadline.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct PeerSlots {
    cap: usize,
    map: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A slot of one peer; released (and the peer forgotten when idle) on drop.
pub struct PeerPermit {
    permit: Option<OwnedSemaphorePermit>,
    sem: Arc<Semaphore>,
    ip: IpAddr,
    owner: Arc<PeerSlots>,
}

impl PeerSlots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { cap, map: Mutex::new(HashMap::new()) })
    }

    /// Wait until `deadline` for a slot of `ip`; `None` when none came free.
    pub async fn acquire(self: &Arc<Self>, ip: IpAddr, deadline: tokio::time::Instant) -> Option<PeerPermit> {
        let sem = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(ip).or_insert_with(|| Arc::new(Semaphore::new(self.cap))).clone()
        };
        let got = tokio::time::timeout_at(deadline, sem.clone().acquire_owned()).await;
        match got {
            Ok(Ok(permit)) => Some(PeerPermit { permit: Some(permit), sem, ip, owner: self.clone() }),
            _ => {
                self.forget_if_idle(ip, &sem);
                None
            }
        }
    }

    /// Peers currently tracked.
    pub fn peers(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn forget_if_idle(&self, ip: IpAddr, sem: &Arc<Semaphore>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and the caller hold it, and every slot is free: nobody waits or works.
        if Arc::strong_count(sem) == 2
            && sem.available_permits() == self.cap
            && map.get(&ip).is_some_and(|s| Arc::ptr_eq(s, sem))
        {
            map.remove(&ip);
        }
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.owner.forget_if_idle(self.ip, &self.sem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_peer_is_capped_and_forgotten_when_idle() {
        let slots = PeerSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let p1 = slots.acquire(a, soon()).await.unwrap();
        let p2 = slots.acquire(a, soon()).await.unwrap();
        assert!(slots.acquire(a, soon()).await.is_none(), "a third slot for one peer");
        let p3 = slots.acquire(b, soon()).await.expect("another peer is not affected");
        assert_eq!(slots.peers(), 2);
        drop((p1, p2, p3));
        assert_eq!(slots.peers(), 0);
    }
}
