//! The socket's first frame, subscribe replies, repeated subscribes and
//! unsubscribe.

use crate::common::*;
use crate::shared::seq_of;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn hello_has_the_contracts_fields() {
    let app = spawn_app();
    app.create_task("a").await;
    app.create_task("b").await;
    let ws = app.ws().await;
    let h = &ws.hello;
    let epoch = app.get_json("/api/tasks").await["epoch"].clone();
    assert!(epoch.as_str().is_some_and(|e| !e.is_empty()), "{epoch}");
    let mut keys: Vec<&String> = h.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "agent_timeout_ms",
            "epoch",
            "heartbeat_ms",
            "name",
            "role",
            "seq",
            "server",
            "stuck_after_ms",
            "token_id",
            "type"
        ],
        "{h}"
    );
    assert_eq!(
        *h,
        json!({"type": "hello", "server": concat!("taskwire/", env!("CARGO_PKG_VERSION")), "epoch": epoch, "seq": 2,
               "heartbeat_ms": 10000, "agent_timeout_ms": 30000, "stuck_after_ms": 1_800_000, "role": "admin",
               "token_id": 1, "name": "admin"})
    );

    let app = spawn_app_with(|c| {
        c.heartbeat_interval = Duration::from_millis(2500);
        c.db.heartbeat_timeout = Duration::from_secs(7);
    });
    let ws = app.ws().await;
    assert_eq!(ws.hello["heartbeat_ms"], 2500);
    assert_eq!(ws.hello["agent_timeout_ms"], 7000);
    assert_eq!(ws.hello["seq"], 0);
    assert_ne!(ws.hello["epoch"], epoch, "each database has its own epoch");
}

#[tokio::test]
async fn subscribe_replies_with_the_topics_snapshot() {
    let app = spawn_app();
    let t1 = app.create_task("one").await;
    let t2 = app.create_task("two").await;
    let mut agent = app.create_agent("bot").await;
    agent.as_object_mut().unwrap().remove("token");
    let epoch = app.get_json("/api/tasks").await["epoch"].clone();
    let mut ws = app.ws().await;
    let cases = [
        ("tasks", json!([t1, t2])),
        ("agents", json!([agent])),
        (&*format!("task:{}", t2["id"]), t2.clone()),
        (&*format!("agent:{}", agent["id"]), agent.clone()),
    ];
    for (i, (topic, snapshot)) in cases.into_iter().enumerate() {
        let r = ws.subscribe(topic).await;
        assert_eq!(
            r,
            json!({"type": "reply", "ref": i as i64 + 1, "ok": true,
                   "data": {"topic": topic, "epoch": epoch, "seq": 3, "snapshot": snapshot}})
        );
    }
    // String refs are echoed as they came.
    ws.send(&json!({"type": "subscribe", "ref": "s-1", "topic": "tasks"}))
        .await;
    let r = ws.reply_to(json!("s-1")).await;
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test]
async fn subscribing_twice_replies_like_a_fresh_subscribe_and_doubles_nothing() {
    let app = spawn_app();
    app.create_task("a").await;
    let mut ws = app.ws().await;
    let r1 = ws.subscribe("tasks").await;
    assert_eq!(r1["data"]["seq"], 1);
    let b = app.create_task("b").await;
    let r2 = ws.subscribe("tasks").await;
    assert_eq!(r2["ok"], true, "{r2}");
    assert_eq!(r2["data"]["seq"], 2, "{r2}");
    let snapshot = r2["data"]["snapshot"].as_array().expect("a snapshot again");
    assert_eq!(snapshot.len(), 2);
    assert_eq!(snapshot[1], b);
    let r3 = ws.subscribe("tasks").await;
    assert_eq!(r3["data"]["seq"], 2, "{r3}");

    app.create_task("c").await;
    app.create_task("d").await;
    let frames = ws.events_until("tasks", 4).await;
    let seqs: Vec<i64> = frames.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    // Change 2 is in the second snapshot; its event may also have come before
    // that reply, from the first subscription, but never after it.
    assert!(
        seqs == vec![2, 3, 4] || seqs == vec![3, 4],
        "each change once: {seqs:?}"
    );
    ws.ping().await;
    let extra = ws.take_backlog();
    assert!(extra.is_empty(), "{extra:?}");
}

#[tokio::test]
async fn unsubscribe_stops_the_topics_events() {
    let app = spawn_app();
    let t = app.create_task("a").await;
    let id = t["id"].as_i64().unwrap();
    let single = format!("task:{id}");
    let mut ws = app.ws().await;
    ws.subscribe("tasks").await;
    ws.subscribe(&single).await;
    let r = ws.request(json!({"type": "unsubscribe", "topic": "tasks"})).await;
    assert_eq!(r, json!({"type": "reply", "ref": r["ref"], "ok": true, "data": {}}));
    let patch = |status: &str| {
        app.patch(&format!("/api/tasks/{id}"), json!({ "status": status }))
            .send()
    };
    assert_eq!(patch("done").await.unwrap().status(), 200);
    app.create_task("b").await;
    assert_eq!(patch("review").await.unwrap().status(), 200);
    // Every change of the three was published before the last one's event.
    let frames = ws.events_until(&single, 4).await;
    let got: Vec<(Value, Value)> = frames.iter().map(|f| (f["topic"].clone(), f["seq"].clone())).collect();
    assert_eq!(
        got,
        vec![(json!(single), json!(2)), (json!(single), json!(4))],
        "nothing on tasks after its unsubscribe"
    );

    // Subscribing again starts over with a snapshot.
    let r = ws.subscribe("tasks").await;
    assert_eq!(r["data"]["seq"], 4);
    assert_eq!(r["data"]["snapshot"].as_array().unwrap().len(), 2);
    app.create_task("c").await;
    let ev = ws.next_event().await;
    assert_eq!((ev["topic"].clone(), ev["seq"].clone()), (json!("tasks"), json!(5)));
}

/// Sends frames in one write, without waiting, then collects the replies to
/// their refs.
async fn pipelined(ws: &mut Ws, frames: &[Value]) -> Vec<Value> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    for f in frames {
        ws.stream.feed(Message::Text(f.to_string())).await.unwrap();
    }
    ws.stream.flush().await.unwrap();
    let refs: Vec<Value> = frames.iter().map(|f| f["ref"].clone()).collect();
    ws.replies_to(&refs).await
}

/// Creates a task and then an agent; the agent's event on `agents` is the
/// barrier: every event of the task's change was published before it.
async fn task_then_barrier(app: &TestApp, ws: &mut Ws, name: &str) -> Vec<Value> {
    let res = app.post("/api/tasks", json!({ "title": name })).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let res = app.post("/api/agents", json!({ "name": name })).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let seq = seq_of(&res);
    ws.events_until("agents", seq).await
}

#[tokio::test]
async fn a_subscribe_repeated_before_its_reply_still_delivers_events() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("agents").await["ok"], true);
    let replies = pipelined(
        &mut ws,
        &[
            json!({"type": "subscribe", "ref": "s1", "topic": "tasks"}),
            json!({"type": "subscribe", "ref": "s2", "topic": "tasks"}),
        ],
    )
    .await;
    for r in &replies {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["data"]["snapshot"], json!([]), "{r}");
    }
    let frames = task_then_barrier(&app, &mut ws, "one").await;
    let on_tasks: Vec<&Value> = frames.iter().filter(|f| f["topic"] == "tasks").collect();
    assert_eq!(
        on_tasks.len(),
        1,
        "the task.created event on `tasks`, once; got {frames:?}"
    );
    assert_eq!(on_tasks[0]["event"], "task.created");
}

#[tokio::test]
async fn subscribe_unsubscribe_subscribe_before_the_replies_ends_subscribed() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("agents").await["ok"], true);
    let replies = pipelined(
        &mut ws,
        &[
            json!({"type": "subscribe", "ref": "s1", "topic": "tasks"}),
            json!({"type": "unsubscribe", "ref": "u1", "topic": "tasks"}),
            json!({"type": "subscribe", "ref": "s2", "topic": "tasks"}),
        ],
    )
    .await;
    for r in &replies {
        assert_eq!(r["ok"], true, "{r}");
    }
    let frames = task_then_barrier(&app, &mut ws, "one").await;
    let on_tasks: Vec<&Value> = frames.iter().filter(|f| f["topic"] == "tasks").collect();
    assert_eq!(
        on_tasks.len(),
        1,
        "the last frame subscribed `tasks`, so its event comes once; got {frames:?}"
    );
}

/// A repeated subscribe of a live topic, while another socket writes: no
/// event past the reply's seq may come before the reply (the client would
/// replace its state with the older snapshot and lose that change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_subscribe_under_writes_never_lets_a_later_event_overtake_its_reply() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let app = spawn_app();
    let id = app.create_task("t").await["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("tasks").await["ok"], true);
    let mut writer = app.ws().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut refs = Vec::new();
                for _ in 0..20 {
                    n += 1;
                    let params = json!({"id": id, "patch": {"title": format!("v{n}")}});
                    writer
                        .send(&json!({"type": "call", "ref": n, "method": "task.update", "params": params}))
                        .await;
                    refs.push(json!(n));
                }
                writer.replies_to(&refs).await;
                writer.take_backlog();
            }
        })
    };
    let mut overtaken = Vec::new();
    for i in 0..200 {
        let r = format!("s{i}");
        ws.send(&json!({"type": "subscribe", "ref": r, "topic": "tasks"})).await;
        let mut before = Vec::new();
        loop {
            let v = ws.recv().await;
            if v["type"] == "reply" && v["ref"] == json!(r) {
                assert_eq!(v["ok"], true, "{v}");
                let s = v["data"]["seq"].as_i64().unwrap();
                overtaken.extend(before.iter().filter(|e| **e > s).map(|e| (i, *e, s)));
                break;
            }
            if v["type"] == "event" {
                before.push(v["seq"].as_i64().unwrap());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    assert!(overtaken.is_empty(), "(subscribe, event seq, reply seq): {overtaken:?}");
}
