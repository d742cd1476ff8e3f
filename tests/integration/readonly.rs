//! A database that refuses writes: writes answer `unavailable` (503 over
//! REST), reads keep working, nothing crashes, no seq is used up, and writes
//! succeed again once the fault clears. Three faults:
//! - a read-only file: the database and its WAL made immutable (`chattr +i`,
//!   which holds even for root and for files already open, unlike chmod);
//! - a full disk: the server's file size limit (RLIMIT_FSIZE) lowered under
//!   the WAL's size while it runs; and a limit set before it starts, without
//!   SIGXFSZ ignored, which the server must survive;
//! - a locked database: another connection holds the write lock, so a write
//!   fails after the server's busy timeout (2 s).

use crate::child;
use crate::common::*;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Files made immutable for a while; made mutable again on drop, so the
/// temporary folder can be removed even if the test fails.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when this machine cannot (no root, or a file system without
    /// the flag).
    fn set(files: &[PathBuf]) -> Option<Immutable> {
        let mut done = Immutable(Vec::new());
        for f in files {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(f)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            done.0.push(f.clone());
        }
        Some(done)
    }

    fn clear(&mut self) {
        for f in self.0.drain(..) {
            let ok = Command::new("chattr")
                .arg("-i")
                .arg(&f)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chattr -i {}", f.display());
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A REST write must be refused with 503 `unavailable`.
async fn assert_rest_write_refused(res: reqwest::Response) {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
}

/// Reads while writes are refused: REST lists and gets, and a fresh
/// subscribe's snapshot.
async fn assert_reads_work(app: &TestApp, task: &Value) {
    let res = app.get("/api/tasks").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["items"], json!([task]), "{list}");
    let one = app.get_json(&format!("/api/tasks/{}", task["id"])).await;
    assert_eq!(&one, task);
    let mut reader = app.ws().await;
    let r = reader.subscribe("tasks").await;
    assert_eq!(r["data"]["snapshot"], json!([task]), "{r}");
    let health = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_read_only_database_refuses_writes_and_recovers() {
    let app = spawn_app();
    let task = app.create_task("before").await;
    let mut sub = app.ws().await;
    let r = sub.subscribe("tasks").await;
    let seq = r["data"]["seq"].as_i64().unwrap();
    let mut writer = app.ws().await;

    let wal = with_suffix(&app.db_path, "-wal");
    assert!(wal.exists(), "the server runs in WAL mode");
    let Some(mut fault) = Immutable::set(&[app.db_path.clone(), wal]) else {
        eprintln!("SKIPPED: chattr +i is not possible here (needs root and ext4 or alike)");
        return;
    };

    let t = Instant::now();
    let r = writer.call("task.create", json!({"title": "refused"})).await;
    let refused_in = t.elapsed();
    assert_eq!(r["ok"], false, "a write to a read-only file: {r}");
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    let r = writer
        .call("task.update", json!({"id": task["id"], "patch": {"status": "done"}}))
        .await;
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    assert_rest_write_refused(
        app.post("/api/tasks", json!({"title": "refused"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rest_write_refused(
        app.patch(&format!("/api/tasks/{}", task["id"]), json!({"priority": 2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_reads_work(&app, &task).await;

    // Writable again: the next write commits with the next seq, and the
    // subscriber gets it right after what it had.
    fault.clear();
    let r = writer.call_ok("task.create", json!({"title": "after"})).await;
    assert_eq!(r["seq"], seq + 1, "failed writes took no seq: {r}");
    let ev = sub.next_event().await;
    assert_eq!(ev["seq"], seq + 1, "{ev}");
    assert_eq!(ev["data"]["title"], "after");
    let list: Value = app.get("/api/tasks").send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["items"][0], task, "the refused update left no trace");
    // Nor in what the writer keeps: the next update builds on the row on disk.
    let r = writer
        .call_ok("task.update", json!({"id": task["id"], "patch": {"priority": 3}}))
        .await;
    assert_eq!(r["data"]["version"], task["version"].as_i64().unwrap() + 1, "{r}");
    assert_eq!(r["data"]["status"], task["status"], "{r}");
    eprintln!("a write to the read-only file was refused in {refused_in:?}");
}

#[tokio::test]
async fn a_locked_database_refuses_writes_after_the_busy_timeout_and_recovers() {
    let app = spawn_app();
    let task = app.create_task("before").await;
    let mut sub = app.ws().await;
    let seq = sub.subscribe("tasks").await["data"]["seq"].as_i64().unwrap();
    let mut writer = app.ws().await;

    // Another process takes the write lock and keeps it.
    let mut locker = diesel::SqliteConnection::establish(app.db_path.to_str().unwrap()).unwrap();
    locker.batch_execute("BEGIN IMMEDIATE").unwrap();

    let t = Instant::now();
    let write = tokio::spawn(async move {
        let r = writer.call("task.create", json!({"title": "refused"})).await;
        (writer, r, t.elapsed())
    });
    // A read while that write waits for the lock. Nothing tells when the
    // write has reached the database, so give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_read = Instant::now();
    let res = app.get("/api/tasks").send().await.unwrap();
    assert_eq!(res.status(), 200, "a read while a write waits for the lock");
    let read_while_blocked = t_read.elapsed();
    let (mut writer, r, refused_in) = write.await.unwrap();
    assert_eq!(r["ok"], false, "a write while locked: {r}");
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    assert!(
        refused_in >= Duration::from_millis(1500),
        "refused after {refused_in:?}, before the busy timeout"
    );
    let t = Instant::now();
    assert_reads_work(&app, &task).await;
    let reads_in = t.elapsed();

    locker.batch_execute("ROLLBACK").unwrap();
    let r = writer.call_ok("task.create", json!({"title": "after"})).await;
    assert_eq!(r["seq"], seq + 1, "{r}");
    let ev = sub.next_event().await;
    assert_eq!(ev["seq"], seq + 1, "{ev}");
    assert_eq!(ev["data"]["title"], "after");
    eprintln!(
        "a write while locked was refused after {refused_in:?}; a read sent while it waited took {read_while_blocked:?}; reads after it {reads_in:?}"
    );
}

fn prlimit_fsize(pid: u32, soft: &str) {
    let ok = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prlimit --fsize={soft}: on {pid}");
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_recovers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no prlimit (util-linux) here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    // SIGXFSZ ignored, so a write over the limit fails with EFBIG instead of
    // killing the process.
    let server = child::Server::start_via_shell(&db, &[], "trap '' XFSZ;");
    let http = server.http();
    let post = |title: &str| {
        http.post(server.url("/api/tasks"))
            .bearer_auth(child::ADMIN)
            .json(&json!({ "title": title }))
            .send()
    };
    let res = post("before").await.unwrap();
    assert_eq!(res.status(), 201);
    let task: Value = res.json().await.unwrap();

    // No file of the server may grow past 1 KiB: the WAL cannot take a page.
    prlimit_fsize(server.pid(), "1024");
    let t = Instant::now();
    assert_rest_write_refused(post("refused").await.unwrap()).await;
    let refused_in = t.elapsed();
    let mut ws = server.ws().await;
    let r = ws.call("task.create", json!({"title": "refused"}), None).await.unwrap();
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    let list = server.get_json("/api/tasks").await;
    assert_eq!(list["items"], json!([task]), "{list}");
    let r = ws.subscribe("tasks").await.unwrap();
    assert_eq!(r["data"]["snapshot"], json!([task]), "{r}");

    prlimit_fsize(server.pid(), "unlimited");
    let res = post("after").await.unwrap();
    assert_eq!(res.status(), 201, "writes work again once there is room");
    let ev = ws.next_event().await.unwrap();
    assert_eq!(ev["data"]["title"], "after", "{ev}");
    assert_eq!(ev["seq"], task["version"].as_i64().unwrap() + 1, "no seq used up: {ev}");
    let mut server = server;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server is still running"
    );
    eprintln!("a write to a full disk was refused in {refused_in:?}");
}

#[tokio::test]
async fn a_file_size_limit_refuses_writes_without_killing_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    // Started as an operator would, without ignoring SIGXFSZ: no file of the
    // server may grow past 1 MiB (2 MiB if `sh` is bash, which counts
    // `ulimit -f` in KiB rather than 512-byte blocks).
    let mut server = child::Server::start_via_shell(&db, &[], "ulimit -f 2048;");
    let http = server.http();
    let description = "d".repeat(4000);
    let mut written = 0;
    let refused = loop {
        let sent = http
            .post(server.url("/api/tasks"))
            .bearer_auth(child::ADMIN)
            .json(&json!({ "title": format!("t{written}"), "description": description }))
            .send()
            .await;
        let res = match sent {
            Ok(res) => res,
            Err(e) => panic!(
                "after {written} writes the server stopped answering ({e}); it exited with {:?}",
                server.wait_exit(Duration::from_secs(5))
            ),
        };
        if res.status() != 201 {
            break res;
        }
        written += 1;
        assert!(written < 2000, "2000 writes of 4 KB fit in a 1 MiB limit");
    };
    assert_rest_write_refused(refused).await;
    // Still refusing, still alive, still answering reads.
    let mut ws = server.ws().await;
    let r = ws
        .call(
            "task.create",
            json!({"title": "refused", "description": description}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    let list = server.get_json("/api/tasks").await;
    assert_eq!(list["items"].as_array().unwrap().len(), written, "{list}");
    let r = ws.subscribe("tasks").await.unwrap();
    assert_eq!(r["data"]["snapshot"].as_array().unwrap().len(), written);
    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server is still running"
    );
    let log = server.log();
    let fault = log
        .lines()
        .find(|l| l.contains("database refuses writes"))
        .unwrap_or_else(|| panic!("no storage fault in the log:\n{log}"));
    eprintln!("refused after {written} writes; the server logged: {fault}");
}
