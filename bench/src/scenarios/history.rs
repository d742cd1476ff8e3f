//! `history`: the task page's first read. One task gets N activity entries
//! (notes, pipelined over one socket); then, O times, a page opens: a fresh
//! socket subscribes to `task:{id}` with `history: 200`, timed from the
//! subscribe to its reply, and closes cleanly. A note between two opens moves
//! the seq, so no reply is served from the server's subscribe-reply cache.

use crate::cli::Common;
use crate::client::{connect, next_text, request_ok, send, Light};
use crate::report::{pct_row, Rows};
use crate::stats::{hist, micros, pct};
use crate::tasks::bench_tasks;
use crate::Res;
use serde_json::{json, Value};
use std::time::Instant;

/// The history a task page asks for, the most a subscribe may.
const HISTORY: usize = 200;

/// Notes in flight at once while filling the task's activity.
const WINDOW: usize = 512;

fn note(r: usize, task: i64) -> Value {
    json!({"type": "call", "ref": r, "method": "task.note", "params": {"id": task, "text": format!("note {r}")}})
}

pub async fn run(c: &Common, entries: usize, opens: usize) -> Res<(Value, Rows)> {
    let (mut writer, hello) = connect(c).await?;
    let task = bench_tasks(&mut writer, 1).await?[0];
    // Fill the activity (a task made by an earlier run may have some already).
    let t0 = Instant::now();
    let (mut sent, mut acked) = (0, 0);
    while acked < entries {
        while sent < entries && sent - acked < WINDOW {
            send(&mut writer, &note(10 + sent, task)).await?;
            sent += 1;
        }
        let t = next_text(&mut writer).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| e.to_string())?;
        if l.ty == "reply" {
            if l.ok != Some(true) {
                // Past the socket's frame rate: wait for its bucket, send again.
                let limited = l.error.as_ref().is_some_and(|e| e.code == "rate_limited");
                match l.reference {
                    Some(r) if limited && r >= 10 => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        send(&mut writer, &note(r as usize, task)).await?;
                        continue;
                    }
                    _ => return Err(format!("a note failed: {t}")),
                }
            }
            acked += 1;
        }
    }
    let filled_s = t0.elapsed().as_secs_f64();

    let mut latency = hist();
    let mut bytes = 0usize;
    let mut short = 0usize;
    for i in 0..opens {
        let (mut page, _) = connect(c).await?;
        let frame = json!({"type": "subscribe", "ref": 1, "topic": format!("task:{task}"), "history": HISTORY});
        let t = Instant::now();
        send(&mut page, &frame).await?;
        let reply = loop {
            let text = next_text(&mut page).await?;
            let l: Light = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if l.ty == "reply" && l.reference == Some(1) {
                break text;
            }
        };
        latency.saturating_record(micros(t.elapsed()));
        bytes = reply.len();
        let reply: Value = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
        if reply["ok"] != true {
            return Err(format!("the subscribe failed: {reply}"));
        }
        if reply["data"]["history"].as_array().map_or(0, Vec::len) != HISTORY {
            short += 1;
        }
        page.close(None).await.map_err(|e| format!("close: {e}"))?;
        while next_text(&mut page).await.is_ok() {}
        request_ok(&mut writer, note(1_000_000_000 + i, task), 1_000_000_000 + i as i64).await?;
    }
    let report = json!({
        "scenario": "history",
        "ok": short == 0,
        "entries": entries,
        "opens": opens,
        "history": HISTORY,
        "fill_s": (filled_s * 1000.0).round() / 1000.0,
        "subscribe_ms": pct(&latency),
        "reply_bytes": bytes,
        "short_histories": short,
        "server": hello["server"],
    });
    let t = vec![
        (
            "scenario".into(),
            format!("history: task:N with {HISTORY} of {entries}+ entries, {opens} opens"),
        ),
        ("subscribe to reply".into(), pct_row(&report["subscribe_ms"])),
        ("reply size".into(), format!("{bytes} bytes")),
        ("histories short of 200".into(), short.to_string()),
        ("activity filled in".into(), format!("{filled_s:.1} s")),
    ];
    Ok((report, t))
}
