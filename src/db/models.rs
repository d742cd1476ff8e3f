//! Rows as diesel reads and writes them, and their JSON shape on the wire.

use diesel::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::Arc;

use super::schema::{activity, agents, changes, login_codes, ops, tasks, tokens};
use crate::auth::Role;
use crate::model::{AgentStatus, ChangeKind, Entity, TaskStatus};

/// A task row. Its JSON on the wire is its serde form (`to_json`, `to_raw`), so
/// a task is serialized straight from the row, without a JSON tree between.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub priority: i32,
    pub progress: Option<i32>,
    pub assignee_id: Option<i64>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// Some fields of a task, as a JSON object in the given order.
struct FieldsOf<'a>(&'a Task, &'a [String]);

impl Serialize for FieldsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (t, fields) = (self.0, self.1);
        let mut map = s.serialize_map(Some(fields.len()))?;
        for f in fields {
            match f.as_str() {
                "assignee_id" => map.serialize_entry(f, &t.assignee_id)?,
                "created_at" => map.serialize_entry(f, &t.created_at)?,
                "description" => map.serialize_entry(f, &t.description)?,
                "id" => map.serialize_entry(f, &t.id)?,
                "priority" => map.serialize_entry(f, &t.priority)?,
                "progress" => map.serialize_entry(f, &t.progress)?,
                "status" => map.serialize_entry(f, &t.status)?,
                "title" => map.serialize_entry(f, &t.title)?,
                _ => map.serialize_entry(f, &())?,
            }
        }
        map.end()
    }
}

impl Task {
    /// The fields a create reports as changed: all but `version` and
    /// `updated_at`, sorted by name as `changed_fields` lists them.
    pub const FIELDS: [&'static str; 8] = [
        "assignee_id",
        "created_at",
        "description",
        "id",
        "priority",
        "progress",
        "status",
        "title",
    ];

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a task serializes")
    }

    /// The task's JSON as text, shared by the reply, the change log and events.
    pub fn to_raw(&self) -> Arc<RawValue> {
        Arc::from(serde_json::value::to_raw_value(self).expect("a task serializes"))
    }

    /// The values of `fields` as the task's JSON has them: an update's
    /// `before`, written straight from the row (not the whole task, whose
    /// description may be long, nor a tree of values).
    pub fn values_of(&self, fields: &[String]) -> Arc<RawValue> {
        Arc::from(serde_json::value::to_raw_value(&FieldsOf(self, fields)).expect("a task's fields serialize"))
    }

    /// The fields that differ in `next`, sorted by name; `version` and
    /// `updated_at` change with every write and are left out.
    pub fn changed_fields(&self, next: &Task) -> Vec<String> {
        let differs = [
            self.assignee_id != next.assignee_id,
            self.created_at != next.created_at,
            self.description != next.description,
            self.id != next.id,
            self.priority != next.priority,
            self.progress != next.progress,
            self.status != next.status,
            self.title != next.title,
        ];
        Self::FIELDS
            .iter()
            .zip(differs)
            .filter(|(_, d)| *d)
            .map(|(f, _)| f.to_string())
            .collect()
    }
}

/// A new task row.
#[derive(Debug, Insertable)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub status: TaskStatus,
    pub priority: i32,
    pub progress: Option<i32>,
    pub assignee_id: Option<i64>,
    pub version: i64,
    pub created_at: &'a str,
    pub updated_at: &'a str,
}

/// An agent row. `reported_status` is the last status the agent itself reported,
/// restored when it comes back from `offline`; it is not on the wire.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = agents)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    pub status: AgentStatus,
    pub reported_status: AgentStatus,
    pub current_task_id: Option<i64>,
    pub last_heartbeat_at: Option<String>,
    pub meta: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Agent {
    pub fn to_json(&self) -> Value {
        let meta: Value = serde_json::from_str(&self.meta).unwrap_or_else(|_| json!({}));
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "current_task_id": self.current_task_id,
            "last_heartbeat_at": self.last_heartbeat_at,
            "meta": meta,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

impl Serialize for Agent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// A new agent row.
#[derive(Debug, Insertable)]
#[diesel(table_name = agents)]
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub status: AgentStatus,
    pub reported_status: AgentStatus,
    pub current_task_id: Option<i64>,
    pub meta: &'a str,
    pub version: i64,
    pub created_at: &'a str,
    pub updated_at: &'a str,
}

/// A change-log row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = changes)]
pub struct ChangeRow {
    pub seq: i64,
    pub entity: Entity,
    pub entity_id: i64,
    pub kind: ChangeKind,
    pub changed: String,
    pub data: String,
    pub at: String,
    /// Who made it ([`crate::protocol::by`]); none before authors were recorded.
    pub author: Option<String>,
    /// The previous values of the changed fields, for an update.
    pub prior: Option<String>,
}

/// A change-log row to append, borrowing what the change already holds.
/// `None` is bound as NULL, so the statement's text is always the same and
/// stays prepared.
#[derive(Debug, Insertable)]
#[diesel(table_name = changes, treat_none_as_default_value = false)]
pub struct NewChange<'a> {
    pub seq: i64,
    pub entity: Entity,
    pub entity_id: i64,
    pub kind: ChangeKind,
    pub changed: &'a str,
    pub data: &'a str,
    pub at: &'a str,
    pub author: Option<&'a str>,
    pub prior: Option<&'a str>,
}

/// An entry of a task's activity: a change of the task or a note on it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = activity)]
pub struct ActivityRow {
    pub seq: i64,
    pub task_id: i64,
    pub agent_id: Option<i64>,
    pub kind: ChangeKind,
    pub changed: String,
    pub prior: Option<String>,
    pub data: String,
    pub author: Option<String>,
    pub at: String,
}

/// A remembered op_id and the reply it got.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ops)]
pub struct OpRow {
    pub token_id: i64,
    pub op_id: String,
    pub fingerprint: String,
    pub reply: String,
    pub seq: Option<i64>,
    pub at: String,
}

/// A token row; only the SHA-256 of the secret is stored. Its JSON is the
/// token as listed: everything but the hash.
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = tokens)]
pub struct TokenRow {
    pub id: i64,
    #[serde(skip)]
    pub hash: String,
    pub role: Role,
    pub name: String,
    pub agent_id: Option<i64>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A new token row.
#[derive(Debug, Insertable)]
#[diesel(table_name = tokens)]
pub struct NewToken<'a> {
    pub hash: &'a str,
    pub role: Role,
    pub name: &'a str,
    pub agent_id: Option<i64>,
    pub created_at: &'a str,
}

/// A one-time login code as stored: the SHA-256 of the code, never the code.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = login_codes)]
pub struct LoginCodeRow {
    pub hash: String,
    pub token_id: i64,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
}
