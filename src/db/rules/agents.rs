//! `agent.create`, `agent.update`, `agent.delete`, `agent.heartbeat`, and the
//! server's own change: an agent that went silent goes `offline`.

use diesel::sqlite::SqliteConnection;
use serde_json::{json, Map, Value};

use super::{all_fields, before_values, changed_fields, check_id, check_version, Outcome, WriteCtx};
use crate::auth::{self, authorize, Action, Principal, Role};
use crate::db::models::{Agent, NewAgent, NewToken};
use crate::db::queries as q;
use crate::error::ApiError;
use crate::model::{AgentStatus, ChangeKind, Entity};
use crate::protocol::{self as p, empty_object, raw};

const META_MAX_BYTES: usize = 8 * 1024;

fn valid_status(s: &str) -> Result<AgentStatus, ApiError> {
    AgentStatus::parse(s)
        .filter(|s| AgentStatus::REPORTED.contains(s))
        .ok_or_else(|| {
            let one_of: Vec<&str> = AgentStatus::REPORTED.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(format!("unknown agent status {s:?}; one of {}", one_of.join(", ")))
        })
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

fn valid_current_task(conn: &mut SqliteConnection, id: Option<i64>) -> Result<(), ApiError> {
    match id {
        Some(t) if q::find_task(conn, t)?.is_none() => Err(ApiError::invalid(format!("task {t} does not exist"))),
        _ => Ok(()),
    }
}

fn load(conn: &mut SqliteConnection, ctx: &WriteCtx, id: i64) -> Result<Agent, ApiError> {
    let agent =
        q::find_agent(conn, check_id(id)?)?.ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))?;
    Ok(ctx.live.overlay(agent))
}

pub fn create(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    c: p::AgentCreate,
) -> Result<Outcome, ApiError> {
    authorize(who, Action::CreateAgent)?;
    let name = c.name.ok_or_else(|| ApiError::invalid("name is required"))?;
    valid_name(conn, &name, 0)?;
    let status = c.status.as_deref().map_or(Ok(AgentStatus::Idle), valid_status)?;
    let meta = valid_meta(&c.meta.unwrap_or_default())?;
    valid_current_task(conn, c.current_task_id)?;
    let agent = q::insert_agent(
        conn,
        &NewAgent {
            name: &name,
            status,
            reported_status: status,
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
            role: Role::Agent,
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
        ChangeKind::Created,
        all_fields(&data),
        raw(&data),
        None,
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
            name: std::sync::Arc::from(name.as_str()),
        },
    ));
    Ok(out)
}

pub fn update(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    u: p::Update<p::AgentPatch>,
) -> Result<Outcome, ApiError> {
    let agent = load(conn, ctx, u.id)?;
    authorize(who, Action::UpdateAgent { id: agent.id })?;
    check_version(Entity::Agent, agent.id, agent.version, u.if_version)?;
    let mut next = agent.clone();
    let patch = u.patch;
    if let Some(n) = patch.name {
        valid_name(conn, &n, agent.id)?;
        next.name = n;
    }
    if let Some(s) = patch.status {
        let s = valid_status(&s)?;
        // Only a heartbeat brings an offline agent back; until then the new
        // status is what it will come back to.
        if next.status != AgentStatus::Offline {
            next.status = s;
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
    save(conn, ctx, agent, next)
}

/// Saves `next` over `before` as one `agent.updated` change, or commits nothing
/// when no visible field differs.
fn save(conn: &mut SqliteConnection, ctx: &mut WriteCtx, before: Agent, mut next: Agent) -> Result<Outcome, ApiError> {
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
    data["version"] = json!(next.version);
    data["updated_at"] = json!(next.updated_at);
    let mut out = Outcome::default();
    let data = raw(&data);
    let previous = before_values(&before_json, &changed);
    ctx.record(
        conn,
        &mut out,
        (Entity::Agent, next.id),
        ChangeKind::Updated,
        changed,
        data.clone(),
        Some(previous),
    )?;
    out.data = data;
    Ok(out)
}

pub fn delete(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    d: p::Delete,
) -> Result<Outcome, ApiError> {
    let agent = load(conn, ctx, d.id)?;
    authorize(who, Action::DeleteAgent)?;
    check_version(Entity::Agent, agent.id, agent.version, d.if_version)?;
    let mut out = Outcome::default();
    for task in q::tasks_assigned_to(conn, agent.id)? {
        let previous = raw(&json!({ "assignee_id": task.assignee_id }));
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
            ChangeKind::Updated,
            vec!["assignee_id".into()],
            next.to_raw(),
            Some(previous),
        )?;
    }
    out.revoked_tokens = q::revoke_agent_tokens(conn, agent.id, &ctx.now)?;
    q::delete_agent(conn, agent.id)?;
    ctx.live.remove(agent.id);
    ctx.record_deleted(conn, &mut out, (Entity::Agent, agent.id), raw(&agent.to_json()))?;
    Ok(out)
}

pub fn heartbeat(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    h: p::Heartbeat,
) -> Result<Outcome, ApiError> {
    let agent = load(conn, ctx, h.id)?;
    authorize(who, Action::Heartbeat { id: agent.id })?;
    let mut next = agent.clone();
    if let Some(s) = h.status {
        next.reported_status = valid_status(&s)?;
    }
    // A heartbeat brings an offline agent back to what it last reported.
    next.status = next.reported_status;
    if let Some(t) = h.current_task_id {
        valid_current_task(conn, t)?;
        next.current_task_id = t;
    }
    let at = ctx.now.clone();
    ctx.live.set_beat(agent.id, at.clone());
    next.last_heartbeat_at = Some(at.clone());
    let status_or_task = next.status != agent.status || next.current_task_id != agent.current_task_id;
    let mut out = if status_or_task {
        save(conn, ctx, agent, next)?
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

/// The server's own change: an offline agent whose token opened a socket is
/// back to what it last reported. Nothing when it is gone or not offline.
pub fn mark_online(conn: &mut SqliteConnection, ctx: &mut WriteCtx, agent_id: i64) -> Result<Outcome, ApiError> {
    let Some(agent) = q::find_agent(conn, agent_id)? else {
        return Ok(Outcome::default());
    };
    let agent = ctx.live.overlay(agent);
    if agent.status != AgentStatus::Offline {
        return Ok(Outcome::default());
    }
    let mut next = agent.clone();
    next.status = next.reported_status;
    save(conn, ctx, agent, next)
}

/// The server's own change: an agent that stopped heartbeating goes `offline`.
/// Returns nothing when the agent is gone or already offline.
pub fn mark_offline(conn: &mut SqliteConnection, ctx: &mut WriteCtx, agent_id: i64) -> Result<Outcome, ApiError> {
    if ctx.live.beat_at(agent_id) == Some(ctx.now.as_str()) {
        // It heartbeated in this very batch, after the sweep chose it.
        return Ok(Outcome::default());
    }
    ctx.act_as(&Principal::system());
    let Some(agent) = q::find_agent(conn, agent_id)? else {
        return Ok(Outcome::default());
    };
    let agent = ctx.live.overlay(agent);
    if agent.status == AgentStatus::Offline {
        return Ok(Outcome::default());
    }
    let mut next = agent.clone();
    next.status = AgentStatus::Offline;
    save(conn, ctx, agent, next)
}
