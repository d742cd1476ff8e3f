//! `taskwire tasks list|show|create|update|note`.

use super::show::{self, plain, task_rows, TASK_HEADER};
use super::{out, print_json, Failure, Remote};
use anstyle::Style;
use clap::Subcommand;
use serde_json::{json, Value};
use taskwire_client::{Client, Error, NewTask, Task, TaskPatch};

#[derive(Subcommand, Debug)]
pub enum Action {
    /// The tasks, by id.
    List {
        /// Only tasks with this status (todo, in_progress, blocked, review, done).
        #[arg(long)]
        status: Option<String>,
        /// Only tasks assigned to this agent id, or `none` for unassigned ones.
        #[arg(long, value_parser = nullable)]
        assignee: Option<Nullable>,
    },
    /// One task, with its recent activity where the server keeps it.
    Show {
        id: i64,
        /// How many activity entries to show (0 to 200).
        #[arg(long, default_value_t = 10)]
        history: u32,
    },
    /// Create a task and print it.
    Create {
        title: String,
        #[arg(long)]
        description: Option<String>,
        /// todo (default), in_progress, blocked, review or done.
        #[arg(long)]
        status: Option<String>,
        /// 0 to 3.
        #[arg(long)]
        priority: Option<i64>,
        /// An agent id.
        #[arg(long)]
        assignee: Option<i64>,
    },
    /// Change a task's fields and print it.
    Update {
        id: i64,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        priority: Option<i64>,
        /// An agent id, or `none` to unassign.
        #[arg(long, value_parser = nullable)]
        assignee: Option<Nullable>,
        /// 0 to 100, or `none`.
        #[arg(long, value_parser = nullable)]
        progress: Option<Nullable>,
        /// Only if the task is still at this version (else a conflict).
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Add a note to a task's activity.
    Note {
        id: i64,
        text: String,
        /// Also set the task's progress (0 to 100).
        #[arg(long)]
        progress: Option<i64>,
    },
}

/// An integer, or `none` for null.
#[derive(Clone, Copy, Debug)]
pub struct Nullable(Option<i64>);

fn nullable(s: &str) -> Result<Nullable, String> {
    match s {
        "none" | "null" => Ok(Nullable(None)),
        s => s
            .parse()
            .map(|n| Nullable(Some(n)))
            .map_err(|_| format!("{s:?} is neither an integer nor `none`")),
    }
}

pub async fn run(remote: Remote, action: Action) -> Result<(), Failure> {
    let client = remote.connect().await?;
    let json = remote.json;
    let result = match action {
        Action::List { status, assignee } => list(&client, json, status, assignee).await,
        Action::Show { id, history } => show_task(&client, json, id, history).await,
        Action::Create {
            title,
            description,
            status,
            priority,
            assignee,
        } => {
            let draft = NewTask {
                title,
                description,
                status,
                priority,
                assignee_id: assignee,
            };
            let reply = client.call("task.create", json!(draft)).await?;
            print_task(&client, json, reply.data).await
        }
        Action::Update {
            id,
            title,
            description,
            status,
            priority,
            assignee,
            progress,
            if_version,
        } => {
            let patch = TaskPatch {
                title,
                description,
                status,
                priority,
                assignee_id: assignee.map(|a| a.0),
                progress: progress.map(|p| p.0),
            };
            if serde_json::to_value(&patch)?.as_object().is_some_and(|o| o.is_empty()) {
                return Err(
                    "nothing to update: give at least one of --title, --description, --status, \
                            --priority, --assignee, --progress"
                        .into(),
                );
            }
            let mut params = json!({"id": id, "patch": patch});
            if let Some(v) = if_version {
                params["if_version"] = json!(v);
            }
            let reply = client.call("task.update", params).await?;
            print_task(&client, json, reply.data).await
        }
        Action::Note { id, text, progress } => {
            let note = match progress {
                Some(p) => client.note_progress(id, &text, p).await?,
                None => client.note(id, &text).await?,
            };
            if json {
                print_json(&note)
            } else {
                out(format_args!(
                    "noted on task {id} (seq {})",
                    show::or_dash(note["seq"].as_i64())
                ))
            }
        }
    };
    client.close().await;
    result
}

async fn list(client: &Client, json: bool, status: Option<String>, assignee: Option<Nullable>) -> Result<(), Failure> {
    // Filtered here: JSON prints the tasks as the server sent them.
    let (all, _) = client.snapshot("tasks", None).await?;
    let tasks: Vec<Value> = serde_json::from_value::<Vec<Value>>(all)?
        .into_iter()
        .filter(|t| status.as_ref().is_none_or(|s| t["status"] == s.as_str()))
        .filter(|t| assignee.is_none_or(|a| t["assignee_id"].as_i64() == a.0))
        .collect();
    if json {
        return print_json(&tasks);
    }
    let tasks: Vec<Task> = serde_json::from_value(Value::Array(tasks))?;
    let agents = client.agents().await?;
    out(show::table(TASK_HEADER, &task_rows(&tasks, &agents)).trim_end())
}

async fn show_task(client: &Client, json: bool, id: i64, history: u32) -> Result<(), Failure> {
    let topic = format!("task:{id}");
    let (task, activity) = match client.snapshot(&topic, Some(history)).await {
        // A server without activity refuses the `history` field.
        Err(Error::BadRequest(m)) if m.contains("history") => client.snapshot(&topic, None).await?,
        other => other?,
    };
    let activity = activity.unwrap_or_default();
    if json {
        return print_json(&json!({ "task": task, "activity": activity }));
    }
    print_task(client, false, task).await?;
    if !activity.is_empty() {
        out("\nactivity (newest first):")?;
        for entry in &activity {
            out(format_args!("  {}", activity_line(entry)))?;
        }
    }
    Ok(())
}

/// One task as `field  value` lines, or its JSON as the server sent it.
async fn print_task(client: &Client, json: bool, task: Value) -> Result<(), Failure> {
    if json {
        return print_json(&task);
    }
    let t: Task = serde_json::from_value(task)?;
    let agents = client.agents().await?;
    let rows = vec![
        vec![plain("title"), plain(t.title.clone())],
        vec![plain("status"), (t.status.clone(), show::status_style(&t.status))],
        vec![plain("priority"), plain(t.priority.to_string())],
        vec![
            plain("progress"),
            plain(t.progress.map(|p| format!("{p}%")).unwrap_or("-".into())),
        ],
        vec![plain("assignee"), plain(show::agent_name(t.assignee_id, &agents))],
        vec![plain("version"), plain(t.version.to_string())],
        vec![plain("updated"), plain(t.updated_at.clone())],
    ];
    let bold = Style::new().bold();
    out(format_args!("{bold}task {}{bold:#}", t.id))?;
    let fields = show::table(&["", ""], &rows);
    out(fields.split_once('\n').map_or("", |(_, rest)| rest).trim_end())?;
    if !t.description.is_empty() {
        out(format_args!("\n{}", t.description))?;
    }
    Ok(())
}

/// An activity entry reads like the line `watch` prints for its event.
fn activity_line(entry: &Value) -> String {
    match serde_json::from_value::<taskwire_client::Event>(entry.clone()) {
        Ok(e) => show::event_line(&e),
        Err(_) => entry.to_string(),
    }
}
