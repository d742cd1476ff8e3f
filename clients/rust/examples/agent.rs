//! An agent that takes unassigned tasks one at a time, reports progress and
//! finishes them. Run it with an agent token:
//!
//!     TASKWIRE_URL=http://127.0.0.1:8080 TASKWIRE_TOKEN=tw_... \
//!         cargo run -p taskwire-client --example agent

use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use taskwire_client::{Client, Error, Item, Task};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let url = std::env::var("TASKWIRE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("TASKWIRE_TOKEN").expect("set TASKWIRE_TOKEN to an agent token");
    // Connects, and from now on reconnects, resumes and heartbeats by itself.
    let client = Client::connect(&url, &token).await?;
    let mut board = client.subscribe("tasks").await?;
    let mut tasks: BTreeMap<i64, Task> = BTreeMap::new();
    while let Some(item) = board.next().await {
        match item? {
            Item::Snapshot { data, .. } => {
                let all: Vec<Task> = serde_json::from_value(data).expect("tasks");
                tasks = all.into_iter().map(|t| (t.id, t)).collect();
            }
            Item::Event(e) if e.event == "task.deleted" => {
                tasks.remove(&e.data["id"].as_i64().unwrap_or_default());
            }
            Item::Event(e) => {
                if let Some(t) = e.task() {
                    tasks.insert(t.id, t);
                }
            }
            Item::Resumed { .. } => {}
        }
        let open = tasks.values().find(|t| t.status == "todo" && t.assignee_id.is_none());
        if let Some(task) = open.cloned() {
            if let Some(done) = work_on(&client, &task).await? {
                tasks.insert(done.id, done); // before its events arrive
            }
        }
    }
    Ok(())
}

/// Claims, works, finishes; None if another agent was quicker.
async fn work_on(client: &Client, task: &Task) -> Result<Option<Task>, Error> {
    match client.claim(task.id).await {
        Ok(_) => {}
        Err(Error::Conflict(_) | Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    client.set_heartbeat(json!({"status": "busy", "current_task_id": task.id}));
    for percent in [25, 50, 75] {
        tokio::time::sleep(Duration::from_secs(1)).await; // the actual work goes here
        client
            .note_progress(task.id, &format!("{percent}% done"), percent)
            .await?;
    }
    let done = client.finish(task.id).await?;
    client.set_heartbeat(json!({"status": "idle", "current_task_id": null}));
    Ok(Some(done))
}
