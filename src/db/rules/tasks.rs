//! `task.create`, `task.update`, `task.delete`, `task.claim`.

use diesel::sqlite::SqliteConnection;

use super::{check_id, check_version, Outcome, WriteCtx};
use crate::auth::{authorize, Action, Principal};
use crate::db::models::{NewTask, Task};
use crate::db::queries as q;
use crate::error::ApiError;
use crate::model::{ChangeKind, Entity, TaskStatus};
use crate::protocol::{self as p, raw};

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

pub fn valid_status(s: &str) -> Result<TaskStatus, ApiError> {
    TaskStatus::parse(s)
        .ok_or_else(|| ApiError::invalid(format!("unknown task status {s:?}; one of {}", TaskStatus::spellings())))
}

fn valid_priority(p: i64) -> Result<i32, ApiError> {
    if (0..=3).contains(&p) {
        Ok(p as i32)
    } else {
        Err(ApiError::invalid("priority must be 0, 1, 2 or 3"))
    }
}

/// A progress in percent, or none.
pub fn valid_progress(p: Option<i64>) -> Result<Option<i32>, ApiError> {
    match p {
        Some(p) if !(0..=100).contains(&p) => Err(ApiError::invalid("progress must be 0 to 100, or null")),
        p => Ok(p.map(|p| p as i32)),
    }
}

fn valid_assignee(conn: &mut SqliteConnection, id: Option<i64>) -> Result<(), ApiError> {
    match id {
        Some(a) if q::find_agent(conn, a)?.is_none() => Err(ApiError::invalid(format!("assignee {a} is not an agent"))),
        _ => Ok(()),
    }
}

/// The task's row, taken out of the row cache if it is there.
pub(super) fn load(conn: &mut SqliteConnection, ctx: &mut WriteCtx, id: i64) -> Result<Task, ApiError> {
    let id = check_id(id)?;
    if let Some(task) = ctx.tasks.take(id) {
        return Ok(task);
    }
    q::find_task(conn, id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
}

pub fn create(
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
    let status = c.status.as_deref().map_or(Ok(TaskStatus::Todo), valid_status)?;
    let priority = valid_priority(c.priority.unwrap_or(0))?;
    let progress = valid_progress(c.progress)?;
    valid_assignee(conn, c.assignee_id)?;
    let task = q::insert_task(
        conn,
        &NewTask {
            title: &title,
            description: &description,
            status,
            priority,
            progress,
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
        ChangeKind::Created,
        Task::FIELDS.iter().map(|f| f.to_string()).collect(),
        data.clone(),
        None,
    )?;
    out.data = data;
    Ok(out)
}

pub fn update(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    u: p::Update<p::TaskPatch>,
) -> Result<Outcome, ApiError> {
    let task = load(conn, ctx, u.id)?;
    authorize(
        who,
        Action::UpdateTask {
            assignee_id: task.assignee_id,
        },
    )?;
    check_version(Entity::Task, task.id, task.version, u.if_version)?;
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
        next.status = valid_status(&s)?;
    }
    if let Some(pr) = patch.priority {
        next.priority = valid_priority(pr)?;
    }
    if let Some(pr) = patch.progress {
        next.progress = valid_progress(pr)?;
    }
    if let Some(a) = patch.assignee_id {
        valid_assignee(conn, a)?;
        next.assignee_id = a;
    }
    save(conn, ctx, task, next)
}

/// Saves `next` over `task` as one `task.updated` change, or commits nothing
/// when no field differs. Either way the row goes back to the cache.
pub(super) fn save(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    task: Task,
    mut next: Task,
) -> Result<Outcome, ApiError> {
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
    let before = task.values_of(&changed);
    let mut out = Outcome::default();
    ctx.record(
        conn,
        &mut out,
        (Entity::Task, next.id),
        ChangeKind::Updated,
        changed,
        data.clone(),
        Some(before),
    )?;
    ctx.tasks.put(next);
    out.data = data;
    Ok(out)
}

/// An agent takes an unassigned task: it becomes the assignee and the task
/// goes `in_progress`, in one change. Claiming one's own task again changes
/// nothing; a task assigned to another agent is a `conflict` naming it.
pub fn claim(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    c: p::Claim,
) -> Result<Outcome, ApiError> {
    let task = load(conn, ctx, c.id)?;
    let claimed = authorize(who, Action::ClaimTask).and_then(|()| match (task.assignee_id, who.agent_id) {
        (_, None) => Err(ApiError::forbidden("only an agent token may claim a task")),
        (Some(current), Some(me)) if current != me => {
            let name = q::find_agent(conn, current)?.map(|a| a.name).unwrap_or_default();
            Err(ApiError::conflict(format!(
                "task {} is already assigned to {name} (agent {current})",
                task.id
            )))
        }
        (_, Some(me)) => Ok(me),
    });
    let me = match claimed {
        Ok(me) => me,
        Err(e) => {
            ctx.tasks.put(task);
            return Err(e);
        }
    };
    let mut next = task.clone();
    next.assignee_id = Some(me);
    next.status = TaskStatus::InProgress;
    save(conn, ctx, task, next)
}

pub fn delete(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    d: p::Delete,
) -> Result<Outcome, ApiError> {
    let task = load(conn, ctx, d.id)?;
    authorize(who, Action::DeleteTask)?;
    check_version(Entity::Task, task.id, task.version, d.if_version)?;
    let mut out = Outcome::default();
    for agent in q::agents_on_task(conn, task.id)? {
        let mut next = ctx.live.overlay(agent);
        next.current_task_id = None;
        next.version += 1;
        next.updated_at = ctx.now.clone();
        q::save_agent(conn, &next)?;
        ctx.record(
            conn,
            &mut out,
            (Entity::Agent, next.id),
            ChangeKind::Updated,
            vec!["current_task_id".into()],
            raw(&next.to_json()),
            Some(raw(&serde_json::json!({ "current_task_id": task.id }))),
        )?;
    }
    q::delete_activity(conn, task.id)?;
    q::delete_task(conn, task.id)?;
    ctx.record_deleted(conn, &mut out, (Entity::Task, task.id), task.to_raw())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{all_fields, changed_fields};
    use super::*;
    use serde_json::Value;

    fn task() -> Task {
        Task {
            id: 4,
            title: "t".into(),
            description: "d".into(),
            status: TaskStatus::Todo,
            priority: 1,
            progress: None,
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
        let edits: [fn(&mut Task); 8] = [
            |t| t.title = "u".into(),
            |t| t.description = "e".into(),
            |t| t.status = TaskStatus::Done,
            |t| t.priority = 2,
            |t| t.progress = Some(40),
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
            let changed = before.changed_fields(&next);
            assert_eq!(changed, changed_fields(&before.to_json(), &next.to_json()), "{next:?}");
            assert_eq!(
                before.values_of(&changed).get().parse::<Value>().unwrap(),
                super::super::before_values(&before.to_json(), &changed)
                    .get()
                    .parse::<Value>()
                    .unwrap(),
                "{next:?}"
            );
        }
        let text: Value = serde_json::from_str(before.to_raw().get()).unwrap();
        assert_eq!(text, before.to_json());
    }
}
