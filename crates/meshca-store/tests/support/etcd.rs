//! A real 3-member etcd cluster on free loopback ports in a temp dir, for
//! tests. The binary comes from `MESHCA_ETCD` (set by scripts/test.sh) or
//! `etcd` on PATH; a missing etcd is a loud failure naming the install step.
//! Members are killed when the cluster is dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "install Debian's etcd: `apt-get install -y etcd-server etcd-client` (scripts/test.sh does it) \
                       or set MESHCA_ETCD to an etcd 3.4+ binary";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The etcd binary, or a panic naming how to install it.
pub fn etcd_bin() -> PathBuf {
    let bin = match std::env::var_os("MESHCA_ETCD") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => which("etcd").unwrap_or_else(|| panic!("etcd is not installed: {INSTALL}")),
    };
    assert!(bin.is_file(), "MESHCA_ETCD={} does not exist: {INSTALL}", bin.display());
    bin
}

/// etcdctl next to etcd, or on PATH.
pub fn etcdctl_bin() -> PathBuf {
    let sibling = etcd_bin().with_file_name("etcdctl");
    if sibling.is_file() {
        return sibling;
    }
    which("etcdctl").unwrap_or_else(|| panic!("etcdctl is not installed: {INSTALL}"))
}

struct Member {
    name: String,
    client_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
    bin: PathBuf,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners at once so the ports are distinct.
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    ls.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

impl EtcdCluster {
    /// Start `n` members and wait until they have elected a leader. Ports are
    /// picked free and released before etcd binds them, so another process can
    /// take one in between: then the cluster is started again on new ports.
    pub async fn start(n: usize) -> Self {
        for _ in 0..3 {
            let mut c = Self::launch(n);
            if c.wait_leader_or_exit(Duration::from_secs(30)).await {
                return c;
            }
            let logs: String = (0..n).map(|i| c.logs(i)).collect();
            assert!(logs.contains("address already in use"), "etcd cluster did not start; logs:\n{logs}");
        }
        panic!("etcd cluster could not get free ports in 3 attempts")
    }

    fn launch(n: usize) -> Self {
        let bin = etcd_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(2 * n);
        let token = format!("meshca-test-{}", ports[0]);
        let cluster: Vec<String> = (0..n).map(|i| format!("m{i}=http://127.0.0.1:{}", ports[2 * i + 1])).collect();
        let members = (0..n)
            .map(|i| {
                let (client, peer) = (ports[2 * i], ports[2 * i + 1]);
                let name = format!("m{i}");
                let data_dir = dir.path().join(&name);
                let args = vec![
                    format!("--name={name}"),
                    format!("--data-dir={}", data_dir.display()),
                    format!("--listen-client-urls=http://127.0.0.1:{client}"),
                    format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                    format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                    format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                    format!("--initial-cluster={}", cluster.join(",")),
                    "--initial-cluster-state=new".into(),
                    format!("--initial-cluster-token={token}"),
                    "--logger=zap".into(),
                    "--log-outputs=stderr".into(),
                ];
                Member {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: client,
                    data_dir,
                    args,
                    child: None,
                }
            })
            .collect();
        let mut c = Self { _dir: dir, members, bin };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// True once a leader exists; false if a member exited first.
    async fn wait_leader_or_exit(&mut self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        loop {
            if self.leader().await.is_some() {
                return true;
            }
            for m in &mut self.members {
                if let Some(Ok(Some(_))) = m.child.as_mut().map(|c| c.try_wait()) {
                    return false;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd cluster has no leader after {max:?}; member 0 log:\n{}",
                self.logs(0)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("etcd log file");
        let child = Command::new(&self.bin)
            .args(&m.args)
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}: {INSTALL}", self.bin.display()));
        m.child = Some(child);
    }

    /// `127.0.0.1:port` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `etcd://...` for `meshca serve --store`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Kill member `i` (SIGKILL, as a crash).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    pub fn logs(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// Index of the member that is leader, asked through the maintenance status API; `None` without one.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect([format!("http://127.0.0.1:{}", m.client_port)], None),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await else { continue };
            let me = st.header().map(|h| h.member_id()).unwrap_or(0);
            if st.leader() != 0 && st.leader() == me {
                return Some(i);
            }
        }
        None
    }

    /// Wait until a leader exists (up to `max`).
    pub async fn wait_leader(&self, max: Duration) -> usize {
        let deadline = Instant::now() + max;
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "etcd cluster has no leader after {max:?}; member 0 log:\n{}",
                self.logs(0)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Run etcdctl (API v3) against the cluster; panics on failure.
    pub fn etcdctl(&self, args: &[&str]) -> Vec<u8> {
        self.try_etcdctl(args).unwrap_or_else(|e| panic!("etcdctl {args:?} failed: {e}"))
    }

    /// Run etcdctl (API v3); stdout, or stderr as the error.
    pub fn try_etcdctl(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(args)
            .output()
            .expect("run etcdctl");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}
