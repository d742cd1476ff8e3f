//! Each call is all or nothing: a call that fails after its writes (forced by
//! the test-only `fail_op_id` hook, as a rule checked late would) leaves no
//! trace in the file, the change log, the resume memory or the row cache,
//! and the calls committed with it in the same batch keep theirs.

use crate::common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn a_call_failing_after_its_writes_leaves_nothing_behind() {
    let app = spawn_app_with(|c| c.db.fail_op_id = Some("boom".into()));
    let task = app.create_task("before").await;
    let id = task["id"].as_i64().unwrap();
    let agent = app.create_agent("worker").await;
    let agent_id = agent["id"].as_i64().unwrap();
    let agent_token = agent["token"].as_str().unwrap().to_string();

    let mut watcher = app.ws().await;
    let snap = watcher.subscribe("tasks").await;
    let epoch = snap["data"]["epoch"].as_str().unwrap().to_string();
    let start = snap["data"]["seq"].as_i64().unwrap();

    // Three calls in one write, so they reach the writer together: the middle
    // one updates the task, then fails.
    let mut ws = app.ws().await;
    let frames = [
        json!({"type": "call", "ref": 1, "method": "task.update", "params": {"id": id, "patch": {"title": "first"}}}),
        json!({"type": "call", "ref": 2, "method": "task.update", "op_id": "boom",
               "params": {"id": id, "patch": {"title": "never", "status": "done"}}}),
        json!({"type": "call", "ref": 3, "method": "task.create", "params": {"title": "third"}}),
    ];
    for f in &frames {
        ws.stream.feed(Message::Text(f.to_string())).await.unwrap();
    }
    ws.stream.flush().await.unwrap();
    let replies = ws.replies_to(&[json!(1), json!(2), json!(3)]).await;
    assert_eq!(replies[0]["ok"], true, "{}", replies[0]);
    assert_eq!(replies[1]["error"]["code"], "invalid", "{}", replies[1]);
    assert_eq!(replies[2]["ok"], true, "{}", replies[2]);
    // The failed call took no seq: the others' are consecutive.
    assert_eq!(replies[0]["seq"], json!(start + 1), "{}", replies[0]);
    assert_eq!(replies[2]["seq"], json!(start + 2), "{}", replies[2]);

    // Subscribers got the two committed changes and nothing of the third.
    let events = watcher.events_until("tasks", start + 2).await;
    let seen: Vec<(i64, &str)> = events
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["event"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, vec![(start + 1, "task.updated"), (start + 2, "task.created")]);
    assert_eq!(events[0]["data"]["title"], "first");

    // The file holds the first update only, and no remembered op_id.
    let now = app.get_json(&format!("/api/tasks/{id}")).await;
    assert_eq!(
        (now["title"].as_str(), now["version"].as_i64()),
        (Some("first"), Some(2))
    );
    assert_eq!(now["status"], "todo");
    let mut file = app.sqlite();
    assert_eq!(file.int("SELECT COUNT(*) AS n FROM ops WHERE op_id = 'boom'"), 0);
    assert_eq!(
        file.int(&format!("SELECT COUNT(*) AS n FROM changes WHERE seq > {start}")),
        2
    );

    // The writer's row cache does not hold the rolled-back row: an update at
    // version 2 is accepted (a cached version 3 would refuse it as stale).
    let r = ws
        .call(
            "task.update",
            json!({"id": id, "patch": {"priority": 2}, "if_version": 2}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["title"], "first");
    assert_eq!(r["data"]["version"], 3);

    // A resume from before replays exactly the committed changes.
    let mut late = app.ws().await;
    let resumed = late.resume("tasks", &epoch, start).await;
    let replayed: Vec<i64> = resumed["data"]["events"]
        .as_array()
        .expect("an exact resume")
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(replayed, vec![start + 1, start + 2, start + 3]);

    // A heartbeat that fails leaves the agent's heartbeat time as it was.
    let mut agent_ws = app.ws_as(&agent_token).await;
    let failed = agent_ws
        .request(json!({"type": "call", "method": "agent.heartbeat", "op_id": "boom",
                        "params": {"id": agent_id, "status": "busy"}}))
        .await;
    assert_eq!(failed["error"]["code"], "invalid", "{failed}");
    let seen = app.get_json(&format!("/api/agents/{agent_id}")).await;
    assert_eq!(seen["last_heartbeat_at"], Value::Null, "{seen}");
    assert_eq!(seen["status"], "idle", "{seen}");
}
