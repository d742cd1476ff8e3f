//! Filtered collection topics (`tasks?status=done`): one canonical spelling,
//! snapshots of matching entities only, `entered`/`left`/`updated` for every
//! kind of change, REST lists with the same filters, and exact resume under
//! concurrent writes, checked against the query run on the database.

use crate::common::*;
use crate::shared::{by_id, seq_of};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;

async fn patch_task(app: &TestApp, id: i64, patch: Value) -> i64 {
    let res = app.patch(&format!("/api/tasks/{id}"), patch).send().await.unwrap();
    assert_eq!(res.status(), 200);
    seq_of(&res)
}

async fn new_task(app: &TestApp, body: Value) -> (i64, i64) {
    let res = app.post("/api/tasks", body).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let seq = seq_of(&res);
    (res.json::<Value>().await.unwrap()["id"].as_i64().unwrap(), seq)
}

/// The REST list at `path`, by id, and the seq it was read at.
async fn query(app: &TestApp, path: &str) -> (i64, BTreeMap<i64, Value>) {
    let list = app.get_json(path).await;
    (list["seq"].as_i64().unwrap(), by_id(&list["items"]))
}

/// `(event, id, seq)` of each event.
fn names(events: &[Value]) -> Vec<(String, i64, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["data"]["id"].as_i64().unwrap(),
                e["seq"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_the_canonical_spelling_subscribes_and_the_error_gives_it() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    for topic in [
        "tasks?assignee_id=7",
        "tasks?status=in_progress,review",
        "tasks?assignee_id=none&priority_min=2",
        "agents?status=busy,idle",
    ] {
        let r = ws.subscribe(topic).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["data"]["topic"], topic, "{r}");
        assert_eq!(r["data"]["snapshot"], json!([]), "{r}");
    }
    for (topic, says) in [
        (
            "tasks?status=review,in_progress",
            r#"use "tasks?status=in_progress,review""#,
        ),
        (
            "tasks?priority_min=2&assignee_id=none",
            r#"use "tasks?assignee_id=none&priority_min=2""#,
        ),
        ("agents?status=idle,busy", r#"use "agents?status=busy,idle""#),
        ("tasks?status=done,done", r#"use "tasks?status=done""#),
        ("tasks?priority_min=0", r#"use "tasks""#),
        ("tasks?colour=red", "unknown filter field \"colour\""),
        ("tasks?status=doing", "unknown status \"doing\""),
        ("agents?assignee_id=3", "unknown filter field \"assignee_id\""),
        ("tasks?limit=x&order=priority", "limit must be 1 to 500"),
    ] {
        let r = ws.subscribe(topic).await;
        assert_eq!(r["ok"], false, "{topic}: {r}");
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{topic}: {message}");
    }

    // REST lists take the same fields in any order, and refuse what is unknown.
    for path in [
        "/api/tasks?status=review,in_progress&priority_min=1",
        "/api/tasks?assignee_id=none",
        "/api/agents?status=busy",
    ] {
        let list = app.get_json(path).await;
        assert_eq!(list["items"], json!([]), "{path}: {list}");
    }
    for path in [
        "/api/tasks?status=doing",
        "/api/tasks?colour=red",
        "/api/agents?status=asleep",
        "/api/agents?priority_min=1",
        "/api/tasks?status=done&status=todo",
    ] {
        let res = app.get(path).send().await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{path}: {v}");
    }
}

#[tokio::test]
async fn every_kind_of_change_is_created_entered_updated_left_or_deleted() {
    let app = spawn_app();
    let agent = app.create_agent("bot").await["id"].as_i64().unwrap();
    let (kept, _) = new_task(&app, json!({"title": "kept", "priority": 3})).await;
    let (other, _) = new_task(&app, json!({"title": "other", "priority": 0})).await;

    let topic = "tasks?assignee_id=none&priority_min=2";
    let mut ws = app.ws().await;
    let r = ws.subscribe(topic).await;
    let mut state = TopicState::from_snapshot(&r);
    assert_eq!(state.entities.keys().copied().collect::<Vec<_>>(), vec![kept]);
    let by_status = "tasks?status=in_progress,review";
    let r = ws.subscribe(by_status).await;
    let mut status_state = TopicState::from_snapshot(&r);
    assert!(status_state.entities.is_empty());
    let agents_topic = "agents?status=busy";
    let r = ws.subscribe(agents_topic).await;
    let mut agents_state = TopicState::from_snapshot(&r);

    let mut expected = Vec::new();
    let mut expected_status = Vec::new();
    // Create: matching is `created`, not matching is nothing.
    let (made, s) = new_task(&app, json!({"title": "made", "priority": 2})).await;
    expected.push(("task.created", made, s));
    let (ignored, _) = new_task(&app, json!({"title": "ignored", "priority": 1})).await;
    // Priority: into the filter is `entered`, out of it `left`.
    let s = patch_task(&app, other, json!({"priority": 2})).await;
    expected.push(("task.entered", other, s));
    let s = patch_task(&app, other, json!({"title": "other 2"})).await;
    expected.push(("task.updated", other, s));
    let s = patch_task(&app, other, json!({"priority": 1})).await;
    expected.push(("task.left", other, s));
    patch_task(&app, other, json!({"title": "unseen"})).await;
    // Assignee: set is `left` (not unassigned any more), cleared is `entered`.
    let s = patch_task(&app, kept, json!({"assignee_id": agent})).await;
    expected.push(("task.left", kept, s));
    let s = patch_task(&app, kept, json!({"assignee_id": null})).await;
    expected.push(("task.entered", kept, s));
    // Status: the other topic's field.
    let s = patch_task(&app, kept, json!({"status": "in_progress"})).await;
    expected.push(("task.updated", kept, s));
    expected_status.push(("task.entered", kept, s));
    let s = patch_task(&app, kept, json!({"status": "review"})).await;
    expected.push(("task.updated", kept, s));
    expected_status.push(("task.updated", kept, s));
    let s = patch_task(&app, kept, json!({"status": "done"})).await;
    expected.push(("task.updated", kept, s));
    expected_status.push(("task.left", kept, s));
    let s = patch_task(&app, ignored, json!({"status": "review"})).await;
    expected_status.push(("task.entered", ignored, s));
    // Delete: a matching entity is `deleted`; one not held is nothing.
    let res = app.delete(&format!("/api/tasks/{other}")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = app.delete(&format!("/api/tasks/{made}")).send().await.unwrap();
    expected.push(("task.deleted", made, seq_of(&res)));
    // Agents: into `busy`, out of it, and an agent deleted while busy.
    let s = app
        .patch(&format!("/api/agents/{agent}"), json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    let busy = seq_of(&s);
    let s = app
        .patch(&format!("/api/agents/{agent}"), json!({"status": "idle"}))
        .send()
        .await
        .unwrap();
    let idle = seq_of(&s);
    let bot2 = app.create_agent("bot2").await["id"].as_i64().unwrap();
    app.patch(&format!("/api/agents/{bot2}"), json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    let res = app.delete(&format!("/api/agents/{bot2}")).send().await.unwrap();
    let gone = seq_of(&res);

    let last = expected.last().unwrap().2;
    for ev in ws.events_until(topic, last).await {
        match ev["topic"].as_str().unwrap() {
            t if t == topic => state.apply(&ev),
            t if t == by_status => status_state.apply(&ev),
            _ => agents_state.apply(&ev),
        }
    }
    let want = |v: &[(&str, i64, i64)]| v.iter().map(|(e, i, s)| (e.to_string(), *i, *s)).collect::<Vec<_>>();
    assert_eq!(names(&state.events), want(&expected));
    let last_status = expected_status.last().unwrap().2;
    if status_state.seq < last_status {
        for ev in ws.events_until(by_status, last_status).await {
            match ev["topic"].as_str().unwrap() {
                t if t == by_status => status_state.apply(&ev),
                _ => agents_state.apply(&ev),
            }
        }
    }
    assert_eq!(names(&status_state.events), want(&expected_status));
    if agents_state.seq < gone {
        for ev in ws.events_until(agents_topic, gone).await {
            agents_state.apply(&ev);
        }
    }
    let bot2_busy = agents_state.events[2]["seq"].as_i64().unwrap();
    assert_eq!(
        names(&agents_state.events),
        want(&[
            ("agent.entered", agent, busy),
            ("agent.left", agent, idle),
            ("agent.entered", bot2, bot2_busy),
            ("agent.deleted", bot2, gone),
        ])
    );
    let left = &state.events[3];
    assert_eq!(
        left["data"],
        json!({"id": other}),
        "a left event carries the id: {left}"
    );
    assert_eq!(left["changed"], json!(["priority"]), "{left}");

    // The views are the queries at the same position.
    let (seq, tasks) = query(&app, "/api/tasks?priority_min=2&assignee_id=none").await;
    assert_eq!(seq, gone);
    assert_eq!(state.entities, tasks);
    assert_eq!(
        status_state.entities,
        query(&app, "/api/tasks?status=review,in_progress").await.1
    );
    assert_eq!(agents_state.entities, query(&app, "/api/agents?status=busy").await.1);
}

/// Writers change tasks at random while clients hold filtered topics, drop
/// and resume them; every client's events equal a live client's, and every
/// view equals the query run on the database at the same seq.
#[tokio::test]
async fn filtered_topics_resume_exactly_under_concurrent_writes() {
    resume_exactly(spawn_app()).await;
}

/// The same with one change in memory: the replays are read from the log.
#[tokio::test]
async fn filtered_topics_resume_exactly_from_the_log() {
    resume_exactly(spawn_app_with(|c| c.db.recent_changes = 1)).await;
}

async fn resume_exactly(app: TestApp) {
    let agents: Vec<i64> = [
        app.create_agent("a1").await["id"].as_i64().unwrap(),
        app.create_agent("a2").await["id"].as_i64().unwrap(),
    ]
    .into();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            new_task(&app, json!({"title": format!("t{i}"), "priority": i % 4}))
                .await
                .0,
        );
    }
    let topics = [
        "tasks?status=in_progress,review".to_string(),
        "tasks?assignee_id=none&priority_min=2".to_string(),
        format!("tasks?assignee_id={}", agents[0]),
        format!("tasks?assignee_id={}&priority_min=1&status=done,todo", agents[1]),
    ];
    // One client stays live on every topic; others drop and resume.
    let mut live = app.ws().await;
    let mut live_states = Vec::new();
    for t in &topics {
        live_states.push(TopicState::from_snapshot(&live.subscribe(t).await));
    }
    let initial = live_states.clone();
    let epoch = live.hello["epoch"].as_str().unwrap().to_string();

    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let http = app.http();
            let base = app.url("/");
            let admin = app.admin.clone();
            let (ids, agents) = (ids.clone(), agents.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w);
                let statuses = ["todo", "in_progress", "blocked", "review", "done"];
                let mut mine: Vec<i64> = ids.iter().copied().skip(w as usize).step_by(3).collect();
                for _ in 0..60 {
                    let roll = rng.gen_range(0..10);
                    if roll == 0 {
                        let res = http
                            .post(format!("{base}api/tasks"))
                            .bearer_auth(&admin)
                            .json(&json!({"title": "new", "priority": rng.gen_range(0..4),
                                          "status": statuses[rng.gen_range(0..5)]}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(res.status(), 201);
                        mine.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
                        continue;
                    }
                    if roll == 1 && mine.len() > 2 {
                        let id = mine.remove(rng.gen_range(0..mine.len()));
                        let res = http
                            .delete(format!("{base}api/tasks/{id}"))
                            .bearer_auth(&admin)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(res.status(), 204);
                        continue;
                    }
                    let id = mine[rng.gen_range(0..mine.len())];
                    let patch = match rng.gen_range(0..4) {
                        0 => json!({"status": statuses[rng.gen_range(0..5)]}),
                        1 => json!({"priority": rng.gen_range(0..4)}),
                        2 => {
                            let who = [None, Some(agents[0]), Some(agents[1])][rng.gen_range(0..3)];
                            json!({ "assignee_id": who })
                        }
                        _ => json!({"title": format!("t{}", rng.gen::<u16>())}),
                    };
                    let res = http
                        .patch(format!("{base}api/tasks/{id}"))
                        .bearer_auth(&admin)
                        .json(&patch)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                }
            })
        })
        .collect();

    // Clients that come and go while the writers write.
    let mut resumers: Vec<(usize, TopicState)> = Vec::new();
    for _ in 0..6 {
        let mut ws = app.ws().await;
        let mut held = Vec::new();
        for (i, t) in topics.iter().enumerate() {
            let state = match resumers.iter().position(|(j, _)| *j == i) {
                Some(k) => {
                    let (_, mut s) = resumers.remove(k);
                    let r = ws.resume(t, &epoch, s.seq).await;
                    s.resume(&r);
                    s
                }
                None => TopicState::from_snapshot(&ws.subscribe(t).await),
            };
            held.push((i, state));
        }
        // Read what comes for a moment (a ping's round trip), then drop.
        ws.ping().await;
        for ev in ws.take_backlog() {
            let i = topics.iter().position(|t| ev["topic"] == t.as_str()).unwrap();
            held.iter_mut().find(|(j, _)| *j == i).unwrap().1.apply(&ev);
        }
        drop(ws);
        resumers = held;
    }
    for w in writers {
        w.await.unwrap();
    }

    // After the writes: each resumer comes back once more; its replayed view
    // is the query at the reply's seq.
    let mut ws = app.ws().await;
    for (i, mut state) in resumers {
        let r = ws.resume(&topics[i], &epoch, state.seq).await;
        state.resume(&r);
        let (seq, items) = query(&app, &format!("/api/{}", topics[i])).await;
        assert_eq!(state.seq, seq, "{}", topics[i]);
        assert_eq!(state.entities, items, "{} at {seq}", topics[i]);
    }

    // A client that replays the whole run from the live client's start gets
    // exactly the events the live client got.
    let mut ws = app.ws().await;
    for (i, t) in topics.iter().enumerate() {
        let start = initial[i].start;
        let mut replayed = initial[i].clone();
        let r = ws.resume(t, &epoch, start).await;
        replayed.resume(&r);
        let last = replayed.events.last().map_or(start, |e| e["seq"].as_i64().unwrap());
        if live_states[i].seq < last {
            for ev in live.events_until(t, last).await {
                let k = topics.iter().position(|x| ev["topic"] == x.as_str()).unwrap();
                live_states[k].apply(&ev);
            }
        }
        assert_eq!(names(&live_states[i].events), names(&replayed.events), "{t}");
        assert!(!replayed.events.is_empty(), "{t}: the run changed nothing?");
        let (_, items) = query(&app, &format!("/api/{t}")).await;
        assert_eq!(live_states[i].entities, items, "{t}");
    }
}
