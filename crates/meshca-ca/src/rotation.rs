//! Staged root activation, after SPIRE's prepared → active slots.
//!
//! A signer that chains to a root workloads may not hold yet is never used at
//! once. Its root is *published* first: the served bundle becomes the new
//! roots plus the current signer's root, while the current signer (kept in
//! memory even when the files no longer hold it) goes on signing. The new
//! signer is *prepared* and activated when every connected meshca agent has
//! reported holding the published bundle, or when the propagation delay has
//! passed (by default the longest certificate lifetime issued so far, capped
//! at the max TTL: by then every workload has renewed and received the
//! bundle), or when an operator forces it.
//!
//! A root is *settled* once workloads can be assumed to hold it: it was
//! served at start-up, or it has been served for the propagation delay, or
//! every connected agent confirmed a bundle containing it. A signer under a
//! settled root is activated at once.

use crate::active::SourceKind;
use crate::agents::AgentRegistry;
use meshca_pki::inspect::sha256_hex;
use meshca_pki::{CaMaterial, CertDer};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long a new root must be published before its signer may sign.
#[derive(Debug, Clone)]
pub struct RotationOptions {
    /// `None`: the longest lifetime issued so far, capped at `max_ttl`.
    pub propagation_delay: Option<Duration>,
    pub max_ttl: Duration,
}

impl Default for RotationOptions {
    fn default() -> Self {
        Self { propagation_delay: None, max_ttl: Duration::from_secs(90 * 24 * 3600) }
    }
}

/// A signer waiting for its root to reach every workload.
pub struct Prepared {
    pub material: CaMaterial,
    pub source: SourceKind,
    pub location: PathBuf,
    pub prepared_at: SystemTime,
    pub activate_by: SystemTime,
    /// SHA-256 of the bundle PEM published for it: the one agents must confirm.
    pub bundle_sha256: String,
}

/// What `/status` shows about a root switch in progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreparedStatus {
    pub signer_sha256: String,
    pub signer_subject: String,
    pub prepared_at: String,
    pub activate_by: String,
    pub waiting_for: String,
    pub agents_connected: usize,
    pub agents_confirmed: usize,
}

/// Why a prepared signer became active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationCause {
    AgentsConfirmed,
    DelayElapsed,
    Forced,
}

impl ActivationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentsConfirmed => "every connected agent confirmed the new bundle",
            Self::DelayElapsed => "the root propagation delay elapsed",
            Self::Forced => "an operator forced it",
        }
    }
}

#[derive(Default)]
struct State {
    prepared: Option<Prepared>,
    /// Root fingerprint → when it was first served; `None` for roots settled by other means.
    first_served: HashMap<String, Option<SystemTime>>,
}

/// The staging state of one CA; owned by [`crate::active::ActiveCa`].
pub struct Staging {
    state: Mutex<State>,
    options: Mutex<RotationOptions>,
    /// Longest lifetime (seconds) issued since start-up.
    longest_issued: AtomicU64,
    pub agents: Arc<AgentRegistry>,
    pub prepared_total: AtomicU64,
    pub activations_total: AtomicU64,
    /// Held for a whole offer or activation, so a prepare (record, then
    /// publish) and an activation never interleave.
    op: Mutex<()>,
}

pub fn root_fp(der: &CertDer) -> String {
    sha256_hex(der)
}

impl Staging {
    pub fn new(initial_roots: &[CertDer]) -> Self {
        let mut st = State::default();
        for r in initial_roots {
            st.first_served.insert(root_fp(r), None);
        }
        Self {
            state: Mutex::new(st),
            options: Mutex::new(RotationOptions::default()),
            longest_issued: AtomicU64::new(0),
            agents: Arc::new(AgentRegistry::default()),
            prepared_total: AtomicU64::new(0),
            activations_total: AtomicU64::new(0),
            op: Mutex::new(()),
        }
    }

    /// Exclusive access for one offer or activation.
    pub fn operation(&self) -> std::sync::MutexGuard<'_, ()> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn configure(&self, opts: RotationOptions) {
        *self.options.lock().unwrap_or_else(|p| p.into_inner()) = opts;
    }

    /// Record an issued certificate's lifetime (for the default propagation delay).
    pub fn note_issued(&self, ttl: Duration) {
        self.longest_issued.fetch_max(ttl.as_secs(), Ordering::Relaxed);
    }

    /// The propagation delay in force now.
    pub fn propagation_delay(&self) -> Duration {
        let o = self.options.lock().unwrap_or_else(|p| p.into_inner()).clone();
        o.propagation_delay
            .unwrap_or_else(|| Duration::from_secs(self.longest_issued.load(Ordering::Relaxed)).min(o.max_ttl))
    }

    /// Note that `roots` are served from `now` on (first time only).
    pub fn served(&self, roots: &[CertDer], now: SystemTime) {
        let mut st = self.lock();
        for r in roots {
            st.first_served.entry(root_fp(r)).or_insert(Some(now));
        }
    }

    /// May a signer under `root` sign now? See the module documentation.
    pub fn settled(&self, root: &CertDer, served_bundle_sha256: &str, now: SystemTime) -> bool {
        let delay = self.propagation_delay();
        let fp = root_fp(root);
        let since = match self.lock().first_served.get(&fp) {
            None => return false,
            Some(None) => return true,
            Some(Some(t)) => *t,
        };
        now.duration_since(since).unwrap_or_default() >= delay || self.agents.all_confirmed(served_bundle_sha256)
    }

    fn mark_settled(&self, root: &CertDer) {
        self.lock().first_served.insert(root_fp(root), None);
    }

    /// Hold `p` until it may be activated; replaces any earlier prepared signer.
    pub fn prepare(&self, p: Prepared) {
        self.prepared_total.fetch_add(1, Ordering::Relaxed);
        self.lock().prepared = Some(p);
    }

    /// Drop the prepared signer (newer material arrived); true if there was one.
    pub fn withdraw(&self) -> bool {
        self.lock().prepared.take().is_some()
    }

    /// True if `m` is the prepared signer's material.
    pub fn is_prepared(&self, m: &CaMaterial) -> bool {
        self.lock().prepared.as_ref().is_some_and(|p| {
            p.material.signer().cert() == m.signer().cert()
                && p.material.chain() == m.chain()
                && p.material.roots() == m.roots()
        })
    }

    pub fn has_prepared(&self) -> bool {
        self.lock().prepared.is_some()
    }

    /// Take the prepared signer if it may become active now.
    pub fn take_ready(&self, now: SystemTime, force: bool) -> Option<(Prepared, ActivationCause)> {
        let mut st = self.lock();
        let p = st.prepared.as_ref()?;
        let cause = if force {
            ActivationCause::Forced
        } else if self.agents.all_confirmed(&p.bundle_sha256) {
            ActivationCause::AgentsConfirmed
        } else if now >= p.activate_by {
            ActivationCause::DelayElapsed
        } else {
            return None;
        };
        let p = st.prepared.take()?;
        drop(st);
        if let Some(root) = p.material.signing_root() {
            self.mark_settled(root);
        }
        self.activations_total.fetch_add(1, Ordering::Relaxed);
        Some((p, cause))
    }

    /// When the prepared signer will be activated at the latest.
    pub fn activate_by(&self) -> Option<SystemTime> {
        self.lock().prepared.as_ref().map(|p| p.activate_by)
    }

    pub fn status(&self) -> Option<PreparedStatus> {
        let st = self.lock();
        let p = st.prepared.as_ref()?;
        let (connected, confirmed) = self.agents.counts(&p.bundle_sha256);
        let signer = p.material.signer().cert();
        let subject = meshca_pki::inspect::cert_info(signer).map(|i| i.subject).unwrap_or_default();
        Some(PreparedStatus {
            signer_sha256: sha256_hex(signer),
            signer_subject: subject,
            prepared_at: meshca_pki::material::fmt_time(p.prepared_at),
            activate_by: meshca_pki::material::fmt_time(p.activate_by),
            waiting_for: format!(
                "its root to reach every workload: {confirmed} of {connected} connected agents hold the new bundle; \
                 activation at the latest at {}",
                meshca_pki::material::fmt_time(p.activate_by)
            ),
            agents_connected: connected,
            agents_confirmed: confirmed,
        })
    }

    /// Prometheus series for the rotation state.
    pub fn render_metrics(&self, out: &mut String) {
        let prepared = u8::from(self.has_prepared());
        let (connected, _) = self.agents.counts("");
        let _ = writeln!(
            out,
            "# HELP meshca_ca_root_prepared 1 while a signer under a new root waits for its root to reach every workload.\n\
             # TYPE meshca_ca_root_prepared gauge\nmeshca_ca_root_prepared {prepared}\n\
             # HELP meshca_ca_root_prepared_total Signers held back until their root was published to every workload.\n\
             # TYPE meshca_ca_root_prepared_total counter\nmeshca_ca_root_prepared_total {}\n\
             # HELP meshca_ca_root_activations_total Prepared signers activated.\n\
             # TYPE meshca_ca_root_activations_total counter\nmeshca_ca_root_activations_total {}\n\
             # HELP meshca_ca_agents_connected meshca agents connected to the change stream.\n\
             # TYPE meshca_ca_agents_connected gauge\nmeshca_ca_agents_connected {connected}",
            self.prepared_total.load(Ordering::Relaxed),
            self.activations_total.load(Ordering::Relaxed),
        );
    }
}
