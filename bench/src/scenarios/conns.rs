//! `conns`: N idle sockets subscribed to `tasks`: how long they take to open
//! and subscribe, and the server's resident memory per socket.

use crate::cli::Common;
use crate::client::{connect, request_ok};
use crate::events::collect_events;
use crate::metrics::scrape;
use crate::process::{rss_kib, CpuMeter};
use crate::progress::progress;
use crate::report::{cpu_rows, Rows};
use crate::sockets::open_many;
use crate::stats::round3;
use crate::Res;
use serde_json::{json, Value};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub async fn run(c: &Common, n: usize, hold: Duration) -> Res<(Value, Rows)> {
    let (_ctl, hello) = connect(c).await?;
    // Let the server settle after the control socket opened.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = c.server_pid.and_then(rss_kib);
    let cpu = CpuMeter::start(c);
    let pb = progress(c, n as u64, "connect");
    let t0 = Instant::now();
    let opened = open_many(c, n, false, &pb).await?;
    let connected_s = opened
        .iter()
        .map(|o| o.connected)
        .max()
        .map(|t| (t - t0).as_secs_f64())
        .unwrap_or(0.0);
    pb.finish_and_clear();
    // Subscribe every socket, all at once.
    let pb = progress(c, n as u64, "subscribe");
    let t1 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for o in opened {
        let pb = pb.clone();
        let mut ws = o.ws;
        handles.push(tokio::spawn(async move {
            request_ok(&mut ws, json!({"type": "subscribe", "topic": "tasks"}), 1).await?;
            pb.inc(1);
            Ok::<_, String>(ws)
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for h in handles {
        sockets.push(h.await.map_err(|e| e.to_string())??);
    }
    let subscribed_s = t1.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let cpu = cpu.stop();
    // Hold them (reading, so pings get their pongs), then read the memory.
    let (stop_tx, stop_rx) = watch::channel(false);
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(collect_events(ws, stop_rx.clone(), seen.clone(), 0)))
        .collect();
    tokio::time::sleep(hold).await;
    let rss_after = c.server_pid.and_then(rss_kib);
    let metrics = scrape(c).await;
    let _ = stop_tx.send(true);
    let mut ended = 0;
    for r in readers {
        if r.await.map_err(|e| e.to_string())?.ended.is_some() {
            ended += 1;
        }
    }
    let per_socket = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(round3((a as f64 - b as f64) / n as f64)),
        _ => None,
    };
    let open_gauge = metrics.as_ref().and_then(|m| m.get("taskwire_sockets_open").copied());
    let report = json!({
        "scenario": "conns",
        "ok": ended == 0,
        "sockets": n,
        "concurrency": c.concurrency,
        "connected_s": round3(connected_s),
        "subscribed_s": round3(subscribed_s),
        "total_s": round3(connected_s + subscribed_s),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "server_rss_kib_per_socket": per_socket,
        "server_sockets_open": open_gauge,
        "sockets_ended_early": ended,
        "cpu": cpu,
        "server": hello["server"],
    });
    let mut t = vec![
        (
            "scenario".into(),
            format!("conns: {n} sockets, {} handshakes in flight at most", c.concurrency),
        ),
        ("all connected (hello read) in".into(), format!("{connected_s:.3} s")),
        ("then all subscribed in".into(), format!("{subscribed_s:.3} s")),
        (
            "server RSS before / after".into(),
            match (rss_before, rss_after) {
                (Some(b), Some(a)) => format!("{b} KiB / {a} KiB"),
                _ => "- (give --server-pid)".into(),
            },
        ),
        (
            "server RSS per socket".into(),
            per_socket.map_or("-".into(), |k| format!("{k:.2} KiB")),
        ),
        ("sockets ended early".into(), ended.to_string()),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}
