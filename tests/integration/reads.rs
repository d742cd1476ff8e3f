//! Reads run on their own read-only connections: they are answered while the
//! writer waits, and each token's reads are limited by the rows they cost.

use crate::common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;

/// Another process holds the file's write lock, so the writer's next commit
/// waits; reads and subscribes are answered meanwhile, and the write then
/// goes through.
#[tokio::test(flavor = "multi_thread")]
async fn reads_are_answered_while_the_writer_waits() {
    let app = spawn_app();
    let task = app.create_task("first").await;
    let mut blocker = SqliteConnection::establish(app.db_path.to_str().unwrap()).unwrap();
    blocker.batch_execute("BEGIN IMMEDIATE").unwrap();

    let write = tokio::spawn(app.post("/api/tasks", json!({"title": "waits"})).send());
    // Several reads, a change-log page and a subscribe, all while the write
    // waits for the lock.
    for _ in 0..3 {
        let listed = app.get_json("/api/tasks").await;
        assert_eq!(listed["items"][0]["title"], "first");
    }
    app.get_json(&format!("/api/tasks/{}", task["id"])).await;
    app.changes(0, Some("tasks")).await;
    let mut ws = app.ws().await;
    let r = ws.subscribe("tasks").await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(!write.is_finished(), "the write did not wait for the lock");

    blocker.batch_execute("COMMIT").unwrap();
    let res = write.await.unwrap().unwrap();
    assert_eq!(res.status(), 201);
    // The subscriber, whose snapshot was read before the write, gets it.
    let ev = ws.next_event().await;
    assert_eq!(
        (ev["event"].as_str(), ev["data"]["title"].as_str()),
        (Some("task.created"), Some("waits"))
    );
    assert_eq!(ev["seq"], r["data"]["seq"].as_i64().unwrap() + 1);
}

/// A member's reads are limited by the rows they read; other tokens and the
/// admin read on.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_reads_too_many_rows_is_rate_limited() {
    let app = spawn_app_with(|c| c.read_rows_per_sec = 100);
    for i in 0..150 {
        app.create_task(&format!("t{i}")).await;
    }
    let member = app.token("member", "reader").await;
    let other = app.token("member", "other").await;
    let get = |token: &str| {
        app.http()
            .get(app.url("/api/tasks"))
            .bearer_auth(token.to_string())
            .send()
    };
    // The first read goes through and spends more than the second's budget.
    assert_eq!(get(&member).await.unwrap().status(), 200);
    let res = get(&member).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // A subscribe of the same token is refused the same way.
    let mut ws = app.ws_as(&member).await;
    let r = ws.subscribe("tasks").await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    ws.ping().await;
    // Change-log pages count the rows they look through.
    let res = app
        .http()
        .get(app.url("/api/changes?since=0&topic=task:1"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get(&other).await.unwrap().status(), 429);
    // The admin is not limited.
    for _ in 0..3 {
        app.get_json("/api/tasks").await;
    }
}
