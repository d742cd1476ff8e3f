//! How the remote commands show things to people: aligned tables, one
//! colour per task and agent status, one line per change. Colours go to a
//! terminal only (`anstream` strips them otherwise, and honours NO_COLOR).

use anstyle::{AnsiColor, Style};
use serde_json::Value;
use taskwire_client::{Agent, Event, Task};

pub fn status_style(status: &str) -> Style {
    let color = match status {
        "in_progress" | "busy" => AnsiColor::Yellow,
        "blocked" | "error" => AnsiColor::Red,
        "review" => AnsiColor::Magenta,
        "done" => AnsiColor::Green,
        "offline" => return Style::new().dimmed(),
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(color.into()))
}

/// Columns padded to their widest cell (measured without the styles).
pub fn table(header: &[&str], rows: &[Vec<(String, Style)>]) -> String {
    let bold = Style::new().bold();
    let mut lines: Vec<Vec<(String, Style)>> = vec![header.iter().map(|h| (h.to_string(), bold)).collect()];
    lines.extend(rows.iter().cloned());
    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().map(|l| l[i].0.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, ((cell, style), w)) in line.iter().zip(&widths).enumerate() {
            let pad = if i + 1 == widths.len() {
                0
            } else {
                w - cell.chars().count() + 2
            };
            text.push_str(&format!("{style}{cell}{style:#}{}", " ".repeat(pad)));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

pub fn plain(s: impl Into<String>) -> (String, Style) {
    (s.into(), Style::new())
}

pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// An agent as people know it: `builder-1 (3)`.
pub fn agent_name(id: Option<i64>, agents: &[Agent]) -> String {
    match id {
        None => "-".into(),
        Some(id) => match agents.iter().find(|a| a.id == id) {
            Some(a) => format!("{} ({id})", a.name),
            None => id.to_string(),
        },
    }
}

pub fn task_rows(tasks: &[Task], agents: &[Agent]) -> Vec<Vec<(String, Style)>> {
    tasks
        .iter()
        .map(|t| {
            vec![
                plain(t.id.to_string()),
                (t.status.clone(), status_style(&t.status)),
                plain(t.priority.to_string()),
                plain(t.progress.map(|p| format!("{p}%")).unwrap_or_else(|| "-".into())),
                plain(agent_name(t.assignee_id, agents)),
                plain(t.title.clone()),
            ]
        })
        .collect()
}

pub const TASK_HEADER: &[&str] = &["ID", "STATUS", "PRI", "PROGRESS", "ASSIGNEE", "TITLE"];

/// One line for a change (or heartbeat) of a watched topic.
pub fn event_line(e: &Event) -> String {
    let (color, dim) = match e.event.rsplit('.').next().unwrap_or("") {
        "created" => (Some(AnsiColor::Green), false),
        "updated" => (Some(AnsiColor::Yellow), false),
        "deleted" => (Some(AnsiColor::Red), false),
        "noted" => (Some(AnsiColor::Cyan), false),
        _ => (None, true),
    };
    let mut style = Style::new().fg_color(color.map(Into::into));
    if dim {
        style = style.dimmed();
    }
    let at =
        e.at.as_deref()
            .or(e.data["at"].as_str())
            .or(e.data["updated_at"].as_str())
            .map(|t| t.get(11..19).unwrap_or(t).to_string())
            .unwrap_or_default();
    let seq = e.seq.map(|s| format!("#{s}")).unwrap_or_default();
    let what = describe(e);
    let by = match &e.by {
        Some(b) => match &b.name {
            Some(n) => format!("  by {n}"),
            None => format!("  by {}", b.kind),
        },
        None => String::new(),
    };
    format!("{at:8} {seq:>6}  {style}{:<16}{style:#} {what}{by}", e.event)
}

fn describe(e: &Event) -> String {
    let d = &e.data;
    let entity = if e.event.starts_with("agent.") { "agent" } else { "task" };
    let id = d["task_id"]
        .as_i64()
        .or(d["id"].as_i64())
        .map(|i| i.to_string())
        .unwrap_or_default();
    let label = d["title"].as_str().or(d["name"].as_str());
    let mut text = match label {
        Some(l) => format!("{entity} {id} {l:?}"),
        None => format!("{entity} {id}"),
    };
    match e.event.as_str() {
        "task.noted" => text.push_str(&format!(": {}", d["text"].as_str().unwrap_or(""))),
        "task.created" | "agent.created" | "task.deleted" | "agent.deleted" | "agent.heartbeat" => {}
        _ => {
            let changes: Vec<String> = e
                .changed
                .iter()
                .filter(|f| f.as_str() != "last_heartbeat_at")
                .map(|f| match e.before.as_ref().and_then(|b| b.get(f)) {
                    Some(old) => format!("{f} {}→{}", brief(old), brief(&d[f])),
                    None => format!("{f}={}", brief(&d[f])),
                })
                .collect();
            if !changes.is_empty() {
                text.push_str(&format!(": {}", changes.join(", ")));
            }
        }
    }
    text
}

fn brief(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 40 => format!("{:?}…", s.chars().take(40).collect::<String>()),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}
