//! Window topics (`tasks?limit=3&order=-updated_at&status=done`): the first
//! `limit` matching tasks by `order`, live; a task entering pushes the last
//! out, one leaving lets the next in. Every view equals the query (REST page)
//! at the same seq, also after concurrent writes and resumes.

use crate::common::*;
use crate::shared::{by_id, seq_of};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

async fn query(app: &TestApp, topic: &str) -> (i64, BTreeMap<i64, Value>) {
    let list = app.get_json(&format!("/api/{topic}")).await;
    (list["seq"].as_i64().unwrap(), by_id(&list["items"]))
}

/// Reads events until `state` is at `seq`: the seq of a change that the
/// window is known to hear of.
async fn follow(ws: &mut Ws, state: &mut TopicState, seq: i64) {
    for ev in ws.events_until(&state.topic.clone(), seq).await {
        state.apply(&ev);
    }
    // The change's other events came with the first: a ping's reply is
    // queued after them.
    ws.ping().await;
    for ev in ws.take_backlog() {
        state.apply(&ev);
    }
}

/// Makes `n` done tasks, `t0`, `t1`, ...; returns their ids in order.
async fn done_tasks(app: &TestApp, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let res = app
            .post("/api/tasks", json!({"title": format!("t{i}"), "status": "done"}))
            .send()
            .await
            .unwrap();
        ids.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    ids
}

/// Subscribes to `topic`; returns the reply's position (epoch, seq).
async fn subscribed_at(ws: &mut Ws, topic: &str) -> (String, i64) {
    let r = ws.subscribe(topic).await;
    assert_eq!(r["ok"], true, "{r}");
    (
        r["data"]["epoch"].as_str().unwrap().to_string(),
        r["data"]["seq"].as_i64().unwrap(),
    )
}

fn names(state: &TopicState, from: usize) -> Vec<(String, i64)> {
    state.events[from..]
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["data"]["id"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(e, i)| (e.to_string(), *i)).collect()
}

#[tokio::test]
async fn a_window_has_one_spelling_and_rest_pages_it_with_a_cursor() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    let r = ws.subscribe("tasks?limit=50&order=-updated_at&status=done").await;
    assert_eq!(r["ok"], true, "{r}");
    for (topic, says) in [
        (
            "tasks?order=-updated_at&limit=50",
            r#"use "tasks?limit=50&order=-updated_at""#,
        ),
        ("tasks?limit=501&order=priority", "limit must be 1 to 500"),
        ("tasks?limit=5&order=title", "unknown order \"title\""),
        ("tasks?limit=5", "`limit` and `order` go together"),
    ] {
        let r = ws.subscribe(topic).await;
        assert_eq!(r["error"]["code"], "bad_request", "{topic}: {r}");
        let m = r["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "{topic}: {m}");
    }
    for p in [0, 3, 1, 3, 2, 0, 1] {
        app.post("/api/tasks", json!({"title": "t", "priority": p}))
            .send()
            .await
            .unwrap();
    }
    // Pages by priority, ties by id; each page ends with the next cursor.
    let mut got = Vec::new();
    let mut path = "/api/tasks?order=priority&limit=3".to_string();
    loop {
        let page = app.get_json(&path).await;
        for t in page["items"].as_array().unwrap() {
            got.push((t["priority"].as_i64().unwrap(), t["id"].as_i64().unwrap()));
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/tasks?order=priority&limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(got, [(0, 1), (0, 6), (1, 3), (1, 7), (2, 5), (3, 2), (3, 4)]);
    for bad in [
        "/api/tasks?after=3,1",
        "/api/tasks?order=priority&limit=3&after=x",
        "/api/tasks?limit=0&order=priority",
    ] {
        assert_eq!(app.get(bad).send().await.unwrap().status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn entering_pushes_the_last_out_and_leaving_lets_the_next_in() {
    let app = spawn_app();
    let ids = done_tasks(&app, 5).await;
    let topic = "tasks?limit=3&order=-updated_at&status=done";
    let mut ws = app.ws().await;
    let mut state = TopicState::from_snapshot(&ws.subscribe(topic).await);
    assert_eq!(state.entities, query(&app, topic).await.1);
    assert_eq!(state.entities.keys().copied().collect::<Vec<_>>(), ids[2..]);

    let patch = |id: i64, body: Value| {
        let app = &app;
        async move { seq_of(&app.patch(&format!("/api/tasks/{id}"), body).send().await.unwrap()) }
    };
    // The oldest changes: newest now, it enters and pushes the last out.
    let s = patch(ids[0], json!({"title": "again"})).await;
    follow(&mut ws, &mut state, s).await;
    assert_eq!(
        names(&state, 0),
        pairs(&[("task.left", ids[2]), ("task.entered", ids[0])])
    );
    assert_eq!(state.entities, query(&app, topic).await.1);
    // One in the window stops matching: the next comes in, with its data.
    let n = state.events.len();
    let s = patch(ids[4], json!({"status": "todo"})).await;
    follow(&mut ws, &mut state, s).await;
    assert_eq!(
        names(&state, n),
        pairs(&[("task.left", ids[4]), ("task.entered", ids[2])])
    );
    assert_eq!(state.entities[&ids[2]]["title"], "t2", "{:?}", state.entities);
    assert_eq!(state.entities, query(&app, topic).await.1);
    // An update in the window is an update (and moves it to the top).
    let n = state.events.len();
    let s = patch(ids[2], json!({"priority": 3})).await;
    follow(&mut ws, &mut state, s).await;
    assert_eq!(names(&state, n), pairs(&[("task.updated", ids[2])]));
    // A delete: deleted, and the next comes in.
    let n = state.events.len();
    let res = app.delete(&format!("/api/tasks/{}", ids[3])).send().await.unwrap();
    follow(&mut ws, &mut state, seq_of(&res)).await;
    assert_eq!(
        names(&state, n),
        pairs(&[("task.deleted", ids[3]), ("task.entered", ids[1])])
    );
    // A create that matches is created, and pushes the last out.
    let n = state.events.len();
    let res = app
        .post("/api/tasks", json!({"title": "new", "status": "done"}))
        .send()
        .await
        .unwrap();
    let s = seq_of(&res);
    let new = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    follow(&mut ws, &mut state, s).await;
    assert_eq!(names(&state, n), pairs(&[("task.left", ids[1]), ("task.created", new)]));
    let (seq, items) = query(&app, topic).await;
    assert_eq!(seq, s);
    assert_eq!(state.entities, items);
    assert_eq!(state.entities.len(), 3);
}

/// Writers change tasks at random while clients hold windows, drop and
/// resume them; every view equals the query at the same seq, and a replay
/// from the start is exactly what a live client got.
#[tokio::test]
async fn windows_equal_the_query_after_concurrent_writes_and_resumes() {
    let app = spawn_app();
    let agent = app.create_agent("a1").await["id"].as_i64().unwrap();
    let mut ids = Vec::new();
    let statuses = ["todo", "in_progress", "blocked", "review", "done"];
    for i in 0..20 {
        let res = app
            .post(
                "/api/tasks",
                json!({"title": format!("t{i}"), "priority": i % 4, "status": statuses[i % 5]}),
            )
            .send()
            .await
            .unwrap();
        ids.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    let topics = [
        "tasks?limit=4&order=-updated_at&status=done",
        "tasks?assignee_id=none&limit=3&order=priority",
        "tasks?limit=5&order=-priority&status=in_progress,todo",
        "tasks?limit=2&order=created_at",
    ];
    let mut live = app.ws().await;
    let mut live_states = Vec::new();
    for t in topics {
        live_states.push(TopicState::from_snapshot(&live.subscribe(t).await));
    }
    let initial = live_states.clone();
    let epoch = live.hello["epoch"].as_str().unwrap().to_string();

    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (http, base, admin) = (app.http(), app.url("/"), app.admin.clone());
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w + 10);
                let mut mine: Vec<i64> = ids.iter().copied().skip(w as usize).step_by(3).collect();
                for _ in 0..50 {
                    let roll = rng.gen_range(0..10);
                    let req = if roll == 0 {
                        http.post(format!("{base}api/tasks")).json(
                            &json!({"title": "new", "priority": rng.gen_range(0..4), "status": statuses[rng.gen_range(0..5)]}),
                        )
                    } else if roll == 1 && mine.len() > 3 {
                        let id = mine.remove(rng.gen_range(0..mine.len()));
                        http.delete(format!("{base}api/tasks/{id}"))
                    } else {
                        let id = mine[rng.gen_range(0..mine.len())];
                        let patch = match rng.gen_range(0..4) {
                            0 => json!({"status": statuses[rng.gen_range(0..5)]}),
                            1 => json!({"priority": rng.gen_range(0..4)}),
                            2 => {
                                let who = [None, Some(agent)][rng.gen_range(0..2)];
                                json!({ "assignee_id": who })
                            }
                            _ => json!({"title": format!("t{}", rng.gen::<u16>())}),
                        };
                        http.patch(format!("{base}api/tasks/{id}")).json(&patch)
                    };
                    let res = req.bearer_auth(&admin).send().await.unwrap();
                    assert!(res.status().is_success(), "{}", res.status());
                    if roll == 0 {
                        mine.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
                    }
                }
            })
        })
        .collect();

    let mut resumers: Vec<TopicState> = Vec::new();
    for _ in 0..5 {
        let mut ws = app.ws().await;
        let mut held = Vec::new();
        for (i, t) in topics.iter().enumerate() {
            let state = match resumers.get(i) {
                Some(s) => {
                    let mut s = s.clone();
                    let r = ws.resume(t, &epoch, s.seq).await;
                    if r["data"].get("snapshot").is_some() {
                        s = TopicState::from_snapshot(&r);
                    } else {
                        s.resume(&r);
                    }
                    s
                }
                None => TopicState::from_snapshot(&ws.subscribe(t).await),
            };
            held.push(state);
        }
        ws.ping().await;
        for ev in ws.take_backlog() {
            let i = topics.iter().position(|t| ev["topic"] == *t).unwrap();
            held[i].apply(&ev);
        }
        drop(ws);
        resumers = held;
    }
    for w in writers {
        w.await.unwrap();
    }

    // Every client comes back once more: its view is the query at the
    // reply's seq.
    let mut ws = app.ws().await;
    for (i, t) in topics.iter().enumerate() {
        let mut s = resumers[i].clone();
        let r = ws.resume(t, &epoch, s.seq).await;
        s.resume(&r);
        let (seq, items) = query(&app, t).await;
        assert_eq!(s.seq, seq, "{t}");
        assert_eq!(s.entities, items, "{t} at {seq}");
    }
    // A replay from the live client's start is exactly what it got live.
    let mut ws = app.ws().await;
    for (i, t) in topics.iter().enumerate() {
        let mut replayed = initial[i].clone();
        let r = ws.resume(t, &epoch, replayed.start).await;
        replayed.resume(&r);
        let last = replayed
            .events
            .last()
            .map_or(replayed.start, |e| e["seq"].as_i64().unwrap());
        if live_states[i].seq < last {
            let mut got = live.events_until(t, last).await;
            // The rest of that change's events came with it.
            live.ping().await;
            got.extend(live.take_backlog());
            for ev in got {
                let k = topics.iter().position(|x| ev["topic"] == *x).unwrap();
                live_states[k].apply(&ev);
            }
        }
        assert_eq!(names(&live_states[i], 0), names(&replayed, 0), "{t}");
        assert!(!replayed.events.is_empty(), "{t}: the run changed nothing?");
        let (_, items) = query(&app, t).await;
        assert_eq!(live_states[i].entities, items, "{t}");
        assert_eq!(replayed.entities, items, "{t}");
    }
}

/// A call that fails after its writes (the test-only `fail_op_id` hook)
/// takes its window changes back with it: no events, and the next change
/// is computed against the window as it was.
#[tokio::test]
async fn a_failed_call_leaves_the_window_as_it_was() {
    let app = spawn_app_with(|c| c.db.fail_op_id = Some("boom".into()));
    let ids = done_tasks(&app, 4).await;
    let topic = "tasks?limit=2&order=-updated_at&status=done";
    let mut ws = app.ws().await;
    let mut state = TopicState::from_snapshot(&ws.subscribe(topic).await);
    // Out of the window and back in, then failed: nothing committed.
    let r = ws
        .request(json!({"type": "call", "method": "task.update", "op_id": "boom",
                        "params": {"id": ids[3], "patch": {"status": "todo"}}}))
        .await;
    assert_eq!(r["ok"], false, "{r}");
    let r = ws
        .request(json!({"type": "call", "method": "task.delete", "op_id": "boom", "params": {"id": ids[2]}}))
        .await;
    assert_eq!(r["ok"], false, "{r}");
    let res = app
        .patch(&format!("/api/tasks/{}", ids[0]), json!({"title": "up"}))
        .send()
        .await
        .unwrap();
    let s = seq_of(&res);
    follow(&mut ws, &mut state, s).await;
    assert_eq!(
        names(&state, 0),
        pairs(&[("task.left", ids[2]), ("task.entered", ids[0])])
    );
    let (seq, items) = query(&app, topic).await;
    assert_eq!(seq, s);
    assert_eq!(state.entities, items);
}

/// The server keeps a window while someone holds it and, by default, a
/// minute after: a resume then replays. Once dropped (here at once, with no
/// linger), a resume gets a snapshot.
#[tokio::test]
async fn a_window_is_kept_while_held_and_dropped_after() {
    let app = spawn_app_with(|c| c.db.window_linger = Duration::ZERO);
    let topic = "tasks?limit=2&order=created_at";
    let mut a = app.ws().await;
    let (epoch, since) = subscribed_at(&mut a, topic).await;
    let created = app.create_task("one").await;
    let mut b = app.ws().await;
    let r = b.resume(topic, &epoch, since).await;
    let events = r["data"]["events"].as_array().expect("a replay while held");
    assert_eq!(events.len(), 1, "{r}");
    assert_eq!(events[0]["data"], created);
    for ws in [&mut a, &mut b] {
        let u = ws.request(json!({"type": "unsubscribe", "topic": topic})).await;
        assert_eq!(u["ok"], true);
    }
    let r = b.resume(topic, &epoch, since).await;
    assert_eq!(r["data"]["snapshot"], json!([created]), "{r}");
}

/// A window its last subscriber left is kept live for a while: a page that
/// comes back resumes it, with the changes made while nobody held it.
#[tokio::test]
async fn a_window_left_by_all_lingers_and_resumes() {
    let app = spawn_app();
    let topic = "tasks?limit=2&order=created_at";
    let mut a = app.ws().await;
    let (epoch, since) = subscribed_at(&mut a, topic).await;
    let u = a.request(json!({"type": "unsubscribe", "topic": topic})).await;
    assert_eq!(u["ok"], true);
    drop(a);
    let first = app.create_task("one").await;
    let second = app.create_task("two").await;
    app.create_task("three (after the window's two)").await;
    let mut b = app.ws().await;
    let r = b.resume(topic, &epoch, since).await;
    let events = r["data"]["events"].as_array().expect("a replay of the kept window");
    let ids: Vec<&Value> = events.iter().map(|e| &e["data"]["id"]).collect();
    assert_eq!(ids, [&first["id"], &second["id"]], "{r}");
}
