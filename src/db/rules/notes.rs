//! `task.note`: a message on a task's activity, with an optional progress.

use diesel::sqlite::SqliteConnection;
use serde_json::json;

use super::tasks::{load, save, valid_progress};
use super::{Outcome, WriteCtx};
use crate::auth::{authorize, Action, Principal};
use crate::error::ApiError;
use crate::model::{ChangeKind, Entity};
use crate::protocol::{self as p, raw};

/// The longest note, in characters.
pub const MAX_NOTE: usize = 4096;

fn valid_text(text: Option<String>) -> Result<String, ApiError> {
    let text = text.ok_or_else(|| ApiError::invalid("text is required"))?;
    let n = text.chars().count();
    if text.trim().is_empty() || n > MAX_NOTE {
        return Err(ApiError::invalid(format!("text must have 1 to {MAX_NOTE} characters")));
    }
    Ok(text)
}

/// Appends a note to a task's activity. A progress given with it is first
/// committed as the task's own `progress` change, so the overview sees it.
/// The reply is the note as the activity holds it.
pub fn note(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    who: &Principal,
    n: p::TaskNote,
) -> Result<Outcome, ApiError> {
    let task = load(conn, ctx, n.id)?;
    authorize(
        who,
        Action::NoteTask {
            assignee_id: task.assignee_id,
        },
    )?;
    let text = valid_text(n.text)?;
    let progress = n.progress.map(valid_progress).transpose()?;
    let task_id = task.id;
    let mut out = match progress {
        Some(progress) => {
            let mut next = task.clone();
            next.progress = progress;
            save(conn, ctx, task, next)?
        }
        None => {
            ctx.tasks.put(task);
            Outcome::default()
        }
    };
    let data = json!({"task_id": task_id, "text": text, "progress": progress.flatten()});
    ctx.record(
        conn,
        &mut out,
        (Entity::Task, task_id),
        ChangeKind::Noted,
        vec![],
        raw(&data),
        None,
    )?;
    let seq = out.seq.expect("a note is recorded");
    out.data = raw(&json!({
        "seq": seq,
        "event": "task.noted",
        "data": data,
        "by": &*ctx.by,
        "at": ctx.now,
    }));
    Ok(out)
}
