//! The tasks a run writes to, and the updates it sends them.

use crate::client::{request_ok, Ws};
use crate::Res;
use serde_json::json;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The ids of tasks titled `bench-0` .. `bench-{n-1}`, created if missing. The
/// runs reuse them, so the `tasks` snapshot stays small however often one runs.
pub async fn bench_tasks(ws: &mut Ws, n: usize) -> Res<Vec<i64>> {
    let reply = request_ok(ws, json!({"type": "subscribe", "topic": "tasks"}), 1).await?;
    request_ok(ws, json!({"type": "unsubscribe", "topic": "tasks"}), 2).await?;
    let mut found: HashMap<String, i64> = HashMap::new();
    for t in reply["data"]["snapshot"].as_array().into_iter().flatten() {
        if let (Some(title), Some(id)) = (t["title"].as_str(), t["id"].as_i64()) {
            let e = found.entry(title.to_string()).or_insert(id);
            *e = (*e).min(id);
        }
    }
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let title = format!("bench-{k}");
        let id = match found.get(&title) {
            Some(id) => *id,
            None => {
                let r = request_ok(
                    ws,
                    json!({"type": "call", "method": "task.create", "params": {"title": title}}),
                    3 + k as i64,
                )
                .await?;
                r["data"]["id"].as_i64().ok_or("task.create gave no id")?
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// A `task.update` that always changes something (a run nonce and a counter in
/// the description), so every call commits a change and gets a seq.
pub fn update_frame(r: i64, task: i64, nonce: u64, i: u64) -> String {
    json!({"type": "call", "ref": r, "method": "task.update",
           "params": {"id": task, "patch": {"description": format!("{nonce:x}-{i}")}}})
    .to_string()
}

pub fn nonce() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ (std::process::id() as u64).rotate_left(40)
}
