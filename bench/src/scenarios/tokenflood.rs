//! `tokenflood`: one agent token on several sockets sends `agent.heartbeat`
//! calls, each changing the agent's status, as fast as they are answered,
//! while K dashboards (one member token) subscribed to `agents` read the
//! events that causes. The goal the server is being built to meet: the
//! dashboards stay connected and the looping agent is refused. Every
//! dashboard still open must have read every change the agent was acked for,
//! once and in order.

use crate::cli::Common;
use crate::client::{connect, request_ok};
use crate::events::{wait_for_count, watch_events};
use crate::flood::{heartbeat_loop, Counts};
use crate::metrics::{metrics_delta, scrape};
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{cpu_rows, Rows};
use crate::rest::Rest;
use crate::sockets::open_many;
use crate::stats::round3;
use crate::tally::Tally;
use crate::Res;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The close code of a socket that fell too far behind.
const TOO_SLOW: u16 = 1013;

pub async fn run(c: &Common, sockets: usize, k: usize, dur: Duration, drain: Duration) -> Res<(Value, Rows)> {
    let (_, hello) = connect(c).await?;
    let admin = Rest::new(c, &c.token)?;
    let (agent, agent_token) = admin.create_agent("tokenflood").await?;
    let agent_c = Common {
        token: agent_token,
        ..c.clone()
    };
    let dash_c = Common {
        token: admin.create_token("member", "dashboard").await?,
        ..c.clone()
    };
    let pb = progress(c, k as u64, "dashboards");
    let opened = open_many(&dash_c, k, false, &pb).await?;
    pb.finish_and_clear();
    let mut subscribing = Vec::with_capacity(k);
    for o in opened {
        let mut ws = o.ws;
        subscribing.push(tokio::spawn(async move {
            request_ok(&mut ws, json!({"type": "subscribe", "topic": "agents"}), 1).await?;
            Ok::<_, String>(ws)
        }));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let all = Arc::new(AtomicU64::new(0));
    let with_seq = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(k);
    for s in subscribing {
        let ws = s.await.map_err(|e| e.to_string())??;
        readers.push(tokio::spawn(watch_events(
            ws,
            stop_rx.clone(),
            all.clone(),
            with_seq.clone(),
        )));
    }

    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let t0 = Instant::now();
    let end = t0 + dur;
    let loops: Vec<_> = (0..sockets)
        .map(|_| tokio::spawn(heartbeat_loop(agent_c.clone(), agent, end)))
        .collect();
    let pb = progress(c, dur.as_secs().max(1), "seconds");
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(t0.elapsed().as_secs());
            }
        })
    };
    let mut calls = Counts::default();
    let mut expected = HashSet::new();
    for h in loops {
        let (n, seqs) = h.await.map_err(|e| e.to_string())?;
        calls.add(n);
        expected.extend(seqs);
    }
    ticker.abort();
    pb.finish_and_clear();
    let loop_s = t0.elapsed().as_secs_f64();
    let events_during = all.load(Ordering::Relaxed);

    // The events still on their way; a dashboard the server closed never
    // gets its share, so the wait also ends after `drain` without progress.
    let want = expected.len() as u64 * k as u64;
    wait_for_count(&with_seq, want, drain, |_| {}).await;
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    let _ = stop_tx.send(true);

    let mut tally = Tally::default();
    let (mut closed, mut too_slow, mut first_close) = (0u64, 0u64, None);
    for h in readers {
        let w = h.await.map_err(|e| e.to_string())?;
        match w.ended {
            // Checked only while open: a closed dashboard resumes, elsewhere.
            None => tally.check(w.seqs, &expected),
            Some(e) => {
                closed += 1;
                too_slow += u64::from(w.close_code == Some(TOO_SLOW));
                first_close.get_or_insert(e);
            }
        }
    }
    let open = k as u64 - closed;
    let ok = calls.adds_up() && calls.other == 0 && tally.clean() && tally.delivered == expected.len() as u64 * open;
    let per_s = |n: u64| round3(n as f64 / loop_s);
    let report = json!({
        "scenario": "tokenflood",
        "ok": ok,
        "agent_sockets": sockets,
        "dashboards": k,
        "seconds": dur.as_secs_f64(),
        "agent": calls.json(sockets, loop_s),
        "agent_calls_per_s": per_s(calls.requests),
        "agent_accepted_per_s": per_s(calls.ok),
        "agent_refused_per_s": per_s(calls.refused),
        "changes_acked": expected.len(),
        "dashboard_events": events_during,
        "dashboard_events_per_s": per_s(events_during),
        "dashboard_events_per_s_each": round3(events_during as f64 / loop_s / k as f64),
        "dashboards_closed": closed,
        "dashboards_closed_1013": too_slow,
        "first_dashboard_close": first_close,
        "expected": expected.len() as u64 * open,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "out_of_order": tally.out_of_order,
        "dashboards_stayed_connected": closed == 0,
        "agent_refused": calls.refused > 0,
        "goal_met": closed == 0 && calls.refused > 0,
        "cpu": cpu,
        "server_metrics": metrics_delta(&m_before, &m_after),
        "server": hello["server"],
    });
    let mut t: Rows = vec![
        (
            "scenario".into(),
            format!(
                "tokenflood: one agent on {sockets} sockets heartbeating for {:.1} s, {k} dashboards on `agents`",
                dur.as_secs_f64()
            ),
        ),
        (
            "agent calls/s (accepted / refused)".into(),
            format!(
                "{:.0} ({:.0} / {:.0}); {} other, {} unanswered, {} sockets dropped",
                per_s(calls.requests),
                per_s(calls.ok),
                per_s(calls.refused),
                calls.other,
                calls.unanswered,
                calls.dropped
            ),
        ),
        (
            "dashboard events/s (all / each)".into(),
            format!(
                "{:.0} / {:.0}",
                per_s(events_during),
                events_during as f64 / loop_s / k as f64
            ),
        ),
        ("dashboards closed (1013)".into(), format!("{closed} ({too_slow})")),
        (
            "changes delivered / expected".into(),
            format!("{} / {}", tally.delivered, expected.len() as u64 * open),
        ),
        (
            "lost / duplicated / out of order".into(),
            format!("{} / {} / {}", tally.lost, tally.duplicated, tally.out_of_order),
        ),
        (
            "goal (dashboards stay, agent refused)".into(),
            format!(
                "{} ({}, {})",
                if report["goal_met"] == true { "met" } else { "not met" },
                if closed == 0 { "stayed" } else { "closed" },
                if calls.refused > 0 { "refused" } else { "not refused" }
            ),
        ),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}
