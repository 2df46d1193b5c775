//! Live reload of plug-in CA material.
//!
//! The plug-in directory and its parent are watched (debounced), so a
//! Kubernetes secret's symlink swap, a CSI driver's sync, an editor's
//! rename-write and a plain overwrite all trigger a reload; a slow poll backs
//! the watch up. Every reload loads the full set, validates it (see
//! `meshca_pki::material`), checks that the new root bundle keeps at least
//! one current root, and only then swaps. A refused set changes nothing.

use crate::active::{ActiveCa, SourceKind};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::server::log_material;
use crate::source::{self, Layout};
use meshca_pki::{CaMaterial, CertDer};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Quiet period after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ReloadOptions {
    pub ca_dir: PathBuf,
    pub trust_domain: String,
    /// Accept a root bundle that shares no root with the current one.
    pub allow_root_replace: bool,
    /// Fallback poll in case a file event is missed.
    pub poll_interval: Duration,
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Swapped {
        bundle_changed: bool,
    },
    Refused(String),
    /// The directory holds no plug-in set; the current material stays.
    NothingPlugged,
}

/// Contents of the files that make up a plug-in set, to skip reloads of identical sets.
fn fingerprint(dir: &Path) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for name in source::ISTIO_FILES.iter().chain(source::TLS_FILES.iter()) {
        ctx.update(name.as_bytes());
        match std::fs::read(dir.join(name)) {
            Ok(b) => {
                ctx.update(&(b.len() as u64).to_be_bytes());
                ctx.update(&b);
            }
            Err(_) => ctx.update(b"<absent>"),
        }
    }
    ctx.finish().as_ref().to_vec()
}

fn same_set(a: &[CertDer], b: &[CertDer]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

fn overlaps(a: &[CertDer], b: &[CertDer]) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// Validated material goes through here on its way in, whatever its source:
/// unchanged sets are ignored, root bundles that would cut workloads off are
/// refused, everything else is swapped in atomically and logged.
#[derive(Clone)]
pub struct Swapper {
    pub active: Arc<ActiveCa>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub trust_domain: String,
    pub allow_root_replace: bool,
}

impl Swapper {
    /// Record a refused set; the current material stays active.
    pub fn refuse(&self, msg: String) -> Outcome {
        self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("CA material reload refused, the current material stays active: {msg}");
        self.active.reload_failed(msg.clone(), self.clock.now());
        Outcome::Refused(msg)
    }

    /// Offer validated `material` from `source` at `location`. `bundle_name`
    /// names the root bundle (file or path) in messages.
    pub fn offer(&self, material: CaMaterial, source: SourceKind, location: PathBuf, bundle_name: &str) -> Outcome {
        let current = self.active.load();
        let old = &current.material;
        if current.source == source
            && material.signer().cert() == old.signer().cert()
            && material.chain() == old.chain()
            && same_set(material.roots(), old.roots())
        {
            return Outcome::Unchanged;
        }
        let bundle_changed = !same_set(material.roots(), old.roots());
        if bundle_changed && !overlaps(material.roots(), old.roots()) && !self.allow_root_replace {
            return self.refuse(format!(
                "{bundle_name}: the new root bundle shares no root with the current one, so every workload holding a \
                 certificate from the current root would be cut off. Rotate in three steps: (1) put a bundle with \
                 both the old and the new roots in root-cert.pem, keeping the old signing certificate; (2) once every \
                 workload trusts both, switch ca-cert.pem/ca-key.pem/cert-chain.pem to the new intermediate; (3) once \
                 every workload has renewed, remove the old root. Start meshca with --allow-root-replace to skip this check"
            ));
        }
        let roots = material.roots().len();
        let snapshot = self.active.replace(material, source, location, self.clock.now());
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!("Istiod has detected the newly added intermediate CA and updated its key and certs accordingly");
        log_material(&snapshot.material);
        if bundle_changed {
            tracing::info!("spiffe  Added {roots} certs to trust domain {} in peer cert verifier", self.trust_domain);
        }
        tracing::info!(generation = snapshot.generation, "meshca certificates are reloaded");
        Outcome::Swapped { bundle_changed }
    }
}

/// Reloads the plug-in directory.
pub struct Reloader {
    swapper: Swapper,
    opts: ReloadOptions,
    last_fingerprint: Option<Vec<u8>>,
}

impl Reloader {
    pub fn new(active: Arc<ActiveCa>, metrics: Arc<Metrics>, clock: SharedClock, opts: ReloadOptions) -> Self {
        let last_fingerprint = Some(fingerprint(&opts.ca_dir));
        let swapper = Swapper {
            active,
            metrics,
            clock,
            trust_domain: opts.trust_domain.clone(),
            allow_root_replace: opts.allow_root_replace,
        };
        Self { swapper, opts, last_fingerprint }
    }

    /// Check the directory and swap in its material if it is new and valid.
    pub fn reload(&mut self) -> Outcome {
        let fp = fingerprint(&self.opts.ca_dir);
        if self.last_fingerprint.as_ref() == Some(&fp) {
            return Outcome::Unchanged;
        }
        self.last_fingerprint = Some(fp);
        let dir = &self.opts.ca_dir;
        let layout = match source::detect(dir) {
            Ok(Some(l)) => l,
            Ok(None) => {
                if self.swapper.active.load().source == SourceKind::Plugged {
                    tracing::warn!(dir = %dir.display(), "plug-in CA files are gone; keeping the current material");
                }
                return Outcome::NothingPlugged;
            }
            Err(e) => return self.swapper.refuse(e.to_string()),
        };
        tracing::info!("Update meshca cacerts");
        tracing::info!(
            "{}",
            match layout {
                Layout::Istio => "Using istiod file format for signing ca files",
                Layout::KubernetesTls => "Using kubernetes.io/tls secret format for signing ca files",
            }
        );
        let material = match source::load_plugged(dir, layout, self.swapper.clock.now()) {
            Ok(m) => m,
            Err(e) => return self.swapper.refuse(e.to_string()),
        };
        let bundle = dir.join(match layout {
            Layout::Istio => "root-cert.pem",
            Layout::KubernetesTls => "ca.crt",
        });
        let outcome = self.swapper.offer(material, SourceKind::Plugged, dir.clone(), &bundle.display().to_string());
        if outcome == Outcome::Unchanged {
            // The directory holds the active set again (say, the previous secret was put back).
            self.swapper.active.reload_ok(self.swapper.clock.now());
        }
        outcome
    }
}

/// Watch the plug-in directory and reload on changes until the process ends.
pub fn spawn(mut reloader: Reloader) -> anyhow::Result<()> {
    let ca_dir = reloader.opts.ca_dir.clone();
    let parent = match ca_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            w.notify_one();
        }
    })?;
    if let Err(e) = watcher.watch(&parent, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %parent.display(), error = %e, "cannot watch the parent of the CA directory; relying on polling");
    }
    let _ = watcher.watch(&ca_dir, RecursiveMode::NonRecursive);
    let poll = reloader.opts.poll_interval;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.notified() => {
                    // Debounce: wait until events stop for DEBOUNCE.
                    while tokio::time::timeout(DEBOUNCE, wake.notified()).await.is_ok() {}
                }
                _ = tokio::time::sleep(poll) => {}
            }
            // The directory may have been created or replaced since: (re)watch it.
            let _ = watcher.watch(&ca_dir, RecursiveMode::NonRecursive);
            let outcome = reloader.reload();
            tracing::debug!(?outcome, "reload check");
        }
    });
    Ok(())
}
