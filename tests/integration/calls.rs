//! Writes: an ok reply means committed, versions grow by one per change, stale
//! versions conflict, a no-op commits nothing, and a repeated op_id or
//! Idempotency-Key commits once and answers the same.

use crate::common::*;
use crate::shared::{header, seq_header};
use serde_json::{json, Value};
use std::sync::Arc;

fn count_changes(app: &TestApp) -> i64 {
    app.sqlite().int("SELECT COUNT(*) AS n FROM changes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ok_reply_means_the_change_is_committed() {
    let app = Arc::new(spawn_app());
    // Concurrent callers, so replies come out of shared group commits; each
    // checks its own row through a separate connection the moment it has the
    // reply.
    let mut callers = Vec::new();
    for c in 0..4 {
        let app = app.clone();
        callers.push(tokio::spawn(async move {
            let mut ws = app.ws().await;
            for i in 0..10 {
                let title = format!("c{c} n{i}");
                let r = ws.call_ok("task.create", json!({ "title": title })).await;
                let id = r["data"]["id"].as_i64().unwrap();
                let seq = r["seq"].as_i64().unwrap();
                let mut db = app.sqlite();
                assert_eq!(
                    db.text(&format!("SELECT title AS v FROM tasks WHERE id = {id}")),
                    Some(title),
                    "created task {id} not visible after its reply"
                );
                assert_eq!(
                    db.int(&format!(
                        "SELECT entity_id AS n FROM changes WHERE seq = {seq} AND kind = 'created'"
                    )),
                    id,
                    "change {seq} not in the log after its reply"
                );
                let r = ws
                    .call_ok("task.update", json!({"id": id, "patch": {"status": "done"}}))
                    .await;
                assert_eq!(r["data"]["version"], 2);
                assert_eq!(
                    app.sqlite().text(&format!(
                        "SELECT status || ':' || version AS v FROM tasks WHERE id = {id}"
                    )),
                    Some("done:2".to_string())
                );
                if i % 3 == 0 {
                    ws.call_ok("task.delete", json!({ "id": id })).await;
                    assert_eq!(
                        app.sqlite()
                            .int(&format!("SELECT COUNT(*) AS n FROM tasks WHERE id = {id}")),
                        0,
                        "deleted task {id} still there after the reply"
                    );
                }
            }
        }));
    }
    for c in callers {
        c.await.expect("caller");
    }

    // REST writes too.
    let res = app.post("/api/tasks", json!({"title": "rest"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let seq = seq_header(&res).expect("Taskwire-Seq");
    let t: Value = res.json().await.unwrap();
    let mut db = app.sqlite();
    assert_eq!(
        db.text(&format!("SELECT title AS v FROM tasks WHERE id = {}", t["id"])),
        Some("rest".into())
    );
    assert_eq!(db.int("SELECT MAX(seq) AS n FROM changes"), seq);
    let res = app
        .patch(&format!("/api/tasks/{}", t["id"]), json!({"priority": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.sqlite()
            .int(&format!("SELECT priority AS n FROM tasks WHERE id = {}", t["id"])),
        3
    );
    let res = app.post("/api/agents", json!({"name": "bot"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let agent: Value = res.json().await.unwrap();
    let mut db = app.sqlite();
    assert_eq!(
        db.text(&format!("SELECT name AS v FROM agents WHERE id = {}", agent["id"])),
        Some("bot".into())
    );
    // Its token is stored, hashed: never in clear.
    let token = agent["token"].as_str().expect("agent token");
    assert_eq!(
        db.int(&format!(
            "SELECT COUNT(*) AS n FROM tokens WHERE agent_id = {}",
            agent["id"]
        )),
        1
    );
    assert_eq!(
        db.int(&format!("SELECT COUNT(*) AS n FROM tokens WHERE hash = '{token}'")),
        0
    );
}

#[tokio::test]
async fn each_change_bumps_the_version_by_one_and_stale_versions_conflict() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    let r = ws.call_ok("task.create", json!({"title": "v"})).await;
    let id = r["data"]["id"].as_i64().unwrap();
    assert_eq!(r["data"]["version"], 1);
    for (n, patch) in [
        json!({"status": "in_progress"}),
        json!({"priority": 2}),
        json!({"title": "v2", "description": "more"}),
    ]
    .into_iter()
    .enumerate()
    {
        let r = ws.call_ok("task.update", json!({"id": id, "patch": patch})).await;
        assert_eq!(r["data"]["version"], n as i64 + 2, "{r}");
        assert_eq!(r["seq"], n as i64 + 2, "{r}");
    }
    let res = app.get(&format!("/api/tasks/{id}")).send().await.unwrap();
    assert_eq!(header(&res, "ETag").as_deref(), Some("\"4\""));

    // A stale if_version over the socket: conflict, nothing committed.
    let changes = count_changes(&app);
    let r = ws
        .call(
            "task.update",
            json!({"id": id, "if_version": 2, "patch": {"status": "done"}}),
        )
        .await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "conflict", "{r}");
    assert!(r.get("seq").is_none(), "{r}");
    assert_eq!(count_changes(&app), changes);
    let r = ws
        .call_ok(
            "task.update",
            json!({"id": id, "if_version": 4, "patch": {"status": "done"}}),
        )
        .await;
    assert_eq!(r["data"]["version"], 5);

    // A stale If-Match over REST: 412, with the conflict code.
    let res = app
        .patch(&format!("/api/tasks/{id}"), json!({"priority": 0}))
        .header("If-Match", "\"4\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    assert!(seq_header(&res).is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert_eq!(count_changes(&app), changes + 1);
    let res = app
        .patch(&format!("/api/tasks/{id}"), json!({"priority": 0}))
        .header("If-Match", "\"5\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "ETag").as_deref(), Some("\"6\""));
    assert_eq!(seq_header(&res), Some(6));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], 6);

    // Deletes check versions too.
    let res = app
        .delete(&format!("/api/tasks/{id}"))
        .header("If-Match", "\"5\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    let r = ws.call("task.delete", json!({"id": id, "if_version": 1})).await;
    assert_eq!(r["error"]["code"], "conflict", "{r}");
    let r = ws.call_ok("task.delete", json!({"id": id, "if_version": 6})).await;
    assert_eq!(r["data"], json!({}));
    assert_eq!(r["seq"], 7);

    // Agents the same way.
    let r = ws.call_ok("agent.create", json!({"name": "a1"})).await;
    let aid = r["data"]["id"].as_i64().unwrap();
    assert_eq!(r["data"]["version"], 1);
    let r = ws
        .call_ok("agent.update", json!({"id": aid, "patch": {"meta": {"k": 1}}}))
        .await;
    assert_eq!(r["data"]["version"], 2);
    let r = ws
        .call(
            "agent.update",
            json!({"id": aid, "if_version": 1, "patch": {"status": "busy"}}),
        )
        .await;
    assert_eq!(r["error"]["code"], "conflict", "{r}");
    let res = app
        .patch(&format!("/api/agents/{aid}"), json!({"status": "busy"}))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    let agent = app.get_json(&format!("/api/agents/{aid}")).await;
    assert_eq!(agent["version"], 2);
    assert_eq!(agent["status"], "idle");
}

/// The writer keeps the task rows it saved, to skip reading them back; what
/// another connection (the `sqlite3` shell, say) wrote to the file meanwhile
/// must not be undone by the next update.
#[tokio::test]
async fn an_update_builds_on_what_another_connection_wrote() {
    let app = spawn_app();
    let id = app.create_task("first").await["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    ws.call_ok("task.update", json!({"id": id, "patch": {"status": "review"}}))
        .await;
    let mut shell = app.sqlite();
    let sql = format!("UPDATE tasks SET title = 'from the shell', version = version + 1 WHERE id = {id}");
    assert_eq!(shell.execute(&sql), 1);
    let r = ws
        .call_ok("task.update", json!({"id": id, "patch": {"priority": 2}}))
        .await;
    let task = &r["data"];
    assert_eq!(task["title"], "from the shell", "{r}");
    assert_eq!(task["status"], "review", "{r}");
    assert_eq!(task["priority"], 2, "{r}");
    assert_eq!(task["version"], 4, "created, updated, the shell, updated: {r}");
    let title = shell.text(&format!("SELECT title AS v FROM tasks WHERE id = {id}"));
    assert_eq!(title.as_deref(), Some("from the shell"));
}

#[tokio::test]
async fn a_patch_that_changes_nothing_commits_nothing() {
    let app = spawn_app();
    let mut sub = app.ws().await;
    sub.subscribe("tasks").await;
    sub.subscribe("agents").await;
    let mut ws = app.ws().await;
    let created = ws.call_ok("task.create", json!({"title": "same", "priority": 1})).await;
    let task = created["data"].clone();
    let id = task["id"].as_i64().unwrap();
    for patch in [
        json!({}),
        json!({"status": "todo"}),
        json!({"title": "  same  "}),
        json!({"priority": 1, "description": "", "assignee_id": null}),
    ] {
        let r = ws.call_ok("task.update", json!({"id": id, "patch": patch})).await;
        assert!(r.get("seq").is_none(), "a no-op carries no seq: {r}");
        assert_eq!(r["data"], task, "the entity comes back unchanged");
    }
    let res = app
        .patch(&format!("/api/tasks/{id}"), json!({"status": "todo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(seq_header(&res), None, "a no-op carries no Taskwire-Seq");
    assert_eq!(header(&res, "ETag").as_deref(), Some("\"1\""));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, task);

    let agent = ws
        .call_ok("agent.create", json!({"name": "n", "meta": {"a": [1]}}))
        .await;
    let aid = agent["data"]["id"].as_i64().unwrap();
    let r = ws
        .call_ok(
            "agent.update",
            json!({"id": aid, "patch": {"meta": {"a": [1]}, "name": "n", "current_task_id": null}}),
        )
        .await;
    assert!(r.get("seq").is_none(), "{r}");
    let mut expected = agent["data"].clone();
    expected.as_object_mut().unwrap().remove("token");
    assert_eq!(r["data"], expected);

    assert_eq!(count_changes(&app), 2, "only the two creates are in the log");
    assert_eq!(
        app.sqlite()
            .int(&format!("SELECT version AS n FROM tasks WHERE id = {id}")),
        1
    );

    // The subscriber sees the creates, then the next real change: no event
    // came for any no-op.
    let r = ws
        .call_ok("task.update", json!({"id": id, "patch": {"priority": 2}}))
        .await;
    assert_eq!(r["seq"], 3);
    let frames = sub.events_until("tasks", 3).await;
    let seen: Vec<(Value, Value)> = frames.iter().map(|f| (f["event"].clone(), f["seq"].clone())).collect();
    assert_eq!(
        seen,
        vec![
            (json!("task.created"), json!(1)),
            (json!("agent.created"), json!(2)),
            (json!("task.updated"), json!(3)),
        ]
    );
    assert_eq!(frames[2]["changed"], json!(["priority"]));
}

#[tokio::test]
async fn a_repeated_op_id_commits_once_and_answers_the_same() {
    let app = spawn_app();
    let mut sub = app.ws().await;
    sub.subscribe("tasks").await;
    let mut ws = app.ws().await;
    let create = json!({"type": "call", "method": "task.create", "op_id": "op-1",
                        "params": {"title": "once"}});
    let first = ws.request(create.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["seq"], 1);
    let again = ws.request(create.clone()).await;
    // Another connection of the same client, as after a reconnect.
    let mut ws2 = app.ws().await;
    let third = ws2.request(create.clone()).await;
    for r in [&again, &third] {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["data"], first["data"], "{r}");
        assert_eq!(r["seq"], first["seq"], "{r}");
    }
    assert_eq!(app.get_json("/api/tasks").await["items"].as_array().unwrap().len(), 1);
    assert_eq!(count_changes(&app), 1);

    // The same op_id with other params is a conflict.
    let mut other = create.clone();
    other["params"]["title"] = json!("twice");
    let r = ws.request(other).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "conflict", "{r}");
    let id = first["data"]["id"].as_i64().unwrap();

    // An update answers as it did the first time, even after later changes.
    let update = json!({"type": "call", "method": "task.update", "op_id": "op-2",
                        "params": {"id": id, "patch": {"status": "done"}}});
    let u1 = ws.request(update.clone()).await;
    assert_eq!(u1["seq"], 2, "{u1}");
    ws.call_ok("task.update", json!({"id": id, "patch": {"priority": 3}}))
        .await;
    let u2 = ws.request(update.clone()).await;
    assert_eq!(u2["data"], u1["data"], "{u2}");
    assert_eq!(u2["seq"], 2);
    assert_eq!(app.get_json(&format!("/api/tasks/{id}")).await["version"], 3);

    // A repeated delete answers {} again instead of not_found.
    let delete = json!({"type": "call", "method": "task.delete", "op_id": "op-3",
                        "params": {"id": id}});
    let d1 = ws.request(delete.clone()).await;
    let d2 = ws.request(delete.clone()).await;
    assert_eq!(d1["seq"], 4, "{d1}");
    assert_eq!(d2["ok"], true, "{d2}");
    assert_eq!(d2["seq"], 4, "{d2}");
    assert_eq!(d2["data"], json!({}));

    // A repeated agent.create answers the same but leaves out the token.
    let agent = json!({"type": "call", "method": "agent.create", "op_id": "op-4",
                       "params": {"name": "bot"}});
    let a1 = ws.request(agent.clone()).await;
    let a2 = ws.request(agent.clone()).await;
    assert!(a1["data"]["token"].is_string(), "{a1}");
    assert!(a2["data"].get("token").is_none(), "{a2}");
    let mut without = a1["data"].clone();
    without.as_object_mut().unwrap().remove("token");
    assert_eq!(a2["data"], without);
    assert_eq!(a2["seq"], a1["seq"]);
    assert_eq!(count_changes(&app), 5);

    // The subscriber saw each task change once.
    let frames = sub.events_until("tasks", 4).await;
    let seqs: Vec<i64> = frames.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    sub.ping().await;
    assert!(sub.take_backlog().is_empty());
}

#[tokio::test]
async fn a_repeated_idempotency_key_commits_once_and_answers_the_same() {
    let app = spawn_app();
    let post = || {
        app.post("/api/tasks", json!({"title": "k"}))
            .header("Idempotency-Key", "key-1")
    };
    let r1 = post().send().await.unwrap();
    assert_eq!(r1.status(), 201);
    let s1 = seq_header(&r1);
    assert_eq!(s1, Some(1));
    let loc1 = header(&r1, "Location");
    let b1: Value = r1.json().await.unwrap();
    let r2 = post().send().await.unwrap();
    assert_eq!(r2.status(), 201);
    assert_eq!(seq_header(&r2), s1);
    assert_eq!(header(&r2, "Location"), loc1);
    let b2: Value = r2.json().await.unwrap();
    assert_eq!(b2, b1);
    assert_eq!(count_changes(&app), 1);

    let res = app
        .post("/api/tasks", json!({"title": "other"}))
        .header("Idempotency-Key", "key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict", "{body}");

    let id = b1["id"].as_i64().unwrap();
    let patch = || {
        app.patch(&format!("/api/tasks/{id}"), json!({"status": "review"}))
            .header("Idempotency-Key", "key-2")
    };
    let p1 = patch().send().await.unwrap();
    let p2 = patch().send().await.unwrap();
    assert_eq!(p1.status(), 200);
    assert_eq!(p2.status(), 200);
    assert_eq!(seq_header(&p1), Some(2));
    assert_eq!(seq_header(&p2), Some(2));
    assert_eq!(p1.json::<Value>().await.unwrap(), p2.json::<Value>().await.unwrap());
    let del = || {
        app.delete(&format!("/api/tasks/{id}"))
            .header("Idempotency-Key", "key-3")
    };
    let d1 = del().send().await.unwrap();
    let d2 = del().send().await.unwrap();
    assert_eq!(d1.status(), 204);
    assert_eq!(d2.status(), 204, "a repeated delete answers as the first");
    assert_eq!(seq_header(&d2), Some(3));
    assert_eq!(count_changes(&app), 3);
    let res = app.delete(&format!("/api/tasks/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 404, "without the key it is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_ids_are_remembered_across_a_restart() {
    let app = spawn_app();
    let create = json!({"type": "call", "method": "task.create", "op_id": "persist",
                        "params": {"title": "p"}});
    let first = {
        let mut ws = app.ws().await;
        ws.request(create.clone()).await
    };
    assert_eq!(first["ok"], true, "{first}");
    let app = app.restart(|_| {});
    let mut ws = app.ws().await;
    let again = ws.request(create).await;
    assert_eq!(again["data"], first["data"]);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(count_changes(&app), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_op_id_sent_at_once_on_two_sockets_commits_once() {
    let app = spawn_app();
    let mut a = app.ws().await;
    let mut b = app.ws().await;
    for round in 0..5 {
        let frame = json!({"type": "call", "ref": round, "method": "task.create",
                           "op_id": format!("race-{round}"), "params": {"title": format!("r{round}")}});
        let (ra, rb) = tokio::join!(
            async {
                a.send(&frame).await;
                a.reply_to(json!(round)).await
            },
            async {
                b.send(&frame).await;
                b.reply_to(json!(round)).await
            }
        );
        assert_eq!(ra["ok"], true, "{ra}");
        assert_eq!(ra["data"], rb["data"], "round {round}");
        assert_eq!(ra["seq"], rb["seq"], "round {round}");
    }
    assert_eq!(count_changes(&app), 5);
    assert_eq!(app.get_json("/api/tasks").await["items"].as_array().unwrap().len(), 5);
}

/// Pipelined calls share group commits; the ones a rule refuses fail alone and
/// leave no trace, the others commit with consecutive seqs.
#[tokio::test]
async fn a_refused_call_fails_alone_inside_a_group_commit() {
    let app = spawn_app();
    let task = app.create_task("t").await;
    let id = task["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    let mut refs = Vec::new();
    let mut good = Vec::new();
    for i in 0..60i64 {
        let params = match i % 4 {
            0 => json!({"title": format!("ok {i}")}),
            1 => json!({"title": ""}),
            2 => json!({"id": id, "patch": {"priority": i % 4}, "if_version": 1}),
            _ => json!({"title": format!("ok {i}"), "assignee_id": 999}),
        };
        let method = if i % 4 == 2 { "task.update" } else { "task.create" };
        ws.send(&json!({"type": "call", "ref": i, "method": method, "params": params}))
            .await;
        refs.push(json!(i));
        good.push(i % 4 == 0 || i == 2);
    }
    let replies = ws.replies_to(&refs).await;
    let mut seqs = Vec::new();
    for (reply, good) in replies.iter().zip(&good) {
        assert_eq!(reply["ok"], *good, "{reply}");
        if *good {
            seqs.push(reply["seq"].as_i64().unwrap());
        } else {
            assert!(reply.get("seq").is_none(), "{reply}");
        }
    }
    // Only the first update at version 1 commits; the later ones are stale.
    assert_eq!(replies[6]["error"]["code"], "conflict");
    assert_eq!(replies[1]["error"]["code"], "invalid");
    assert_eq!(replies[3]["error"]["code"], "invalid");
    seqs.sort();
    assert_eq!(
        seqs,
        (2..2 + seqs.len() as i64).collect::<Vec<_>>(),
        "committed seqs have a gap"
    );
    let log = app.changes(0, None).await;
    assert_eq!(log["events"].as_array().unwrap().len(), 1 + seqs.len(), "{log}");
    let tasks = app.get_json("/api/tasks").await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 1 + 15);
}

/// Remembering an op_id whose call changed nothing (no seq) right after one
/// that did: the two INSERTs of the op differ, and both must work.
#[tokio::test]
async fn an_op_id_call_without_a_change_after_one_with_a_change() {
    let app = spawn_app();
    let id = app.create_task("a").await["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    for (op, status) in [("with-change", "done"), ("no-change", "done"), ("again", "todo")] {
        let r = ws
            .request(json!({"type": "call", "method": "task.update", "op_id": op,
                            "params": {"id": id, "patch": {"status": status}}}))
            .await;
        assert_eq!(r["ok"], true, "{op}: {r}");
        assert_eq!(r["data"]["status"], status, "{op}: {r}");
    }
    assert_eq!(app.get_json(&format!("/api/tasks/{id}")).await["version"], 3);
}

/// A call read in the same packet as the client's close is still made: the
/// session queues it with the Db actor as it reads the frame, not later.
#[tokio::test]
async fn a_call_sent_right_before_a_close_is_still_committed() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app();
    let task = app.create_task("before").await;
    let id = task["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    let call = json!({"type": "call", "ref": 1, "method": "task.update",
                      "params": {"id": id, "patch": {"title": "sent with the close"}}});
    // `feed` only buffers: the call and the close leave in one write.
    ws.stream.feed(Message::Text(call.to_string())).await.unwrap();
    ws.stream.send(Message::Close(None)).await.unwrap();
    ws.close_code().await;
    // A later write through the same Db actor comes after the socket's call.
    app.create_task("barrier").await;
    let now = app.get_json(&format!("/api/tasks/{id}")).await;
    assert_eq!(now["title"], "sent with the close", "{now}");
}
