//! `taskwire agents list`.

use super::show::{self, plain};
use super::{out, print_json, Failure, Remote};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// The agents, by id, with their last heartbeat.
    List,
}

pub async fn run(remote: Remote, action: Action) -> Result<(), Failure> {
    let client = remote.connect().await?;
    let Action::List = action;
    let (agents, _) = client.snapshot("agents", None).await?;
    client.close().await;
    if remote.json {
        return print_json(&agents);
    }
    let agents: Vec<taskwire_client::Agent> = serde_json::from_value(agents)?;
    let rows: Vec<_> = agents
        .iter()
        .map(|a| {
            vec![
                plain(a.id.to_string()),
                plain(a.name.clone()),
                (a.status.clone(), show::status_style(&a.status)),
                plain(show::or_dash(a.current_task_id)),
                plain(a.last_heartbeat_at.clone().unwrap_or_else(|| "-".into())),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATUS", "TASK", "LAST HEARTBEAT"];
    out(show::table(&header, &rows).trim_end())
}
