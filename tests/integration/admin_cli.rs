//! The commands on the database file: `taskwire token ...` and `taskwire
//! backup`, run as the real binary against a file a test server also uses.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `taskwire ARGS --db FILE`, run to its end.
pub(crate) fn taskwire(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("DATABASE_URL")
        .env_remove("TASKWIRE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run the taskwire binary")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn token_commands_refuse_a_path_with_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("missing.db");
    for args in [
        &["token", "create", "--role", "member", "--name", "x"][..],
        &["token", "list"],
        &["token", "revoke", "1"],
        &["backup", "/dev/null/never"],
    ] {
        let err = refused(&taskwire(&db, args));
        assert!(err.contains("no database at"), "{args:?}: {err}");
    }
    assert!(!db.exists(), "a token command created a database");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_revoked_by_name_and_listed_as_a_table_or_json() {
    let app = spawn_app();
    app.get_json("/api/tasks").await;
    let db = app.db_path.clone();
    let created: Value = serde_json::from_str(&ok(&taskwire(
        &db,
        &["token", "create", "--role", "member", "--name", "alice"],
    )))
    .unwrap();
    for _ in 0..2 {
        ok(&taskwire(
            &db,
            &["token", "create", "--role", "member", "--name", "bob"],
        ));
    }

    let table = ok(&taskwire(&db, &["token", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID  ROLE"), "{table}");
    assert!(
        lines.iter().any(|l| l.contains("alice") && l.contains("member")),
        "{table}"
    );
    assert!(
        !table.contains(created["token"].as_str().unwrap()),
        "the table shows a secret"
    );
    let listed: Value = serde_json::from_str(&ok(&taskwire(&db, &["token", "list", "--json"]))).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "alice", "bob", "bob"]);
    assert!(
        listed[1].get("hash").is_none() && listed[1].get("token").is_none(),
        "{listed}"
    );

    let said = ok(&taskwire(&db, &["token", "revoke", "alice"]));
    assert_eq!(said.trim(), format!("revoked token {}", created["id"]));
    let err = refused(&taskwire(&db, &["token", "revoke", "alice"]));
    assert!(err.contains("no live token named \"alice\""), "{err}");
    let err = refused(&taskwire(&db, &["token", "revoke", "bob"]));
    assert!(err.contains("2 live tokens are named \"bob\""), "{err}");
}

/// A database whose admin tokens are all revoked takes a new one at start,
/// as a new database does.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_without_a_live_admin_takes_one_at_start() {
    let app = spawn_app();
    app.get_json("/api/tasks").await;
    let old_admin = app.admin.clone();
    ok(&taskwire(&app.db_path, &["token", "revoke", "admin"]));
    let app = app.restart(|c| c.admin_token = Some("tw_second_admin".into()));
    let res = app
        .http()
        .get(app.url("/api/tokens"))
        .bearer_auth("tw_second_admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .http()
        .get(app.url("/api/tasks"))
        .bearer_auth(&old_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = app
            .http()
            .get(app.url("/api/tasks"))
            .header("Authorization", format!("{scheme} {}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{scheme}");
    }
    let res = app
        .http()
        .get(app.url("/api/tasks"))
        .header("Authorization", format!("Basic {}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// A backup taken while writes go on holds every change acknowledged before
/// it began; a server started on it has a new epoch, so a client that saw
/// later changes takes a snapshot instead of resuming across the rollback.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_during_writes_restores_with_a_new_epoch() {
    let app = spawn_app();
    let ws = app.ws().await;
    let epoch = ws.hello["epoch"].as_str().unwrap().to_string();
    for i in 0..50 {
        app.create_task(&format!("before {i}")).await;
    }
    let acked_before = app.get_json("/api/tasks").await["seq"].as_i64().unwrap();

    // Writes go on while the backup runs; each must be acknowledged.
    let (http, url, admin) = (app.http(), app.url("/api/tasks"), app.admin.clone());
    let writer = tokio::spawn(async move {
        for i in 0..300 {
            let res = http
                .post(&url)
                .bearer_auth(&admin)
                .json(&json!({"title": format!("during {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
    });
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.db");
    let (db, to) = (app.db_path.clone(), copy.clone());
    let out = tokio::task::spawn_blocking(move || taskwire(&db, &["backup", to.to_str().unwrap()]))
        .await
        .unwrap();
    ok(&out);
    writer.await.unwrap();
    let err = refused(&taskwire(&app.db_path, &["backup", copy.to_str().unwrap()]));
    assert!(err.contains("already exists"), "{err}");
    let last = app.get_json("/api/tasks").await["seq"].as_i64().unwrap();
    assert_eq!(last, acked_before + 300);

    let restored = spawn_app_on(copy, |_| {});
    let mut client = restored.ws().await;
    assert_ne!(
        client.hello["epoch"],
        json!(epoch),
        "the copy kept the live database's epoch"
    );
    let listed = restored.get_json("/api/tasks").await;
    let titles: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    for i in 0..50 {
        assert!(titles.contains(&format!("before {i}").as_str()), "before {i} missing");
    }
    let copied_seq = listed["seq"].as_i64().unwrap();
    assert!(copied_seq >= acked_before && copied_seq <= last, "{copied_seq}");
    assert_eq!(listed["items"].as_array().unwrap().len() as i64, copied_seq);

    // A client that saw the live database's later changes gets a snapshot.
    let r = client.resume("tasks", &epoch, last).await;
    assert!(r["data"].get("events").is_none(), "{r}");
    assert_eq!(r["data"]["snapshot"], listed["items"]);
    // The new epoch is kept from then on: the restored server is the live one.
    let epoch2 = client.hello["epoch"].as_str().unwrap().to_string();
    let again = restored.restart(|_| {});
    assert_eq!(again.ws().await.hello["epoch"], json!(epoch2));
}
