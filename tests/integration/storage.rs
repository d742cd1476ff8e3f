//! Storage faults that make the state on disk unknown stop the server rather
//! than answer wrongly: a failed sync, a WAL deleted under the server. A
//! graceful stop leaves the database in one file, and a token revoked by
//! another process before a write's commit never writes.

use crate::child;
use crate::common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sync_answers_outcome_unknown_and_stops_the_server() {
    let mut app = spawn_app_with(|c| c.db.fail_sync_op_id = Some("sync-fails".into()));
    let mut ws = app.ws().await;
    let create = json!({"type": "call", "method": "task.create", "op_id": "sync-fails", "params": {"title": "maybe"}});
    let r = ws.request(create.clone()).await;
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown") && message.contains("same op_id"),
        "{message}"
    );
    // No later write is taken: it is refused, or finds the server gone.
    if let Ok(res) = app.post("/api/tasks", json!({"title": "later"})).send().await {
        assert_eq!(res.status(), 503);
    }
    // The server closes the sockets and stops by itself, with an error.
    assert_eq!(ws.close_code().await, Some(1001));
    let app = tokio::task::spawn_blocking(move || {
        let ended = app.wait_stopped();
        assert!(matches!(ended, Err(taskwire::StartError::Storage(_))), "{ended:?}");
        app
    })
    .await
    .unwrap();

    // After a restart the retry with the same op_id commits exactly once:
    // here the write had reached the disk.
    let app = spawn_app_on(app.db_path.clone(), |_| {});
    let mut ws = app.ws().await;
    let r = ws.request(create).await;
    assert_eq!(r["ok"], true, "{r}");
    let titles: Vec<String> = app.get_json("/api/tasks").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, vec!["maybe"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_wal_stops_writes_and_keeps_what_was_acknowledged() {
    let mut app = spawn_app();
    for i in 0..20 {
        app.create_task(&format!("acked {i}")).await;
    }
    let wal = format!("{}-wal", app.db_path.display());
    std::fs::remove_file(&wal).expect("the WAL exists while the server runs");
    // The next write is refused, or answered as unknown if it came before
    // the server looked; either way it is not acknowledged.
    let res = app.post("/api/tasks", json!({"title": "after"})).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let app = tokio::task::spawn_blocking(move || {
        let ended = app.wait_stopped();
        assert!(
            matches!(ended, Err(taskwire::StartError::Storage(ref why)) if why.contains("-wal is gone")),
            "{ended:?}"
        );
        app
    })
    .await
    .unwrap();
    let app = spawn_app_on(app.db_path.clone(), |_| {});
    let items = app.get_json("/api/tasks").await["items"].as_array().unwrap().clone();
    for i in 0..20 {
        assert!(
            items.iter().any(|t| t["title"] == format!("acked {i}")),
            "acked {i} lost"
        );
    }
}

/// `taskwire` stopped by SIGTERM leaves no WAL behind: everything is in the
/// database file.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_checkpoints_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut server = child::Server::start(&db, &[]);
    let http = server.http();
    for i in 0..50 {
        let res = http
            .post(server.url("/api/tasks"))
            .bearer_auth(child::ADMIN)
            .json(&json!({"title": format!("t{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server exits");
    assert!(status.success(), "{status:?}");
    let wal = std::fs::metadata(format!("{}-wal", db.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "the WAL still holds {wal} bytes");
}

/// A token revoked by another process while a write of it waits for the
/// write lock: the write is refused, not committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_of_a_token_revoked_before_its_commit_is_refused() {
    let app = spawn_app();
    let res = app
        .post("/api/tokens", json!({"role": "member", "name": "doomed"}))
        .send()
        .await
        .unwrap();
    let created: serde_json::Value = res.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let mut ws = app.ws_as(&token).await;
    ws.ping().await;

    let mut other = SqliteConnection::establish(app.db_path.to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    let r = ws.request(json!({"type": "call", "method": "task.create", "params": {"title": "must not commit"}}));
    let revoke = async {
        other
            .batch_execute(&format!(
                "UPDATE tokens SET revoked_at = '2026-01-01T00:00:00.000Z' WHERE id = {}; COMMIT",
                created["id"]
            ))
            .unwrap();
    };
    let (r, ()) = tokio::join!(r, revoke);
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let listed = app.get_json("/api/tasks").await;
    assert_eq!(listed["items"], json!([]), "{listed}");
}
