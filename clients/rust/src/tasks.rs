//! Calls that read as the job: reading the board, creating and moving tasks,
//! claiming, notes and progress. Each is one [`Client::call`] (or one
//! snapshot) with its op_id, so each is re-sent safely.

use crate::{Agent, Client, Error, Item, NewTask, Result, Task, TaskPatch};
use serde_json::{json, Value};

impl Client {
    /// The state of `topic` now: one snapshot, then unsubscribed.
    pub async fn snapshot(&self, topic: &str, history: Option<u32>) -> Result<(Value, Option<Vec<Value>>)> {
        let mut sub = self.subscribe_with(topic, None, history).await?;
        match sub.next().await {
            Some(Ok(Item::Snapshot { data, history, .. })) => Ok((data, history)),
            Some(Err(e)) => Err(e),
            _ => Err(Error::Protocol(format!("no snapshot for {topic}"))),
        }
    }

    /// Every task, by id.
    pub async fn tasks(&self) -> Result<Vec<Task>> {
        parse(self.snapshot("tasks", None).await?.0)
    }

    pub async fn task(&self, id: i64) -> Result<Task> {
        parse(self.snapshot(&format!("task:{id}"), None).await?.0)
    }

    /// Every agent, by id.
    pub async fn agents(&self) -> Result<Vec<Agent>> {
        parse(self.snapshot("agents", None).await?.0)
    }

    pub async fn create_task(&self, task: &NewTask) -> Result<Task> {
        self.call("task.create", json!(task)).await?.parse()
    }

    /// Changes the fields set in `patch`.
    pub async fn update(&self, id: i64, patch: &TaskPatch) -> Result<Task> {
        self.call("task.update", json!({"id": id, "patch": patch}))
            .await?
            .parse()
    }

    /// Like [`Client::update`], only if the task is still at `version`
    /// (else [`Error::Conflict`]: look at the new version first).
    pub async fn update_if(&self, id: i64, version: i64, patch: &TaskPatch) -> Result<Task> {
        self.call("task.update", json!({"id": id, "if_version": version, "patch": patch}))
            .await?
            .parse()
    }

    /// Takes an unassigned task for this agent token (status `in_progress`).
    /// [`Error::Conflict`] names the agent that has it.
    pub async fn claim(&self, id: i64) -> Result<Task> {
        self.call("task.claim", json!({"id": id})).await?.parse()
    }

    /// Adds a note to the task's activity; returns the note entry.
    pub async fn note(&self, id: i64, text: &str) -> Result<Value> {
        Ok(self.call("task.note", json!({"id": id, "text": text})).await?.data)
    }

    /// A note that also sets the task's progress (0 to 100).
    pub async fn note_progress(&self, id: i64, text: &str, progress: i64) -> Result<Value> {
        let params = json!({"id": id, "text": text, "progress": progress});
        Ok(self.call("task.note", params).await?.data)
    }

    /// Sets the task's progress (0 to 100).
    pub async fn progress(&self, id: i64, progress: i64) -> Result<Task> {
        let patch = TaskPatch {
            progress: Some(Some(progress)),
            ..TaskPatch::default()
        };
        self.update(id, &patch).await
    }

    /// Moves the task to `done`.
    pub async fn finish(&self, id: i64) -> Result<Task> {
        let patch = TaskPatch {
            status: Some("done".into()),
            ..TaskPatch::default()
        };
        self.update(id, &patch).await
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Protocol(format!("unexpected snapshot: {e}")))
}
