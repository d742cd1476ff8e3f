//! The server's and this process's CPU time and resident memory, from /proc.

use crate::cli::Common;
use crate::stats::round3;
use serde_json::{json, Value};
use std::time::Instant;

/// utime + stime of a process, in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux ABI this runs on; `getconf` confirms it.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of the server and of this generator over a phase.
pub struct CpuMeter {
    server_pid: Option<u32>,
    server: Option<f64>,
    me: Option<f64>,
    wall: Instant,
}

impl CpuMeter {
    pub fn start(c: &Common) -> CpuMeter {
        CpuMeter {
            server_pid: c.server_pid,
            server: c.server_pid.and_then(|p| cpu_seconds(&p.to_string())),
            me: cpu_seconds("self"),
            wall: Instant::now(),
        }
    }

    /// `{server_cpu_s, bench_cpu_s, wall_s}` of the phase.
    pub fn stop(&self) -> Value {
        let server = match (self.server_pid, self.server) {
            (Some(p), Some(before)) => cpu_seconds(&p.to_string()).map(|a| a - before),
            _ => None,
        };
        let me = match (self.me, cpu_seconds("self")) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        json!({
            "server_cpu_s": server.map(round3),
            "bench_cpu_s": me.map(round3),
            "wall_s": round3(self.wall.elapsed().as_secs_f64()),
        })
    }
}
