//! The audit log: one JSON line per issuance and per refusal, written by a
//! background thread so the issuing path only pushes onto a bounded queue.
//! Records carry who asked, for what, and what happened: never key material
//! or tokens.

use crate::metrics::Metrics;
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

const QUEUE: usize = 65_536;

#[derive(Debug, Serialize)]
pub struct Record {
    /// RFC 3339 UTC.
    pub time: String,
    /// Who called: peer address and the credential kind.
    pub caller: String,
    /// The identity the certificate is (or would have been) for.
    pub identity: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    /// `issued` or `refused`.
    pub outcome: &'static str,
    pub reason: Option<String>,
    /// gRPC status code name for refusals.
    pub code: Option<String>,
}

#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Record>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// Open (append) `path` and start the writer thread.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let (tx, rx) = sync_channel::<Record>(QUEUE);
        std::thread::Builder::new().name("meshca-audit".into()).spawn(move || {
            let mut w = std::io::BufWriter::new(file);
            while let Ok(rec) = rx.recv() {
                let mut write = |r: &Record| {
                    if serde_json::to_writer(&mut w, r).is_ok() {
                        let _ = w.write_all(b"\n");
                    }
                };
                write(&rec);
                // Drain what is already queued before flushing once.
                while let Ok(more) = rx.try_recv() {
                    write(&more);
                }
                let _ = w.flush();
            }
        })?;
        Ok(Self { tx, metrics })
    }

    pub fn record(&self, rec: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(rec) {
            self.metrics.audit_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
