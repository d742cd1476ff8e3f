//! `fanout`: N subscribers of `tasks`, one writer sending W updates at R per
//! second (open loop). Each event's latency runs from the send of the call
//! whose reply carried its seq.

use crate::cli::Common;
use crate::client::{connect, Light, STEP};
use crate::events::{collect_events, wait_for_count};
use crate::fsync::{fsync_ceiling, fsync_json, fsync_paced, fsync_rows};
use crate::metrics::{metrics_delta, scrape};
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{cpu_rows, pct_row, Rows};
use crate::sockets::open_many;
use crate::stats::{hist, micros, pct, round3};
use crate::tally::Tally;
use crate::tasks::{bench_tasks, nonce, update_frame};
use crate::Res;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub async fn run(c: &Common, n: usize, w: usize, rate: f64, drain: Duration) -> Res<(Value, Rows)> {
    // The disk first, before any socket is open (a socket nobody reads for
    // long would miss the server's pings).
    let fs = fsync_ceiling(c, Duration::from_millis(500));
    let gap = Duration::from_secs_f64(1.0 / rate);
    let paced = fsync_paced(c, gap);
    let (mut writer, hello) = connect(c).await?;
    let task = bench_tasks(&mut writer, 1).await?[0];

    let pb = progress(c, n as u64, "connect");
    let t_open = Instant::now();
    let opened = open_many(c, n, true, &pb).await?;
    let open_s = t_open.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let (stop_tx, stop_rx) = watch::channel(false);
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = opened
        .into_iter()
        .map(|o| tokio::spawn(collect_events(o.ws, stop_rx.clone(), seen.clone(), w + 16)))
        .collect();

    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let pb = progress(c, w as u64, "writes");
    let nonce = nonce();
    let (sent, acks) = paced_writes(writer, w, rate, &pb, move |i| {
        update_frame(i as i64, task, nonce, i as u64)
    })
    .await?;
    pb.finish_and_clear();

    let mut ack_hist = hist();
    let mut sent_at: HashMap<i64, Instant> = HashMap::with_capacity(w);
    let mut failed = 0u64;
    let mut first_failure = None;
    for (i, a) in acks.into_iter().enumerate() {
        match a {
            Some((at, Ok(seq))) => {
                ack_hist.saturating_record(micros(at - sent[i]));
                sent_at.insert(seq, sent[i]);
            }
            Some((_, Err(e))) => {
                failed += 1;
                first_failure.get_or_insert(e);
            }
            None => failed += 1,
        }
    }
    let expected: HashSet<i64> = sent_at.keys().copied().collect();
    let want = (n * expected.len()) as u64;

    // Wait for the events still on their way.
    let pb = progress(c, want, "delivered");
    wait_for_count(&seen, want, drain, |now| pb.set_position(now.min(want))).await;
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    let _ = stop_tx.send(true);

    let mut lat = hist();
    let mut tally = Tally::default();
    let mut ended = 0u64;
    let mut first_end = None;
    for h in readers {
        let r = h.await.map_err(|e| e.to_string())?;
        for (seq, at) in &r.events {
            if let Some(sent) = sent_at.get(seq) {
                lat.saturating_record(micros(at.saturating_duration_since(*sent)));
            }
        }
        tally.check(r.events.iter().map(|e| e.0), &expected);
        if let Some(e) = r.ended {
            ended += 1;
            first_end.get_or_insert(e);
        }
    }

    let ok = tally.clean() && failed == 0 && tally.delivered == want;
    let server_cpu = cpu["server_cpu_s"].as_f64();
    let per_event = server_cpu
        .filter(|_| tally.delivered > 0)
        .map(|s| round3(s * 1e6 / tally.delivered as f64));
    let report = json!({
        "scenario": "fanout",
        "ok": ok,
        "subscribers": n,
        "writes": w,
        "rate": rate,
        "acked": expected.len(),
        "failed_calls": failed,
        "first_failure": first_failure,
        "expected": want,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "out_of_order": tally.out_of_order,
        "unexpected": tally.unexpected,
        "sockets_ended_early": ended,
        "first_socket_end": first_end,
        "event_latency_ms": pct(&lat),
        "ack_latency_ms": pct(&ack_hist),
        "open_s": round3(open_s),
        "cpu": cpu,
        "server_cpu_us_per_event": per_event,
        "server_metrics": metrics_delta(&m_before, &m_after),
        "fsync": fsync_json(&fs),
        "fsync_paced": fsync_json(&paced),
        "server": hello["server"],
    });
    let fs = fs.ok();
    let mut t = vec![
        (
            "scenario".into(),
            format!("fanout: {n} subscribers, {w} writes at {rate}/s"),
        ),
        ("delivered / expected".into(), format!("{} / {want}", tally.delivered)),
        (
            "lost / duplicated / out of order".into(),
            format!("{} / {} / {}", tally.lost, tally.duplicated, tally.out_of_order),
        ),
        ("failed calls".into(), failed.to_string()),
        ("event latency".into(), pct_row(&report["event_latency_ms"])),
        ("ack latency".into(), pct_row(&report["ack_latency_ms"])),
        ("sockets opened in".into(), format!("{open_s:.3} s")),
    ];
    cpu_rows(&report, &mut t);
    if let Some(us) = per_event {
        t.push(("server CPU per delivered event".into(), format!("{us} µs")));
    }
    if let Some(f) = &fs {
        fsync_rows(f, &mut t);
    }
    if let Ok(f) = &paced {
        t.push((
            format!("fsync after {:.1} ms idle (the writes' pace)", gap.as_secs_f64() * 1e3),
            format!(
                "p50 {} µs / p99 {} µs ({} samples)",
                f.hist.value_at_quantile(0.5),
                f.hist.value_at_quantile(0.99),
                f.hist.len()
            ),
        ));
    }
    Ok((report, t))
}

/// A reply to one of [`paced_writes`]'s calls: when it came, and its seq or
/// the reply's text if it failed.
pub type Ack = Option<(Instant, Result<i64, String>)>;

/// Sends `w` calls on `writer` at `rate` per second (open loop), call `i`
/// being `frame(i)` with ref `i`; returns when each was sent and its reply.
pub async fn paced_writes(
    writer: crate::client::Ws,
    w: usize,
    rate: f64,
    pb: &indicatif::ProgressBar,
    frame: impl Fn(usize) -> String + Send + 'static,
) -> Res<(Vec<Instant>, Vec<Ack>)> {
    let (mut tx, mut rx) = writer.split();
    let pb2 = pb.clone();
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(w);
        for i in 0..w {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let frame = frame(i);
            let at = Instant::now();
            tx.send(Message::Text(frame))
                .await
                .map_err(|e| format!("writer send: {e}"))?;
            sent.push(at);
            pb2.inc(1);
        }
        Ok::<_, String>((sent, tx))
    });
    // Replies: ref → (arrival, seq or error).
    let receiver = tokio::spawn(async move {
        let mut acks: Vec<Option<(Instant, Result<i64, String>)>> = vec![None; w];
        let mut got = 0;
        while got < w {
            let t = match tokio::time::timeout(STEP, rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(f)))) => return Err(format!("writer closed: {f:?}")),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(format!("writer socket: {e}")),
                Ok(None) => return Err("writer socket ended".into()),
                Err(_) => return Err(format!("no reply for 30 s after {got} of {w}")),
            };
            let at = Instant::now();
            let l: Light = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            if l.ty != "reply" {
                continue;
            }
            let Some(r) = l.reference.filter(|r| *r >= 0 && (*r as usize) < w) else {
                continue;
            };
            let outcome = match (l.ok, l.seq) {
                (Some(true), Some(seq)) => Ok(seq),
                _ => Err(t.clone()),
            };
            if acks[r as usize].is_none() {
                got += 1;
            }
            acks[r as usize] = Some((at, outcome));
        }
        Ok(acks)
    });
    let (sent, _tx) = sender.await.map_err(|e| e.to_string())??;
    let acks = receiver.await.map_err(|e| e.to_string())??;
    Ok((sent, acks))
}
