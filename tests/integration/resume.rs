//! Resume is exact: a client that comes back with its position gets exactly the
//! changes of the topic it missed, in order, then live ones; anything else gets
//! a snapshot or `not_found` as the contract says.

use crate::common::*;
use crate::shared::seq_of;
use serde_json::{json, Value};

async fn patch_task(app: &TestApp, id: i64, patch: Value) -> i64 {
    let res = app.patch(&format!("/api/tasks/{id}"), patch).send().await.unwrap();
    assert_eq!(res.status(), 200);
    seq_of(&res)
}

async fn delete_task(app: &TestApp, id: i64) -> i64 {
    let res = app.delete(&format!("/api/tasks/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    seq_of(&res)
}

fn names_and_seqs(events: &Value) -> Vec<(String, i64)> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_string(), e["seq"].as_i64().unwrap()))
        .collect()
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_changes_then_live_ones() {
    resume_replays_exactly(spawn_app()).await;
}

/// The same with one change kept in memory: the replay is read from the log.
#[tokio::test]
async fn resume_from_the_log_replays_exactly_the_missed_changes() {
    resume_replays_exactly(spawn_app_with(|c| c.db.recent_changes = 1)).await;
}

async fn resume_replays_exactly(app: TestApp) {
    let a = app.create_task("a").await["id"].as_i64().unwrap();
    let b = app.create_task("b").await["id"].as_i64().unwrap();
    let topic_a = format!("task:{a}");

    let mut ws = app.ws().await;
    let r_tasks = ws.subscribe("tasks").await;
    let r_a = ws.subscribe(&topic_a).await;
    let mut tasks = TopicState::from_snapshot(&r_tasks);
    let mut single = TopicState::from_snapshot(&r_a);
    let epoch = r_tasks["data"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(ws.hello["epoch"], epoch.as_str());
    assert_eq!(tasks.seq, 2);
    assert_eq!(single.seq, 2);
    drop(ws);

    // Others write while this client is away: over REST and over a socket.
    let s3 = patch_task(&app, a, json!({"status": "in_progress"})).await;
    let mut other = app.ws().await;
    let c = other.call_ok("task.create", json!({"title": "c"})).await;
    let s4 = c["seq"].as_i64().unwrap();
    let c = c["data"]["id"].as_i64().unwrap();
    let s5 = other
        .call_ok("task.update", json!({"id": b, "patch": {"priority": 2}}))
        .await["seq"]
        .as_i64()
        .unwrap();
    let s6 = delete_task(&app, a).await;
    let agent = app.create_agent("x").await;
    let s8 = patch_task(&app, c, json!({"title": "c2", "assignee_id": agent["id"]})).await;
    assert_eq!((s3, s4, s5, s6, s8), (3, 4, 5, 6, 8), "seqs are gap-free");

    let mut ws = app.ws().await;
    let r = ws.resume("tasks", &epoch, 2).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["epoch"], epoch.as_str());
    assert_eq!(r["data"]["seq"], 8, "{r}");
    assert_eq!(
        names_and_seqs(&r["data"]["events"]),
        pairs(&[
            ("task.updated", 3),
            ("task.created", 4),
            ("task.updated", 5),
            ("task.deleted", 6),
            ("task.updated", 8),
        ]),
        "{r}"
    );
    // The replayed frames are the log's frames, data and `changed` included.
    assert_eq!(r["data"]["events"], app.changes(2, Some("tasks")).await["events"]);
    let ev = &r["data"]["events"];
    assert_eq!(ev[0]["changed"], json!(["status"]));
    assert_eq!(ev[0]["data"]["status"], "in_progress");
    assert_eq!(ev[0]["data"]["version"], 2);
    assert_eq!(ev[3]["data"], json!({ "id": a }));
    assert_eq!(ev[4]["data"]["assignee_id"], agent["id"]);
    tasks.resume(&r);
    let db = app.get_json("/api/tasks").await;
    let db_items: Vec<Value> = tasks.entities.values().cloned().collect();
    assert_eq!(Value::Array(db_items), db["items"]);

    let r = ws.resume(&topic_a, &epoch, 2).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        names_and_seqs(&r["data"]["events"]),
        pairs(&[("task.updated", 3), ("task.deleted", 6)]),
        "{r}"
    );
    assert!(r["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["topic"] == topic_a.as_str()));
    single.resume(&r);
    assert!(single.entities.is_empty());

    // Live changes follow the replay: the next is seq 9, on `tasks` only.
    let d = app.create_task("d").await;
    let s10 = patch_task(&app, b, json!({"status": "done"})).await;
    let frames = ws.events_until("tasks", s10).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["seq"], 9);
    assert_eq!(frames[0]["event"], "task.created");
    assert_eq!(frames[0]["data"], d);
    for f in &frames {
        tasks.apply(f);
    }
    let db = app.get_json("/api/tasks").await;
    let db_items: Vec<Value> = tasks.entities.values().cloned().collect();
    assert_eq!(Value::Array(db_items), db["items"]);
}

#[tokio::test]
async fn a_resume_with_nothing_missed_replays_nothing() {
    let app = spawn_app();
    app.create_task("a").await;
    let mut ws = app.ws().await;
    let epoch = ws.hello["epoch"].as_str().unwrap().to_string();
    let r = ws.resume("tasks", &epoch, 1).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["events"], json!([]), "{r}");
    assert!(r["data"].get("snapshot").is_none(), "{r}");
    assert_eq!(r["data"]["seq"], 1);
    // And the subscription is live.
    let t = app.create_task("b").await;
    let ev = ws.next_event().await;
    assert_eq!(ev["seq"], 2);
    assert_eq!(ev["data"], t);
}

#[tokio::test]
async fn another_epoch_no_epoch_or_a_since_ahead_gets_a_snapshot() {
    let app = spawn_app();
    let a = app.create_task("a").await;
    let b = app.create_task("b").await;
    let epoch = app.get_json("/api/tasks").await["epoch"].as_str().unwrap().to_string();
    let all = json!([a, b]);

    // Each case on a fresh socket: a second subscribe on one socket is a
    // fresh subscribe anyway.
    let mut ws = app.ws().await;
    let r = ws.resume("tasks", "some-other-epoch", 1).await;
    assert_eq!(r["data"]["snapshot"], all, "other epoch: {r}");
    assert_eq!(r["data"]["epoch"], epoch.as_str());
    assert_eq!(r["data"]["seq"], 2);

    let mut ws = app.ws().await;
    let r = ws.resume("tasks", &epoch, 1000).await;
    assert_eq!(r["data"]["snapshot"], all, "since ahead of the log: {r}");
    assert_eq!(r["data"]["seq"], 2);

    let mut ws = app.ws().await;
    let r = ws
        .request(json!({"type": "subscribe", "topic": "tasks", "since": 1}))
        .await;
    assert_eq!(r["data"]["snapshot"], all, "since without epoch: {r}");

    let mut ws = app.ws().await;
    let r = ws.resume(&format!("task:{}", a["id"]), "some-other-epoch", 0).await;
    assert_eq!(r["data"]["snapshot"], a, "single task, other epoch: {r}");

    // The snapshot subscription is live like any other.
    let res = app
        .patch(&format!("/api/tasks/{}", a["id"]), json!({"priority": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ev = ws.next_event().await;
    assert_eq!(ev["seq"], 3, "{ev}");
    assert_eq!(ev["data"]["priority"], 3);
}

#[tokio::test]
async fn resume_of_a_deleted_tasks_topic_replays_its_delete() {
    let app = spawn_app();
    let id = app.create_task("doomed").await["id"].as_i64().unwrap();
    let topic = format!("task:{id}");
    patch_task(&app, id, json!({"status": "blocked"})).await;
    let mut ws = app.ws().await;
    let epoch = ws.hello["epoch"].as_str().unwrap().to_string();
    let r = ws.subscribe(&topic).await;
    assert_eq!(r["data"]["seq"], 2);
    drop(ws);
    let s3 = delete_task(&app, id).await;
    app.create_task("other").await;

    let mut ws = app.ws().await;
    let r = ws.resume(&topic, &epoch, 2).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["seq"], 4);
    let events: Vec<Value> = r["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(authored_by_admin)
        .collect();
    assert_eq!(
        events,
        [
            json!({"type": "event", "topic": topic, "seq": s3, "event": "task.deleted",
                "changed": [], "data": {"id": id}})
        ]
    );
    // The deleted topic stays subscribed until unsubscribed.
    let r = ws.request(json!({"type": "unsubscribe", "topic": topic})).await;
    assert_eq!(r["ok"], true, "{r}");

    let mut ws = app.ws().await;
    let r = ws.resume(&topic, &epoch, 0).await;
    assert_eq!(
        names_and_seqs(&r["data"]["events"]),
        pairs(&[("task.created", 1), ("task.updated", 2), ("task.deleted", 3)]),
        "{r}"
    );

    // Nothing of it in range: not_found, as a fresh subscribe is.
    let mut ws = app.ws().await;
    let r = ws.resume(&topic, &epoch, s3).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    let r = ws.subscribe(&topic).await;
    assert_eq!(r["error"]["code"], "not_found", "{r}");
    ws.ping().await;
}

#[tokio::test]
async fn resume_of_a_never_existing_task_is_not_found() {
    let app = spawn_app();
    app.create_task("a").await;
    let mut ws = app.ws().await;
    let epoch = ws.hello["epoch"].as_str().unwrap().to_string();
    for (topic, ep, since) in [
        ("task:999", epoch.as_str(), 0),
        ("task:999", "other", 0),
        ("task:999", epoch.as_str(), 1),
        ("agent:999", epoch.as_str(), 0),
    ] {
        let r = ws.resume(topic, ep, since).await;
        assert_eq!(r["ok"], false, "{topic} {ep} {since}: {r}");
        assert_eq!(r["error"]["code"], "not_found", "{r}");
    }
    // The socket goes on.
    ws.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_log_answers_gone_and_resumes_with_a_snapshot() {
    let app = spawn_app();
    for i in 0..5 {
        app.create_task(&format!("t{i}")).await;
    }
    let before = app.get_json("/api/tasks").await;
    let epoch = before["epoch"].as_str().unwrap().to_string();
    // Pruning runs at start: keep the last two changes (4 and 5).
    let app = app.restart(|c| c.db.log_keep = 2);
    let after = app.get_json("/api/tasks").await;
    assert_eq!(after["epoch"], epoch.as_str(), "the epoch survives a restart");
    assert_eq!(after["seq"], 5);
    assert_eq!(after["items"], before["items"]);

    for since in [0, 2] {
        let res = app.get(&format!("/api/changes?since={since}")).send().await.unwrap();
        assert_eq!(res.status(), 410, "since={since}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "gone", "{body}");
    }
    let ok = app.changes(3, None).await;
    let seqs: Vec<i64> = ok["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 5]);

    let mut ws = app.ws().await;
    assert_eq!(ws.hello["seq"], 5);
    let r = ws.resume("tasks", &epoch, 1).await;
    assert_eq!(r["data"]["snapshot"], before["items"], "older than the log: {r}");
    let mut ws = app.ws().await;
    let r = ws.resume("tasks", &epoch, 3).await;
    assert_eq!(
        names_and_seqs(&r["data"]["events"]),
        pairs(&[("task.created", 4), ("task.created", 5)]),
        "a position from before the restart resumes: {r}"
    );
}

#[tokio::test]
async fn more_missed_changes_than_the_server_replays_get_a_snapshot() {
    let app = spawn_app_with(|c| c.db.max_replay = 3);
    let t = app.create_task("t").await;
    let id = t["id"].as_i64().unwrap();
    let epoch = app.get_json("/api/tasks").await["epoch"].as_str().unwrap().to_string();
    for p in 1..=3 {
        patch_task(&app, id, json!({ "priority": p })).await;
    }
    // Three missed changes of task:{id} are replayed; four are not.
    let mut ws = app.ws().await;
    let r = ws.resume(&format!("task:{id}"), &epoch, 1).await;
    assert_eq!(r["data"]["events"].as_array().map(Vec::len), Some(3), "{r}");
    let mut ws = app.ws().await;
    let r = ws.resume(&format!("task:{id}"), &epoch, 0).await;
    assert_eq!(r["data"]["snapshot"]["priority"], 3, "{r}");
    assert_eq!(r["data"]["snapshot"]["version"], 4, "{r}");
    assert!(r["data"].get("events").is_none(), "{r}");
}

/// Clients that resume alike share one reply until the next commit; a commit in
/// between makes the next reply include the new change.
#[tokio::test]
async fn alike_resumes_share_a_reply_until_the_next_commit() {
    let app = spawn_app();
    let a = app.create_task("a").await["id"].as_i64().unwrap();
    let mut first = app.ws().await;
    let r = first.subscribe("tasks").await;
    let (epoch, since) = (
        r["data"]["epoch"].as_str().unwrap().to_string(),
        r["data"]["seq"].as_i64().unwrap(),
    );
    let s2 = patch_task(&app, a, json!({"status": "review"})).await;

    let mut x = app.ws().await;
    let mut y = app.ws().await;
    let rx = x.resume("tasks", &epoch, since).await;
    let ry = y.resume("tasks", &epoch, since).await;
    assert_eq!(rx["data"], ry["data"]);
    assert_eq!(names_and_seqs(&rx["data"]["events"]), pairs(&[("task.updated", s2)]));

    let s3 = patch_task(&app, a, json!({"priority": 3})).await;
    let mut z = app.ws().await;
    let rz = z.resume("tasks", &epoch, since).await;
    assert_eq!(
        names_and_seqs(&rz["data"]["events"]),
        pairs(&[("task.updated", s2), ("task.updated", s3)])
    );
    assert_eq!(rz["data"]["seq"], s3);
    // And the clients that resumed before get the new change live.
    assert_eq!(x.next_event().await["seq"], s3);
    assert_eq!(y.next_event().await["seq"], s3);
}

/// The log has no index by entity, so one read of it looks through a bounded
/// window of seqs: a resume from the log further back than the window gets a
/// snapshot, and pages of `GET /api/changes` end at the window's end and
/// together hold every change.
#[tokio::test]
async fn log_reads_look_through_a_bounded_window() {
    let app = spawn_app_with(|c| {
        c.db.recent_changes = 1;
        c.db.log_scan_window = 3;
    });
    let a = app.create_task("a").await["id"].as_i64().unwrap();
    let b = app.create_task("b").await["id"].as_i64().unwrap();
    patch_task(&app, a, json!({"status": "in_progress"})).await;
    patch_task(&app, b, json!({"priority": 1})).await;
    patch_task(&app, b, json!({"priority": 2})).await;
    patch_task(&app, a, json!({"priority": 3})).await;
    let head = patch_task(&app, b, json!({"priority": 3})).await;
    assert_eq!(head, 7);
    let topic_a = format!("task:{a}");

    let mut ws = app.ws().await;
    let epoch = ws.hello["epoch"].as_str().unwrap().to_string();
    // Within the window (7 - 4 = 3): the missed change, read from the log.
    let r = ws.resume(&topic_a, &epoch, 4).await;
    assert_eq!(
        names_and_seqs(&r["data"]["events"]),
        pairs(&[("task.updated", 6)]),
        "{r}"
    );
    // Further back: the current state instead of a scan (on a new socket: a
    // repeated subscribe would be answered fresh anyway).
    let mut ws = app.ws().await;
    let r = ws.resume(&topic_a, &epoch, 2).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["data"].get("events").is_none(), "{r}");
    assert_eq!(r["data"]["snapshot"]["version"], 3, "{r}");
    assert_eq!(r["data"]["seq"], 7, "{r}");

    // Paging from 0: each page ends at its window's end, and the pages together
    // hold exactly the topic's changes.
    let first = app.changes(0, Some(&topic_a)).await;
    assert_eq!(first["seq"], 3, "{first}");
    let mut since = 0;
    let mut seen = Vec::new();
    while since < head {
        let page = app.changes(since, Some(&topic_a)).await;
        let upto = page["seq"].as_i64().unwrap();
        assert!(upto > since, "a page moves forward: {page}");
        seen.extend(names_and_seqs(&page["events"]));
        since = upto;
    }
    assert_eq!(
        seen,
        pairs(&[("task.created", 1), ("task.updated", 3), ("task.updated", 6)])
    );
}

/// A running server cuts the log back to `--log-keep` soon after it passes
/// it, not only at its minutely pruning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_log_keep_is_cut_back_while_running() {
    let app = spawn_app_with(|c| c.db.log_keep = 20);
    for i in 0..60 {
        app.create_task(&format!("t{i}")).await;
    }
    // The check runs every second; ten leave room for a busy machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.get("/api/changes?since=39").send().await.unwrap().status() != 410 {
        assert!(std::time::Instant::now() < deadline, "the log was not cut back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kept = app.changes(40, None).await;
    assert_eq!(kept["events"].as_array().unwrap().len(), 20, "{kept}");
    assert_eq!(app.sqlite().int("SELECT COUNT(*) AS n FROM changes"), 20);
}
