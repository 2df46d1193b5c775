//! The audit log: one JSON line per issuance and per refusal, written by a
//! background thread so the issuing path only pushes onto a queue. Records
//! carry who asked, for what, and what happened: never key material or
//! tokens.
//!
//! Bounds: every attacker-supplied field is escaped and capped
//! ([`crate::sanitize`]), so a line stays under ~2 KiB; the queue holds at
//! most `queue_bytes` of serialized records (beyond: dropped and counted);
//! the file is rotated at `max_file_bytes` keeping `keep_files` old files.
//!
//! A failed write (disk full, I/O error) is counted
//! (`meshca_audit_write_failures_total`), logged (at most every 10 s), sets
//! `meshca_audit_failing` and turns `/readyz` red until a write succeeds
//! again. Issuance goes on meanwhile unless `--audit-required` is set (then
//! CreateCertificate answers UNAVAILABLE): a CA on every pod's start-up path
//! favours availability by default, and readiness takes the replica out of
//! rotation so the operator's alert fires.

use crate::limits::LimitCounters;
use crate::metrics::Metrics;
use crate::sanitize::{clean, LONG, SHORT};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUEUE: usize = 65_536;
/// How long the writer lets records gather before writing them out.
const BATCH: Duration = Duration::from_millis(5);
/// Least time between two log lines about failing writes.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

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

impl Record {
    /// Escape and cap every free-text field.
    fn sanitized(mut self) -> Self {
        self.caller = clean(&self.caller, 2 * SHORT);
        self.identity = self.identity.map(|s| clean(&s, SHORT));
        self.reason = self.reason.map(|s| clean(&s, LONG));
        self.code = self.code.map(|s| clean(&s, 64));
        self
    }
}

/// Size and rotation of the audit file.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    pub max_file_bytes: u64,
    pub keep_files: usize,
    pub queue_bytes: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        let l = crate::limits::Limits::default();
        Self {
            max_file_bytes: l.audit_max_file_bytes,
            keep_files: l.audit_keep_files,
            queue_bytes: l.audit_queue_bytes,
        }
    }
}

/// Whether the audit log is being written; read by `/readyz`.
#[derive(Debug)]
pub struct AuditStatus {
    ok: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl AuditStatus {
    /// `None` while writes succeed, else the last error.
    pub fn failure(&self) -> Option<String> {
        if self.ok.load(Ordering::Relaxed) {
            None
        } else {
            Some(self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default())
        }
    }
    pub fn healthy(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    queue_bytes: usize,
    metrics: Arc<Metrics>,
    status: Arc<AuditStatus>,
}

struct Writer {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    opts: AuditOptions,
    metrics: Arc<Metrics>,
    status: Arc<AuditStatus>,
    queued: Arc<AtomicUsize>,
    last_failure_log: Option<Instant>,
}

fn open_append(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Writer {
    fn counters(&self) -> &LimitCounters {
        &self.metrics.limits
    }

    /// audit.jsonl -> .1 -> .2 ...; the oldest beyond `keep_files` is removed.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let keep = self.opts.keep_files;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(rotated(&self.path, keep));
            for n in (1..keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        LimitCounters::inc(&self.counters().audit_rotations);
        Ok(())
    }

    fn write_batch(&mut self, batch: &[u8]) -> std::io::Result<()> {
        if self.file.is_some() && self.size > 0 && self.size + batch.len() as u64 > self.opts.max_file_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            let (f, size) = open_append(&self.path)?;
            self.file = Some(f);
            self.size = size;
        }
        let file = self.file.as_mut().ok_or_else(|| std::io::Error::other("audit file not open"))?;
        file.write_all(batch)?;
        self.size += batch.len() as u64;
        Ok(())
    }

    fn flush(&mut self, batch: &mut Vec<u8>) {
        if batch.is_empty() {
            return;
        }
        let len = batch.len();
        match self.write_batch(batch) {
            Ok(()) => {
                if !self.status.ok.swap(true, Ordering::Relaxed) {
                    self.counters().audit_failing.store(0, Ordering::Relaxed);
                    tracing::info!(path = %self.path.display(), "the audit log is writable again");
                }
            }
            Err(e) => {
                // Drop the file handle: the next batch reopens (and may find space again).
                self.file = None;
                let c = self.counters();
                LimitCounters::inc(&c.audit_write_failures);
                c.audit_bytes_dropped.fetch_add(len as u64, Ordering::Relaxed);
                c.audit_failing.store(1, Ordering::Relaxed);
                let lines = batch.iter().filter(|b| **b == b'\n').count() as u64;
                self.metrics.audit_dropped.fetch_add(lines, Ordering::Relaxed);
                let msg = format!("{}: {e}", self.path.display());
                *self.status.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                self.status.ok.store(false, Ordering::Relaxed);
                if self.last_failure_log.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) {
                    self.last_failure_log = Some(Instant::now());
                    tracing::error!(error = %msg, dropped_records = lines, "audit log write failed; /readyz reports not ready until a write succeeds");
                }
            }
        }
        self.queued.fetch_sub(len, Ordering::Relaxed);
        batch.clear();
    }

    fn run(mut self, rx: Receiver<Vec<u8>>) {
        let mut batch = Vec::with_capacity(64 * 1024);
        // Block for the first record, then let a batch gather: senders do
        // not have to wake this thread for every request under load.
        while let Ok(rec) = rx.recv() {
            batch.extend_from_slice(&rec);
            std::thread::sleep(BATCH);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
                if batch.len() >= 1024 * 1024 {
                    self.flush(&mut batch);
                }
            }
            self.flush(&mut batch);
        }
    }
}

impl AuditLog {
    /// Open (append) `path` and start the writer thread. Call
    /// [`AuditWriter::finish`] after the last [`AuditLog`] clone is dropped so
    /// the queued records reach the file before the process exits.
    pub fn open(path: &Path, metrics: Arc<Metrics>, opts: AuditOptions) -> std::io::Result<(Self, AuditWriter)> {
        let (file, size) = open_append(path)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let status = Arc::new(AuditStatus { ok: AtomicBool::new(true), last_error: Mutex::new(None) });
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            opts,
            metrics: metrics.clone(),
            status: status.clone(),
            queued: queued.clone(),
            last_failure_log: None,
        };
        let handle = std::thread::Builder::new().name("meshca-audit".into()).spawn(move || writer.run(rx))?;
        Ok((Self { tx, queued, queue_bytes: opts.queue_bytes, metrics, status }, AuditWriter { handle }))
    }

    /// Whether the audit log is being written.
    pub fn status(&self) -> Arc<AuditStatus> {
        self.status.clone()
    }

    pub fn record(&self, rec: Record) {
        let mut line = match serde_json::to_vec(&rec.sanitized()) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let len = line.len();
        let dropped = |m: &Metrics| {
            m.audit_dropped.fetch_add(1, Ordering::Relaxed);
            m.limits.audit_bytes_dropped.fetch_add(len as u64, Ordering::Relaxed);
        };
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.queue_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return dropped(&self.metrics);
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            dropped(&self.metrics);
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
    pub fn finish(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        } else {
            tracing::warn!("the audit writer did not finish in time; the last records may be missing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(identity: &str) -> Record {
        Record {
            time: "t".into(),
            caller: "c".into(),
            identity: Some(identity.into()),
            serial: None,
            not_after: None,
            outcome: "refused",
            reason: Some("r\nforged".into()),
            code: None,
        }
    }

    #[test]
    fn lines_are_bounded_and_files_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let metrics = Arc::new(Metrics::default());
        let opts = AuditOptions { max_file_bytes: 4096, keep_files: 2, queue_bytes: 1 << 20 };
        let (log, writer) = AuditLog::open(&path, metrics.clone(), opts).unwrap();
        for _ in 0..40 {
            log.record(rec(&"\x07".repeat(100_000)));
            std::thread::sleep(Duration::from_millis(8));
        }
        drop(log);
        writer.finish(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            assert!(line.len() < 2048, "line of {} bytes", line.len());
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["reason"].as_str().unwrap().contains("\\n"));
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists() && !rotated(&path, 3).exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        assert!(metrics.limits.audit_rotations.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn queue_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let opts = AuditOptions { queue_bytes: 100, ..AuditOptions::default() };
        let (log, writer) = AuditLog::open(&dir.path().join("a.jsonl"), metrics.clone(), opts).unwrap();
        log.record(rec("x"));
        log.record(rec("y"));
        assert!(metrics.audit_dropped.load(Ordering::Relaxed) >= 1);
        drop(log);
        writer.finish(Duration::from_secs(2));
    }
}
