//! Reload decisions that depend on time, driven by a manual clock instead of sleeps.

use meshca_ca::active::{ActiveCa, SourceKind};
use meshca_ca::clock::{ManualClock, SharedClock};
use meshca_ca::metrics::Metrics;
use meshca_ca::reload::{Outcome, ReloadOptions, Reloader};
use meshca_ca::source::{load_plugged, Layout};
use meshca_pki::authority::{new_intermediate, new_root, AuthorityOptions};
use meshca_pki::pem::cert_to_pem;
use meshca_pki::{KeyKind, NewAuthority, Signer};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn opts(cn: &str, ttl: Duration, locality: Option<&str>) -> AuthorityOptions {
    AuthorityOptions {
        common_name: cn.into(),
        organization: "Istio".into(),
        locality: locality.map(str::to_string),
        ttl,
        key: KeyKind::EcP256,
        path_len: locality.map(|_| 0),
    }
}

fn root(cn: &str, now: SystemTime) -> NewAuthority {
    new_root(&opts(cn, Duration::from_secs(10 * 365 * 86400), None), now).unwrap()
}

fn signer(a: &NewAuthority) -> Signer {
    let key = meshca_pki::PrivateKey::from_pem(a.key.to_pkcs8_pem().as_bytes()).unwrap();
    Signer::new(a.cert.clone(), key).unwrap()
}

/// Write a plug-in set: intermediate under `root`, bundle `roots`.
fn write_set(dir: &Path, inter: &NewAuthority, root: &NewAuthority, roots: &[&NewAuthority]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), cert_to_pem(&inter.cert)).unwrap();
    std::fs::write(dir.join("ca-key.pem"), inter.key.to_pkcs8_pem().as_bytes()).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), cert_to_pem(&inter.cert) + &cert_to_pem(&root.cert)).unwrap();
    let bundle: String = roots.iter().map(|r| cert_to_pem(&r.cert)).collect();
    std::fs::write(dir.join("root-cert.pem"), bundle).unwrap();
}

struct Fixture {
    clock: Arc<ManualClock>,
    active: Arc<ActiveCa>,
    metrics: Arc<Metrics>,
}

fn fixture(dir: &Path, t0: SystemTime) -> Fixture {
    let clock = ManualClock::new(t0);
    let material = load_plugged(dir, Layout::Istio, t0).unwrap();
    let active = Arc::new(ActiveCa::new(material, SourceKind::Plugged, dir.to_path_buf(), t0));
    Fixture { clock, active, metrics: Arc::new(Metrics::default()) }
}

fn reloader(f: &Fixture, dir: &Path, allow_root_replace: bool) -> Reloader {
    let clock: SharedClock = f.clock.clone();
    Reloader::new(
        f.active.clone(),
        f.metrics.clone(),
        clock,
        ReloadOptions {
            ca_dir: dir.to_path_buf(),
            trust_domain: "cluster.local".into(),
            allow_root_replace,
            poll_interval: Duration::from_secs(30),
        },
    )
}

#[test]
fn an_intermediate_expired_by_the_clock_is_refused_and_the_old_one_keeps_signing() {
    let t0 = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let ra = root("Root A", t0);
    let i1 =
        new_intermediate(&opts("Intermediate CA - A1", Duration::from_secs(48 * 3600), Some("a1")), &signer(&ra), t0)
            .unwrap();
    write_set(dir.path(), &i1, &ra, &[&ra]);
    let f = fixture(dir.path(), t0);
    let mut r = reloader(&f, dir.path(), false);
    assert_eq!(r.reload(), Outcome::Unchanged);

    // A new intermediate valid for one hour, looked at two hours later.
    let i2 = new_intermediate(&opts("Intermediate CA - A2", Duration::from_secs(3600), Some("a2")), &signer(&ra), t0)
        .unwrap();
    write_set(dir.path(), &i2, &ra, &[&ra]);
    f.clock.advance(Duration::from_secs(2 * 3600));
    match r.reload() {
        Outcome::Refused(msg) => {
            assert!(msg.contains("ca-cert.pem") && msg.contains("expired"), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(f.active.load().generation, 1);
    assert_eq!(f.active.load().material.signer().cert(), &i1.cert, "the old intermediate keeps signing");
    assert_eq!(f.metrics.reload_failures.load(Ordering::Relaxed), 1);
    assert!(f.active.reload_state().last_error.unwrap().contains("expired"));

    // Back within validity, a rewrite of the set is taken.
    f.clock.set(t0 + Duration::from_secs(600));
    let i3 = new_intermediate(&opts("Intermediate CA - A3", Duration::from_secs(3600), Some("a3")), &signer(&ra), t0)
        .unwrap();
    write_set(dir.path(), &i3, &ra, &[&ra]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: false });
    assert_eq!(f.active.load().material.signer().cert(), &i3.cert);
    assert_eq!(f.active.load().generation, 2);
    assert!(f.active.reload_state().last_error.is_none());
    // Nothing changed on disk: nothing to do.
    assert_eq!(r.reload(), Outcome::Unchanged);
}

#[test]
fn root_replacement_needs_an_overlapping_bundle_or_the_flag() {
    let t0 = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let ra = root("Root A", t0);
    let rb = root("Root B", t0);
    let ia = new_intermediate(&opts("Intermediate CA - A1", Duration::from_secs(86400), Some("a1")), &signer(&ra), t0)
        .unwrap();
    let ib = new_intermediate(&opts("Intermediate CA - B1", Duration::from_secs(86400), Some("b1")), &signer(&rb), t0)
        .unwrap();
    write_set(dir.path(), &ia, &ra, &[&ra]);
    let f = fixture(dir.path(), t0);
    let mut r = reloader(&f, dir.path(), false);

    // A -> B directly: refused with the three-step explanation.
    write_set(dir.path(), &ib, &rb, &[&rb]);
    match r.reload() {
        Outcome::Refused(msg) => assert!(msg.contains("three steps") && msg.contains("root-cert.pem"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(f.active.load().material.roots(), std::slice::from_ref(&ra.cert));

    // A -> A+B -> B: each step shares a root with the previous one.
    write_set(dir.path(), &ia, &ra, &[&ra, &rb]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: true });
    assert_eq!(f.active.load().material.roots().len(), 2);
    write_set(dir.path(), &ib, &rb, &[&ra, &rb]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: false });
    write_set(dir.path(), &ib, &rb, &[&rb]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: true });
    assert_eq!(f.active.load().material.roots(), std::slice::from_ref(&rb.cert));
    assert_eq!(f.metrics.reloads.load(Ordering::Relaxed), 3);

    // With the flag a disjoint bundle is accepted.
    let mut forced = reloader(&f, dir.path(), true);
    write_set(dir.path(), &ia, &ra, &[&ra]);
    assert_eq!(forced.reload(), Outcome::Swapped { bundle_changed: true });
}

#[test]
fn a_set_that_is_half_written_is_refused_then_taken_when_complete() {
    let t0 = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let ra = root("Root A", t0);
    let i1 = new_intermediate(&opts("Intermediate CA - A1", Duration::from_secs(86400), Some("a1")), &signer(&ra), t0)
        .unwrap();
    let i2 = new_intermediate(&opts("Intermediate CA - A2", Duration::from_secs(86400), Some("a2")), &signer(&ra), t0)
        .unwrap();
    write_set(dir.path(), &i1, &ra, &[&ra]);
    let f = fixture(dir.path(), t0);
    let mut r = reloader(&f, dir.path(), false);
    // New certificate, old key: a mixed set must never sign.
    std::fs::write(dir.path().join("ca-cert.pem"), cert_to_pem(&i2.cert)).unwrap();
    match r.reload() {
        Outcome::Refused(msg) => assert!(msg.contains("ca-key.pem") && msg.contains("does not match"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(f.active.load().material.signer().cert(), &i1.cert);
    write_set(dir.path(), &i2, &ra, &[&ra]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: false });
    assert_eq!(f.active.load().material.signer().cert(), &i2.cert);
}

#[test]
fn a_signer_under_a_new_root_waits_for_agents_or_the_delay() {
    use meshca_ca::rotation::{ActivationCause, RotationOptions};
    use meshca_ca::swap::Swapper;
    let t0 = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let (ra, rb) = (root("Root A", t0), root("Root B", t0));
    let day = Duration::from_secs(86400);
    let ia = new_intermediate(&opts("Intermediate CA - A1", day, Some("a1")), &signer(&ra), t0).unwrap();
    let ib = new_intermediate(&opts("Intermediate CA - B1", day, Some("b1")), &signer(&rb), t0).unwrap();
    let ib2 = new_intermediate(&opts("Intermediate CA - B2", day, Some("b2")), &signer(&rb), t0).unwrap();
    write_set(dir.path(), &ia, &ra, &[&ra]);
    let f = fixture(dir.path(), t0);
    let staging = &f.active.staging;
    // The default delay is the longest lifetime issued so far, capped at the max TTL.
    staging.configure(RotationOptions { propagation_delay: None, max_ttl: Duration::from_secs(7200) });
    staging.note_issued(Duration::from_secs(3600));
    assert_eq!(staging.propagation_delay(), Duration::from_secs(3600));
    staging.note_issued(Duration::from_secs(90 * 86400));
    assert_eq!(staging.propagation_delay(), Duration::from_secs(7200), "capped at the max TTL");
    staging.configure(RotationOptions { propagation_delay: Some(Duration::from_secs(3600)), max_ttl: day });
    let swapper = Swapper {
        active: f.active.clone(),
        metrics: f.metrics.clone(),
        clock: f.clock.clone(),
        trust_domain: "cluster.local".into(),
        allow_root_replace: false,
    };
    let mut r = reloader(&f, dir.path(), false);

    // One step: B1 with A+B. A+B is published with A1 still signing; B1 is prepared.
    write_set(dir.path(), &ib, &rb, &[&ra, &rb]);
    assert_eq!(r.reload(), Outcome::Prepared);
    let snap = f.active.load();
    assert_eq!(snap.material.signer().cert(), &ia.cert, "A1 keeps signing");
    assert_eq!(snap.material.roots().len(), 2, "A+B is served at once");
    assert_eq!(r.reload(), Outcome::Unchanged, "the same files again change nothing");
    assert!(staging.status().is_some());

    // Not yet: half the delay, and of two agents only one holds the new bundle.
    let served = meshca_pki::inspect::sha256_hex(snap.material.roots_pem().as_bytes());
    let agents = staging.agents.clone();
    let (x, y) = (
        agents.register("spiffe://cluster.local/ns/a/sa/x".into(), "p1".into(), t0).unwrap(),
        agents.register("spiffe://cluster.local/ns/a/sa/y".into(), "p2".into(), t0).unwrap(),
    );
    agents.report(x, &served);
    f.clock.advance(Duration::from_secs(1800));
    assert_eq!(swapper.activate_ready(false), None);
    assert_eq!(staging.status().unwrap().agents_confirmed, 1);

    // Both agents hold it: B1 becomes active before the delay.
    agents.report(y, &served);
    assert_eq!(swapper.activate_ready(false), Some(ActivationCause::AgentsConfirmed));
    assert_eq!(f.active.load().material.signer().cert(), &ib.cert);
    assert!(staging.status().is_none());

    // B is settled now: B2 under B signs at once.
    write_set(dir.path(), &ib2, &rb, &[&ra, &rb]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: false });

    // Back to A1 with A+B (A is settled): at once. Then a fresh root C waits for the delay (no agent confirms C).
    write_set(dir.path(), &ia, &ra, &[&ra, &rb]);
    assert_eq!(r.reload(), Outcome::Swapped { bundle_changed: false });
    let rc = root("Root C", t0);
    let ic = new_intermediate(&opts("Intermediate CA - C1", day, Some("c1")), &signer(&rc), t0).unwrap();
    write_set(dir.path(), &ic, &rc, &[&ra, &rc]);
    assert_eq!(r.reload(), Outcome::Prepared);
    agents.report(x, "stale");
    f.clock.advance(Duration::from_secs(3599));
    assert_eq!(swapper.activate_ready(false), None);
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(swapper.activate_ready(false), Some(ActivationCause::DelayElapsed));
    assert_eq!(f.active.load().material.signer().cert(), &ic.cert);
    assert_eq!(f.metrics.reload_failures.load(Ordering::Relaxed), 0);
}
