//! The entities and frames as typed structs. Fields a server may add later
//! (or that older servers lack, such as `progress`, `by`, `at`) are optional,
//! so this client reads both.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The first frame on every socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub server: String,
    /// The database; a position's seq means nothing under another epoch.
    pub epoch: String,
    /// The seq of the last committed change when the socket opened.
    pub seq: i64,
    /// The server's WebSocket ping interval (not the agent's heartbeat).
    pub heartbeat_ms: u64,
    /// An agent heartbeats at least every third of this.
    pub agent_timeout_ms: u64,
    /// An `in_progress` task unchanged for longer is shown as stuck.
    #[serde(default)]
    pub stuck_after_ms: Option<u64>,
    pub role: String,
    #[serde(default)]
    pub token_id: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    /// For agent tokens: the agent the token acts as.
    #[serde(default)]
    pub agent_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: i64,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// `todo`, `in_progress`, `blocked`, `review` or `done`.
    pub status: String,
    pub priority: i64,
    pub assignee_id: Option<i64>,
    /// 0 to 100, or none; absent on servers before it existed.
    #[serde(default)]
    pub progress: Option<i64>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    /// `idle`, `busy`, `error` or `offline`.
    pub status: String,
    pub current_task_id: Option<i64>,
    #[serde(default)]
    pub meta: Value,
    pub last_heartbeat_at: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Who made a change: `kind` is `agent`, `member`, `admin` or `system`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct By {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An event frame of a subscribed topic; also an activity entry (which has
/// no `topic`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub topic: String,
    /// The change's seq; none on heartbeats, which are not changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// `task.created`, `task.updated`, `task.deleted`, `task.noted`,
    /// `agent.created`, `agent.updated`, `agent.deleted` or `agent.heartbeat`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// The whole entity after the change; `{"id": N}` for a delete.
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<By>,
    /// The previous values of the fields in `changed` (updates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl Event {
    /// The task, for task events that carry one (not deletes or notes).
    pub fn task(&self) -> Option<Task> {
        self.event
            .starts_with("task.")
            .then(|| serde_json::from_value(self.data.clone()).ok())?
    }
    /// The agent, for agent events that carry one (not deletes or heartbeats).
    pub fn agent(&self) -> Option<Agent> {
        self.event
            .starts_with("agent.")
            .then(|| serde_json::from_value(self.data.clone()).ok())?
    }
}

/// A successful call: its data, and the seq of its last change if it made one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub data: Value,
    pub seq: Option<i64>,
}

impl Reply {
    /// The data as a typed value (a `Task`, an `Agent`).
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> crate::Result<T> {
        serde_json::from_value(self.data).map_err(|e| crate::Error::Protocol(format!("unexpected reply data: {e}")))
    }
}

/// Where a subscription is: the database and the last seq it has delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub seq: i64,
}

/// What a subscription yields, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The topic's whole state at `seq` (an array for `tasks`/`agents`, one
    /// object for `task:N`/`agent:N`). Replace everything held for the topic.
    /// Comes first, and again only when the server answered a resume with one
    /// (`resync`: another database, a position too old).
    Snapshot {
        data: Value,
        epoch: String,
        seq: i64,
        /// The newest activity entries, when asked for with `history`.
        history: Option<Vec<Value>>,
        resync: bool,
    },
    /// One change (or heartbeat), each change exactly once, in seq order,
    /// including those replayed after a reconnect.
    Event(Event),
    /// After a reconnect, the server replayed the `replayed` changes missed
    /// (already yielded as `Event`s); the subscription is at `seq` again.
    Resumed { epoch: String, seq: i64, replayed: usize },
}

/// A task to create; unset fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewTask {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<i64>,
}

/// A task patch: only the fields set are sent; `Some(None)` sets null.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Option<i64>>,
}
