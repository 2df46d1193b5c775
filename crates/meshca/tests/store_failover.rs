//! Failover under load: three replicas on a 3-member etcd cluster, a CSR
//! client at a steady rate spread over the replicas, and two agents renewing
//! 4-second certificates with `--ca-addr a,b,c`. One etcd member is killed,
//! then the etcd leader (the store has lost its majority), then one meshca
//! replica; then all come back. Agents retry, so none may ever be left
//! without a valid certificate; the figures (CSR failures, longest gaps,
//! recovery time) are printed as one `STORE_FAILOVER` line.

mod agent_support;
mod store_support;

use agent_support::{metric as metric_in, Agent};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store_support::load::CsrLoad;
use store_support::*;

const TD: &str = "failover.example";

/// What the test saw of the agents' certificates, sampled every 100 ms on a
/// thread of its own (so the test's own waits do not hide a gap).
#[derive(Default)]
struct Seen {
    last_serial: Vec<String>,
    last_change: Vec<Instant>,
    longest_gap: Duration,
    renewals: Vec<u64>,
    lapses: Vec<String>,
}

struct AgentWatch {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl AgentWatch {
    fn start(chains: Vec<PathBuf>) -> Self {
        let n = chains.len();
        let seen = Arc::new(Mutex::new(Seen {
            last_serial: vec![String::new(); n],
            last_change: vec![Instant::now(); n],
            renewals: vec![0; n],
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                sample(&chains, &mut s.lock().unwrap());
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { seen, stop, handle }
    }

    fn renewals(&self) -> Vec<u64> {
        self.seen.lock().unwrap().renewals.clone()
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn sample(chains: &[PathBuf], seen: &mut Seen) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    for (i, path) in chains.iter().enumerate() {
        let chain = std::fs::read_to_string(path).unwrap_or_default();
        let Ok(ders) = meshca_pki::pem::parse_certs(chain.as_bytes()) else { continue };
        let Some(leaf) = ders.first() else { continue };
        let info = meshca_pki::inspect::cert_info(leaf).unwrap();
        if info.not_after_unix < now {
            seen.lapses.push(format!("agent {i}: certificate {} expired at {}", info.serial, info.not_after));
        }
        if info.serial != seen.last_serial[i] {
            if !seen.last_serial[i].is_empty() {
                seen.longest_gap = seen.longest_gap.max(seen.last_change[i].elapsed());
                seen.renewals[i] += 1;
            }
            seen.last_serial[i] = info.serial;
            seen.last_change[i] = Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_csr_clients_ride_out_etcd_and_replica_failures() {
    let mut cluster = etcd::EtcdCluster::start(3).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let key = key_file(w, "store.key", 5);
    let mut rs = three_replicas(w, &cluster.store_url(), &key, TD, &[], None);
    wait_for("three healthy registered replicas", Duration::from_secs(20), || {
        rs.iter()
            .all(|r| {
                store_status(r)["healthy"] == true && store_status(r)["replicas"].as_array().map_or(0, |a| a.len()) == 3
            })
            .then_some(())
    });
    let root = rs[0].root_pem();
    let ca_root = w.join("ca-root.pem");
    std::fs::write(&ca_root, &root).unwrap();
    // app1 starts on r0 (the replica that will be killed), app2 on r1.
    let order = |o: [usize; 3]| o.iter().map(|i| rs[*i].grpc.to_string()).collect::<Vec<_>>().join(",");
    let agents = [
        Agent::start_at(w, "app1", &order([0, 1, 2]), &ca_root, &rs[0].token("shop", "cart"), &["--ttl", "4s"]),
        Agent::start_at(w, "app2", &order([1, 2, 0]), &ca_root, &rs[0].token("shop", "pay"), &["--ttl", "4s"]),
    ];
    let load = CsrLoad::start(
        rs.iter().map(|r| r.grpc).collect(),
        root,
        rs[0].token("shop", "load"),
        format!("spiffe://{TD}/ns/shop/sa/load"),
        10,
    );
    let aw = AgentWatch::start(agents.iter().map(|a| a.out.join("cert-chain.pem")).collect());
    std::thread::sleep(Duration::from_secs(4));

    // An etcd follower dies, then the leader (the majority is gone), then a meshca replica.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    cluster.stop(follower);
    std::thread::sleep(Duration::from_secs(6));
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    cluster.stop(leader);
    std::thread::sleep(Duration::from_secs(6));
    rs[0].stop();
    std::thread::sleep(Duration::from_secs(6));

    // Everything comes back.
    let back = Instant::now();
    cluster.restart(follower);
    cluster.restart(leader);
    rs[0].restart().expect("replica r0 restarts");
    let renewed_before = aw.renewals();
    let mut recovered = None;
    while recovered.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        let store_ok = rs.iter().all(|r| {
            let st = store_status(r);
            st["healthy"] == true && st["replicas"].as_array().map_or(0, |a| a.len()) == 3
        });
        let agents_ok = aw.renewals().iter().zip(&renewed_before).all(|(a, b)| a > b);
        if store_ok && agents_ok {
            recovered = Some(back.elapsed());
        }
        assert!(back.elapsed() < Duration::from_secs(45), "no full recovery 45 s after the failures ended");
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    let aw = aw.finish();
    let failed_attempts: f64 =
        agents.iter().map(|a| metric_in(&a.metrics(), "meshca_agent_renewal_failures_total")).sum();
    let renewals: f64 = agents.iter().map(|a| metric_in(&a.metrics(), "meshca_agent_renewals_total")).sum();
    eprintln!(
        "STORE_FAILOVER csr_ok={} csr_failed={} csr_longest_gap_ms={} agent_renewals={renewals} \
         agent_failed_attempts_retried={failed_attempts} agent_longest_gap_ms={} agent_cert_lapses={} recovery_ms={}",
        report.ok,
        report.failed,
        report.longest_gap.as_millis(),
        aw.longest_gap.as_millis(),
        aw.lapses.len(),
        recovered.unwrap().as_millis()
    );
    if !report.errors.is_empty() {
        eprintln!("STORE_FAILOVER csr_errors={:?}", report.errors);
    }
    assert!(aw.lapses.is_empty(), "an agent was left without a valid certificate: {:?}", aw.lapses);
    assert!(aw.renewals.iter().all(|n| *n >= 5), "agents kept renewing: {:?}", aw.renewals);
    assert!(report.ok > 100, "the CSR load ran: {report:?}");
    // The CSR client does not retry: only requests sent to the killed replica may fail, never
    // one to a replica that merely lost its store.
    let elsewhere: u64 = report.failed_by.iter().filter(|(a, _)| **a != rs[0].grpc).map(|(_, n)| n).sum();
    assert_eq!(elsewhere, 0, "CSR failures at replicas that stayed up: {report:?}");
    // app1 moved off the killed replica to the next address.
    let log = agents[0].proc.logs();
    assert!(log.contains(&format!("ca={}", rs[1].grpc)), "app1 never failed over to r1:\n{log}");
    // The replica that came back serves the shared root and is registered again.
    assert_eq!(rs[0].root_pem(), rs[1].root_pem());
}

/// The peer port of every certificate issued to `identity` (audit `caller` is "addr credential identity").
fn caller_ports(s: &meshca_testkit::Server, identity: &str) -> std::collections::BTreeSet<String> {
    s.audit()
        .iter()
        .filter(|r| r["outcome"] == "issued" && r["identity"] == identity)
        .filter_map(|r| r["caller"].as_str()?.split(' ').next().map(str::to_string))
        .collect()
}

/// `--grpc-max-connection-age` (istiod's MaxConnectionAge): the server ends
/// long-lived connections, so after a replica returns load spreads again.
/// An agent's next request after the age goes over a new connection, and no
/// request fails for it; without the flag the agent keeps its one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_after_the_max_connection_age() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let start = |name: &str, extra: &[&str]| {
        let dir = w.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let opts =
            meshca_testkit::ServerOptions { args: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        meshca_testkit::Server::start(&bin(), &dir, opts).expect("server starts")
    };
    let aged = start("aged", &["--grpc-max-connection-age", "3s"]);
    let plain = start("plain", &[]);
    let agents: Vec<Agent> = [(&aged, "aged-agent"), (&plain, "plain-agent")]
        .iter()
        .map(|(s, name)| {
            let root = w.join(format!("{name}-root.pem"));
            std::fs::write(&root, s.root_pem()).unwrap();
            Agent::start(w, name, s, &root, &s.token("shop", "cart"), &["--ttl", "4s"])
        })
        .collect();
    let id = "spiffe://cluster.local/ns/shop/sa/cart";
    let issued = |s: &meshca_testkit::Server| s.audit().iter().filter(|r| r["identity"] == id).count();
    // The first requests may use a connection made before the agent learned the bundle: start after them.
    wait_for("two certificates for each agent", Duration::from_secs(30), || {
        (issued(&aged) >= 2 && issued(&plain) >= 2).then_some(())
    });
    let (aged0, plain0) = (caller_ports(&aged, id), caller_ports(&plain, id));
    let plain_before = issued(&plain);
    let t0 = std::time::Instant::now();
    let new_ports = wait_for("the aged server's agent on a new connection", Duration::from_secs(30), || {
        let n = caller_ports(&aged, id).difference(&aged0).count();
        (n >= 1 && t0.elapsed() >= Duration::from_secs(8)).then_some(n)
    });
    let plain_new = caller_ports(&plain, id).difference(&plain0).count();
    let plain_renewals = issued(&plain) - plain_before;
    eprintln!(
        "MAX_CONNECTION_AGE window_ms={} aged_new_connections={new_ports} plain_new_connections={plain_new} \
         plain_renewals={plain_renewals}",
        t0.elapsed().as_millis()
    );
    assert!(plain_renewals >= 2, "the control agent renewed in the window");
    assert_eq!(plain_new, 0, "without the flag the agent keeps its connection");
    assert!(aged.audit().iter().all(|r| r["outcome"] == "issued"), "no request refused across the reconnection");
    for a in &agents {
        assert_eq!(metric_in(&a.metrics(), "meshca_agent_renewal_failures_total"), 0.0, "{}", a.proc.logs());
    }
}
