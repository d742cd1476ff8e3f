//! `taskwire tasks|agents|watch`: the real binary against a server on port 0.

use crate::common::{spawn_app, TestApp, WAIT};
use serde_json::{json, Value};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio::time::timeout;

/// The binary with the server's address and admin token in its environment.
fn taskwire(app: &TestApp, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskwire"));
    cmd.args(args)
        .env("TASKWIRE_URL", format!("http://{}", app.addr))
        .env("TASKWIRE_TOKEN", &app.admin)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    cmd
}

/// Runs it to the end: (success, stdout, stderr).
async fn run(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = timeout(WAIT, taskwire(app, args).output())
        .await
        .expect("in time")
        .expect("runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn run_json(app: &TestApp, args: &[&str]) -> Value {
    let (ok, out, err) = run(app, args).await;
    assert!(ok, "taskwire {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test]
async fn tasks_and_agents_print_tables_for_people_and_json_for_scripts() {
    let app = spawn_app();
    let agent = app.create_agent("builder").await;
    let agent_id = agent["id"].as_i64().unwrap().to_string();

    let task = run_json(&app, &["tasks", "create", "Fix login", "--priority", "2", "--json"]).await;
    assert_eq!((task["id"].clone(), task["priority"].clone()), (json!(1), json!(2)));
    run_json(&app, &["tasks", "create", "Write docs", "--json"]).await;
    let moved = run_json(
        &app,
        &[
            "tasks",
            "update",
            "1",
            "--status",
            "in_progress",
            "--assignee",
            &agent_id,
            "--json",
        ],
    )
    .await;
    assert_eq!(
        (moved["status"].clone(), moved["version"].clone()),
        (json!("in_progress"), json!(2))
    );

    let (ok, table, err) = run(&app, &["tasks", "list"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID  STATUS"), "{table}");
    assert!(
        lines[1].contains("in_progress") && lines[1].contains(&format!("builder ({agent_id})")),
        "{table}"
    );
    assert!(
        lines[1].ends_with("Fix login") && lines[2].ends_with("Write docs"),
        "{table}"
    );

    let todo = run_json(&app, &["tasks", "list", "--status", "todo", "--json"]).await;
    assert_eq!(todo.as_array().unwrap().len(), 1, "{todo}");
    assert_eq!(todo[0]["title"], "Write docs");
    let unassigned = run_json(&app, &["tasks", "list", "--assignee", "none", "--json"]).await;
    assert_eq!(unassigned, todo);

    let note = run_json(
        &app,
        &["tasks", "note", "1", "tests pass", "--progress", "40", "--json"],
    )
    .await;
    assert_eq!(
        (note["event"].clone(), note["data"]["text"].clone()),
        (json!("task.noted"), json!("tests pass"))
    );
    let shown = run_json(&app, &["tasks", "show", "1", "--json"]).await;
    assert_eq!(shown["task"]["progress"], 40);
    let activity: Vec<&str> = shown["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(activity, ["task.noted", "task.updated", "task.updated", "task.created"]);
    let (ok, text, _) = run(&app, &["tasks", "show", "1"]).await;
    assert!(
        ok && text.contains("status    in_progress") && text.contains("progress  40%"),
        "{text}"
    );
    assert!(
        text.contains("activity (newest first):") && text.contains("task.noted       task 1: tests pass  by admin"),
        "{text}"
    );

    let agents = run_json(&app, &["agents", "list", "--json"]).await;
    assert_eq!(agents[0]["name"], "builder", "{agents}");
    let (ok, table, _) = run(&app, &["agents", "list"]).await;
    assert!(
        ok && table.starts_with("ID  NAME") && table.contains("builder"),
        "{table}"
    );
}

#[tokio::test]
async fn refusals_exit_1_with_the_servers_code_and_message() {
    let app = spawn_app();
    app.create_task("t").await;
    run_json(&app, &["tasks", "update", "1", "--title", "u", "--json"]).await;

    let (ok, _, err) = run(&app, &["tasks", "update", "1", "--status", "done", "--if-version", "1"]).await;
    assert!(!ok);
    assert_eq!(err.trim(), "taskwire: conflict: task 1 is at version 2, not 1");
    let (ok, _, err) = run(&app, &["tasks", "show", "7"]).await;
    assert!(!ok && err.contains("not_found: task:7 does not exist"), "{err}");
    let (ok, _, err) = run(&app, &["tasks", "update", "1"]).await;
    assert!(!ok && err.contains("nothing to update"), "{err}");
    let (ok, _, err) = run(&app, &["agents", "list", "--token", "tw_wrong"]).await;
    assert!(!ok && err.contains("unauthorized"), "{err}");
    let (ok, _, err) = run(&app, &["tasks", "list", "--token", ""]).await;
    assert!(!ok && err.contains("no token"), "{err}");
}

async fn line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable")
        .expect("watch still running")
}

/// `watch` keeps its place across a server restart: one snapshot, then each
/// change once, in order, including the change made while it reconnected.
#[tokio::test]
async fn watch_tails_a_topic_across_a_server_restart() {
    let app = spawn_app();
    app.create_task("one").await;
    let spawn = |args: &[&str]| {
        let mut child = taskwire(&app, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    };
    let (_json_child, mut json) = spawn(&["watch", "tasks", "--json"]);
    let (_human_child, mut human) = spawn(&["watch", "tasks"]);

    let first: Value = serde_json::from_str(&line(&mut json).await).unwrap();
    assert_eq!(
        (first["type"].clone(), first["seq"].clone()),
        (json!("snapshot"), json!(1))
    );
    assert_eq!(line(&mut human).await, "snapshot of tasks at seq 1: 1 items");

    app.create_task("two").await;
    let app = tokio::task::spawn_blocking(move || app.restart_same_port(|_| {}))
        .await
        .unwrap();
    app.create_task("three").await;
    app.post("/api/tasks", json!({"title": "four"})).send().await.unwrap();

    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let v: Value = serde_json::from_str(&line(&mut json).await).unwrap();
        match v["type"].as_str() {
            Some("event") => seqs.push(v["seq"].as_i64().unwrap()),
            Some("resumed") => {}
            _ => panic!("a second snapshot or something else: {v}"),
        }
    }
    assert_eq!(seqs, [2, 3, 4]);
    for (seq, title) in [(2, "two"), (3, "three"), (4, "four")] {
        let l = line(&mut human).await;
        assert!(
            l.contains(&format!("#{seq}  task.created     task {seq} {title:?}  by admin")),
            "{l}"
        );
    }
}

/// A revoked token ends `watch` with status 1 and the server's reason.
#[tokio::test]
async fn watch_ends_with_status_1_when_its_token_is_revoked() {
    let app = spawn_app();
    let member = app.token("member", "watcher").await;
    let mut child = taskwire(&app, &["watch", "tasks", "--token", &member])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(line(&mut lines).await.starts_with("snapshot of tasks"));
    let res = app.delete("/api/tokens/2").send().await.unwrap();
    assert_eq!(res.status(), 204);
    let status = timeout(WAIT, child.wait()).await.expect("watch ended").unwrap();
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err)
        .await
        .unwrap();
    assert!(
        err.contains("taskwire: closed by the server (1008): token revoked"),
        "{err}"
    );
}
