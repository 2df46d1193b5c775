//! Results: one row per (scenario, key type, system), the crypto floors, the
//! ratios the targets are stated in, as markdown and JSON.

use crate::floor::Floor;
use crate::load::RunResult;
use crate::procstat::Spent;
use meshca_pki::KeyKind;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// Steady state, 16 callers: server CPU per certificate over (floor + token verify).
pub fn target_steady_over_floor_jwt(key: KeyKind) -> f64 {
    if key == KeyKind::Rsa2048 {
        1.2
    } else {
        1.3
    }
}
/// One request in flight per connection: server CPU per certificate over (floor + token verify).
pub const TARGET_PER_CONN_OVER_FLOOR_JWT: f64 = 1.5;
/// Connection storm: p99 over the physical bound ((handshake + floor + token) × requests / cores).
pub const TARGET_CONN_STORM_OVER_BOUND: f64 = 1.5;
pub const TARGET_THROUGHPUT_OVER_CFSSL: f64 = 1.5;
pub const TARGET_STORM_P99_MS: f64 = 2000.0;
/// What "bounded memory" is taken to mean for the storm: the server's peak RSS
/// while 10,000 requests are in flight stays under this.
pub const TARGET_STORM_PEAK_RSS_MIB: f64 = 256.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    Storm,
    /// Established connections, one request in flight on each.
    PerConnection,
    /// Every request on its own new TLS connection, all at once.
    ConnStorm,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Storm => "storm",
            Scenario::PerConnection => "per-connection",
            Scenario::ConnStorm => "connection-storm",
        }
    }
}

pub struct Row {
    pub scenario: Scenario,
    pub key: KeyKind,
    pub system: &'static str,
    pub concurrency: usize,
    pub connections: usize,
    pub result: RunResult,
    pub spent: Spent,
    pub peak_rss_kib: Option<u64>,
}

impl Row {
    pub fn cpu_us_per_cert(&self) -> f64 {
        self.spent.server * 1e6 / self.result.ok.max(1) as f64
    }

    fn client_us_per_req(&self) -> f64 {
        self.spent.client * 1e6 / (self.result.ok + self.result.errors).max(1) as f64
    }

    /// Cores used by other processes during the run (they compete with the server).
    fn other_cores(&self) -> f64 {
        self.spent.other / self.result.elapsed.as_secs_f64().max(1e-9)
    }

    fn rss_mib(&self) -> Option<f64> {
        self.peak_rss_kib.map(|k| k as f64 / 1024.0)
    }

    fn json(&self, floor: Option<&Floor>) -> Value {
        let r = &self.result;
        json!({
            "scenario": self.scenario.as_str(),
            "key": self.key.as_str(),
            "system": self.system,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "requests": r.ok + r.errors,
            "ok": r.ok,
            "errors": r.errors,
            "error_samples": r.error_samples,
            "elapsed_s": round(r.elapsed.as_secs_f64(), 3),
            "throughput_per_s": round(r.throughput(), 1),
            "latency_ms": {
                "p50": round(r.quantile_ms(0.5), 3),
                "p90": round(r.quantile_ms(0.9), 3),
                "p99": round(r.quantile_ms(0.99), 3),
                "max": round(r.quantile_ms(1.0), 3),
            },
            "server_cpu_s": round(self.spent.server, 3),
            "client_cpu_s": round(self.spent.client, 3),
            "other_processes_cpu_cores": round(self.other_cores(), 2),
            "server_cpu_us_per_cert": round(self.cpu_us_per_cert(), 1),
            "server_kernel_cpu_us_per_cert": round(self.spent.server_sys * 1e6 / r.ok.max(1) as f64, 1),
            "server_cpu_over_floor": floor.map(|f| round(self.cpu_us_per_cert() / f.total_us(), 2)),
            "server_cpu_over_floor_with_jwt": floor.map(|f| round(self.cpu_us_per_cert() / f.with_jwt_us(), 2)),
            "client_cpu_us_per_request": round(self.client_us_per_req(), 1),
            "server_peak_rss_kib": self.peak_rss_kib,
        })
    }
}

fn round(x: f64, digits: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let m = 10f64.powi(digits);
    json!((x * m).round() / m)
}

pub struct Check {
    pub name: String,
    pub value: f64,
    pub goal: String,
    pub met: bool,
}

pub struct Report {
    pub meta: Value,
    pub floors: Vec<(KeyKind, Floor)>,
    pub rows: Vec<Row>,
    /// meshca's server CPU per new TLS connection (µs), per key type.
    pub handshakes: Vec<(KeyKind, f64)>,
}

impl Report {
    fn floor(&self, key: KeyKind) -> Option<&Floor> {
        self.floors.iter().find(|(k, _)| *k == key).map(|(_, f)| f)
    }

    fn handshake_us(&self, key: KeyKind) -> Option<f64> {
        self.handshakes.iter().find(|(k, _)| *k == key).map(|(_, h)| *h)
    }

    fn cores(&self) -> f64 {
        self.meta["cores"].as_f64().unwrap_or(1.0).max(1.0)
    }

    /// The connection storm's physical bound in ms: every request's new
    /// connection, CSR verify, certificate sign and token verify, spread over every core.
    pub fn conn_storm_bound_ms(&self, key: KeyKind, requests: u64) -> Option<f64> {
        let per = self.handshake_us(key)? + self.floor(key)?.with_jwt_us();
        Some(per * requests as f64 / self.cores() / 1000.0)
    }

    fn row(&self, s: Scenario, key: KeyKind, system: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == s && r.key == key && r.system == system)
    }

    fn keys(&self) -> Vec<KeyKind> {
        let mut keys: Vec<KeyKind> = self.floors.iter().map(|(k, _)| *k).collect();
        keys.dedup();
        keys
    }

    /// The targets, for each key type that has the rows they need.
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        for key in self.keys() {
            let k = key.as_str();
            let m = self.row(Scenario::Steady, key, "meshca");
            if let (Some(m), Some(f)) = (m, self.floor(key)) {
                let v = m.cpu_us_per_cert() / f.with_jwt_us();
                let t = target_steady_over_floor_jwt(key);
                out.push(Check {
                    name: format!("{k} steady: meshca CPU per cert / (floor + token verify)"),
                    value: v,
                    goal: format!("<= {t}"),
                    met: v <= t,
                });
            }
            let pc = self.row(Scenario::PerConnection, key, "meshca");
            if let (Some(p), Some(f)) = (pc, self.floor(key)) {
                let v = p.cpu_us_per_cert() / f.with_jwt_us();
                out.push(Check {
                    name: format!(
                        "{k} per-connection ({} conns): meshca CPU per cert / (floor + token)",
                        p.connections
                    ),
                    value: v,
                    goal: format!("<= {TARGET_PER_CONN_OVER_FLOOR_JWT}"),
                    met: v <= TARGET_PER_CONN_OVER_FLOOR_JWT,
                });
            }
            if let Some(c) = self.row(Scenario::ConnStorm, key, "meshca") {
                let n = c.result.ok + c.result.errors;
                let e = c.result.errors as f64;
                out.push(Check {
                    name: format!("{k} connection storm ({n}): meshca errors"),
                    value: e,
                    goal: "0".into(),
                    met: e == 0.0,
                });
                if let Some(bound) = self.conn_storm_bound_ms(key, n) {
                    let v = c.result.quantile_ms(0.99) / bound;
                    out.push(Check {
                        name: format!("{k} connection storm: meshca p99 / physical bound ({bound:.0} ms)"),
                        value: v,
                        goal: format!("<= {TARGET_CONN_STORM_OVER_BOUND}"),
                        met: v <= TARGET_CONN_STORM_OVER_BOUND,
                    });
                }
            }
            if let (Some(m), Some(c)) = (m, self.row(Scenario::Steady, key, "cfssl")) {
                let v = m.result.throughput() / c.result.throughput();
                out.push(Check {
                    name: format!("{k} steady: meshca / cfssl throughput"),
                    value: v,
                    goal: format!(">= {TARGET_THROUGHPUT_OVER_CFSSL}"),
                    met: v >= TARGET_THROUGHPUT_OVER_CFSSL,
                });
            }
            if let Some(s) = self.row(Scenario::Storm, key, "meshca") {
                let p99 = s.result.quantile_ms(0.99);
                let n = s.result.ok + s.result.errors;
                let goal = format!("<= {TARGET_STORM_P99_MS} ms");
                out.push(Check {
                    name: format!("{k} storm ({n}): meshca p99 ms"),
                    value: p99,
                    goal,
                    met: p99 <= 2000.0,
                });
                let e = s.result.errors as f64;
                out.push(Check {
                    name: format!("{k} storm: meshca errors"),
                    value: e,
                    goal: "0".into(),
                    met: e == 0.0,
                });
                if let Some(mib) = s.rss_mib() {
                    out.push(Check {
                        name: format!("{k} storm: meshca peak RSS MiB"),
                        value: mib,
                        goal: format!("<= {TARGET_STORM_PEAK_RSS_MIB}"),
                        met: mib <= TARGET_STORM_PEAK_RSS_MIB,
                    });
                }
            }
        }
        out
    }

    /// Context for the targets, not targets: the client shares the cores, so
    /// the ratio of server CPU per certificate compares the servers alone.
    fn info(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for key in self.keys() {
            let m = self.row(Scenario::Steady, key, "meshca");
            for peer in ["cfssl", "openbao"] {
                if let (Some(m), Some(p)) = (m, self.row(Scenario::Steady, key, peer)) {
                    let name = format!("{key} steady: {peer} server CPU per cert / meshca's");
                    out.push((name, p.cpu_us_per_cert() / m.cpu_us_per_cert()));
                }
            }
            if let (Some(m), Some(f)) = (m, self.floor(key)) {
                out.push((format!("{key} steady: meshca CPU per cert / floor (no token)"), {
                    m.cpu_us_per_cert() / f.total_us()
                }));
            }
            if let Some(h) = self.handshake_us(key) {
                out.push((format!("{key}: meshca server CPU per new TLS connection, µs"), h));
            }
            if let Some(c) = self.row(Scenario::ConnStorm, key, "meshca") {
                if let Some(mib) = c.rss_mib() {
                    out.push((format!("{key} connection storm: meshca peak RSS MiB"), mib));
                }
                out.push((format!("{key} connection storm: meshca p99 ms"), c.result.quantile_ms(0.99)));
                // The load generator opens its TLS connections on the same cores: the CPU both spent, spread
                // over every core, is what the machine could not have done faster.
                let shared_ms = (c.spent.server + c.spent.client) / self.cores() * 1000.0;
                out.push((
                    format!("{key} connection storm: meshca p99 / ((server + load generator CPU) / cores)"),
                    c.result.quantile_ms(0.99) / shared_ms.max(1e-9),
                ));
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let floors: serde_json::Map<String, Value> = self
            .floors
            .iter()
            .map(|(k, f)| {
                let v = json!({
                    "csr_verify_us": round(f.verify_us, 2),
                    "cert_sign_us": round(f.sign_us, 2),
                    "total_us": round(f.total_us(), 2),
                    "es256_token_verify_us": round(f.jwt_verify_us, 2),
                    "total_with_token_verify_us": round(f.with_jwt_us(), 2),
                    "meshca_new_tls_connection_us": self.handshake_us(*k).map(|h| round(h, 1)),
                });
                (k.as_str().to_string(), v)
            })
            .collect();
        let rows: Vec<Value> = self.rows.iter().map(|r| r.json(self.floor(r.key))).collect();
        let checks: Vec<Value> = self
            .checks()
            .iter()
            .map(|c| json!({ "name": c.name, "value": round(c.value, 3), "goal": c.goal, "met": c.met }))
            .collect();
        let info: serde_json::Map<String, Value> = self.info().into_iter().map(|(k, v)| (k, round(v, 3))).collect();
        json!({ "meta": self.meta, "floor": floors, "results": rows, "targets": checks, "context": info })
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.meta;
        let _ = writeln!(
            s,
            "## meshca benchmark ({} mode, {} cores, {})\n",
            m["mode"].as_str().unwrap_or("?"),
            m["cores"],
            m["date"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            s,
            "Crypto floor: one CSR verify + one certificate sign, aws-lc-rs, one core (CPU time). \
             JWT authentication adds one ES256 verify per request, shown apart.\n"
        );
        let _ = writeln!(
            s,
            "| CA + CSR key | CSR verify µs | cert sign µs | floor µs/cert | + ES256 token verify µs | floor + token µs \
             | meshca new TLS connection µs |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (k, f) in &self.floors {
            let _ = writeln!(
                s,
                "| {k} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                f.verify_us,
                f.sign_us,
                f.total_us(),
                f.jwt_verify_us,
                f.with_jwt_us(),
                self.handshake_us(*k).map_or("-".into(), |h| format!("{h:.0}")),
            );
        }
        for scenario in [Scenario::Steady, Scenario::PerConnection, Scenario::Storm, Scenario::ConnStorm] {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.scenario == scenario).collect();
            if rows.is_empty() {
                continue;
            }
            let title = match scenario {
                Scenario::Steady => {
                    "Steady state: closed loop of N callers (connections: meshca HTTP/2 channels \
                                     over TLS, peers HTTP/1.1 keep-alive)"
                }
                Scenario::Storm => {
                    "Restart storm: every request at once; latency counts from the start of the \
                                    storm (connecting and queueing included)"
                }
                Scenario::PerConnection => {
                    "One request in flight per connection (how agents call): N established TLS \
                     connections, each its own HTTP/2 connection, distinct token per request"
                }
                Scenario::ConnStorm => {
                    "Connection storm: N new TLS connections at once, one CSR each; latency from the start \
                     (handshake and queueing included)"
                }
            };
            let _ = writeln!(s, "\n{title}.\n");
            let _ = writeln!(
                s,
                "| key | system | callers/conns | requests | time s | certs/s | p50 ms | p90 ms | p99 ms | max ms \
                 | errors | server CPU µs/cert | × floor | × (floor + token) | client CPU µs/req | server peak RSS MiB | other load (cores) |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for r in rows {
                let x = &r.result;
                let over =
                    self.floor(r.key).map_or("-".into(), |f| format!("{:.2}", r.cpu_us_per_cert() / f.total_us()));
                let over_jwt =
                    self.floor(r.key).map_or("-".into(), |f| format!("{:.2}", r.cpu_us_per_cert() / f.with_jwt_us()));
                let _ = writeln!(
                    s,
                    "| {} | {} | {}/{} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {} | {} | {:.0} | {} | {:.2} |",
                    r.key,
                    r.system,
                    r.concurrency,
                    r.connections,
                    x.ok + x.errors,
                    x.elapsed.as_secs_f64(),
                    x.throughput(),
                    x.quantile_ms(0.5),
                    x.quantile_ms(0.9),
                    x.quantile_ms(0.99),
                    x.quantile_ms(1.0),
                    x.errors,
                    r.cpu_us_per_cert(),
                    over,
                    over_jwt,
                    r.client_us_per_req(),
                    r.rss_mib().map_or("-".into(), |m| format!("{m:.1}")),
                    r.other_cores(),
                );
            }
        }
        let errors: Vec<String> = self
            .rows
            .iter()
            .filter(|r| !r.result.error_samples.is_empty())
            .map(|r| {
                format!("- {} {} {}: {}", r.scenario.as_str(), r.key, r.system, r.result.error_samples.join(" | "))
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(s, "\nErrors seen:\n\n{}", errors.join("\n"));
        }
        let checks = self.checks();
        if !checks.is_empty() {
            let _ = writeln!(s, "\nTargets (meshca with TLS and JWT authentication):\n");
            let _ = writeln!(s, "| target | value | goal | met |");
            let _ = writeln!(s, "|---|---:|---|---|");
            for c in checks {
                let met = if c.met { "yes" } else { "**no**" };
                let _ = writeln!(s, "| {} | {:.2} | {} | {met} |", c.name, c.value, c.goal);
            }
        }
        let info = self.info();
        if !info.is_empty() {
            let _ =
                writeln!(s, "\nContext (server CPU only, independent of the load generator's share of the cores):\n");
            for (name, v) in info {
                let _ = writeln!(s, "- {name}: {v:.2}");
            }
        }
        s
    }
}
