//! Filling a database with many tasks through the socket API: `task.create`
//! calls pipelined on one socket, so group commit takes them in batches.

use crate::client::{next_text, request_ok, send, Light, Ws};
use crate::Res;
use indicatif::ProgressBar;
use serde_json::json;
use std::time::Duration;

/// Calls in flight at once: enough for large commits, few enough that the
/// connection's frame limit refuses little.
const WINDOW: usize = 64;

/// Refs of the creates start here, clear of the two refs used before them.
const FIRST_REF: i64 = 10;

/// Makes the database hold at least `n` tasks, creating the missing ones as
/// `seed-{k}`; answers how many there were and how many it created. `ws` must
/// be an admin's socket (a snapshot of every task is read to count them).
pub async fn seed_tasks(ws: &mut Ws, n: usize, pb: &ProgressBar) -> Res<(usize, usize)> {
    let reply = request_ok(ws, json!({"type": "subscribe", "topic": "tasks"}), 1).await?;
    request_ok(ws, json!({"type": "unsubscribe", "topic": "tasks"}), 2).await?;
    let had = reply["data"]["snapshot"].as_array().map_or(0, Vec::len);
    let want = n.saturating_sub(had);
    pb.set_length(want as u64);
    let create = |k: usize| {
        json!({"type": "call", "ref": FIRST_REF + k as i64, "method": "task.create",
               "params": {"title": format!("seed-{k}")}})
    };
    let (mut sent, mut done, mut in_flight) = (0, 0, 0);
    while done < want {
        while in_flight < WINDOW && sent < want {
            send(ws, &create(sent)).await?;
            sent += 1;
            in_flight += 1;
        }
        let t = next_text(ws).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
        let Some(k) = l.reference.filter(|r| l.ty == "reply" && *r >= FIRST_REF) else {
            continue;
        };
        if l.ok == Some(true) {
            done += 1;
            in_flight -= 1;
            pb.inc(1);
        } else if l.refused() {
            // Over the connection's frame rate: let the bucket refill, then
            // send the same create again.
            tokio::time::sleep(Duration::from_millis(20)).await;
            send(ws, &create((k - FIRST_REF) as usize)).await?;
        } else {
            return Err(format!("task.create failed: {t}"));
        }
    }
    Ok((had, want))
}
