//! `task.create`, `task.update`, `task.delete`.

use diesel::sqlite::SqliteConnection;
use serde_json::json;

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

fn valid_assignee(conn: &mut SqliteConnection, id: Option<i64>) -> Result<(), ApiError> {
    match id {
        Some(a) if q::find_agent(conn, a)?.is_none() => Err(ApiError::invalid(format!("assignee {a} is not an agent"))),
        _ => Ok(()),
    }
}

/// The task's row, taken out of the row cache if it is there.
fn load(conn: &mut SqliteConnection, ctx: &mut WriteCtx, id: i64) -> Result<Task, ApiError> {
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
    valid_assignee(conn, c.assignee_id)?;
    let task = q::insert_task(
        conn,
        &NewTask {
            title: &title,
            description: &description,
            status,
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
        ChangeKind::Created,
        Task::FIELDS.iter().map(|f| f.to_string()).collect(),
        (data.clone(), None),
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
    let before = task.values_of(&changed);
    let mut out = Outcome::default();
    ctx.record(
        conn,
        &mut out,
        (Entity::Task, next.id),
        ChangeKind::Updated,
        changed,
        (data.clone(), Some(before)),
    )?;
    ctx.tasks.put(next);
    out.data = data;
    Ok(out)
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
            (raw(&next.to_json()), Some(raw(&json!({ "current_task_id": task.id })))),
        )?;
    }
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
            assignee_id: None,
            version: 3,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    /// A change's `before`, read off the task, is its JSON's fields.
    #[test]
    fn values_of_are_the_fields_of_its_json() {
        let t = task();
        let all: Vec<String> = Task::FIELDS.iter().map(|f| f.to_string()).collect();
        let of_json = super::super::before_of(&t.to_json(), &all);
        let direct: Value = serde_json::from_str(t.values_of(&all).get()).unwrap();
        assert_eq!(direct, serde_json::from_str::<Value>(of_json.get()).unwrap());
        assert_eq!(direct.as_object().unwrap().len(), all.len());
    }

    /// The task's own field comparison says what comparing its JSON says.
    #[test]
    fn task_changed_fields_match_its_json() {
        let before = task();
        assert_eq!(Task::FIELDS.to_vec(), all_fields(&before.to_json()));
        let edits: [fn(&mut Task); 7] = [
            |t| t.title = "u".into(),
            |t| t.description = "e".into(),
            |t| t.status = TaskStatus::Done,
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
