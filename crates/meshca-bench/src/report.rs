//! Results: one row per (scenario, key type, system), the crypto floors, the
//! ratios the targets are stated in, as markdown and JSON.

use crate::floor::Floor;
use crate::load::RunResult;
use crate::procstat::Spent;
use meshca_pki::KeyKind;
use serde_json::{json, Value};
use std::fmt::Write as _;

pub const TARGET_CPU_OVER_FLOOR: f64 = 1.5;
pub const TARGET_THROUGHPUT_OVER_CFSSL: f64 = 2.0;
pub const TARGET_STORM_P99_MS: f64 = 2000.0;
/// What "bounded memory" is taken to mean for the storm: the server's peak RSS
/// while 10,000 requests are in flight stays under this.
pub const TARGET_STORM_PEAK_RSS_MIB: f64 = 256.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    Storm,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Storm => "storm",
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
}

impl Report {
    fn floor(&self, key: KeyKind) -> Option<&Floor> {
        self.floors.iter().find(|(k, _)| *k == key).map(|(_, f)| f)
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
                let v = m.cpu_us_per_cert() / f.total_us();
                out.push(Check {
                    name: format!("{k} steady: meshca CPU per cert / floor"),
                    value: v,
                    goal: format!("<= {TARGET_CPU_OVER_FLOOR}"),
                    met: v <= TARGET_CPU_OVER_FLOOR,
                });
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
                out.push((format!("{key} steady: meshca CPU per cert / (floor + token verify)"), {
                    m.cpu_us_per_cert() / f.with_jwt_us()
                }));
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
        let _ = writeln!(s, "| CA + CSR key | CSR verify µs | cert sign µs | floor µs/cert | + ES256 token verify µs | floor + token µs |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for (k, f) in &self.floors {
            let _ = writeln!(
                s,
                "| {k} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                f.verify_us,
                f.sign_us,
                f.total_us(),
                f.jwt_verify_us,
                f.with_jwt_us()
            );
        }
        for scenario in [Scenario::Steady, Scenario::Storm] {
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
            };
            let _ = writeln!(s, "\n{title}.\n");
            let _ = writeln!(
                s,
                "| key | system | callers/conns | requests | time s | certs/s | p50 ms | p90 ms | p99 ms | max ms \
                 | errors | server CPU µs/cert | × floor | client CPU µs/req | server peak RSS MiB | other load (cores) |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for r in rows {
                let x = &r.result;
                let over =
                    self.floor(r.key).map_or("-".into(), |f| format!("{:.2}", r.cpu_us_per_cert() / f.total_us()));
                let _ = writeln!(
                    s,
                    "| {} | {} | {}/{} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {} | {:.0} | {} | {:.2} |",
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
