//! The server's own counters, scraped from its `/metrics`.

use crate::cli::Common;
use crate::stats::round3;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A few counters of the server's `/metrics`, read over a plain HTTP request.
pub async fn scrape(c: &Common) -> Option<HashMap<String, f64>> {
    let go = async {
        let mut s = TcpStream::connect(c.addr).await.ok()?;
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            c.addr, c.token
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") || head.contains("chunked") && body.is_empty() {
            return None;
        }
        let mut m = HashMap::new();
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    m.insert(name.to_string(), v);
                }
            }
        }
        Some(m)
    };
    tokio::time::timeout(Duration::from_secs(5), go).await.ok().flatten()
}

/// What changed in the server's own counters over a phase.
pub fn metrics_delta(before: &Option<HashMap<String, f64>>, after: &Option<HashMap<String, f64>>) -> Value {
    let (Some(b), Some(a)) = (before, after) else {
        return json!(null);
    };
    let d = |k: &str| a.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0);
    let commits = d("taskwire_commit_batch_size_count");
    json!({
        "commits": commits,
        "mean_batch": if commits > 0.0 { round3(d("taskwire_commit_batch_size_sum") / commits) } else { 0.0 },
        "mean_commit_ms": if commits > 0.0 { round3(d("taskwire_commit_seconds_sum") / commits * 1000.0) } else { 0.0 },
        "events_delivered": d("taskwire_events_delivered_total"),
        "closed_slow": d("taskwire_sockets_closed_slow_total"),
    })
}
