//! The rules of the entities: validation, authorization, versions, the change
//! records and idempotency. Runs inside the Db actor's transaction.
//!
//! Invariant: every function here checks all its rules (and answers
//! `bad_request`, `invalid`, `not_found`, `conflict` or `forbidden`) before its
//! first write. The group commit relies on it to fail such a call alone without
//! a savepoint; any other error fails the whole batch.

use diesel::sqlite::SqliteConnection;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

use super::models::*;
use super::queries as q;
use crate::auth::{self, authorize, Action, Principal, Role};
use crate::error::ApiError;
use crate::protocol::{self as p, empty_object, from_ref, raw, Call, Change, Entity, Method};

pub const TASK_STATUSES: [&str; 5] = ["todo", "in_progress", "blocked", "review", "done"];
/// The statuses an agent reports; `offline` is the server's to set.
pub const AGENT_STATUSES: [&str; 3] = ["idle", "busy", "error"];
const META_MAX_BYTES: usize = 8 * 1024;

/// The current time as the wire shows it: RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What one write needs besides the connection.
pub struct WriteCtx<'a> {
    /// The last seq handed out; each recorded change takes the next one.
    pub seq: &'a mut i64,
    /// Heartbeat times not yet on disk, by agent id; reads overlay them.
    pub beats: &'a mut HashMap<i64, String>,
    pub tasks: &'a mut TaskRows,
    pub now: String,
}

/// Task rows as this writer last saved them by an update. The Db actor is the
/// only writer of tasks in this process, so the next update of the same task
/// need not read its row back: that read was about a fifth of the writer
/// thread's instructions per update. A row is taken out while a call works on
/// it and put back only once saved; the Db actor clears them all when a batch
/// fails, and when another connection (the `sqlite3` shell, another process)
/// committed to the file since the last batch.
#[derive(Default)]
pub struct TaskRows {
    rows: HashMap<i64, Task>,
    /// About what the rows hold; past [`TaskRows::MAX_BYTES`] they are dropped
    /// (and read again).
    bytes: usize,
    /// The file's `data_version` the rows are from.
    data_version: Option<i64>,
}

impl TaskRows {
    const MAX_BYTES: usize = 16 << 20;

    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }

    /// Called at the start of each batch, inside its transaction: the rows
    /// are dropped if another connection wrote to the file since.
    pub fn follow(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.clear();
            self.data_version = Some(data_version);
        }
    }

    /// The rows held, to check them against the database.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.rows.values()
    }

    fn size(task: &Task) -> usize {
        std::mem::size_of::<Task>()
            + task.title.len()
            + task.description.len()
            + task.status.len()
            + task.created_at.len()
            + task.updated_at.len()
    }

    fn take(&mut self, id: i64) -> Option<Task> {
        let task = self.rows.remove(&id)?;
        self.bytes -= Self::size(&task);
        Some(task)
    }

    fn put(&mut self, task: Task) {
        let size = Self::size(&task);
        if self.bytes + size > Self::MAX_BYTES {
            self.clear();
        }
        self.bytes += size;
        if let Some(old) = self.rows.insert(task.id, task) {
            self.bytes -= Self::size(&old);
        }
    }
}

/// What a committed call produced.
#[derive(Debug)]
pub struct Outcome {
    /// The reply's `data`, serialized (for a write of one entity, the same
    /// text as its change's).
    pub data: Arc<RawValue>,
    /// The seq of the call's last change, if it made any.
    pub seq: Option<i64>,
    pub changes: Vec<Change>,
    /// A heartbeat to push: (agent id, time).
    pub heartbeat: Option<(i64, String)>,
    /// An agent that was created: its liveness clock starts now.
    pub new_agent: Option<i64>,
    /// A token that was created: (hash, principal), for the token cache.
    pub new_token: Option<(String, Principal)>,
    /// Tokens revoked by this call; their sockets are closed.
    pub revoked_tokens: Vec<i64>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            data: empty_object(),
            seq: None,
            changes: Vec::new(),
            heartbeat: None,
            new_agent: None,
            new_token: None,
            revoked_tokens: Vec::new(),
        }
    }
}

impl<'a> WriteCtx<'a> {
    fn record(
        &mut self,
        conn: &mut SqliteConnection,
        out: &mut Outcome,
        (entity, entity_id): (Entity, i64),
        kind: &'static str,
        changed: Vec<String>,
        data: Arc<RawValue>,
    ) -> Result<(), ApiError> {
        *self.seq += 1;
        let changed_text = serde_json::to_string(&changed).map_err(ApiError::internal)?;
        let row = NewChange {
            seq: *self.seq,
            entity: entity.as_str(),
            entity_id,
            kind,
            changed: &changed_text,
            data: data.get(),
            at: &self.now,
        };
        q::append_change(conn, &row)?;
        out.seq = Some(*self.seq);
        out.changes.push(Change {
            seq: *self.seq,
            entity,
            entity_id,
            kind,
            changed,
            data,
        });
        Ok(())
    }

    /// The agent as clients see it: with its newest heartbeat time.
    fn overlay(&self, mut agent: Agent) -> Agent {
        if let Some(at) = self.beats.get(&agent.id) {
            agent.last_heartbeat_at = Some(at.clone());
        }
        agent
    }
}

/// The fingerprint of a call, to tell a repeated op_id from a reused one.
fn fingerprint(call: &Call) -> String {
    // serde_json's maps are ordered by key, so equal params print equally.
    let text = format!("{}\n{}", call.method.as_str(), call.params);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Runs one call: the idempotency check, then the method.
pub fn execute(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    principal: &Principal,
    call: &Call,
) -> Result<Outcome, ApiError> {
    let Some(op_id) = &call.op_id else {
        return dispatch(conn, ctx, principal, call);
    };
    let fp = fingerprint(call);
    if let Some(row) = q::find_op(conn, principal.token_id, op_id)? {
        if row.fingerprint != fp {
            return Err(ApiError::conflict(format!(
                "op_id {op_id:?} was already used for another call"
            )));
        }
        let data = RawValue::from_string(row.reply).map_err(ApiError::internal)?;
        return Ok(Outcome {
            data: Arc::from(data),
            seq: row.seq,
            ..Outcome::default()
        });
    }
    let out = dispatch(conn, ctx, principal, call)?;
    let stored = if call.method == Method::AgentCreate {
        // The secret is shown once and never stored in clear.
        let mut reply: Value = serde_json::from_str(out.data.get()).map_err(ApiError::internal)?;
        if let Some(obj) = reply.as_object_mut() {
            obj.remove("token");
        }
        reply.to_string()
    } else {
        out.data.get().to_string()
    };
    q::insert_op(
        conn,
        &OpRow {
            token_id: principal.token_id,
            op_id: op_id.clone(),
            fingerprint: fp,
            reply: stored,
            seq: out.seq,
            at: ctx.now.clone(),
        },
    )?;
    Ok(out)
}

fn dispatch(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    principal: &Principal,
    call: &Call,
) -> Result<Outcome, ApiError> {
    let params = &call.params;
    match call.method {
        Method::TaskCreate => task_create(conn, ctx, principal, from_ref(params)?),
        Method::TaskUpdate => task_update(conn, ctx, principal, from_ref(params)?),
        Method::TaskDelete => task_delete(conn, ctx, principal, from_ref(params)?),
        Method::AgentCreate => agent_create(conn, ctx, principal, from_ref(params)?),
        Method::AgentUpdate => agent_update(conn, ctx, principal, from_ref(params)?),
        Method::AgentDelete => agent_delete(conn, ctx, principal, from_ref(params)?),
        Method::AgentHeartbeat => heartbeat(conn, ctx, principal, from_ref(params)?),
    }
}

// ---- validation ----

fn check_id(id: i64) -> Result<i64, ApiError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(ApiError::bad_request("`id` must be a positive integer"))
    }
}

fn valid_title(title: &str) -> Result<String, ApiError> {
    let t = title.trim();
    let n = t.chars().count();
    if n == 0 || n > 200 {
        return Err(ApiError::invalid("title must have 1 to 200 characters"));
    }
    Ok(t.to_string())
}

fn valid_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > 20_000 {
        return Err(ApiError::invalid("description must have at most 20000 characters"));
    }
    Ok(())
}

fn valid_task_status(s: &str) -> Result<(), ApiError> {
    if TASK_STATUSES.contains(&s) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "unknown task status {s:?}; one of {}",
            TASK_STATUSES.join(", ")
        )))
    }
}

fn valid_priority(p: i64) -> Result<i32, ApiError> {
    if (0..=3).contains(&p) {
        Ok(p as i32)
    } else {
        Err(ApiError::invalid("priority must be 0, 1, 2 or 3"))
    }
}

fn valid_agent_status(s: &str) -> Result<(), ApiError> {
    if AGENT_STATUSES.contains(&s) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "unknown agent status {s:?}; one of {}",
            AGENT_STATUSES.join(", ")
        )))
    }
}

fn valid_name(conn: &mut SqliteConnection, name: &str, id: i64) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n == 0 || n > 100 || name.trim().is_empty() {
        return Err(ApiError::invalid("name must have 1 to 100 characters"));
    }
    if q::agent_name_taken(conn, name, id)? {
        return Err(ApiError::conflict(format!("the name {name:?} is already taken")));
    }
    Ok(())
}

fn valid_meta(meta: &Map<String, Value>) -> Result<String, ApiError> {
    let text = serde_json::to_string(meta).map_err(ApiError::internal)?;
    if text.len() > META_MAX_BYTES {
        return Err(ApiError::invalid("meta must be at most 8 KiB of JSON"));
    }
    Ok(text)
}

fn valid_assignee(conn: &mut SqliteConnection, id: Option<i64>) -> Result<(), ApiError> {
    match id {
        Some(a) if q::find_agent(conn, a)?.is_none() => Err(ApiError::invalid(format!("assignee {a} is not an agent"))),
        _ => Ok(()),
    }
}

fn valid_current_task(conn: &mut SqliteConnection, id: Option<i64>) -> Result<(), ApiError> {
    match id {
        Some(t) if q::find_task(conn, t)?.is_none() => Err(ApiError::invalid(format!("task {t} does not exist"))),
        _ => Ok(()),
    }
}

fn check_version(entity: &str, id: i64, current: i64, expected: Option<i64>) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != current => Err(ApiError::stale(entity, id, current, v)),
        _ => Ok(()),
    }
}

/// The task's row, taken out of [`TaskRows`] if it is there.
fn load_task(conn: &mut SqliteConnection, ctx: &mut WriteCtx, id: i64) -> Result<Task, ApiError> {
    let id = check_id(id)?;
    if let Some(task) = ctx.tasks.take(id) {
        return Ok(task);
    }
    q::find_task(conn, id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
}

fn load_agent(conn: &mut SqliteConnection, ctx: &WriteCtx, id: i64) -> Result<Agent, ApiError> {
    let agent =
        q::find_agent(conn, check_id(id)?)?.ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))?;
    Ok(ctx.overlay(agent))
}

/// The keys of `after` whose values differ from `before`, but `version` and
/// `updated_at`, which every change sets.
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return vec![];
    };
    a.iter()
        .filter(|(k, v)| k.as_str() != "version" && k.as_str() != "updated_at" && b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Sets the two fields every change sets on an entity's JSON, so it is built
/// once per change.
fn stamp(data: &mut Value, version: i64, updated_at: &str) {
    data["version"] = json!(version);
    data["updated_at"] = json!(updated_at);
}

fn all_fields(data: &Value) -> Vec<String> {
    changed_fields(&json!({}), data)
}

// ---- tasks ----

fn task_create(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    c: p::TaskCreate,
) -> Result<Outcome, ApiError> {
    authorize(who, Action::CreateTask)?;
    let title = valid_title(
        c.title
            .as_deref()
            .ok_or_else(|| ApiError::invalid("title is required"))?,
    )?;
    let description = c.description.unwrap_or_default();
    valid_description(&description)?;
    let status = c.status.unwrap_or_else(|| "todo".to_string());
    valid_task_status(&status)?;
    let priority = valid_priority(c.priority.unwrap_or(0))?;
    valid_assignee(conn, c.assignee_id)?;
    let task = q::insert_task(
        conn,
        &NewTask {
            title: &title,
            description: &description,
            status: &status,
            priority,
            assignee_id: c.assignee_id,
            version: 1,
            created_at: &ctx.now,
            updated_at: &ctx.now,
        },
    )?;
    let data = task.to_raw();
    let mut out = Outcome::default();
    ctx.record(
        conn,
        &mut out,
        (Entity::Task, task.id),
        "created",
        Task::FIELDS.iter().map(|f| f.to_string()).collect(),
        data.clone(),
    )?;
    out.data = data;
    Ok(out)
}

fn task_update(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    u: p::Update<p::TaskPatch>,
) -> Result<Outcome, ApiError> {
    let task = load_task(conn, ctx, u.id)?;
    authorize(
        who,
        Action::UpdateTask {
            assignee_id: task.assignee_id,
        },
    )?;
    check_version("task", task.id, task.version, u.if_version)?;
    let mut next = task.clone();
    let patch = u.patch;
    if let Some(t) = patch.title {
        next.title = valid_title(&t)?;
    }
    if let Some(d) = patch.description {
        valid_description(&d)?;
        next.description = d;
    }
    if let Some(s) = patch.status {
        valid_task_status(&s)?;
        next.status = s;
    }
    if let Some(pr) = patch.priority {
        next.priority = valid_priority(pr)?;
    }
    if let Some(a) = patch.assignee_id {
        valid_assignee(conn, a)?;
        next.assignee_id = a;
    }
    let changed = task.changed_fields(&next);
    if changed.is_empty() {
        let data = task.to_raw();
        ctx.tasks.put(task);
        return Ok(Outcome {
            data,
            ..Outcome::default()
        });
    }
    next.version += 1;
    next.updated_at = ctx.now.clone();
    q::save_task(conn, &next, next.assignee_id != task.assignee_id)?;
    let data = next.to_raw();
    let mut out = Outcome::default();
    ctx.record(
        conn,
        &mut out,
        (Entity::Task, next.id),
        "updated",
        changed,
        data.clone(),
    )?;
    ctx.tasks.put(next);
    out.data = data;
    Ok(out)
}

fn task_delete(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    d: p::Delete,
) -> Result<Outcome, ApiError> {
    let task = load_task(conn, ctx, d.id)?;
    authorize(who, Action::DeleteTask)?;
    check_version("task", task.id, task.version, d.if_version)?;
    let mut out = Outcome::default();
    for agent in q::agents_on_task(conn, task.id)? {
        let mut next = ctx.overlay(agent);
        next.current_task_id = None;
        next.version += 1;
        next.updated_at = ctx.now.clone();
        q::save_agent(conn, &next)?;
        ctx.record(
            conn,
            &mut out,
            (Entity::Agent, next.id),
            "updated",
            vec!["current_task_id".into()],
            raw(&next.to_json()),
        )?;
    }
    q::delete_task(conn, task.id)?;
    ctx.record(
        conn,
        &mut out,
        (Entity::Task, task.id),
        "deleted",
        vec![],
        raw(&json!({"id": task.id})),
    )?;
    Ok(out)
}

// ---- agents ----

fn agent_create(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    c: p::AgentCreate,
) -> Result<Outcome, ApiError> {
    authorize(who, Action::CreateAgent)?;
    let name = c.name.ok_or_else(|| ApiError::invalid("name is required"))?;
    valid_name(conn, &name, 0)?;
    let status = c.status.unwrap_or_else(|| "idle".to_string());
    valid_agent_status(&status)?;
    let meta = valid_meta(&c.meta.unwrap_or_default())?;
    valid_current_task(conn, c.current_task_id)?;
    let agent = q::insert_agent(
        conn,
        &NewAgent {
            name: &name,
            status: &status,
            reported_status: &status,
            current_task_id: c.current_task_id,
            meta: &meta,
            version: 1,
            created_at: &ctx.now,
            updated_at: &ctx.now,
        },
    )?;
    let token = auth::generate_token();
    let hash = auth::hash_token(&token);
    let row = q::insert_token(
        conn,
        &NewToken {
            hash: &hash,
            role: Role::Agent.as_str(),
            name: &name,
            agent_id: Some(agent.id),
            created_at: &ctx.now,
        },
    )?;
    let data = agent.to_json();
    let mut out = Outcome::default();
    ctx.record(
        conn,
        &mut out,
        (Entity::Agent, agent.id),
        "created",
        all_fields(&data),
        raw(&data),
    )?;
    let mut reply = data;
    reply["token"] = json!(token);
    out.data = raw(&reply);
    out.new_agent = Some(agent.id);
    out.new_token = Some((
        hash,
        Principal {
            token_id: row.id,
            role: Role::Agent,
            agent_id: Some(agent.id),
        },
    ));
    Ok(out)
}

fn agent_update(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    u: p::Update<p::AgentPatch>,
) -> Result<Outcome, ApiError> {
    let agent = load_agent(conn, ctx, u.id)?;
    authorize(who, Action::UpdateAgent { id: agent.id })?;
    check_version("agent", agent.id, agent.version, u.if_version)?;
    let mut next = agent.clone();
    let patch = u.patch;
    if let Some(n) = patch.name {
        valid_name(conn, &n, agent.id)?;
        next.name = n;
    }
    if let Some(s) = patch.status {
        valid_agent_status(&s)?;
        // Only a heartbeat brings an offline agent back; until then the new
        // status is what it will come back to.
        if next.status != "offline" {
            next.status = s.clone();
        }
        next.reported_status = s;
    }
    if let Some(t) = patch.current_task_id {
        valid_current_task(conn, t)?;
        next.current_task_id = t;
    }
    if let Some(m) = patch.meta {
        next.meta = valid_meta(&m)?;
    }
    finish_agent_update(conn, ctx, agent, next)
}

/// Saves `next` over `before` as one `agent.updated` change, or commits nothing
/// when no visible field differs.
fn finish_agent_update(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    before: Agent,
    mut next: Agent,
) -> Result<Outcome, ApiError> {
    let before_json = before.to_json();
    let mut data = next.to_json();
    let changed = changed_fields(&before_json, &data);
    if changed.is_empty() {
        if next.reported_status != before.reported_status {
            // Invisible but kept: what to go back to after `offline`.
            q::save_agent(conn, &next)?;
        }
        return Ok(Outcome {
            data: raw(&before_json),
            ..Outcome::default()
        });
    }
    next.version += 1;
    next.updated_at = ctx.now.clone();
    q::save_agent(conn, &next)?;
    stamp(&mut data, next.version, &next.updated_at);
    let mut out = Outcome::default();
    let data = raw(&data);
    ctx.record(
        conn,
        &mut out,
        (Entity::Agent, next.id),
        "updated",
        changed,
        data.clone(),
    )?;
    out.data = data;
    Ok(out)
}

fn agent_delete(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    d: p::Delete,
) -> Result<Outcome, ApiError> {
    let agent = load_agent(conn, ctx, d.id)?;
    authorize(who, Action::DeleteAgent)?;
    check_version("agent", agent.id, agent.version, d.if_version)?;
    let mut out = Outcome::default();
    for task in q::tasks_assigned_to(conn, agent.id)? {
        let mut next = task;
        next.assignee_id = None;
        next.version += 1;
        next.updated_at = ctx.now.clone();
        q::save_task(conn, &next, true)?;
        ctx.tasks.take(next.id);
        ctx.record(
            conn,
            &mut out,
            (Entity::Task, next.id),
            "updated",
            vec!["assignee_id".into()],
            next.to_raw(),
        )?;
    }
    out.revoked_tokens = q::revoke_agent_tokens(conn, agent.id, &ctx.now)?;
    q::delete_agent(conn, agent.id)?;
    ctx.beats.remove(&agent.id);
    ctx.record(
        conn,
        &mut out,
        (Entity::Agent, agent.id),
        "deleted",
        vec![],
        raw(&json!({"id": agent.id})),
    )?;
    Ok(out)
}

fn heartbeat(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    h: p::Heartbeat,
) -> Result<Outcome, ApiError> {
    let agent = load_agent(conn, ctx, h.id)?;
    authorize(who, Action::Heartbeat { id: agent.id })?;
    let mut next = agent.clone();
    if let Some(s) = h.status {
        valid_agent_status(&s)?;
        next.reported_status = s;
    }
    // A heartbeat brings an offline agent back to what it last reported.
    next.status = next.reported_status.clone();
    if let Some(t) = h.current_task_id {
        valid_current_task(conn, t)?;
        next.current_task_id = t;
    }
    let at = ctx.now.clone();
    ctx.beats.insert(agent.id, at.clone());
    next.last_heartbeat_at = Some(at.clone());
    let status_or_task = next.status != agent.status || next.current_task_id != agent.current_task_id;
    let mut out = if status_or_task {
        finish_agent_update(conn, ctx, agent, next)?
    } else {
        if next.reported_status != agent.reported_status {
            q::save_agent(conn, &next)?;
        }
        Outcome::default()
    };
    out.data = empty_object();
    out.heartbeat = Some((h.id, at));
    Ok(out)
}

/// The server's own change: an agent that stopped heartbeating goes `offline`.
/// Returns nothing when the agent is gone or already offline.
pub fn mark_offline(conn: &mut SqliteConnection, ctx: &mut WriteCtx, agent_id: i64) -> Result<Outcome, ApiError> {
    if ctx.beats.get(&agent_id) == Some(&ctx.now) {
        // It heartbeated in this very batch, after the sweep chose it.
        return Ok(Outcome::default());
    }
    let Some(agent) = q::find_agent(conn, agent_id)? else {
        return Ok(Outcome::default());
    };
    let agent = ctx.overlay(agent);
    if agent.status == "offline" {
        return Ok(Outcome::default());
    }
    let mut next = agent.clone();
    next.status = "offline".to_string();
    finish_agent_update(conn, ctx, agent, next)
}

// ---- tokens ----

/// Creates a token: `role`, a display `name` and, for an agent token, its
/// agent. Returns the token as listed plus its secret (shown once), the stored
/// hash and the principal it stands for.
pub fn create_token(
    conn: &mut SqliteConnection,
    role: &str,
    name: &str,
    agent_id: Option<i64>,
) -> Result<(Value, String, Principal), ApiError> {
    let r = Role::parse(role).ok_or_else(|| ApiError::invalid(format!("unknown role {role:?}")))?;
    let n = name.chars().count();
    if n == 0 || n > 100 {
        return Err(ApiError::invalid("name must have 1 to 100 characters"));
    }
    match (r, agent_id) {
        (Role::Agent, None) => return Err(ApiError::invalid("an agent token needs agent_id")),
        (Role::Agent, Some(a)) if q::find_agent(conn, a)?.is_none() => {
            return Err(ApiError::invalid(format!("agent {a} does not exist")))
        }
        (Role::Admin | Role::Member, Some(_)) => return Err(ApiError::invalid("only agent tokens take agent_id")),
        _ => {}
    }
    let token = auth::generate_token();
    let hash = auth::hash_token(&token);
    let now = now();
    let row = q::insert_token(
        conn,
        &NewToken {
            hash: &hash,
            role: r.as_str(),
            name,
            agent_id,
            created_at: &now,
        },
    )?;
    let mut v = row.to_json();
    v["token"] = json!(token);
    Ok((
        v,
        hash,
        Principal {
            token_id: row.id,
            role: r,
            agent_id,
        },
    ))
}

/// Revokes a token; `not_found` if there is no such live token.
pub fn revoke_token(conn: &mut SqliteConnection, id: i64) -> Result<(), ApiError> {
    if q::revoke_token(conn, id, &now())? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("token {id} not found")))
    }
}

// ---- reads ----

/// Every task, ordered by id, filtered by status and assignee.
pub fn list_tasks(
    conn: &mut SqliteConnection,
    status: Option<&str>,
    assignee_id: Option<i64>,
) -> Result<Vec<Value>, ApiError> {
    Ok(q::list_tasks(conn, status, assignee_id)?
        .iter()
        .map(Task::to_json)
        .collect())
}

/// Every agent, ordered by id, with heartbeat times not yet on disk.
pub fn list_agents(conn: &mut SqliteConnection, beats: &HashMap<i64, String>) -> Result<Vec<Value>, ApiError> {
    Ok(q::list_agents(conn)?
        .into_iter()
        .map(|mut a| {
            if let Some(at) = beats.get(&a.id) {
                a.last_heartbeat_at = Some(at.clone());
            }
            a.to_json()
        })
        .collect())
}

pub fn get_task(conn: &mut SqliteConnection, id: i64) -> Result<Option<Value>, ApiError> {
    Ok(q::find_task(conn, id)?.map(|t| t.to_json()))
}

pub fn get_agent(
    conn: &mut SqliteConnection,
    beats: &HashMap<i64, String>,
    id: i64,
) -> Result<Option<Value>, ApiError> {
    Ok(q::find_agent(conn, id)?.map(|mut a| {
        if let Some(at) = beats.get(&a.id) {
            a.last_heartbeat_at = Some(at.clone());
        }
        a.to_json()
    }))
}

/// A change-log row as the change it records.
pub fn change_of_row(row: ChangeRow) -> Result<Change, ApiError> {
    let entity =
        Entity::parse(&row.entity).ok_or_else(|| ApiError::internal(format!("bad entity {:?} in log", row.entity)))?;
    let kind = match row.kind.as_str() {
        "created" => "created",
        "updated" => "updated",
        "deleted" => "deleted",
        other => return Err(ApiError::internal(format!("bad kind {other:?} in log"))),
    };
    Ok(Change {
        seq: row.seq,
        entity,
        entity_id: row.entity_id,
        kind,
        changed: serde_json::from_str(&row.changed).map_err(ApiError::internal)?,
        data: Arc::from(RawValue::from_string(row.data).map_err(ApiError::internal)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            id: 4,
            title: "t".into(),
            description: "d".into(),
            status: "todo".into(),
            priority: 1,
            assignee_id: None,
            version: 3,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    /// The task's own field comparison says what comparing its JSON says.
    #[test]
    fn task_changed_fields_match_its_json() {
        let before = task();
        assert_eq!(Task::FIELDS.to_vec(), all_fields(&before.to_json()));
        let edits: [fn(&mut Task); 7] = [
            |t| t.title = "u".into(),
            |t| t.description = "e".into(),
            |t| t.status = "done".into(),
            |t| t.priority = 2,
            |t| t.assignee_id = Some(9),
            |t| {
                t.title = "u".into();
                t.assignee_id = Some(9);
            },
            |t| {
                t.version += 1;
                t.updated_at = "2027-01-01T00:00:00.000Z".into();
            },
        ];
        for edit in edits {
            let mut next = before.clone();
            edit(&mut next);
            assert_eq!(
                before.changed_fields(&next),
                changed_fields(&before.to_json(), &next.to_json()),
                "{next:?}"
            );
        }
        let text: Value = serde_json::from_str(before.to_raw().get()).unwrap();
        assert_eq!(text, before.to_json());
    }
}
