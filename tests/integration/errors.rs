//! Every error code the core server owns, over the socket and over REST, and a
//! socket that goes on after each bad frame.

use crate::common::*;
use serde_json::{json, Value};

/// Sends a raw text frame without a readable ref; the answer is an error frame.
async fn expect_error_frame(ws: &mut Ws, text: &str) {
    ws.send_text(text).await;
    let f = ws.recv().await;
    assert_eq!(f["type"], "error", "{text:?} -> {f}");
    assert_eq!(f["error"]["code"], "bad_request", "{text:?} -> {f}");
    assert!(f["error"]["message"].is_string(), "{f}");
    assert!(f.get("ref").is_none(), "{f}");
    ws.ping().await;
}

/// Sends `frame` (with its own ref) and expects a failed reply with `code`.
async fn expect_reply_error(ws: &mut Ws, frame: Value, code: &str) -> Value {
    let reference = frame["ref"].clone();
    ws.send(&frame).await;
    let r = ws.reply_to(reference.clone()).await;
    assert_eq!(r["type"], "reply", "{frame} -> {r}");
    assert_eq!(r["ref"], reference, "{frame} -> {r}");
    assert_eq!(r["ok"], false, "{frame} -> {r}");
    assert_eq!(r["error"]["code"], code, "{frame} -> {r}");
    assert!(r["error"]["message"].is_string(), "{r}");
    ws.ping().await;
    r
}

async fn call_error(ws: &mut Ws, method: &str, params: Value, code: &str) -> Value {
    let r = ws.call(method, params.clone()).await;
    assert_eq!(r["ok"], false, "{method} {params} -> {r}");
    assert_eq!(r["error"]["code"], code, "{method} {params} -> {r}");
    assert!(r.get("seq").is_none(), "{r}");
    r
}

async fn rest_error(res: reqwest::Response, status: u16, code: &str) {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fn count_changes(app: &TestApp) -> i64 {
    app.sqlite().int("SELECT COUNT(*) AS n FROM changes")
}

#[tokio::test]
async fn frames_without_a_readable_ref_get_an_error_frame_and_the_socket_goes_on() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    for text in [
        "not json",
        "{\"type\": \"ping\", \"ref\": 1",
        "[1, 2]",
        "42",
        "\"ping\"",
        "{\"type\": \"ping\"}",
        "{\"type\": \"ping\", \"ref\": null}",
        "{\"type\": \"ping\", \"ref\": 1.5}",
        "{\"type\": \"ping\", \"ref\": [1]}",
        "{\"type\": \"ping\", \"ref\": 9007199254740993}",
        "{\"type\": \"call\", \"method\": \"task.create\", \"params\": {\"title\": \"x\"}}",
    ] {
        expect_error_frame(&mut ws, text).await;
    }
    // A binary message is not JSON text either.
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::Binary(b"{}".to_vec()))
        .await
        .unwrap();
    let f = ws.recv().await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["error"]["code"], "bad_request", "{f}");
    ws.ping().await;
    assert_eq!(count_changes(&app), 0, "a frame without ref executed nothing");
}

use futures_util::SinkExt;

#[tokio::test]
async fn frames_with_a_ref_get_a_bad_request_reply() {
    let app = spawn_app();
    let task = app.create_task("t").await;
    let id = task["id"].clone();
    let mut ws = app.ws().await;
    let cases = [
        json!({"ref": "a"}),
        json!({"ref": "b", "type": "nope"}),
        json!({"ref": "c", "type": 7}),
        json!({"ref": 4, "type": "subscribe"}),
        json!({"ref": 5, "type": "subscribe", "topic": "nope"}),
        json!({"ref": 6, "type": "subscribe", "topic": "task:0"}),
        json!({"ref": 7, "type": "subscribe", "topic": "task:abc"}),
        json!({"ref": 8, "type": "subscribe", "topic": "Tasks"}),
        json!({"ref": 9, "type": "subscribe", "topic": "tasks", "since": -1}),
        json!({"ref": 10, "type": "subscribe", "topic": "tasks", "extra": true}),
        json!({"ref": 11, "type": "unsubscribe", "topic": "nope"}),
        json!({"ref": 12, "type": "unsubscribe"}),
        json!({"ref": 13, "type": "ping", "extra": 1}),
        json!({"ref": 14, "type": "call", "method": "task.create"}),
        json!({"ref": 15, "type": "call", "method": "task.frobnicate", "params": {}}),
        json!({"ref": 16, "type": "call", "params": {}}),
        json!({"ref": 17, "type": "call", "method": "task.create", "params": [1]}),
        json!({"ref": 18, "type": "call", "method": "task.create", "params": {"title": "x", "bogus": 1}}),
        json!({"ref": 19, "type": "call", "method": "task.create", "params": {"title": 5}}),
        json!({"ref": 20, "type": "call", "method": "task.update", "params": {"id": id, "patch": {"bogus": 1}}}),
        json!({"ref": 21, "type": "call", "method": "task.update", "params": {"id": id}}),
        json!({"ref": 22, "type": "call", "method": "task.update", "params": {"patch": {}}}),
        json!({"ref": 23, "type": "call", "method": "task.delete", "params": {"id": "1"}}),
        json!({"ref": 24, "type": "call", "method": "task.create", "params": {"title": "x"}, "op_id": 7}),
        json!({"ref": 25, "type": "call", "method": "agent.create", "params": {"name": "x", "nope": 1}}),
        json!({"ref": -9007199254740992i64, "type": "nope"}),
    ];
    for frame in cases {
        expect_reply_error(&mut ws, frame, "bad_request").await;
    }
    // An op_id of any length is well formed; its length is a rule.
    for op_id in [String::new(), "x".repeat(101)] {
        let frame =
            json!({"ref": 26, "type": "call", "method": "task.create", "params": {"title": "x"}, "op_id": op_id});
        expect_reply_error(&mut ws, frame, "invalid").await;
    }
    let res = app
        .post("/api/tasks", json!({"title": "x"}))
        .header("Idempotency-Key", "k".repeat(101))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(count_changes(&app), 1, "no bad frame executed");
    assert_eq!(app.get_json(&format!("/api/tasks/{id}")).await, task);
}

#[tokio::test]
async fn rules_broken_are_invalid() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    let long = "x".repeat(201);
    let huge = "y".repeat(20_001);
    for params in [
        json!({}),
        json!({"description": "no title"}),
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": long}),
        json!({"title": "t", "description": huge}),
        json!({"title": "t", "status": "finished"}),
        json!({"title": "t", "priority": 5}),
        json!({"title": "t", "priority": -1}),
        json!({"title": "t", "assignee_id": 99}),
    ] {
        call_error(&mut ws, "task.create", params, "invalid").await;
    }
    let t = ws.call_ok("task.create", json!({"title": "ok"})).await;
    let id = t["data"]["id"].clone();
    for patch in [
        json!({"title": " "}),
        json!({"status": "bogus"}),
        json!({"priority": 4}),
        json!({"assignee_id": 12345}),
    ] {
        call_error(&mut ws, "task.update", json!({"id": id, "patch": patch}), "invalid").await;
    }
    let big_meta = json!({"blob": "z".repeat(9000)});
    for params in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "a", "status": "sleeping"}),
        json!({"name": "a", "status": "offline"}),
        json!({"name": "a", "meta": big_meta}),
        json!({"name": "a", "current_task_id": 999}),
    ] {
        call_error(&mut ws, "agent.create", params, "invalid").await;
    }
    assert_eq!(count_changes(&app), 1);
    assert_eq!(app.get_json(&format!("/api/tasks/{id}")).await["version"], 1);

    // Over REST: 422.
    for req in [
        app.post("/api/tasks", json!({"description": "x"})),
        app.post("/api/tasks", json!({"title": "t", "priority": 5})),
        app.patch(&format!("/api/tasks/{id}"), json!({"status": "nope"})),
        app.post("/api/tasks", json!({"title": "t", "assignee_id": 5})),
    ] {
        rest_error(req.send().await.unwrap(), 422, "invalid").await;
    }
}

#[tokio::test]
async fn a_subscription_over_the_connection_limit_is_invalid_and_joins_nothing() {
    let app = spawn_app_with(|c| c.max_subscriptions = 2);
    let t = app.create_task("t").await;
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("agents").await["ok"], true);
    assert_eq!(ws.subscribe(&format!("task:{}", t["id"])).await["ok"], true);
    let r = ws.subscribe("tasks").await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "invalid", "{r}");
    // Subscribing again to one it holds is no new subscription.
    assert_eq!(ws.subscribe("agents").await["ok"], true);
    // `tasks` was not joined: the next change comes on task:{id} only.
    let res = app
        .patch(&format!("/api/tasks/{}", t["id"]), json!({"priority": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let a = app.create_agent("barrier").await;
    let frames = ws.events_until("agents", 3).await;
    let topics: Vec<&str> = frames.iter().map(|f| f["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, vec![format!("task:{}", t["id"]).as_str(), "agents"]);
    assert_eq!(frames[1]["data"]["id"], a["id"]);
}

#[tokio::test]
async fn missing_entities_are_not_found() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    call_error(
        &mut ws,
        "task.update",
        json!({"id": 999, "patch": {"status": "done"}}),
        "not_found",
    )
    .await;
    call_error(&mut ws, "task.delete", json!({"id": 999}), "not_found").await;
    call_error(&mut ws, "agent.update", json!({"id": 999, "patch": {}}), "not_found").await;
    call_error(&mut ws, "agent.delete", json!({"id": 999}), "not_found").await;
    for topic in ["task:999", "agent:999"] {
        let r = ws.subscribe(topic).await;
        assert_eq!(r["error"]["code"], "not_found", "{r}");
    }
    for path in ["/api/tasks/999", "/api/agents/999", "/api/nothing-here"] {
        rest_error(app.get(path).send().await.unwrap(), 404, "not_found").await;
    }
    rest_error(
        app.patch("/api/tasks/999", json!({"title": "x"})).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    rest_error(app.delete("/api/agents/999").send().await.unwrap(), 404, "not_found").await;
    ws.ping().await;
}

#[tokio::test]
async fn stale_versions_and_taken_names_conflict() {
    let app = spawn_app();
    let mut ws = app.ws().await;
    let t = ws.call_ok("task.create", json!({"title": "t"})).await;
    let id = t["data"]["id"].clone();
    call_error(
        &mut ws,
        "task.update",
        json!({"id": id, "if_version": 7, "patch": {"status": "done"}}),
        "conflict",
    )
    .await;
    ws.call_ok("agent.create", json!({"name": "dup"})).await;
    let other = ws.call_ok("agent.create", json!({"name": "other"})).await;
    call_error(&mut ws, "agent.create", json!({"name": "dup"}), "conflict").await;
    call_error(
        &mut ws,
        "agent.update",
        json!({"id": other["data"]["id"], "patch": {"name": "dup"}}),
        "conflict",
    )
    .await;
    rest_error(
        app.post("/api/agents", json!({"name": "dup"})).send().await.unwrap(),
        409,
        "conflict",
    )
    .await;
    assert_eq!(app.get_json("/api/agents").await["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn rest_bad_requests() {
    let app = spawn_app();
    let t = app.create_task("t").await;
    let bad_bodies = [
        ("POST", "/api/tasks".to_string(), "not json".to_string()),
        ("POST", "/api/tasks".to_string(), "[1]".to_string()),
        (
            "POST",
            "/api/tasks".to_string(),
            "{\"title\": \"x\", \"bogus\": 1}".to_string(),
        ),
        ("POST", "/api/tasks".to_string(), "{\"title\": 5}".to_string()),
        ("PATCH", format!("/api/tasks/{}", t["id"]), "{\"bogus\": 1}".to_string()),
        ("PATCH", "/api/tasks/abc".to_string(), "{}".to_string()),
    ];
    for (method, path, body) in bad_bodies {
        let req = app
            .http()
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(&app.admin)
            .header("Content-Type", "application/json")
            .body(body.clone());
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400, "{method} {path} {body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
    }
    rest_error(
        app.get("/api/tasks?colour=red").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    rest_error(
        app.patch(&format!("/api/tasks/{}", t["id"]), json!({"title": "x"}))
            .header("If-Match", "soon")
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    assert_eq!(count_changes(&app), 1);
}

#[tokio::test]
async fn an_if_match_with_unbalanced_quotes_is_a_bad_request() {
    let app = spawn_app();
    let t = app.create_task("t").await;
    let path = format!("/api/tasks/{}", t["id"]);
    // The task is at version 1, so each of these would pass if read as 1.
    for bad in ["\"1", "1\"", "W/\"1", "W/1\"", "W/1", "\"\"1\"\"", "\""] {
        rest_error(
            app.patch(&path, json!({"title": "x"}))
                .header("If-Match", bad)
                .send()
                .await
                .unwrap(),
            400,
            "bad_request",
        )
        .await;
        rest_error(
            app.delete(&path).header("If-Match", bad).send().await.unwrap(),
            400,
            "bad_request",
        )
        .await;
    }
    assert_eq!(count_changes(&app), 1, "a bad If-Match changed something");
    // The documented forms still match.
    for (good, version) in [("W/\"1\"", 1), ("\"2\"", 2), ("3", 3)] {
        let res = app
            .patch(&path, json!({"priority": version}))
            .header("If-Match", good)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "If-Match: {good}");
    }
}

#[tokio::test]
async fn bodies_and_frames_over_the_limit_are_too_large() {
    let app = spawn_app();
    let big = "d".repeat(70 * 1024);
    let res = app
        .post("/api/tasks", json!({"title": "big", "description": big}))
        .send()
        .await
        .unwrap();
    rest_error(res, 413, "too_large").await;
    assert_eq!(count_changes(&app), 0);
    // Just under the limit is read (and then judged by the rules).
    let res = app
        .post(
            "/api/tasks",
            json!({"title": "t", "description": "d".repeat(60 * 1024)}),
        )
        .send()
        .await
        .unwrap();
    rest_error(res, 422, "invalid").await;

    let mut ws = app.ws().await;
    ws.ping().await;
    let frame = json!({"type": "call", "ref": 1, "method": "task.create",
                       "params": {"title": "big", "description": big}});
    ws.send(&frame).await;
    assert_eq!(ws.close_code().await, Some(1009), "never a reply, a close");
    assert_eq!(count_changes(&app), 0);
    // Other sockets are not affected.
    let mut other = app.ws().await;
    other.ping().await;
}

/// A frame or body of exactly `len` bytes: a task.create whose title fills it.
fn sized(prefix: &str, suffix: &str, len: usize) -> String {
    let text = format!("{prefix}{}{suffix}", "x".repeat(len - prefix.len() - suffix.len()));
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn the_limit_is_inclusive() {
    let app = spawn_app();
    let limit = 65_536;
    let post = |body: String| {
        app.http()
            .post(app.url("/api/tasks"))
            .bearer_auth(&app.admin)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    // At the limit the body is read, and its 65 KB title is a broken rule.
    rest_error(
        post(sized("{\"title\": \"", "\"}", limit)).await.unwrap(),
        422,
        "invalid",
    )
    .await;
    rest_error(
        post(sized("{\"title\": \"", "\"}", limit + 1)).await.unwrap(),
        413,
        "too_large",
    )
    .await;

    let mut ws = app.ws().await;
    let prefix = "{\"type\": \"call\", \"ref\": 1, \"method\": \"task.create\", \"params\": {\"title\": \"";
    ws.send_text(&sized(prefix, "\"}}", limit)).await;
    let r = ws.reply_to(json!(1)).await;
    assert_eq!(r["error"]["code"], "invalid", "a frame at the limit is read");
    ws.send_text(&sized(prefix, "\"}}", limit + 1)).await;
    assert_eq!(ws.close_code().await, Some(1009));
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_is_answered_rate_limited() {
    let app = spawn_app_with(|c| c.rate_limit = 5);
    let mut ws = app.ws().await;
    const BURST: usize = 30;
    for i in 0..BURST {
        ws.send(&json!({"type": "call", "ref": format!("b{i}"), "method": "task.create",
                        "params": {"title": format!("burst {i}")}}))
            .await;
    }
    let mut ok = 0;
    let mut limited = 0;
    let mut replies = std::collections::BTreeMap::new();
    while replies.len() < BURST {
        let r = ws.recv().await;
        assert_eq!(r["type"], "reply", "{r}");
        let reference = r["ref"].as_str().expect("a string ref").to_string();
        assert!(replies.insert(reference, r).is_none(), "two replies to one ref");
    }
    for i in 0..BURST {
        let r = &replies[&format!("b{i}")];
        if r["ok"] == true {
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], "rate_limited", "{r}");
            assert!(r.get("seq").is_none());
            limited += 1;
        }
    }
    assert!((1..=10).contains(&ok), "ok {ok}, limited {limited}");
    assert!(limited >= BURST - 10, "ok {ok}, limited {limited}");
    // Refused frames were not executed.
    assert_eq!(count_changes(&app), ok as i64);
    // The bucket refills with time, and the same socket is served again.
    let mut served = false;
    for _ in 0..100 {
        let r = ws.request(json!({"type": "ping"})).await;
        if r["ok"] == true {
            served = true;
            break;
        }
        assert_eq!(r["error"]["code"], "rate_limited", "{r}");
        // Waiting for the clock, not for a reply: the bucket refills at 5/s.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "the socket was never served again");
}
