//! `window`: N subscribers of the window `tasks?limit=50&order=-updated_at&status=done`
//! (the overview's Done column) and U of plain `tasks`, in one run, while W
//! tasks are marked done at R per second: each enters the window at the top
//! and pushes the oldest out. Every window subscriber's view, built from its
//! snapshot and its `entered`/`left`/`updated`/`deleted` events, must equal the
//! same query over REST at the end; the event latency of window and plain
//! subscribers is reported side by side.

use crate::cli::Common;
use crate::client::{connect, request_ok, Ws};
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{cpu_rows, pct_row, Rows};
use crate::rest::Rest;
use crate::scenarios::fanout::paced_writes;
use crate::sockets::open_on;
use crate::stats::{hist, micros, pct, round3};
use crate::Res;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The overview's Done column.
pub const WINDOW: &str = "tasks?limit=50&order=-updated_at&status=done";

/// The fields of an event this scenario reads.
#[derive(Deserialize)]
struct Ev {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    data: Option<Id>,
}

#[derive(Deserialize)]
struct Id {
    #[serde(default)]
    id: Option<i64>,
}

/// One subscriber's view at the end, and each event seq's first arrival.
struct Seen {
    view: BTreeSet<i64>,
    arrivals: Vec<(i64, Instant)>,
    last_seq: i64,
}

/// Applies a subscriber's events to its view until told to stop; `reached`
/// holds the newest seq it has seen.
async fn follow(mut ws: Ws, mut view: BTreeSet<i64>, mut stop: watch::Receiver<bool>, reached: Arc<AtomicI64>) -> Seen {
    let mut arrivals = Vec::new();
    let mut last_seq = 0;
    loop {
        tokio::select! {
            m = ws.next() => {
                let at = Instant::now();
                let Some(Ok(Message::Text(t))) = m else {
                    if matches!(m, Some(Ok(_))) { continue; }
                    break;
                };
                let Ok(ev) = serde_json::from_str::<Ev>(&t) else { continue };
                let (Some(seq), "event") = (ev.seq, ev.ty.as_str()) else { continue };
                if seq > last_seq {
                    arrivals.push((seq, at));
                    last_seq = seq;
                    reached.store(seq, Ordering::Relaxed);
                }
                let id = ev.data.and_then(|d| d.id);
                match (ev.event.as_str(), id) {
                    ("task.entered" | "task.created", Some(id)) => { view.insert(id); }
                    ("task.left" | "task.deleted", Some(id)) => { view.remove(&id); }
                    _ => {}
                }
            }
            _ = stop.changed() => break,
        }
    }
    Seen {
        view,
        arrivals,
        last_seq,
    }
}

pub async fn run(c: &Common, n: usize, u: usize, w: usize, rate: f64, drain: Duration) -> Res<(Value, Rows)> {
    let (mut writer, hello) = connect(c).await?;
    // W fresh tasks to finish (a run adds its own; old done tasks may sit in the window).
    let mut ids = Vec::with_capacity(w);
    for k in 0..w {
        let r = request_ok(
            &mut writer,
            json!({"type": "call", "method": "task.create", "params": {"title": format!("window-{k}")}}),
            -(k as i64) - 10,
        )
        .await?;
        ids.push(r["data"]["id"].as_i64().ok_or("no id")?);
    }
    let topics: Vec<Option<String>> = (0..n)
        .map(|_| Some(WINDOW.to_string()))
        .chain((0..u).map(|_| Some("tasks".to_string())))
        .collect();
    let pb = progress(c, topics.len() as u64, "connect");
    let opened = open_on(c, topics, &pb).await?;
    pb.finish_and_clear();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reached: Vec<Arc<AtomicI64>> = opened.iter().map(|_| Arc::new(AtomicI64::new(0))).collect();
    let followers: Vec<_> = opened
        .into_iter()
        .zip(&reached)
        .map(|(mut o, reached)| {
            let view: BTreeSet<i64> = o
                .subscribed
                .take()
                .and_then(|d| d["snapshot"].as_array().cloned())
                .into_iter()
                .flatten()
                .filter_map(|t| t["id"].as_i64())
                .collect();
            tokio::spawn(follow(o.ws, view, stop_rx.clone(), reached.clone()))
        })
        .collect();

    let cpu = CpuMeter::start(c);
    let pb = progress(c, w as u64, "finish");
    let (sent, acks) = paced_writes(writer, w, rate, &pb, move |i| {
        json!({"type": "call", "ref": i, "method": "task.update",
               "params": {"id": ids[i], "patch": {"status": "done"}}})
        .to_string()
    })
    .await?;
    pb.finish_and_clear();
    let mut sent_at: HashMap<i64, Instant> = HashMap::with_capacity(w);
    let mut failed = 0;
    let mut last = 0;
    for (i, a) in acks.into_iter().enumerate() {
        match a {
            Some((_, Ok(seq))) => {
                sent_at.insert(seq, sent[i]);
                last = last.max(seq);
            }
            _ => failed += 1,
        }
    }
    // Every subscriber has seen the last write (each write changes both
    // topics: it enters the window), or the drain time is up.
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline && reached.iter().any(|r| r.load(Ordering::Relaxed) < last) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu.stop();
    let path = format!("/api/tasks?{}", WINDOW.trim_start_matches("tasks?"));
    let (status, body) = Rest::new(c, &c.token)?.send(reqwest::Method::GET, &path, None).await?;
    if status != 200 {
        return Err(format!("GET {path} answered {status}: {body}"));
    }
    let query: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let truth: BTreeSet<i64> = query["items"]
        .as_array()
        .ok_or("no items")?
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    let _ = stop_tx.send(true);

    let (mut lat_w, mut lat_u) = (hist(), hist());
    let (mut equal, mut behind) = (0usize, 0usize);
    for (k, f) in followers.into_iter().enumerate() {
        let seen = f.await.map_err(|e| e.to_string())?;
        let lat = if k < n { &mut lat_w } else { &mut lat_u };
        for (seq, at) in &seen.arrivals {
            if let Some(s) = sent_at.get(seq) {
                lat.saturating_record(micros(at.saturating_duration_since(*s)));
            }
        }
        if k < n {
            if seen.last_seq < last {
                behind += 1;
            } else if seen.view == truth {
                equal += 1;
            }
        }
    }
    let (pw, pu) = (pct(&lat_w), pct(&lat_u));
    let ratio = match (pw["p99"].as_f64(), pu["p99"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => Some(round3(a / b)),
        _ => None,
    };
    let report = json!({
        "scenario": "window",
        "ok": failed == 0 && equal == n && truth.len() == 50,
        "window_subscribers": n,
        "plain_subscribers": u,
        "writes": w,
        "rate": rate,
        "failed_calls": failed,
        "views_equal_to_the_query": equal,
        "views_behind_the_last_write": behind,
        "window_event_latency_ms": pw,
        "plain_event_latency_ms": pu,
        "p99_window_over_plain": ratio,
        "cpu": cpu,
        "server": hello["server"],
    });
    let mut t = vec![
        (
            "scenario".into(),
            format!("window: {n} on {WINDOW}, {u} on tasks, {w} tasks done at {rate}/s"),
        ),
        (
            "window event latency".into(),
            pct_row(&report["window_event_latency_ms"]),
        ),
        ("plain event latency".into(), pct_row(&report["plain_event_latency_ms"])),
        (
            "views equal to the query".into(),
            format!("{equal} of {n} ({behind} behind)"),
        ),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}
