//! The MCP tools: each one or two REST calls on the server, with a schema and
//! a description written for a model. A refusal becomes a tool error (`isError`)
//! carrying the server's code and message, so the model can read it and act.

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{schemars, tool, tool_router, ErrorData};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::{Api, ApiError};

/// The MCP server: a client of one taskwire server with one token.
#[derive(Clone)]
pub struct Taskwire {
    pub(super) api: Api,
    pub(super) tool_router: ToolRouter<Taskwire>,
    pub(super) prompt_router: PromptRouter<Taskwire>,
}

impl Taskwire {
    pub fn new(api: Api) -> Taskwire {
        Taskwire {
            api,
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
        }
    }
}

/// A task's status, as the server names it.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Todo,
    InProgress,
    Blocked,
    Review,
    Done,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Todo => "todo",
            Status::InProgress => "in_progress",
            Status::Blocked => "blocked",
            Status::Review => "review",
            Status::Done => "done",
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasks {
    /// Only tasks with this status.
    pub status: Option<Status>,
    /// Only tasks assigned to this agent id (`whoami` tells yours).
    pub assignee_id: Option<i64>,
    /// Only tasks assigned to nobody: with status `todo`, the ones `claim_task` can take.
    #[serde(default)]
    pub unassigned: bool,
    /// At most this many tasks, most urgent first (default 50, at most 500).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetTask {
    /// The task's id.
    pub id: i64,
    /// How many of the newest activity entries (changes and notes) to include (default 10, at most 50).
    #[schemars(range(min = 0, max = 50))]
    pub activity: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskId {
    /// The task's id.
    pub id: i64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    /// The task's id.
    pub id: i64,
    /// New status: `in_progress` while working, `blocked` when stuck (say why with `add_note`),
    /// `review` when it needs a person to check it, `done` when finished.
    pub status: Option<Status>,
    /// How far along the work is, in percent.
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<u8>,
    /// New title (1 to 200 characters).
    pub title: Option<String>,
    /// New description (replaces the whole text; at most 20000 characters).
    pub description: Option<String>,
    /// New priority: 0 low, 1 normal, 2 high, 3 urgent.
    #[schemars(range(min = 0, max = 3))]
    pub priority: Option<u8>,
    /// Hand the task to this agent id.
    pub assignee_id: Option<i64>,
    /// true: give the task back (assigned to nobody), so another agent can claim it.
    #[serde(default)]
    pub unassign: bool,
    /// Only change the task if it is still at this version (from `get_task`); else a `conflict` error.
    pub expected_version: Option<i64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNote {
    /// The task's id.
    pub id: i64,
    /// What happened, what you found or what you need, for the people watching (1 to 4096 characters).
    #[schemars(length(min = 1, max = 4096))]
    pub text: String,
    /// Also set the task's progress, in percent.
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<u8>,
}

#[tool_router]
impl Taskwire {
    /// List tasks on the board, most urgent first (priority 3 urgent to 0 low, then oldest).
    /// Each task is shown short: id, title, status, priority, assignee_id (the agent working on it,
    /// null when nobody is), progress and version; `get_task` gives the description and history.
    /// To find work: your own tasks (assignee_id = your agent id from `whoami`), or
    /// `status: "todo", unassigned: true` for tasks you can take with `claim_task`.
    #[tool(annotations(read_only_hint = true))]
    async fn list_tasks(&self, Parameters(p): Parameters<ListTasks>) -> Result<CallToolResult, ErrorData> {
        if p.unassigned && p.assignee_id.is_some() {
            return Ok(refusal(&ApiError {
                code: "bad_request".into(),
                message: "give assignee_id or unassigned, not both".into(),
            }));
        }
        let limit = p.limit.unwrap_or(50).clamp(1, 500);
        let list = match self.api.list_tasks(p.status.map(Status::as_str), p.assignee_id).await {
            Ok(list) => list,
            Err(e) => return Ok(refusal(&e)),
        };
        let mut tasks: Vec<&Value> = items(&list)
            .iter()
            .filter(|t| !p.unassigned || t["assignee_id"].is_null())
            .collect();
        sort_by_urgency(&mut tasks);
        let count = tasks.len();
        let shown: Vec<Value> = tasks.into_iter().take(limit).map(short_task).collect();
        let mut out = json!({"count": count, "tasks": shown});
        if count > limit {
            out["more"] = json!(format!(
                "{} more not shown; narrow the filters or raise limit",
                count - limit
            ));
        }
        Ok(success(out))
    }

    /// Get one task in full (title, description, status, priority, assignee, progress, version,
    /// times) with its recent activity, newest first: each change (the `changed` fields with
    /// their `before` and `after` values) and each note (`text`, `progress`), with who made it
    /// (`by`) and when (`at`). Read it before working on a task.
    #[tool(annotations(read_only_hint = true))]
    async fn get_task(&self, Parameters(p): Parameters<GetTask>) -> Result<CallToolResult, ErrorData> {
        let task = match self.api.task(p.id).await {
            Ok(t) => t,
            Err(e) => return Ok(refusal(&e)),
        };
        let limit = p.activity.unwrap_or(10).min(50);
        let mut out = json!({ "task": task });
        if limit > 0 {
            match self.api.activity(p.id, limit).await {
                Ok(page) => out["activity"] = items(&page).iter().map(short_entry).collect(),
                Err(e) => out["activity_unavailable"] = json!(e.to_string()),
            }
        }
        Ok(success(out))
    }

    /// Take an unassigned task: it becomes yours (assignee_id = your agent) and `in_progress`.
    /// Only for agent tokens. If another agent has it, this fails with `conflict` naming that
    /// agent: pick another task. Claiming a task that is already yours changes nothing.
    /// Returns the task.
    #[tool(annotations(idempotent_hint = true, destructive_hint = false))]
    async fn claim_task(&self, Parameters(p): Parameters<TaskId>) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.api.claim(p.id).await))
    }

    /// Change a task: its status (mark it `done` when finished, `review` for a person to check,
    /// `blocked` when stuck), progress, title, description, priority or assignee. Give only the
    /// fields to change. An agent may change only tasks assigned to it. Returns the task.
    #[tool(annotations(destructive_hint = false))]
    async fn update_task(&self, Parameters(p): Parameters<UpdateTask>) -> Result<CallToolResult, ErrorData> {
        if p.unassign && p.assignee_id.is_some() {
            return Ok(refusal(&ApiError {
                code: "bad_request".into(),
                message: "give assignee_id or unassign, not both".into(),
            }));
        }
        let mut patch = Map::new();
        let mut set = |field: &str, value: Value| {
            patch.insert(field.to_string(), value);
        };
        if let Some(s) = p.status {
            set("status", json!(s.as_str()));
        }
        if let Some(v) = p.progress {
            set("progress", json!(v));
        }
        if let Some(v) = p.title {
            set("title", json!(v));
        }
        if let Some(v) = p.description {
            set("description", json!(v));
        }
        if let Some(v) = p.priority {
            set("priority", json!(v));
        }
        if let Some(v) = p.assignee_id {
            set("assignee_id", json!(v));
        }
        if p.unassign {
            set("assignee_id", Value::Null);
        }
        if patch.is_empty() {
            return Ok(refusal(&ApiError {
                code: "bad_request".into(),
                message: "nothing to change: give at least one of status, progress, title, description, priority, assignee_id, unassign".into(),
            }));
        }
        Ok(answer(self.api.update_task(p.id, patch, p.expected_version).await))
    }

    /// Add a note to a task's activity, seen live by the people watching it: what you did,
    /// found, decided or need. Optionally sets the task's progress at the same time. Allowed
    /// on tasks assigned to you (people may note any task). Returns the note.
    #[tool(annotations(destructive_hint = false))]
    async fn add_note(&self, Parameters(p): Parameters<AddNote>) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.api.note(p.id, &p.text, p.progress).await))
    }

    /// List the agents: id, name, status (idle, busy, error, or offline when its heartbeat
    /// stopped), the task it is on (current_task_id) and its last heartbeat.
    #[tool(annotations(read_only_hint = true))]
    async fn list_agents(&self) -> Result<CallToolResult, ErrorData> {
        let list = match self.api.list_agents().await {
            Ok(list) => list,
            Err(e) => return Ok(refusal(&e)),
        };
        let agents: Vec<Value> = items(&list).iter().map(short_agent).collect();
        Ok(success(json!({ "agents": agents })))
    }

    /// Who this server acts as: the token's name and role (admin, member or agent) and, for an
    /// agent, its agent_id: the id tasks are assigned to.
    #[tool(annotations(read_only_hint = true))]
    async fn whoami(&self) -> Result<CallToolResult, ErrorData> {
        Ok(answer(self.api.me().await))
    }
}

/// The `items` of a list answer.
pub(super) fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Most urgent first: priority high to low, then by id (oldest first).
pub(super) fn sort_by_urgency(tasks: &mut [&Value]) {
    tasks.sort_by_key(|t| (-t["priority"].as_i64().unwrap_or(0), t["id"].as_i64().unwrap_or(0)));
}

/// A task without its description and times, for lists.
pub(super) fn short_task(t: &Value) -> Value {
    pick(
        t,
        &[
            "id",
            "title",
            "status",
            "priority",
            "assignee_id",
            "progress",
            "version",
        ],
    )
}

/// An activity entry without the whole task each change carries: a change
/// keeps the values of its changed fields, a note its text and progress.
fn short_entry(e: &Value) -> Value {
    let mut out = pick(e, &["seq", "event", "changed", "before", "by", "at"]);
    if e["event"] == "task.noted" {
        out["text"] = e["data"]["text"].clone();
        out["progress"] = e["data"]["progress"].clone();
        out.as_object_mut().expect("an object").remove("changed");
    } else if let Some(changed) = e["changed"].as_array() {
        let fields: Vec<&str> = changed.iter().filter_map(Value::as_str).collect();
        out["after"] = pick(&e["data"], &fields);
    }
    out
}

fn short_agent(a: &Value) -> Value {
    pick(a, &["id", "name", "status", "current_task_id", "last_heartbeat_at"])
}

/// The fields of `v` that are present, in this order.
fn pick(v: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for f in fields {
        if let Some(x) = v.get(*f) {
            out.insert(f.to_string(), x.clone());
        }
    }
    Value::Object(out)
}

fn answer(r: Result<Value, ApiError>) -> CallToolResult {
    match r {
        Ok(v) => success(v),
        Err(e) => refusal(&e),
    }
}

/// The value as JSON text, and as structured content when it is an object.
fn success(v: Value) -> CallToolResult {
    if v.is_object() {
        CallToolResult::structured(v)
    } else {
        CallToolResult::success(vec![ContentBlock::text(v.to_string())])
    }
}

/// A tool error: `code: message` for the model, and `{"error": {code, message}}`
/// as structured content for programs.
pub(super) fn refusal(e: &ApiError) -> CallToolResult {
    let mut result = CallToolResult::structured_error(json!({ "error": e }));
    result.content = vec![ContentBlock::text(e.to_string())];
    result
}
