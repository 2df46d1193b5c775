//! The workload's labels over time: `--workload-labels`, overridden key by key
//! by the `--workload-labels-file` (Kubernetes downward API), which is polled
//! every [`POLL`]. Its content is compared, not its metadata, so an atomic
//! `..data` symlink swap (how the kubelet updates the file) is seen like an
//! in-place write. A file that cannot be read or parsed keeps the previous
//! labels; the error (naming `file:line`) is logged and shown in `/status`.

use super::{workload, PolicyConfig, PolicyHandle};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the labels file is read.
pub const POLL: Duration = Duration::from_secs(1);

pub type Labels = BTreeMap<String, String>;

/// What one look at the labels file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Same content, or new content with the same labels.
    Unchanged,
    /// Valid content with other labels than before: the new labels.
    Labels(Labels),
    /// Unreadable or unparsable content (newly so): the error; the previous labels stay.
    Broken(String),
    /// Valid again after an error, with the same labels as before.
    Repaired,
}

/// The last content seen and the labels in force (pure: the poller feeds it what it reads).
#[derive(Debug, Clone, Default)]
pub struct LabelsState {
    /// `--workload-labels`, the base the file overrides.
    base: Labels,
    /// The last read (content or read error), to skip unchanged files.
    last: Option<Result<String, String>>,
    /// The labels in force; `None` until the file parsed once.
    pub current: Option<Labels>,
    /// The error of the last read, if it failed.
    pub error: Option<String>,
}

impl LabelsState {
    pub fn new(base: Labels) -> Self {
        Self { base, ..Self::default() }
    }

    /// Take in one read of `path` (its text, or the read error).
    pub fn observe(&mut self, path: &std::path::Path, read: Result<String, String>) -> Change {
        if self.last.as_ref() == Some(&read) {
            return Change::Unchanged;
        }
        self.last = Some(read.clone());
        match merge(&self.base, path, read) {
            Err(e) => {
                self.error = Some(e.clone());
                Change::Broken(e)
            }
            Ok(labels) => {
                let was_broken = self.error.take().is_some();
                if self.current.as_ref() == Some(&labels) {
                    return if was_broken { Change::Repaired } else { Change::Unchanged };
                }
                self.current = Some(labels.clone());
                Change::Labels(labels)
            }
        }
    }
}

/// One read of the labels file (its text, or why it could not be read).
pub(super) fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// `base` overridden key by key by the labels in `read` (the file at `path`).
pub(super) fn merge(base: &Labels, path: &std::path::Path, read: Result<String, String>) -> Result<Labels, String> {
    let file = workload::parse_labels_file(path, &read?)?;
    let mut labels = base.clone();
    labels.extend(file);
    Ok(labels)
}

/// The labels now, and the labels as they change (`None` while the file never parsed). Without a
/// labels file they never change; with one, a task polls it until the receivers are gone.
pub fn watch(cfg: &PolicyConfig, handle: &Arc<PolicyHandle>) -> watch::Receiver<Option<Labels>> {
    let Some(path) = cfg.labels_file.clone() else {
        return watch::channel(Some(cfg.labels.clone())).1;
    };
    let mut state = LabelsState::new(cfg.labels.clone());
    let record = |handle: &PolicyHandle, error: Option<String>| {
        handle.update(|s| s.labels_error = error.map(|e| (e, SystemTime::now())));
    };
    if let Change::Broken(e) = state.observe(&path, read(&path)) {
        tracing::warn!("policy: workload labels file: {e}");
    }
    record(handle, state.error.clone());
    let (tx, rx) = watch::channel(state.current.clone());
    let handle = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            if tx.is_closed() {
                return;
            }
            match state.observe(&path, read(&path)) {
                Change::Unchanged => {}
                Change::Labels(labels) => {
                    tracing::info!(file = %path.display(), labels = ?labels, "policy: workload labels changed");
                    record(&handle, None);
                    tx.send_replace(Some(labels));
                }
                Change::Broken(e) => {
                    tracing::warn!("policy: workload labels file, keeping the previous labels: {e}");
                    record(&handle, Some(e));
                }
                Change::Repaired => {
                    tracing::info!(file = %path.display(), "policy: workload labels file readable again, labels unchanged");
                    record(&handle, None);
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn changes_breakage_and_repair() {
        let p = Path::new("/etc/podinfo/labels");
        let mut s = LabelsState::new(labels(&[("app", "base"), ("tier", "web")]));
        let first = s.observe(p, Ok("app=\"ratings\"\n".into()));
        assert_eq!(first, Change::Labels(labels(&[("app", "ratings"), ("tier", "web")])), "the file overrides");
        assert_eq!(s.observe(p, Ok("app=\"ratings\"\n".into())), Change::Unchanged, "same content");
        assert_eq!(s.observe(p, Ok("# c\napp=\"ratings\"\n\n".into())), Change::Unchanged, "same labels");
        let next = s.observe(p, Ok("app=\"reviews\"\n".into()));
        assert_eq!(next, Change::Labels(labels(&[("app", "reviews"), ("tier", "web")])));

        let Change::Broken(e) = s.observe(p, Ok("app=\"reviews\"\nbroken line\n".into())) else { panic!() };
        assert!(e.contains("/etc/podinfo/labels:2"), "names file:line: {e}");
        assert_eq!(s.current, Some(labels(&[("app", "reviews"), ("tier", "web")])), "previous labels kept");
        assert_eq!(s.observe(p, Ok("app=\"reviews\"\nbroken line\n".into())), Change::Unchanged);
        assert!(s.error.is_some());
        assert_eq!(s.observe(p, Ok("app=\"reviews\"\n".into())), Change::Repaired);
        assert_eq!(s.error, None);

        assert!(matches!(s.observe(p, Err("reading: gone".into())), Change::Broken(_)), "a vanished file");
        assert_eq!(s.current, Some(labels(&[("app", "reviews"), ("tier", "web")])));
        let back = s.observe(p, Ok("app=\"details\"\n".into()));
        assert_eq!(back, Change::Labels(labels(&[("app", "details"), ("tier", "web")])));
    }

    #[test]
    fn a_broken_first_read_has_no_labels() {
        let mut s = LabelsState::new(Labels::new());
        assert!(matches!(s.observe(Path::new("l"), Ok("nope\n".into())), Change::Broken(_)));
        assert_eq!(s.current, None);
        assert_eq!(s.observe(Path::new("l"), Ok("a=\"b\"\n".into())), Change::Labels(labels(&[("a", "b")])));
    }

    #[test]
    fn a_data_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let swap = |ts: &str, text: &str| {
            let d = dir.path().join(ts);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("labels"), text).unwrap();
            let tmp = dir.path().join("..data_tmp");
            std::os::unix::fs::symlink(ts, &tmp).unwrap();
            std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
        };
        swap("..2026_01", "app=\"ratings\"\n");
        let file = dir.path().join("labels");
        std::os::unix::fs::symlink("..data/labels", &file).unwrap();
        let mut s = LabelsState::new(Labels::new());
        assert_eq!(s.observe(&file, read(&file)), Change::Labels(labels(&[("app", "ratings")])));
        swap("..2026_02", "app=\"reviews\"\n");
        assert_eq!(s.observe(&file, read(&file)), Change::Labels(labels(&[("app", "reviews")])));
    }
}
