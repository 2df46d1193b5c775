//! Live reload in a messy directory: the plug-in directory's parent holds a
//! file another program writes every 20 ms, and meshca's own debug log.
//! Swaps must still be picked up at once (the watch ignores what does not
//! concern the plug-in set and never waits more than its maximum delay), and
//! an idle server must not spin on its own log lines or its own reads.

mod rotation_support;

use meshca_testkit::{Server, ServerOptions};
use rotation_support::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A neighbour that rewrites `path` every `every` until dropped; counts its writes.
struct Busy {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(path: std::path::PathBuf, every: Duration) -> Self {
        let (stop, writes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, n) = (stop.clone(), writes.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::fs::write(&path, format!("tick {}\n", n.fetch_add(1, Ordering::Relaxed))).unwrap();
                std::thread::sleep(every);
            }
        });
        Self { stop, writes, thread: Some(thread) }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU time (user + system) of `pid` in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Time from each swap's final rename until `/status` shows the new signer.
async fn swaps(server: &Server, dir: &mut CaDir, sets: &[CaSet], n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let set = &sets[(i + 1) % sets.len()];
        let gen = server.status()["generation"].as_u64().unwrap();
        let written = dir.kube_write(&set.files());
        let want = meshca_pki::inspect::cert_info(&meshca_pki::pem::parse_certs(set.cert.as_bytes()).unwrap()[0])
            .unwrap()
            .sha256_fingerprint;
        let seen = meshca_testkit::http::poll_every(
            "the swap to be taken",
            Duration::from_secs(20),
            Duration::from_millis(5),
            || {
                let st = server.status();
                (st["generation"].as_u64().unwrap() > gen && st["signer"]["sha256"] == want).then(Instant::now)
            },
        )
        .await;
        out.push(seen.saturating_duration_since(written.final_end));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_are_taken_within_a_second_while_the_parent_directory_is_busy() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = make_root(w, "r");
    let sets: Vec<CaSet> = (1..=3).map(|i| make_inter(w, &root, &format!("i{i}"), "8000h")).collect();
    let etc = w.join("etc");
    let mut dir = CaDir::kube(&etc.join("cacerts"), &sets[0]);
    // Only the watch may pick swaps up: the poll is an hour away.
    let args = vec!["--reload-poll-interval".to_string(), "1h".to_string()];
    let server =
        Server::start(&bin(), w, ServerOptions { ca_dir: Some(etc.join("cacerts")), args, ..Default::default() })
            .unwrap();

    let quiet = swaps(&server, &mut dir, &sets, 20).await;
    let busy = Busy::start(etc.join("busy.txt"), Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(200));
    let loaded = swaps(&server, &mut dir, &sets, 20).await;
    let writes = busy.writes.load(Ordering::Relaxed);
    drop(busy);
    assert!(writes > 50, "the neighbour wrote {writes} times during the busy swaps");

    for (name, mut d) in [("quiet parent", quiet), ("parent written every 20 ms", loaded)] {
        d.sort();
        let (p50, p99, max) = (percentile(&d, 0.5), percentile(&d, 0.99), *d.last().unwrap());
        println!("figure: ROTATION_PROPAGATION {name}: swaps={} p50={p50:?} p99={p99:?} max={max:?}", d.len());
        assert!(p50 < Duration::from_secs(1), "{name}: median {p50:?}");
        // Starvation (the bug) means never: only the hour-long poll would catch it.
        assert!(max < Duration::from_secs(3), "{name}: slowest swap took {max:?}");
    }
    assert_eq!(metric(&server, "meshca_ca_reload_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_does_not_spin_on_its_own_log_next_to_the_plug_in_directory() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = make_root(w, "r");
    let set = make_inter(w, &root, "i1", "8000h");
    // The server's log (debug level) is written into w, the parent of w/cacerts.
    let ca = w.join("cacerts");
    let _dir = CaDir::kube(&ca, &set);
    let env = vec![("MESHCA_LOG".to_string(), "debug".to_string())];
    let server = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca), env, ..Default::default() }).unwrap();
    let pid = server.pid().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (log0, cpu0, t0) = (server.logs().len(), cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (log1, cpu1, secs) = (server.logs().len(), cpu_ticks(pid), t0.elapsed().as_secs_f64());
    let share = (cpu1 - cpu0) as f64 / 100.0 / secs;
    println!(
        "figure: IDLE_CPU {:.2}% of a core over {secs:.1}s, {} log bytes written while idle",
        share * 100.0,
        log1 - log0
    );
    assert!(share < 0.01, "an idle server used {:.2}% of a core", share * 100.0);
    assert!(log1 - log0 < 2_000, "idle server wrote {} log bytes:\n{}", log1 - log0, &server.logs()[log0..]);
    let checks = server.logs()[log0..].matches("reload check").count();
    assert_eq!(checks, 0, "no reload check without a change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_step_root_switch_is_staged_until_an_operator_forces_it() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root_a, root_b) = (make_root(w, "a"), make_root(w, "b"));
    let (a1, b1) = (make_inter(w, &root_a, "a1", "8000h"), make_inter(w, &root_b, "b1", "6000h"));
    let ab = make_bundle(&w.join("ab.pem"), &[&root_a.join("root-cert.pem"), &root_b.join("root-cert.pem")]);
    let ca = w.join("cacerts");
    let mut dir = CaDir::kube(&ca, &a1);
    let args = vec!["--root-propagation-delay".to_string(), "1h".to_string()];
    let server = Server::start(&bin(), w, ServerOptions { ca_dir: Some(ca), args, ..Default::default() }).unwrap();
    let token = server.token("default", "rot");
    let mut wl = Issuer::new(&server, &format!("{}{}", a1.root, b1.root), &token).await;
    let t = Duration::from_secs(20);

    // B1 and A+B in one swap: A+B is served at once, A1 keeps signing; no agent is connected to confirm.
    dir.kube_write(&b1.with_root(&ab).files());
    let (chain, _) = wl.issue_until("the A+B bundle served", t, |c| cert_count(c.last().unwrap()) == 2).await;
    assert_eq!(chain[1], a1.cert, "the current signer keeps signing while B1 is prepared");
    let st = server.status();
    let prepared = &st["rotation"]["prepared"];
    assert!(prepared["signer_subject"].as_str().unwrap().contains("b1"), "{st}");
    assert_eq!(prepared["agents_connected"], 0, "{st}");
    assert!(prepared["waiting_for"].as_str().unwrap().contains("0 of 0 connected agents"), "{st}");
    assert_eq!(st["source"], "plugged");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(wl.issue().await[1], a1.cert, "still A1 two seconds later: nothing confirmed, the delay is an hour");
    assert_eq!(metric(&server, "meshca_ca_root_prepared"), 1.0);

    // The operator forces the activation.
    let pid = server.pid().unwrap().to_string();
    let out = std::process::Command::new("kill").args(["-USR1", &pid]).output().expect("kill");
    assert!(out.status.success(), "{out:?}");
    let (chain, _) = wl.issue_until("a leaf from B1", t, |c| c[1] == b1.cert).await;
    assert_eq!(chain.last(), Some(&ab));
    verify_chain_against(&w.join("v"), &chain, &ab).unwrap();
    assert!(server.logs().contains("an operator forced it"), "{}", server.logs());
    assert_eq!(metric(&server, "meshca_ca_root_prepared"), 0.0);
    assert_eq!(metric(&server, "meshca_ca_root_activations_total"), 1.0);
    assert_eq!(metric(&server, "meshca_ca_reload_failures_total"), 0.0);
}
