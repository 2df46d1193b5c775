//! Which trust bundle Envoy has actually taken: for every SDS stream
//! subscribed to `ROOTCA`, the bundle of the last response it ACKed. The
//! agent confirms a bundle to the CA (see `events`) only once every such
//! stream has ACKed it, so "every agent holds the new root" means "every
//! Envoy validates with it", not merely "the agent received it".

use meshca_pki::inspect::sha256_hex;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Default)]
struct Streams {
    /// stream id -> SHA-256 of the bundle it ACKed (empty: none yet).
    acked: HashMap<u64, String>,
}

pub struct RootAcks {
    streams: Mutex<Streams>,
    changed: watch::Sender<u64>,
}

impl Default for RootAcks {
    fn default() -> Self {
        Self { streams: Mutex::new(Streams::default()), changed: watch::channel(0).0 }
    }
}

impl RootAcks {
    fn update(&self, f: impl FnOnce(&mut Streams)) {
        f(&mut self.streams.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_modify(|n| *n += 1);
    }

    /// A stream subscribed to `ROOTCA`.
    pub fn subscribed(&self, stream: u64) {
        self.update(|s| {
            s.acked.entry(stream).or_default();
        });
    }

    /// The stream ACKed a response carrying `bundle_pem`.
    pub fn acked(&self, stream: u64, bundle_pem: &str) {
        let h = sha256_hex(bundle_pem.as_bytes());
        self.update(|s| {
            s.acked.insert(stream, h);
        });
    }

    /// The stream ended or no longer asks for `ROOTCA`.
    pub fn gone(&self, stream: u64) {
        if self.streams.lock().unwrap_or_else(|p| p.into_inner()).acked.contains_key(&stream) {
            self.update(|s| {
                s.acked.remove(&stream);
            });
        }
    }

    /// Has every `ROOTCA` stream ACKed the bundle with this hash? True when none is open
    /// (a workload reading files, or no Envoy yet).
    pub fn all_acked(&self, bundle_sha256: &str) -> bool {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).acked.values().all(|h| h == bundle_sha256)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmed_only_when_every_rootca_stream_acked() {
        let a = RootAcks::default();
        let h = sha256_hex(b"B");
        assert!(a.all_acked(&h), "no Envoy: the agent's own copy counts");
        a.subscribed(1);
        a.subscribed(2);
        assert!(!a.all_acked(&h));
        a.acked(1, "B");
        assert!(!a.all_acked(&h));
        a.acked(2, "A");
        assert!(!a.all_acked(&h), "one Envoy still validates with the old bundle");
        a.acked(2, "B");
        assert!(a.all_acked(&h));
        a.gone(2);
        a.subscribed(3);
        assert!(!a.all_acked(&h), "a new stream has not ACKed anything yet");
    }
}
