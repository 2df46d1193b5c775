//! Live reload of plug-in CA material.
//!
//! The plug-in directory is watched (see `watch`: only events that concern
//! the plug-in set count), so a Kubernetes secret's symlink swap, a CSI
//! driver's sync, an editor's rename-write and a plain overwrite all trigger
//! a reload; a slow poll backs the watch up. Every reload loads the full set, validates it (see
//! `meshca_pki::material`), checks that the new root bundle keeps at least
//! one current root, and only then swaps. A refused set changes nothing.

use crate::active::{ActiveCa, SourceKind};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::source::{self, Layout};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::watch::{spawn, DEBOUNCE, MAX_DELAY};

#[derive(Debug, Clone)]
pub struct ReloadOptions {
    pub ca_dir: PathBuf,
    pub trust_domain: String,
    /// Accept a root bundle that shares no root with the current one.
    pub allow_root_replace: bool,
    /// Fallback poll in case a file event is missed.
    pub poll_interval: Duration,
}

pub use crate::swap::{Outcome, Swapper};

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

/// Reloads the plug-in directory.
pub struct Reloader {
    pub(crate) swapper: Swapper,
    pub(crate) opts: ReloadOptions,
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
