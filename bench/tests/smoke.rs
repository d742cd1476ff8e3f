//! A small smoke run of each load-generator scenario against a test server.
//! Benchmarks are not timed tests: these assert only correctness (nothing lost,
//! nothing duplicated, nothing out of order, no failed call), never speed.

mod server;

use serde_json::Value;
use server::Server;
use std::process::Command;

/// Runs the built `taskwire-bench` against `app` and returns its JSON line.
fn bench(app: &Server, args: &[&str]) -> Value {
    // The folder holding the database folder: same disk, and it exists
    // before the server has started.
    let db_dir = app.dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_taskwire-bench"))
        .arg("--addr")
        .arg(app.addr.to_string())
        .arg("--token")
        .arg(&app.admin)
        .arg("--db-dir")
        .arg(db_dir)
        // The server runs inside this test process.
        .arg("--server-pid")
        .arg(std::process::id().to_string())
        .arg("--quiet")
        .args(args)
        .env_remove("TASKWIRE_ADMIN_TOKEN")
        .output()
        .expect("run taskwire-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line ({:?}); stderr: {stderr}", out.status));
    let v: Value = serde_json::from_str(line).expect("the JSON line parses");
    assert!(
        out.status.success(),
        "taskwire-bench exited {:?}: {v}\n{stderr}",
        out.status
    );
    assert_eq!(v["ok"], true, "{v}");
    v
}

#[test]
fn filtered_delivers_to_each_subscriber_exactly_what_its_filter_sees() {
    let app = server::start();
    let v = bench(
        &app,
        &["filtered", "-n", "24", "-f", "12", "-u", "3", "-w", "30", "-r", "500"],
    );
    assert_eq!(v["scenario"], "filtered");
    assert_eq!(v["filters"], 12, "{v}");
    assert_eq!(v["delivered"], v["expected"], "{v}");
    assert!(
        v["expected"].as_u64().unwrap() > 3 * 30,
        "the filters see some writes: {v}"
    );
    assert_eq!(v["unexpected"], 0, "{v}");
    assert_eq!(v["failed_calls"], 0, "{v}");
    assert_eq!(v["plain_event_latency_ms"]["count"], 90, "{v}");
}

#[test]
fn fanout_delivers_every_write_to_every_subscriber_once_in_order() {
    let app = server::start();
    let v = bench(&app, &["fanout", "-n", "5", "-w", "20", "-r", "500"]);
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(v["acked"], 20, "{v}");
    assert_eq!(v["expected"], 100, "{v}");
    assert_eq!(v["delivered"], 100, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["failed_calls"], 0, "{v}");
    assert_eq!(v["sockets_ended_early"], 0, "{v}");
    assert_eq!(v["event_latency_ms"]["count"], 100, "{v}");
    // The disk's floor at the writes' pace: one sync per 2 ms, 200 of them.
    assert_eq!(v["fsync_paced"]["gap_ms"], 2.0, "{v}");
    assert_eq!(v["fsync_paced"]["samples"], 200, "{v}");
    // A second run reuses the bench task instead of creating another.
    let again = bench(&app, &["fanout", "-n", "2", "-w", "5", "-r", "500"]);
    assert_eq!(again["delivered"], 10, "{again}");
}

#[test]
fn writes_are_all_acked() {
    let app = server::start();
    let v = bench(&app, &["writes", "-c", "3", "-s", "0.3"]);
    assert_eq!(v["scenario"], "writes");
    assert!(v["acked"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["failed_calls"], 0, "{v}");
    assert!(v["fsync"]["samples"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn conns_holds_every_socket() {
    let app = server::start();
    let v = bench(&app, &["conns", "-n", "20", "--hold-secs", "0.2"]);
    assert_eq!(v["scenario"], "conns");
    assert_eq!(v["sockets"], 20);
    assert_eq!(v["sockets_ended_early"], 0, "{v}");
    assert!(v["server_rss_kib_after"].is_u64(), "{v}");
}

#[test]
fn resume_replays_every_missed_event_once_in_order() {
    let app = server::start();
    let v = bench(&app, &["resume", "-n", "5", "-m", "10"]);
    assert_eq!(v["scenario"], "resume");
    assert_eq!(v["expected"], 50, "{v}");
    assert_eq!(v["delivered"], 50, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["snapshot_instead_of_replay"], 0, "{v}");
}

/// A flood loop's requests are each counted once: answered (ok, refused or
/// other) or left unanswered by a connection that ended.
fn adds_up(v: &Value) -> bool {
    let n = |k: &str| v[k].as_u64().unwrap();
    n("requests") == n("ok") + n("refused") + n("other") + n("unanswered")
}

#[test]
fn readflood_writes_are_all_acked_and_the_flood_counts_add_up() {
    let app = server::start();
    let args = [
        "readflood",
        "-n",
        "300",
        "-s",
        "0.5",
        "--http-flooders",
        "2",
        "--ws-flooders",
        "2",
    ];
    let v = bench(&app, &args);
    assert_eq!(v["scenario"], "readflood");
    assert_eq!(v["tasks_before"], 1, "{v}"); // bench-0, the writer's task
    assert_eq!(v["tasks_created"], 299, "{v}");
    assert_eq!(v["failed_calls"], 0, "{v}");
    assert!(v["idle"]["acked"].as_u64().unwrap() > 0, "{v}");
    assert!(v["flood"]["acked"].as_u64().unwrap() > 0, "{v}");
    assert!(v["ack_p99_ratio"].is_f64(), "{v}");
    assert!(v["ack_p99_within_2x"].is_boolean(), "{v}");
    for kind in ["http_flood", "ws_flood"] {
        assert!(v[kind]["requests"].as_u64().unwrap() > 0, "{v}");
        assert!(adds_up(&v[kind]), "{v}");
    }
    // Again, its writer on a socket and its flooders paced: the database
    // holds its tasks already.
    let args = [
        "readflood",
        "-n",
        "300",
        "-s",
        "0.3",
        "--via",
        "socket",
        "--http-rate",
        "100",
        "--ws-rate",
        "100",
    ];
    let again = bench(&app, &args);
    assert_eq!(again["tasks_created"], 0, "{again}");
    assert_eq!(again["failed_calls"], 0, "{again}");
    assert!(again["flood"]["acked"].as_u64().unwrap() > 0, "{again}");
    for kind in ["http_flood", "ws_flood"] {
        assert!(again[kind]["requests"].as_u64().unwrap() > 0, "{again}");
        assert!(adds_up(&again[kind]), "{again}");
    }
}

#[test]
fn tokenflood_counts_every_call_and_open_dashboards_miss_no_change() {
    let app = server::start();
    let v = bench(&app, &["tokenflood", "-k", "3", "-s", "0.5", "--agent-sockets", "2"]);
    assert_eq!(v["scenario"], "tokenflood");
    let agent = &v["agent"];
    assert!(agent["requests"].as_u64().unwrap() > 0, "{v}");
    assert!(adds_up(agent), "{v}");
    assert_eq!(agent["other"], 0, "{v}");
    assert!(v["changes_acked"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["delivered"], v["expected"], "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert!(v["dashboards_stayed_connected"].is_boolean(), "{v}");
}

#[test]
fn only_loopback_is_accepted() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskwire-bench"))
        .args(["--addr", "192.0.2.1:80", "--token", "x", "fsync"])
        .output()
        .expect("run taskwire-bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
