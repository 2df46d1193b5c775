//! Helpers shared by the tests that run the real Envoy 1.40.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A JWKS with one P-256 public key (kid `k1`), for jwt_authn configs.
pub const TEST_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"YJiG7cBHeOCU3DzuPiUMyWXVNxp8RCtbbSx2DLxqKT4","y":"VXSMS6ftmXgv-JQB8nbEXwVk_FLX35dREsxuKIrxI10"}]}"#;

pub use meshca_testkit::envoy::bin as envoy_bin;

/// Writes `config` to `dir/envoy.json` and runs `envoy --mode validate` on it; panics with
/// Envoy's error when it is rejected.
pub fn validate(dir: &Path, config: &Value) {
    let path = dir.join("envoy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).expect("json")).expect("write bootstrap");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy --mode validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "envoy rejected the bootstrap:\nstdout: {stdout}\nstderr: {stderr}\n{config:#}");
    assert!(stdout.contains("OK"), "envoy --mode validate should print OK: {stdout} {stderr}");
}

/// A running Envoy, killed when dropped (however the test ends).
pub struct Envoy {
    child: Child,
    pub log: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `config` (written to `dir/envoy.json`), logging to `dir/envoy.log`.
    pub fn start(dir: &Path, config: &Value) -> Envoy {
        let path = dir.join("envoy.json");
        std::fs::write(&path, config.to_string()).expect("write bootstrap");
        let log = dir.join("envoy.log");
        let child = Command::new(envoy_bin())
            .args(["--disable-hot-restart", "--log-level", "info", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start envoy");
        Envoy { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `f` on every JSON value under `v` (depth first), mutably.
pub fn walk_mut(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    f(v);
    match v {
        Value::Object(m) => m.values_mut().for_each(|x| walk_mut(x, f)),
        Value::Array(a) => a.iter_mut().for_each(|x| walk_mut(x, f)),
        _ => {}
    }
}

/// Replaces every ECDS slot's `default_config` with the resource of the same name, as if the
/// agent had pushed them; returns how many slots were filled.
pub fn install_resources(config: &mut Value, resources: &[meshca_envoy::Resource]) -> usize {
    let mut replaced = 0;
    walk_mut(config, &mut |v| {
        let Some(name) = v.get("name").and_then(Value::as_str).map(str::to_string) else { return };
        if let Some(cd) = v.get_mut("config_discovery") {
            let r = resources.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no resource for slot {name}"));
            cd["default_config"] = r.json.clone();
            replaced += 1;
        }
    });
    replaced
}

/// An application on a free loopback port that counts the bytes it receives, answers an HTTP
/// request with `200 ok` and echoes anything else. On a TCP port Envoy's `tcp_proxy` connects to it
/// before the network RBAC decides (on the first downstream data), so bytes, not connections,
/// tell whether traffic got through.
pub fn app() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    count.fetch_add(n, Ordering::SeqCst);
                    let reply: &[u8] = if buf.starts_with(b"GET ") || buf.starts_with(b"POST ") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        &buf[..n]
                    };
                    if conn.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, received)
}

/// Connects to `127.0.0.1:port` (retrying until `deadline` while Envoy starts), sends `payload`,
/// and returns what came back before the connection closed or 10 s passed.
pub fn exchange(port: u16, payload: &[u8], deadline: Instant) -> Vec<u8> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("Envoy never listened on {addr}: {e}"),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = stream.write_all(payload);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Stop at EOF, reset, timeout, or once an echo of the payload (non-HTTP) has come back.
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
        if !payload.starts_with(b"GET ") && out.len() >= payload.len() {
            break;
        }
    }
    out
}
