//! Server-side cost, read from `/proc/<pid>`: CPU time (utime + stime of the
//! whole thread group) and the peak resident set (VmHWM).

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

/// stime (kernel time) of a process, in seconds.
pub fn sys_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_stat_fields(&text).with_context(|| format!("parsing {path}"))?.1)
}

/// utime + stime of this process (the load generator), in seconds.
pub fn self_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds_at("/proc/self/stat")
}

fn cpu_seconds_at(path: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).with_context(|| format!("parsing {path}"))
}

/// Fields 14 (utime) and 15 (stime) of a stat line; the command name (field 2)
/// may hold spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(text: &str) -> anyhow::Result<f64> {
    let (user, sys) = parse_stat_fields(text)?;
    Ok(user + sys)
}

/// (utime, stime) in seconds.
fn parse_stat_fields(text: &str) -> anyhow::Result<(f64, f64)> {
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("no ')' in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(fields.len() > 12, "short stat line");
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok((utime as f64 / TICKS_PER_SEC, stime as f64 / TICKS_PER_SEC))
}

/// VmHWM (peak resident set) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kib(&text, "VmHWM:").with_context(|| format!("no VmHWM in {path}"))
}

/// VmRSS (current resident set) of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kib(&text, "VmRSS:").with_context(|| format!("no VmRSS in {path}"))
}

fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Reset VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`), so the
/// next reading is the peak of the next phase only. Best effort: returns
/// false when the kernel or permissions refuse.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time this thread has run, in nanoseconds (`/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Busy CPU time of the whole machine, in seconds (`/proc/stat`: everything but idle and iowait).
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|x| x.parse().unwrap_or(0)).collect();
    anyhow::ensure!(v.len() == 8, "short cpu line in /proc/stat");
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok(busy as f64 / TICKS_PER_SEC)
}

/// Wait (up to `max`) until the machine is quiet: less than `cores` of CPU
/// busy over one second, since other processes (a build, say) would take CPU
/// from the servers. Returns the load seen last, in cores.
pub fn wait_quiet(max: std::time::Duration, cores: f64) -> f64 {
    if max.is_zero() {
        return f64::NAN;
    }
    let start = std::time::Instant::now();
    let mut warned = false;
    loop {
        let Ok(before) = machine_busy_seconds() else { return f64::NAN };
        std::thread::sleep(std::time::Duration::from_secs(1));
        let load = machine_busy_seconds().map_or(f64::NAN, |after| after - before);
        if load.is_nan() || load < cores || start.elapsed() >= max {
            return load;
        }
        if !warned {
            eprintln!("  waiting for the machine to quiet down ({load:.2} cores busy; up to {}s)", max.as_secs());
            warned = true;
        }
    }
}

/// A CPU reading of the server, of the load generator and of the whole machine at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: f64,
    server_sys: f64,
    client: f64,
    machine: f64,
}

/// CPU seconds spent since a [`CpuMark`].
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    pub server: f64,
    /// The server's kernel time, part of `server`.
    pub server_sys: f64,
    pub client: f64,
    /// Everything else on the machine (other processes competing for the cores).
    pub other: f64,
}

impl CpuMark {
    pub fn take(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            server: cpu_seconds(pid)?,
            server_sys: sys_seconds(pid)?,
            client: self_cpu_seconds()?,
            machine: machine_busy_seconds()?,
        })
    }

    pub fn since(&self, pid: u32) -> anyhow::Result<Spent> {
        let now = Self::take(pid)?;
        let (server, client) = (now.server - self.server, now.client - self.client);
        let server_sys = now.server_sys - self.server_sys;
        Ok(Spent { server, server_sys, client, other: (now.machine - self.machine - server - client).max(0.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "1234 (my (odd) cmd) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat(line).unwrap(), 4.0);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(self_cpu_seconds().unwrap() >= 0.0);
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn machine_and_thread_counters() {
        assert!(machine_busy_seconds().unwrap() > 0.0);
        assert!(thread_cpu_ns().is_some());
    }

    #[test]
    fn status_field() {
        assert_eq!(status_kib("Name: x\nVmHWM:\t  1804 kB\n", "VmHWM:"), Some(1804));
    }
}
