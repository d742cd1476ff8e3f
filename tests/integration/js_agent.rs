//! The JavaScript example agent of docs/agents.md (`clients/js/agent.mjs`, on
//! the pages' `client.js`) run by Node against a real server: it claims the
//! free tasks one at a time, notes its progress and finishes them.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// Ends the agent when the test ends, passed or not.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/agent.mjs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_example_agent_takes_reports_on_and_finishes_tasks() {
    let app = spawn_app();
    let agent = app.create_agent("js-runner").await;
    let agent_id = agent["id"].as_i64().unwrap();
    let ids: Vec<i64> = [app.create_task("first").await, app.create_task("second").await]
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    let mut board = app.ws().await;
    board.subscribe("tasks").await;

    let _node = Agent(
        Command::new("node")
            .arg("--experimental-websocket")
            .arg(EXAMPLE)
            .env("TASKWIRE_URL", app.ws_url())
            .env("TASKWIRE_TOKEN", agent["token"].as_str().unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("node runs (Node.js 20 or later)"),
    );
    let mut done = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while done.len() < ids.len() {
        assert!(std::time::Instant::now() < deadline, "done so far: {done:?}");
        let ev = board.next_event().await;
        if ev["event"] == "task.updated" && ev["data"]["status"] == "done" {
            assert_eq!(ev["by"]["agent_id"], agent_id, "{ev}");
            assert_eq!(ev["data"]["progress"], 100, "{ev}");
            done.push(ev["data"]["id"].as_i64().unwrap());
        }
    }
    done.sort();
    assert_eq!(done, ids);
    for id in ids {
        let activity = app.get_json(&format!("/api/tasks/{id}/activity")).await;
        let notes: Vec<&Value> = activity["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "task.noted")
            .collect();
        let progress: Vec<&Value> = notes.iter().rev().map(|n| &n["data"]["progress"]).collect();
        assert_eq!(progress, [&json!(25), &json!(50), &json!(75)], "{activity}");
        assert!(notes.iter().all(|n| n["by"]["agent_id"] == agent_id));
    }
}

/// The example printed in docs/agents.md is this file, so it is the one tested.
#[test]
fn the_documented_javascript_agent_is_the_tested_one() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/agents.md")).unwrap();
    let section = doc.split("## JavaScript").nth(1).expect("a JavaScript section");
    let block = section
        .split("```js\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a js block");
    assert_eq!(block, std::fs::read_to_string(EXAMPLE).unwrap());
}
