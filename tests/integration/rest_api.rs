//! REST: its writes reach socket subscribers as the same events, with the
//! cascades of deletes; its reads and `GET /api/changes`.

use crate::common::*;
use crate::shared::{header, seq_of};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn is_rfc3339_millis_utc(s: &Value) -> bool {
    let s = s.as_str().unwrap_or("");
    // 2026-11-24T18:00:00.123Z
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Groups frames by topic, keeping their order.
fn by_topic(frames: Vec<Value>) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for f in frames {
        out.entry(f["topic"].as_str().unwrap().to_string()).or_default().push(f);
    }
    out
}

#[tokio::test]
async fn rest_task_writes_reach_socket_subscribers() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    ws.subscribe("tasks").await;

    let res = app
        .post(
            "/api/tasks",
            json!({"title": "  padded  ", "description": "d", "status": "blocked", "priority": 2}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(seq_of(&res), 1);
    assert_eq!(header(&res, "ETag").as_deref(), Some("\"1\""));
    let task: Value = res.json().await.unwrap();
    let id = task["id"].as_i64().unwrap();
    assert!(id > 0);
    assert_eq!(task["title"], "padded", "stored trimmed");
    assert_eq!(task["description"], "d");
    assert_eq!(task["status"], "blocked");
    assert_eq!(task["priority"], 2);
    assert_eq!(task["assignee_id"], Value::Null);
    assert_eq!(task["version"], 1);
    assert!(is_rfc3339_millis_utc(&task["created_at"]), "{task}");
    assert!(is_rfc3339_millis_utc(&task["updated_at"]), "{task}");
    let ev = ws.next_event().await;
    assert_eq!(ev["type"], "event");
    assert_eq!(ev["topic"], "tasks");
    assert_eq!(ev["event"], "task.created");
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["data"], task);
    assert_eq!(
        sorted(&ev["changed"]),
        vec![
            "assignee_id",
            "created_at",
            "description",
            "id",
            "priority",
            "progress",
            "status",
            "title"
        ]
    );

    let topic = format!("task:{id}");
    let r = ws.subscribe(&topic).await;
    assert_eq!(r["data"]["snapshot"], task);

    let res = app
        .patch(&format!("/api/tasks/{id}"), json!({"status": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(seq_of(&res), 2);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["version"], 2);
    let frames = by_topic(ws.events_until(&topic, 2).await);
    for t in ["tasks", topic.as_str()] {
        let ev = &frames[t][0];
        assert_eq!(frames[t].len(), 1);
        assert_eq!(ev["event"], "task.updated");
        assert_eq!(ev["seq"], 2);
        assert_eq!(ev["changed"], json!(["status"]));
        assert_eq!(ev["data"], updated);
    }

    let res = app
        .patch(
            &format!("/api/tasks/{id}"),
            json!({"title": "new", "priority": 0, "status": "done"}),
        )
        .send()
        .await
        .unwrap();
    let updated: Value = res.json().await.unwrap();
    let frames = by_topic(ws.events_until(&topic, 3).await);
    assert_eq!(sorted(&frames["tasks"][0]["changed"]), vec!["priority", "title"]);
    assert_eq!(frames["tasks"][0]["data"], updated);

    let res = app.delete(&format!("/api/tasks/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(seq_of(&res), 4);
    let frames = by_topic(ws.events_until(&topic, 4).await);
    for t in ["tasks", topic.as_str()] {
        assert_eq!(
            frames[t].iter().map(authored_by_admin).collect::<Vec<_>>(),
            vec![json!({"type": "event", "topic": t, "seq": 4, "event": "task.deleted",
                        "changed": [], "data": {"id": id}})]
        );
    }
    let res = app.get(&format!("/api/tasks/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn rest_agent_writes_reach_socket_subscribers() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    ws.subscribe("agents").await;
    let res = app
        .post("/api/agents", json!({"name": "builder-1", "meta": {"gpu": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let loc = header(&res, "Location").unwrap();
    let agent: Value = res.json().await.unwrap();
    let id = agent["id"].as_i64().unwrap();
    assert_eq!(loc, format!("/api/agents/{id}"));
    assert!(agent["token"].is_string());
    let ev = ws.next_event().await;
    assert_eq!(ev["event"], "agent.created");
    assert_eq!(ev["seq"], 1);
    let mut public = agent.clone();
    public.as_object_mut().unwrap().remove("token");
    assert_eq!(ev["data"], public, "the event never carries the token");
    assert_eq!(ev["data"]["status"], "idle");
    assert_eq!(ev["data"]["meta"], json!({"gpu": true}));
    assert_eq!(
        sorted(&ev["changed"]),
        vec![
            "created_at",
            "current_task_id",
            "id",
            "last_heartbeat_at",
            "meta",
            "name",
            "status"
        ]
    );
    assert_eq!(app.get_json(&loc).await, public);

    let res = app
        .patch(&format!("/api/agents/{id}"), json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let ev = ws.next_event().await;
    assert_eq!(ev["event"], "agent.updated");
    assert_eq!(ev["changed"], json!(["status"]));
    assert_eq!(ev["data"], body);
    assert_eq!(ev["data"]["version"], 2);
}

#[tokio::test]
async fn deleting_an_agent_unassigns_its_tasks_then_deletes_it() {
    let app = spawn_app();
    let agent = app.create_agent("worker").await;
    let aid = agent["id"].as_i64().unwrap();
    let agent_token = agent["token"].as_str().unwrap().to_string();
    let t1 = app
        .post("/api/tasks", json!({"title": "t1", "assignee_id": aid}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let t2 = app.create_task("t2").await;
    let t3 = app.create_task("t3").await;
    let res = app
        .patch(&format!("/api/tasks/{}", t2["id"]), json!({"assignee_id": aid}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t2: Value = res.json().await.unwrap();
    let assigned = app.get_json(&format!("/api/tasks?assignee_id={aid}")).await;
    assert_eq!(assigned["items"], json!([t1, t2]));

    let mut ws = app.ws().await;
    for t in ["tasks", "agents"] {
        ws.subscribe(t).await;
    }
    let t1_topic = format!("task:{}", t1["id"]);
    let agent_topic = format!("agent:{aid}");
    ws.subscribe(&t1_topic).await;
    ws.subscribe(&agent_topic).await;

    let res = app.delete(&format!("/api/agents/{aid}")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let seq = seq_of(&res);
    assert_eq!(seq, 8, "the reply carries the seq of the delete, its last change");
    let frames = by_topic(ws.events_until(&agent_topic, seq).await);

    let unassigned = |t: &Value, seq: i64| {
        let mut t = t.clone();
        t["assignee_id"] = Value::Null;
        t["version"] = json!(t["version"].as_i64().unwrap() + 1);
        (seq, t)
    };
    let tasks = &frames["tasks"];
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for (ev, (s, want)) in tasks.iter().zip([unassigned(&t1, 6), unassigned(&t2, 7)]) {
        assert_eq!(ev["event"], "task.updated");
        assert_eq!(ev["seq"], s);
        assert_eq!(ev["changed"], json!(["assignee_id"]));
        let mut got = ev["data"].clone();
        got["updated_at"] = want["updated_at"].clone();
        assert_eq!(got, want);
    }
    assert_eq!(frames[&t1_topic].len(), 1);
    assert_eq!(frames[&t1_topic][0]["data"], tasks[0]["data"]);
    for t in ["agents", agent_topic.as_str()] {
        assert_eq!(
            frames[t].iter().map(authored_by_admin).collect::<Vec<_>>(),
            vec![json!({"type": "event", "topic": t, "seq": 8, "event": "agent.deleted",
                        "changed": [], "data": {"id": aid}})]
        );
    }

    // The database agrees; the untouched task kept its version.
    let db = app.get_json("/api/tasks").await;
    let items = db["items"].as_array().unwrap();
    assert_eq!(items[0], tasks[0]["data"]);
    assert_eq!(items[1], tasks[1]["data"]);
    assert_eq!(items[2], t3);
    let res = app.get(&format!("/api/agents/{aid}")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // The agent's token went with it.
    let res = app
        .http()
        .get(app.url("/api/tasks"))
        .bearer_auth(&agent_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn deleting_a_task_clears_agents_current_task() {
    let app = spawn_app();
    let t = app.create_task("shared").await;
    let tid = t["id"].as_i64().unwrap();
    let a1 = app.create_agent("a1").await;
    let a2 = app.create_agent("a2").await;
    let mut agents = Vec::new();
    for a in [&a1, &a2] {
        let res = app
            .patch(&format!("/api/agents/{}", a["id"]), json!({"current_task_id": tid}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["current_task_id"], tid);
        agents.push(body);
    }
    let mut ws = app.ws().await;
    ws.subscribe("agents").await;
    ws.subscribe("tasks").await;

    let res = app.delete(&format!("/api/tasks/{tid}")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let seq = seq_of(&res);
    assert_eq!(seq, 8);
    let frames = by_topic(ws.events_until("tasks", seq).await);
    let ups = &frames["agents"];
    assert_eq!(ups.len(), 2, "{ups:?}");
    for (ev, (before, s)) in ups.iter().zip([(&agents[0], 6), (&agents[1], 7)]) {
        assert_eq!(ev["event"], "agent.updated");
        assert_eq!(ev["seq"], s);
        assert_eq!(ev["changed"], json!(["current_task_id"]));
        assert_eq!(ev["data"]["current_task_id"], Value::Null);
        assert_eq!(ev["data"]["id"], before["id"]);
        assert_eq!(
            ev["data"]["version"].as_i64().unwrap(),
            before["version"].as_i64().unwrap() + 1
        );
        assert_eq!(app.get_json(&format!("/api/agents/{}", before["id"])).await, ev["data"]);
    }
    assert_eq!(frames["tasks"].len(), 1);
    assert_eq!(frames["tasks"][0]["event"], "task.deleted");
    assert_eq!(frames["tasks"][0]["seq"], 8);
}

#[tokio::test]
async fn get_changes_returns_the_events_after_since() {
    let app = spawn_app();
    let t1 = app.create_task("a").await;
    let t2 = app.create_task("b").await;
    let agent = app.create_agent("x").await;
    let res = app
        .patch(&format!("/api/tasks/{}", t1["id"]), json!({"status": "done"}))
        .send()
        .await
        .unwrap();
    let t1b: Value = res.json().await.unwrap();

    let all = app.changes(0, None).await;
    let epoch = app.get_json("/api/tasks").await["epoch"].clone();
    assert_eq!(all["epoch"], epoch);
    assert_eq!(all["seq"], 4);
    let mut public = agent.clone();
    public.as_object_mut().unwrap().remove("token");
    let events = all["events"].as_array().unwrap();
    let brief: Vec<(Value, Value, Value)> = events
        .iter()
        .map(|e| (e["seq"].clone(), e["topic"].clone(), e["event"].clone()))
        .collect();
    assert_eq!(
        brief,
        vec![
            (json!(1), json!("tasks"), json!("task.created")),
            (json!(2), json!("tasks"), json!("task.created")),
            (json!(3), json!("agents"), json!("agent.created")),
            (json!(4), json!("tasks"), json!("task.updated")),
        ]
    );
    assert_eq!(events[0]["data"], t1);
    assert_eq!(events[1]["data"], t2);
    assert_eq!(events[2]["data"], public);
    assert_eq!(events[3]["data"], t1b);
    assert_eq!(events[3]["changed"], json!(["status"]));

    let after = app.changes(2, None).await;
    assert_eq!(after["events"], json!(events[2..]));
    let one = app.changes(0, Some(&format!("task:{}", t1["id"]))).await;
    let seqs: Vec<i64> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 4]);
    assert_eq!(one["events"][1]["topic"], format!("task:{}", t1["id"]));
    let agents = app.changes(0, Some("agents")).await;
    assert_eq!(agents["events"].as_array().unwrap().len(), 1);
    assert_eq!(app.changes(4, None).await["events"], json!([]));

    // A page cut by `limit` is complete up to its last event.
    let page = app.get_json("/api/changes?since=0&limit=2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["seq"], 2);

    for bad in ["since=-1", "since=x", "limit=0", "topic=nope", "bogus=1"] {
        let res = app.get(&format!("/api/changes?{bad}")).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }
}

#[tokio::test]
async fn rest_reads_are_ordered_filtered_and_tagged() {
    let app = spawn_app();
    let mut made = Vec::new();
    for (title, status) in [("a", "todo"), ("b", "done"), ("c", "done")] {
        let res = app
            .post("/api/tasks", json!({"title": title, "status": status}))
            .send()
            .await
            .unwrap();
        made.push(res.json::<Value>().await.unwrap());
    }
    let all = app.get_json("/api/tasks").await;
    assert_eq!(all["items"], json!(made));
    assert_eq!(all["seq"], 3);
    assert!(all["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let done = app.get_json("/api/tasks?status=done").await;
    assert_eq!(done["items"], json!(made[1..]));
    let res = app.get(&format!("/api/tasks/{}", made[1]["id"])).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ETag").as_deref(), Some("\"1\""));
    assert_eq!(res.json::<Value>().await.unwrap(), made[1]);
    let agents = app.get_json("/api/agents").await;
    assert_eq!(agents["items"], json!([]));
    assert_eq!(agents["seq"], 3);
    let res = app.get("/healthz").send().await.unwrap();
    assert_eq!(res.status(), 200);
}
