//! `resume`: N clients subscribe and disconnect, M writes happen, then all
//! resume at once; time until every client holds its missed events.

use crate::cli::Common;
use crate::client::{connect, next_text, send, Light};
use crate::metrics::{metrics_delta, scrape};
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{cpu_rows, pct_row, Rows};
use crate::sockets::open_many;
use crate::stats::{hist, micros, pct, round3};
use crate::tally::Tally;
use crate::tasks::{bench_tasks, nonce, update_frame};
use crate::Res;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// A resume's reply, read for the seqs it replays and nothing else: a
/// thousand clients each read 100 changes at once, and building a JSON tree
/// of each would take the generator more CPU than the server spends.
#[derive(Deserialize)]
struct ResumeReply<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(rename = "ref", default)]
    reference: Option<i64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    data: Option<ResumeData>,
}

#[derive(Deserialize)]
struct ResumeData {
    /// Present when the reply replays changes (absent for a snapshot).
    #[serde(default)]
    events: Option<Vec<SeqOnly>>,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: i64,
}

pub async fn run(c: &Common, n: usize, m: usize) -> Res<(Value, Rows)> {
    let (mut writer, hello) = connect(c).await?;
    let task = bench_tasks(&mut writer, 1).await?[0];
    let pb = progress(c, n as u64, "subscribe");
    let opened = open_many(c, n, true, &pb).await?;
    pb.finish_and_clear();
    let mut positions = Vec::with_capacity(n);
    for mut o in opened {
        let d = o.subscribed.take().ok_or("no subscribe reply")?;
        let epoch = d["epoch"].as_str().ok_or("no epoch")?.to_string();
        let seq = d["seq"].as_i64().ok_or("no seq")?;
        positions.push((epoch, seq));
        // A clean disconnect.
        let _ = o.ws.close(None).await;
    }

    // M writes while everyone is away (pipelined; wait for every ack).
    let nonce = nonce();
    let mut expected = HashSet::with_capacity(m);
    for i in 0..m {
        writer
            .send(Message::Text(update_frame(i as i64, task, nonce, i as u64)))
            .await
            .map_err(|e| format!("writer send: {e}"))?;
    }
    let mut got = 0;
    while got < m {
        let t = next_text(&mut writer).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| e.to_string())?;
        if l.ty == "reply" {
            got += 1;
            match (l.ok, l.seq) {
                (Some(true), Some(seq)) => {
                    expected.insert(seq);
                }
                _ => return Err(format!("a write failed: {t}")),
            }
        }
    }
    let expected = Arc::new(expected);

    // Everyone comes back at once: reconnect, resume, read until caught up.
    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let pb = progress(c, n as u64, "resume");
    let gate = Arc::new(Semaphore::new(c.concurrency));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (epoch, since) in positions {
        let (c, pb, gate, expected) = (c.clone(), pb.clone(), gate.clone(), expected.clone());
        handles.push(tokio::spawn(async move {
            let (mut ws, connected) = {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                let (ws, _) = connect(&c).await?;
                (ws, Instant::now())
            };
            let frame = json!({"type": "subscribe", "ref": 1, "topic": "tasks", "epoch": epoch, "since": since});
            send(&mut ws, &frame).await?;
            let mut seqs: Vec<i64> = Vec::new();
            // The reply comes first; anything else before it is skipped.
            let resumed = loop {
                let t = next_text(&mut ws).await?;
                let r: ResumeReply = serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
                if r.ty != "reply" || r.reference != Some(1) {
                    continue;
                }
                if r.ok != Some(true) {
                    return Err(format!("resume failed: {t}"));
                }
                let events = r.data.and_then(|d| d.events);
                let resumed = events.is_some();
                seqs.extend(events.into_iter().flatten().map(|e| e.seq));
                break resumed;
            };
            // Anything not replayed must come live (or never, if it was a snapshot).
            if resumed {
                let mut have: HashSet<i64> = seqs.iter().copied().collect();
                while !expected.iter().all(|s| have.contains(s)) {
                    let t = next_text(&mut ws).await?;
                    if let Ok(l) = serde_json::from_str::<Light>(&t) {
                        if let (true, Some(s)) = (l.ty == "event", l.seq) {
                            seqs.push(s);
                            have.insert(s);
                        }
                    }
                }
            }
            let done = Instant::now();
            pb.inc(1);
            Ok::<_, String>((connected, done, resumed, seqs, ws))
        }));
    }
    let mut tally = Tally::default();
    let mut catch_up = hist();
    let mut last_connected = t0;
    let mut last_done = t0;
    let mut snapshots = 0u64;
    let mut sockets = Vec::with_capacity(n);
    for h in handles {
        let (connected, done, resumed, seqs, ws) = h.await.map_err(|e| e.to_string())??;
        last_connected = last_connected.max(connected);
        last_done = last_done.max(done);
        catch_up.saturating_record(micros(done - t0));
        if resumed {
            tally.check(seqs, &expected);
        } else {
            snapshots += 1;
        }
        sockets.push(ws);
    }
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    drop(sockets);
    let caught_up_s = (last_done - t0).as_secs_f64();
    let report = json!({
        "scenario": "resume",
        "ok": tally.clean() && snapshots == 0,
        "clients": n,
        "writes": m,
        "concurrency": c.concurrency,
        "caught_up_s": round3(caught_up_s),
        "all_reconnected_s": round3((last_connected - t0).as_secs_f64()),
        "per_client_caught_up_ms": pct(&catch_up),
        "expected": n * m,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "out_of_order": tally.out_of_order,
        "snapshot_instead_of_replay": snapshots,
        "cpu": cpu,
        "server_metrics": metrics_delta(&m_before, &m_after),
        "server": hello["server"],
    });
    let mut t = vec![
        ("scenario".into(), format!("resume: {n} clients, {m} missed writes")),
        (
            "every client caught up in".into(),
            format!("{caught_up_s:.3} s (from the first reconnect)"),
        ),
        (
            "all reconnected in".into(),
            format!("{:.3} s", (last_connected - t0).as_secs_f64()),
        ),
        (
            "per-client catch-up".into(),
            pct_row(&report["per_client_caught_up_ms"]),
        ),
        (
            "delivered / expected".into(),
            format!("{} / {}", tally.delivered, n * m),
        ),
        (
            "lost / duplicated / out of order".into(),
            format!("{} / {} / {}", tally.lost, tally.duplicated, tally.out_of_order),
        ),
        ("snapshots instead of replay".into(), snapshots.to_string()),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}
