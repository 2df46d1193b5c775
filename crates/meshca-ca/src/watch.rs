//! The file watch behind live reload.
//!
//! Only events that concern the plug-in set count: the directory itself
//! (created, removed, renamed: watched through its parent), its Kubernetes
//! `..data` link and `..<timestamp>` directories, and the file names of
//! either layout. Everything else in the parent or the directory (a log file,
//! a sidecar's scratch file, meshca's own reads, which inotify reports as
//! opens) is ignored, so a busy neighbour can neither starve the reload nor
//! make it spin. After the first relevant event the reload waits for a quiet
//! period of [`DEBOUNCE`], but never longer than [`MAX_DELAY`] in all.

use crate::reload::Reloader;
use crate::source;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Quiet period after the last relevant event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A reload happens at most this long after the first relevant event, however busy the directory is.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// Does `path` (from an event) concern the plug-in set in `ca_dir`?
pub fn concerns(ca_dir: &Path, path: &Path) -> bool {
    concerns_names(ca_dir, path, |name| source::ISTIO_FILES.contains(&name) || source::TLS_FILES.contains(&name))
}

/// Is `path` the directory itself, its Kubernetes `..data` link or
/// `..<timestamp>` directory, or an entry of it whose name `accept`s?
pub fn concerns_names(dir: &Path, path: &Path, accept: fn(&str) -> bool) -> bool {
    if path == dir {
        return true;
    }
    if path.parent() != Some(dir) {
        return false;
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    name.starts_with("..") || accept(name)
}

/// Is `ev` a change (not a read) that concerns the plug-in set?
pub fn relevant(ca_dir: &Path, ev: &notify::Event) -> bool {
    relevant_to(ca_dir, ev, concerns)
}

/// Is `ev` a change (not a read) of a path in `dir` that `concerns` accepts?
pub fn relevant_to(dir: &Path, ev: &notify::Event, concerns: fn(&Path, &Path) -> bool) -> bool {
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    ev.paths.iter().any(|p| concerns(dir, p))
}

/// Wait for the end of a burst that started now: quiet for DEBOUNCE, or MAX_DELAY in all.
async fn settle(wake: &tokio::sync::Notify) {
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        let quiet = (Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet, wake.notified()).await {
            Ok(()) if Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

/// Watch the plug-in directory and reload on changes until the process ends.
pub fn spawn(mut reloader: Reloader) -> anyhow::Result<()> {
    let (dir, poll) = (reloader.opts.ca_dir.clone(), reloader.opts.poll_interval);
    watch_dir(&dir, poll, concerns, move || {
        let outcome = reloader.reload();
        if outcome != crate::reload::Outcome::Unchanged {
            tracing::debug!(?outcome, "reload check");
        }
    })
}

/// Watch `dir` (and, through its parent, its creation, removal or
/// replacement) and call `on_change` after every settled burst of events
/// that `concerns` accepts, and every `poll` in any case, until the process ends.
pub fn watch_dir(
    dir: &Path,
    poll: Duration,
    concerns: fn(&Path, &Path) -> bool,
    mut on_change: impl FnMut() + Send + 'static,
) -> anyhow::Result<()> {
    let ca_dir = std::path::absolute(dir)?;
    let parent = ca_dir.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let wake = Arc::new(tokio::sync::Notify::new());
    let (w, dir) = (wake.clone(), ca_dir.clone());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if relevant_to(&dir, &ev, concerns) => w.notify_one(),
        Ok(_) => {}
        // The kernel queue overflowed: something may have been missed.
        Err(_) => w.notify_one(),
    })?;
    if let Err(e) = watcher.watch(&parent, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %parent.display(), error = %e, "cannot watch the parent of the watched directory; relying on polling");
    }
    let _ = watcher.watch(&ca_dir, RecursiveMode::NonRecursive);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.notified() => settle(&wake).await,
                _ = tokio::time::sleep(poll) => {}
            }
            // The directory may have been created or replaced since: (re)watch it.
            let _ = watcher.watch(&ca_dir, RecursiveMode::NonRecursive);
            on_change();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn ev(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_plug_in_set_events_count() {
        let dir = Path::new("/etc/cacerts");
        let create = EventKind::Create(CreateKind::Any);
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(relevant(dir, &ev(rename, &["/etc/cacerts/..data_tmp", "/etc/cacerts/..data"])));
        assert!(relevant(dir, &ev(create, &["/etc/cacerts/ca-cert.pem"])));
        assert!(relevant(dir, &ev(create, &["/etc/cacerts/tls.key"])));
        assert!(relevant(dir, &ev(create, &["/etc/cacerts"])));
        assert!(relevant(dir, &ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/etc/cacerts/ca.crt"])));
        // Reads (meshca's own included), neighbours and unrelated files do not.
        assert!(!relevant(
            dir,
            &ev(EventKind::Access(AccessKind::Open(AccessMode::Any)), &["/etc/cacerts/ca-key.pem"])
        ));
        assert!(!relevant(dir, &ev(create, &["/etc/busy.txt"])));
        assert!(!relevant(dir, &ev(create, &["/etc/meshca.log"])));
        assert!(!relevant(dir, &ev(create, &["/etc/cacerts/notes.txt"])));
        assert!(!relevant(dir, &ev(create, &["/etc/cacerts-other"])));
        assert!(!relevant(dir, &ev(create, &["/etc/cacerts/..data/ca-cert.pem"])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_directory_cannot_postpone_the_reload_past_max_delay() {
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        let busy = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                w.notify_one();
            }
        });
        let t0 = Instant::now();
        settle(&wake).await;
        busy.abort();
        assert!(t0.elapsed() <= MAX_DELAY + Duration::from_millis(1), "{:?}", t0.elapsed());
        assert!(t0.elapsed() >= MAX_DELAY - Duration::from_millis(20), "{:?}", t0.elapsed());
        let start = Instant::now();
        settle(&wake).await;
        assert_eq!(start.elapsed(), DEBOUNCE, "a quiet directory reloads after the debounce");
    }
}
