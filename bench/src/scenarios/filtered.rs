//! `filtered`: N subscribers spread over F distinct filtered topics
//! (`tasks?priority_min=P&status=…`) and U subscribers of plain `tasks`, in
//! one run; one writer sends W updates at R per second to one task, cycling
//! its status and priority so that every write matches some filters. Each
//! subscriber must get exactly the events its filter should (a change is
//! sent when the task matched before it or matches after it); the event
//! latency of filtered and plain subscribers is reported side by side.

use crate::cli::Common;
use crate::client::{connect, request_ok};
use crate::events::{collect_events, wait_for_count};
use crate::metrics::{metrics_delta, scrape};
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{cpu_rows, pct_row, Rows};
use crate::scenarios::fanout::paced_writes;
use crate::sockets::open_on;
use crate::stats::{hist, micros, pct, round3};
use crate::tally::Tally;
use crate::tasks::bench_tasks;
use crate::Res;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Statuses in the order the writes cycle through them; filters list them
/// sorted by spelling.
const STATUSES: [&str; 5] = ["todo", "in_progress", "blocked", "review", "done"];

/// The task's state after write `i` (`None`: before the first).
fn state(i: Option<usize>) -> (&'static str, i64) {
    match i {
        None => ("done", 3),
        Some(i) => (STATUSES[i % 5], ((i / 5) % 4) as i64),
    }
}

/// A filter: statuses (a non-empty, not full subset) and a `priority_min`.
#[derive(Clone)]
struct Filter {
    statuses: Vec<&'static str>,
    priority_min: Option<i64>,
}

impl Filter {
    fn topic(&self) -> String {
        let mut s = self.statuses.clone();
        s.sort();
        match self.priority_min {
            Some(p) => format!("tasks?priority_min={p}&status={}", s.join(",")),
            None => format!("tasks?status={}", s.join(",")),
        }
    }

    fn matches(&self, (status, priority): (&str, i64)) -> bool {
        self.statuses.contains(&status) && self.priority_min.is_none_or(|p| priority >= p)
    }
}

/// The first `f` of the 120 filters: 30 status subsets × 4 priority floors.
fn filters(f: usize) -> Vec<Filter> {
    let mut all = Vec::new();
    for p in [None, Some(1), Some(2), Some(3)] {
        for mask in 1u32..31 {
            let statuses = (0..5).filter(|b| mask & (1 << b) != 0).map(|b| STATUSES[b]).collect();
            all.push(Filter {
                statuses,
                priority_min: p,
            });
        }
    }
    all.truncate(f);
    all
}

pub async fn run(c: &Common, n: usize, f: usize, u: usize, w: usize, rate: f64, drain: Duration) -> Res<(Value, Rows)> {
    let (mut writer, hello) = connect(c).await?;
    let task = bench_tasks(&mut writer, 1).await?[0];
    let (s0, p0) = state(None);
    request_ok(
        &mut writer,
        json!({"type": "call", "method": "task.update",
               "params": {"id": task, "patch": {"status": s0, "priority": p0}}}),
        -1,
    )
    .await?;
    let filters = filters(f);
    // Subscriber k: filter k % f for the first n, then plain `tasks`.
    let topics: Vec<Option<String>> = (0..n)
        .map(|k| Some(filters[k % filters.len()].topic()))
        .chain((0..u).map(|_| Some("tasks".to_string())))
        .collect();
    let pb = progress(c, topics.len() as u64, "connect");
    let t_open = Instant::now();
    let opened = open_on(c, topics, &pb).await?;
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
    let (sent, acks) = paced_writes(writer, w, rate, &pb, move |i| {
        let (status, priority) = state(Some(i));
        json!({"type": "call", "ref": i, "method": "task.update",
               "params": {"id": task, "patch": {"status": status, "priority": priority}}})
        .to_string()
    })
    .await?;
    pb.finish_and_clear();

    // Seqs in write order (one socket: the server commits them in order).
    let mut seq_of = vec![None; w];
    let mut sent_at: HashMap<i64, Instant> = HashMap::with_capacity(w);
    let mut failed = 0u64;
    for (i, a) in acks.into_iter().enumerate() {
        match a {
            Some((_, Ok(seq))) => {
                seq_of[i] = Some(seq);
                sent_at.insert(seq, sent[i]);
            }
            _ => failed += 1,
        }
    }
    let expected_of = |filter: Option<&Filter>| -> HashSet<i64> {
        (0..w)
            .filter(|&i| filter.is_none_or(|f| f.matches(state(i.checked_sub(1))) || f.matches(state(Some(i)))))
            .filter_map(|i| seq_of[i])
            .collect()
    };
    let expected: Vec<HashSet<i64>> = filters.iter().map(|f| expected_of(Some(f))).collect();
    let plain = expected_of(None);
    let want: u64 = (0..n).map(|k| expected[k % filters.len()].len() as u64).sum::<u64>() + (u * plain.len()) as u64;

    let pb = progress(c, want, "delivered");
    wait_for_count(&seen, want, drain, |now| pb.set_position(now.min(want))).await;
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    let _ = stop_tx.send(true);

    let (mut lat_f, mut lat_u) = (hist(), hist());
    let mut tally = Tally::default();
    let mut ended = 0u64;
    for (k, h) in readers.into_iter().enumerate() {
        let r = h.await.map_err(|e| e.to_string())?;
        let (lat, exp) = if k < n {
            (&mut lat_f, &expected[k % filters.len()])
        } else {
            (&mut lat_u, &plain)
        };
        for (seq, at) in &r.events {
            if let Some(sent) = sent_at.get(seq) {
                lat.saturating_record(micros(at.saturating_duration_since(*sent)));
            }
        }
        tally.check(r.events.iter().map(|e| e.0), exp);
        ended += u64::from(r.ended.is_some());
    }
    let ok = tally.clean() && failed == 0 && tally.delivered == want && tally.unexpected == 0;
    let (pf, pu) = (pct(&lat_f), pct(&lat_u));
    let ratio = match (pf["p99"].as_f64(), pu["p99"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => Some(round3(a / b)),
        _ => None,
    };
    let report = json!({
        "scenario": "filtered",
        "ok": ok,
        "filtered_subscribers": n,
        "filters": filters.len(),
        "plain_subscribers": u,
        "writes": w,
        "rate": rate,
        "failed_calls": failed,
        "expected": want,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "out_of_order": tally.out_of_order,
        "unexpected": tally.unexpected,
        "sockets_ended_early": ended,
        "filtered_event_latency_ms": pf,
        "plain_event_latency_ms": pu,
        "p99_filtered_over_plain": ratio,
        "open_s": round3(open_s),
        "cpu": cpu,
        "server_metrics": metrics_delta(&m_before, &m_after),
        "server": hello["server"],
    });
    let mut t = vec![
        (
            "scenario".into(),
            format!(
                "filtered: {n} subscribers over {} filters and {u} of tasks, {w} writes at {rate}/s",
                filters.len()
            ),
        ),
        ("delivered / expected".into(), format!("{} / {want}", tally.delivered)),
        (
            "lost / duplicated / out of order / unexpected".into(),
            format!(
                "{} / {} / {} / {}",
                tally.lost, tally.duplicated, tally.out_of_order, tally.unexpected
            ),
        ),
        ("failed calls".into(), failed.to_string()),
        (
            "filtered event latency".into(),
            pct_row(&report["filtered_event_latency_ms"]),
        ),
        ("plain event latency".into(), pct_row(&report["plain_event_latency_ms"])),
        ("p99 filtered / plain".into(), format!("{ratio:?}")),
        ("sockets opened in".into(), format!("{open_s:.3} s")),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}
