//! The run's output: the JSON line's context and the table on stderr.

use crate::cli::Common;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The readable table: one label and its figures per row.
pub type Rows = Vec<(String, String)>;

pub fn pct_row(v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!(
        "p50 {} / p90 {} / p99 {} / max {} ms",
        v["p50"], v["p90"], v["p99"], v["max"]
    )
}

pub fn cpu_rows(report: &Value, t: &mut Rows) {
    let cpu = &report["cpu"];
    t.push((
        "CPU seconds (server / bench / wall)".into(),
        format!("{} / {} / {}", cpu["server_cpu_s"], cpu["bench_cpu_s"], cpu["wall_s"]),
    ));
    let m = &report["server_metrics"];
    if !m.is_null() {
        t.push((
            "group commits (count / mean batch / mean ms)".into(),
            format!("{} / {} / {}", m["commits"], m["mean_batch"], m["mean_commit_ms"]),
        ));
    }
}

/// Adds the run's context: time, label, machine, generator.
pub fn decorate(report: &mut Value, c: &Common) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    report["label"] = json!(c.label);
    report["at_unix"] = json!(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs());
    report["addr"] = json!(c.addr.to_string());
    report["server_pid"] = json!(c.server_pid);
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    report["machine"] = json!({
        "loadavg_at_end": loadavg,
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu_model,
        "kernel": kernel,
    });
    report["bench"] = json!(env!("CARGO_PKG_VERSION"));
}

pub fn print_table(report: &Value, rows: &[(String, String)]) {
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    let verdict = if report["ok"] == true {
        "ok"
    } else {
        "FAILED a correctness check"
    };
    out.push_str(&format!("\n{:w$}  {verdict}\n", "result"));
    for (k, v) in rows {
        out.push_str(&format!("{k:w$}  {v}\n"));
    }
    eprint!("{out}");
}
