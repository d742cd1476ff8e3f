//! `taskwire watch TOPIC`: a live tail of a topic's changes that carries on
//! across drops and server restarts, each change once.

use super::show;
use super::{out, Failure, Remote};
use anstyle::Style;
use serde_json::json;
use taskwire_client::{Item, State};

pub async fn run(remote: Remote, topic: String) -> Result<(), Failure> {
    let client = remote.connect().await?;
    let mut sub = client.subscribe(&topic).await?;
    let mut state = client.state();
    let dim = Style::new().dimmed();
    let mut live = true;
    loop {
        tokio::select! {
            item = sub.next() => {
                let item = match item {
                    Some(item) => item?,
                    None => return Ok(()),
                };
                if remote.json {
                    out(item_json(&topic, &item))?;
                    continue;
                }
                match item {
                    Item::Snapshot { data, seq, resync, .. } => {
                        let what = match data.as_array() {
                            Some(list) => format!("{} items", list.len()),
                            None => show::event_line(&taskwire_client::Event {
                                topic: topic.clone(), seq: None, event: "snapshot".into(),
                                changed: vec![], data, by: None, before: None, at: None,
                            }),
                        };
                        let again = if resync { "a new " } else { "" };
                        out(format_args!("{dim}{again}snapshot of {topic} at seq {seq}: {what}{dim:#}"))?;
                    }
                    Item::Event(e) => out(show::event_line(&e))?,
                    Item::Resumed { seq, replayed, .. } => {
                        let s = if replayed == 1 { "" } else { "s" };
                        anstream::eprintln!("{dim}resumed at seq {seq}: {replayed} missed change{s} replayed{dim:#}");
                    }
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                match &*state.borrow_and_update() {
                    State::Reconnecting { last_error, .. } if live => {
                        live = false;
                        anstream::eprintln!("{dim}{last_error}; reconnecting{dim:#}");
                    }
                    State::Live => live = true,
                    _ => {}
                }
            }
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                return Ok(());
            }
        }
    }
}

/// One JSON line per item: event frames as the server sends them, and
/// `snapshot` / `resumed` lines with their position.
fn item_json(topic: &str, item: &Item) -> serde_json::Value {
    match item {
        Item::Snapshot { data, epoch, seq, .. } => {
            json!({"type": "snapshot", "topic": topic, "epoch": epoch, "seq": seq, "data": data})
        }
        Item::Event(e) => {
            let mut v = json!(e);
            v["type"] = json!("event");
            v
        }
        Item::Resumed { epoch, seq, replayed } => {
            json!({"type": "resumed", "topic": topic, "epoch": epoch, "seq": seq, "replayed": replayed})
        }
    }
}
