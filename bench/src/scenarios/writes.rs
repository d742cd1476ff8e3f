//! `writes`: C sockets, each sending `task.update` as soon as its previous
//! one is acked, for S seconds.

use crate::cli::Common;
use crate::client::{connect, next_text, request_ok, Light, Ws};
use crate::fsync::{fsync_ceiling, fsync_json, fsync_rows};
use crate::metrics::{metrics_delta, scrape};
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{cpu_rows, pct_row, Rows};
use crate::sockets::open_many;
use crate::stats::{hist, micros, pct, round3};
use crate::tasks::{bench_tasks, nonce, update_frame};
use crate::Res;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Round trips of the protocol's `ping` on an idle socket: the loopback and
/// session cost that a single waiting writer pays on top of the fsync.
async fn ping_rtt(ws: &mut Ws, n: usize) -> Res<Histogram<u64>> {
    let mut h = hist();
    for i in 0..n {
        let t = Instant::now();
        request_ok(ws, json!({"type": "ping"}), 1_000_000 + i as i64).await?;
        h.saturating_record(micros(t.elapsed()));
    }
    Ok(h)
}

pub async fn run(c: &Common, conns: usize, dur: Duration) -> Res<(Value, Rows)> {
    let (mut ctl, hello) = connect(c).await?;
    let fs = fsync_ceiling(c, Duration::from_secs(1));
    let tasks = bench_tasks(&mut ctl, conns).await?;
    let rtt = ping_rtt(&mut ctl, 200).await?;
    let pb = progress(c, conns as u64, "connect");
    let opened = open_many(c, conns, false, &pb).await?;
    pb.finish_and_clear();

    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + dur;
    let nonce = nonce();
    let mut handles = Vec::with_capacity(conns);
    for (k, o) in opened.into_iter().enumerate() {
        let task = tasks[k];
        let mut ws = o.ws;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut h = hist();
            let mut failed = 0u64;
            let mut first_failure = None;
            let mut i = 0u64;
            while Instant::now() < end {
                let frame = update_frame(i as i64, task, nonce, i);
                let t = Instant::now();
                ws.send(Message::Text(frame)).await.map_err(|e| format!("send: {e}"))?;
                loop {
                    let text = next_text(&mut ws).await?;
                    let l: Light = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    if l.ty == "reply" && l.reference == Some(i as i64) {
                        if l.ok == Some(true) && l.seq.is_some() {
                            h.saturating_record(micros(t.elapsed()));
                        } else {
                            failed += 1;
                            first_failure.get_or_insert(text);
                        }
                        break;
                    }
                }
                i += 1;
            }
            Ok::<_, String>((h, failed, first_failure, Instant::now()))
        }));
    }
    let pb = progress(c, dur.as_secs().max(1), "seconds");
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(start.elapsed().as_secs());
            }
        })
    };
    let mut acks = hist();
    let mut failed = 0;
    let mut first_failure = None;
    let mut finished = start;
    for h in handles {
        let (hh, f, ff, done) = h.await.map_err(|e| e.to_string())??;
        acks.add(&hh).map_err(|e| e.to_string())?;
        failed += f;
        if let Some(ff) = ff {
            first_failure.get_or_insert(ff);
        }
        finished = finished.max(done);
    }
    ticker.abort();
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    let elapsed = (finished - start).as_secs_f64();
    let acked = acks.len();
    let per_s = acked as f64 / elapsed;
    let rtt_p50 = rtt.value_at_quantile(0.5) as f64;
    let fs_json = fsync_json(&fs);
    let fs = fs.ok();
    let single_ceiling = fs.as_ref().map(|f| 1e6 / (f.p50_us() + rtt_p50));
    let report = json!({
        "scenario": "writes",
        "ok": failed == 0 && acked > 0,
        "conns": conns,
        "seconds": dur.as_secs_f64(),
        "elapsed_s": round3(elapsed),
        "acked": acked,
        "failed_calls": failed,
        "first_failure": first_failure,
        "acked_per_s": per_s.round(),
        "ack_latency_ms": pct(&acks),
        "ping_rtt_us_p50": rtt.value_at_quantile(0.5),
        "fsync": fs_json,
        "single_writer_ceiling_per_s": single_ceiling.map(f64::round),
        "ratio_to_fsync_ceiling": fs.as_ref().map(|f| round3(per_s / f.ceiling())),
        "ratio_to_single_writer_ceiling": single_ceiling.map(|s| round3(per_s / s)),
        "cpu": cpu,
        "server_cpu_us_per_write": cpu["server_cpu_s"].as_f64().filter(|_| acked > 0).map(|s| round3(s * 1e6 / acked as f64)),
        "server_metrics": metrics_delta(&m_before, &m_after),
        "server": hello["server"],
    });
    let mut t = vec![
        (
            "scenario".into(),
            format!(
                "writes: {conns} sockets, {:.1} s, each waiting for its ack",
                dur.as_secs_f64()
            ),
        ),
        ("acked writes".into(), format!("{acked} ({failed} failed)")),
        ("acked writes/s".into(), format!("{per_s:.0}")),
        ("ack latency".into(), pct_row(&report["ack_latency_ms"])),
        ("ping round trip p50".into(), format!("{rtt_p50} µs")),
    ];
    if let Some(f) = &fs {
        fsync_rows(f, &mut t);
        t.push(("ratio to fsync ceiling".into(), format!("{:.2}×", per_s / f.ceiling())));
    }
    if let Some(s) = single_ceiling {
        t.push((
            "single-writer ceiling (fsync + ping)".into(),
            format!("{s:.0}/s; ratio {:.2}×", per_s / s),
        ));
    }
    cpu_rows(&report, &mut t);
    Ok((report, t))
}
