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
/// How long the writer lets records gather before writing them out.
const BATCH: std::time::Duration = std::time::Duration::from_millis(5);

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
    /// Open (append) `path` and start the writer thread. Call
    /// [`AuditWriter::finish`] after the last [`AuditLog`] clone is dropped so
    /// the queued records reach the file before the process exits.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> std::io::Result<(Self, AuditWriter)> {
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let (tx, rx) = sync_channel::<Record>(QUEUE);
        let handle = std::thread::Builder::new().name("meshca-audit".into()).spawn(move || {
            let mut w = std::io::BufWriter::new(file);
            let write = |w: &mut std::io::BufWriter<std::fs::File>, r: &Record| {
                if serde_json::to_writer(&mut *w, r).is_ok() {
                    let _ = w.write_all(b"\n");
                }
            };
            // Block for the first record, then let a batch gather: senders do
            // not have to wake this thread for every request under load.
            while let Ok(rec) = rx.recv() {
                write(&mut w, &rec);
                std::thread::sleep(BATCH);
                while let Ok(more) = rx.try_recv() {
                    write(&mut w, &more);
                }
                let _ = w.flush();
            }
        })?;
        Ok((Self { tx, metrics }, AuditWriter { handle }))
    }

    pub fn record(&self, rec: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(rec) {
            self.metrics.audit_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The writer thread; see [`AuditLog::open`].
pub struct AuditWriter {
    handle: std::thread::JoinHandle<()>,
}

impl AuditWriter {
    /// Wait (at most `limit`) until every queued record is written; the
    /// thread ends once every [`AuditLog`] clone is gone.
    pub fn finish(self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while !self.handle.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        } else {
            tracing::warn!("the audit writer did not finish in time; the last records may be missing");
        }
    }
}
