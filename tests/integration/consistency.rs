//! Snapshot plus events has no gap and no duplicate: concurrent writers over
//! sockets and REST, clients that subscribe at random moments, and at the end
//! every client's rebuilt state equals the database.

use crate::common::*;
use crate::shared::{by_id, seq_header, seq_of};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const WRITERS: usize = 4;
const OPS_PER_WRITER: usize = 40;
const CLIENTS: usize = 8;

fn seed() -> u64 {
    std::env::var("TASKWIRE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// One random write. Returns the seq of the committed change, if any.
enum Door<'a> {
    Socket(&'a mut Ws),
    Rest(&'a TestApp),
}

fn random_patch(rng: &mut StdRng) -> Value {
    let statuses = ["todo", "in_progress", "blocked", "review", "done"];
    match rng.gen_range(0..4) {
        0 => json!({"status": statuses[rng.gen_range(0..5)]}),
        1 => json!({"priority": rng.gen_range(0..4)}),
        2 => json!({"title": format!("t{}", rng.gen::<u32>())}),
        _ => json!({"description": format!("d{}", rng.gen::<u32>()), "priority": rng.gen_range(0..4)}),
    }
}

/// Performs one op through `door`; returns (ok, seq).
async fn write(door: &mut Door<'_>, method: &str, params: Value) -> (bool, Option<i64>, Value) {
    match door {
        Door::Socket(ws) => {
            let r = ws.call(method, params).await;
            let ok = r["ok"] == true;
            if !ok {
                assert_eq!(r["error"]["code"], "not_found", "{method}: {r}");
            }
            (ok, r["seq"].as_i64(), r["data"].clone())
        }
        Door::Rest(app) => {
            let res = match method {
                "task.create" => app.post("/api/tasks", params).send().await.unwrap(),
                "task.update" => app
                    .patch(&format!("/api/tasks/{}", params["id"]), params["patch"].clone())
                    .send()
                    .await
                    .unwrap(),
                "task.delete" => app
                    .delete(&format!("/api/tasks/{}", params["id"]))
                    .send()
                    .await
                    .unwrap(),
                _ => unreachable!(),
            };
            let status = res.status().as_u16();
            let seq = seq_header(&res);
            let body: Value = if status == 204 {
                json!({})
            } else {
                res.json().await.unwrap()
            };
            let ok = (200..300).contains(&status);
            if !ok {
                assert_eq!(status, 404, "{method}: {body}");
            }
            (ok, seq, body)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_plus_events_equals_the_database_under_concurrent_writers() {
    let seed = seed();
    eprintln!("seed {seed} (set TASKWIRE_TEST_SEED to repeat)");
    let app = Arc::new(spawn_app());
    let live: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let last_seq = Arc::new(AtomicI64::new(0));
    let (progress_tx, progress_rx) = watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let (done_tx, done_rx) = watch::channel(false);
    // The writers start once the first client holds its subscriptions.
    let (first_tx, first_rx) = watch::channel(false);
    let first_tx = Arc::new(first_tx);
    let total_ops = WRITERS * OPS_PER_WRITER;

    // Clients first, so they can subscribe before the first write.
    let mut clients = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed);
    for c in 0..CLIENTS {
        // Spread over the run: the first before any write, the last after all.
        let threshold = match c {
            0 => 0,
            c if c == CLIENTS - 1 => total_ops,
            _ => rng.gen_range(1..total_ops),
        };
        let app = app.clone();
        let live = live.clone();
        let mut progress = progress_rx.clone();
        let mut done = done_rx.clone();
        let first_tx = first_tx.clone();
        let tasks_first = rng.gen_bool(0.5);
        let pick: u64 = rng.gen();
        // Every other client drops its socket at some point and resumes later.
        let resume_at = (c % 2 == 1 && threshold < total_ops).then(|| {
            let drop_at = rng.gen_range(threshold..=total_ops);
            (drop_at, rng.gen_range(drop_at..=total_ops), rng.gen::<f64>())
        });
        let last_seq = last_seq.clone();
        clients.push(tokio::spawn(async move {
            progress.wait_for(|n| *n >= threshold).await.expect("progress");
            let mut ws = app.ws().await;
            let mut states: BTreeMap<String, TopicState> = BTreeMap::new();
            let mut epoch = String::new();
            let single = {
                let l = live.lock().unwrap();
                (!l.is_empty()).then(|| l[(pick % l.len() as u64) as usize])
            };
            let mut topics = vec!["tasks".to_string()];
            if let Some(id) = single {
                topics.push(format!("task:{id}"));
            }
            if !tasks_first {
                topics.reverse();
            }
            for t in &topics {
                let r = ws.subscribe(t).await;
                if r["ok"] == false {
                    // The task went between picking and subscribing.
                    assert_eq!(r["error"]["code"], "not_found", "{r}");
                    assert!(t.starts_with("task:"), "{r}");
                    continue;
                }
                assert_eq!(r["data"]["topic"], t.as_str(), "{r}");
                epoch = r["data"]["epoch"].as_str().unwrap().to_string();
                states.insert(t.clone(), TopicState::from_snapshot(&r));
            }
            if threshold == 0 {
                first_tx.send(true).unwrap();
            }
            // Events that came before the replies were kept aside in order.
            for ev in ws.take_backlog() {
                let t = ev["topic"].as_str().unwrap().to_string();
                states.get_mut(&t).expect("event of a subscribed topic").apply(&ev);
            }
            // Topics that ended for good while the client was away.
            let mut ended: Vec<String> = Vec::new();
            let mut resumed = 0;
            if let Some((drop_at, back_at, part)) = resume_at {
                progress.wait_for(|n| *n >= drop_at).await.expect("progress");
                // Read part of what was committed so far, so the position is
                // somewhere in the stream, then go away.
                let now = last_seq.load(Ordering::SeqCst);
                let from = states["tasks"].seq;
                let mid = from + ((now - from) as f64 * part) as i64;
                while states["tasks"].seq < mid {
                    let ev = ws.next_event().await;
                    let et = ev["topic"].as_str().expect("topic").to_string();
                    states.get_mut(&et).expect("subscribed").apply(&ev);
                }
                for ev in ws.take_backlog() {
                    let et = ev["topic"].as_str().unwrap().to_string();
                    states.get_mut(&et).expect("subscribed").apply(&ev);
                }
                drop(ws);
                progress.wait_for(|n| *n >= back_at).await.expect("progress");
                ws = app.ws().await;
                for (t, st) in states.iter_mut() {
                    let r = ws.resume(t, &epoch, st.seq).await;
                    if r["ok"] == false {
                        // Only a task deleted before the client left has
                        // nothing to replay.
                        assert_eq!(r["error"]["code"], "not_found", "{r}");
                        assert!(st.entities.is_empty(), "{t} exists but resume said {r}");
                        ended.push(t.clone());
                        continue;
                    }
                    st.resume(&r);
                    resumed += 1;
                }
                for ev in ws.take_backlog() {
                    let et = ev["topic"].as_str().unwrap().to_string();
                    assert!(!ended.contains(&et), "an event of an ended topic: {ev}");
                    states.get_mut(&et).expect("subscribed").apply(&ev);
                }
            }
            done.wait_for(|d| *d).await.expect("done");
            // What each topic must reach: its last change in the log.
            let mut targets = BTreeMap::new();
            for t in states.keys().filter(|t| !ended.contains(t)) {
                let log = app.changes(0, Some(t)).await;
                let target = log["events"]
                    .as_array()
                    .unwrap()
                    .last()
                    .map_or(0, |e| e["seq"].as_i64().unwrap());
                targets.insert(t.clone(), target);
            }
            while targets.iter().any(|(t, target)| states[t].seq < *target) {
                let ev = ws.next_event().await;
                let et = ev["topic"].as_str().expect("topic").to_string();
                assert!(!ended.contains(&et), "an event of an ended topic: {ev}");
                states
                    .get_mut(&et)
                    .unwrap_or_else(|| panic!("event of a topic never subscribed: {ev}"))
                    .apply(&ev);
            }
            ws.ping().await;
            let stray = ws.take_backlog();
            assert!(stray.is_empty(), "events after the last change: {stray:?}");
            (threshold, resumed, states)
        }));
    }

    let mut first_rx = first_rx;
    first_rx.wait_for(|f| *f).await.expect("first client");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let app = app.clone();
        let live = live.clone();
        let last_seq = last_seq.clone();
        let progress_tx = progress_tx.clone();
        let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9));
        writers.push(tokio::spawn(async move {
            let mut ws = if w % 2 == 0 { Some(app.ws().await) } else { None };
            for i in 0..OPS_PER_WRITER {
                let target = {
                    let l = live.lock().unwrap();
                    (!l.is_empty()).then(|| l[rng.gen_range(0..l.len())])
                };
                let roll: f64 = rng.gen();
                let (method, params) = match target {
                    Some(id) if roll < 0.6 => ("task.update", json!({"id": id, "patch": random_patch(&mut rng)})),
                    Some(id) if roll < 0.8 => ("task.delete", json!({ "id": id })),
                    _ => (
                        "task.create",
                        json!({"title": format!("w{w} op{i}"), "priority": rng.gen_range(0..4)}),
                    ),
                };
                let mut door = match ws.as_mut() {
                    Some(ws) => Door::Socket(ws),
                    None => Door::Rest(&app),
                };
                let (ok, seq, data) = write(&mut door, method, params.clone()).await;
                if ok {
                    match method {
                        "task.create" => {
                            assert!(seq.is_some(), "a create without seq: {data}");
                            live.lock().unwrap().push(data["id"].as_i64().unwrap());
                        }
                        "task.delete" => {
                            assert!(seq.is_some(), "a delete without seq");
                            live.lock().unwrap().retain(|t| *t != params["id"]);
                        }
                        _ => {}
                    }
                    if let Some(s) = seq {
                        last_seq.fetch_max(s, Ordering::SeqCst);
                    }
                }
                progress_tx.send_modify(|n| *n += 1);
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let final_seq = last_seq.load(Ordering::SeqCst);
    assert!(final_seq > 0);
    let db = app.get_json("/api/tasks").await;
    assert_eq!(db["seq"], final_seq, "the read's position is the last commit");
    done_tx.send(true).unwrap();

    let db_tasks = by_id(&db["items"]);
    let mut checked_single = 0;
    let mut total_resumed = 0;
    for c in clients {
        let (threshold, resumed, states) = c.await.expect("client");
        total_resumed += resumed;
        for (topic, st) in states {
            eprintln!(
                "client at {threshold} ({resumed} resumed): {topic} from seq {} with {} entities, {} events",
                st.start,
                st.entities.len(),
                st.events.len()
            );
            // The exact changes of the topic after the snapshot, from the log.
            let log = app.changes(st.start, Some(&topic)).await;
            assert_eq!(
                Value::Array(st.events.clone()),
                log["events"],
                "client at {threshold}: events of {topic} differ from the log"
            );
            if topic == "tasks" {
                assert_eq!(st.seq, final_seq, "client at {threshold}");
                assert_eq!(st.entities, db_tasks, "client at {threshold}: tasks state");
                // Only task changes happen here, so the seqs are consecutive.
                let seqs: Vec<i64> = st.events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
                let want: Vec<i64> = (st.start + 1..=final_seq).collect();
                assert_eq!(seqs, want, "client at {threshold}: a gap on tasks");
            } else {
                checked_single += 1;
                let id: i64 = topic["task:".len()..].parse().unwrap();
                let want: BTreeMap<i64, Value> = db_tasks.get(&id).map(|t| (id, t.clone())).into_iter().collect();
                assert_eq!(st.entities, want, "client at {threshold}: {topic} state");
            }
        }
    }
    // Every client but the first had a live task to pick, and most got to it.
    assert!(checked_single > 0, "no task:{{id}} subscription was checked");
    assert!(total_resumed > 0, "no subscription was resumed");
}

#[tokio::test]
async fn a_change_on_several_subscribed_topics_comes_once_per_topic() {
    let app = spawn_app();
    let task = app.create_task("one").await;
    let id = task["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    let mut tasks = TopicState::from_snapshot(&ws.subscribe("tasks").await);
    let mut single = TopicState::from_snapshot(&ws.subscribe(&format!("task:{id}")).await);
    let res = app
        .patch(&format!("/api/tasks/{id}"), json!({"status": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seq = seq_of(&res);
    // A second change as a barrier: anything of the first comes before it.
    let other = app.create_task("two").await;
    let frames = ws.events_until("tasks", seq + 1).await;
    let mut by_topic: HashMap<String, Vec<Value>> = HashMap::new();
    for f in frames {
        by_topic
            .entry(f["topic"].as_str().unwrap().to_string())
            .or_default()
            .push(f);
    }
    let on_tasks = &by_topic["tasks"];
    let on_single = &by_topic[&format!("task:{id}")];
    assert_eq!(on_tasks.len(), 2, "{on_tasks:?}");
    assert_eq!(on_single.len(), 1, "{on_single:?}");
    for ev in on_tasks {
        tasks.apply(ev);
    }
    single.apply(&on_single[0]);
    assert_eq!(on_single[0]["seq"], seq);
    assert_eq!(on_tasks[0]["seq"], seq);
    assert_eq!(on_tasks[0]["data"], on_single[0]["data"]);
    assert_eq!(on_tasks[1]["data"], other);
    assert_eq!(tasks.entities.len(), 2);
    assert_eq!(single.entities[&id]["status"], "done");
}

// The checker itself must be able to fail: these feed it broken streams.

fn task(id: i64, version: i64, status: &str) -> Value {
    json!({"id": id, "title": "t", "description": "", "status": status, "priority": 0,
           "assignee_id": null, "version": version, "created_at": "c", "updated_at": "u"})
}

fn ev(seq: i64, event: &str, changed: Value, data: Value) -> Value {
    json!({"type": "event", "topic": "tasks", "seq": seq, "event": event, "changed": changed, "data": data})
}

fn checker() -> TopicState {
    TopicState::from_snapshot(&json!({"ok": true, "data": {"topic": "tasks", "epoch": "e", "seq": 5,
        "snapshot": [task(1, 1, "todo")]}}))
}

#[test]
#[should_panic(expected = "duplicate or out of order")]
fn the_checker_refuses_an_event_already_in_the_snapshot() {
    checker().apply(&ev(5, "task.updated", json!(["status"]), task(1, 2, "done")));
}

#[test]
#[should_panic(expected = "version did not grow by one")]
fn the_checker_refuses_a_missed_update() {
    checker().apply(&ev(6, "task.updated", json!(["status"]), task(1, 3, "done")));
}

#[test]
#[should_panic(expected = "changed of an update")]
fn the_checker_refuses_a_wrong_changed_list() {
    checker().apply(&ev(6, "task.updated", json!(["priority"]), task(1, 2, "done")));
}

#[test]
#[should_panic(expected = "delete of unknown")]
fn the_checker_refuses_a_delete_of_an_unknown_task() {
    checker().apply(&ev(6, "task.deleted", json!([]), json!({"id": 2})));
}
