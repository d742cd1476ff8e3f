//! Reads for REST and snapshots: entities as lists or one by one, and pages of
//! the change log. Every read is answered at one position: between two
//! commits, on the writer's thread.

use actix::prelude::*;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use super::models::{Agent, Task};
use super::queries as q;
use super::rules::change_of_row;
use super::writer::Db;
use crate::error::ApiError;
use crate::model::TaskStatus;
use crate::protocol::{EventFrame, Topic};

/// A list of entities and the position it was read at.
#[derive(Debug, Serialize)]
pub struct Listing<T> {
    pub epoch: String,
    pub seq: i64,
    pub items: Vec<T>,
}

/// What a REST read asks for.
#[derive(Debug, Clone)]
pub enum Read {
    /// Tasks, by id, optionally of one status and one assignee.
    Tasks {
        status: Option<TaskStatus>,
        assignee_id: Option<i64>,
    },
    Task(i64),
    Agents,
    Agent(i64),
}

/// The answer to a [`Read`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ReadAnswer {
    Tasks(Listing<Task>),
    Task(Task),
    Agents(Listing<Agent>),
    Agent(Agent),
}

impl ReadAnswer {
    /// The entity's version, for an `ETag`; none for a list.
    pub fn version(&self) -> Option<i64> {
        match self {
            ReadAnswer::Task(t) => Some(t.version),
            ReadAnswer::Agent(a) => Some(a.version),
            ReadAnswer::Tasks(_) | ReadAnswer::Agents(_) => None,
        }
    }
}

impl Message for Read {
    type Result = Result<ReadAnswer, ApiError>;
}

/// A page of the change log for REST, as JSON text: its events are printed
/// straight from the stored rows, not parsed into trees on the writer's thread.
#[derive(Message)]
#[rtype(result = "Result<Box<RawValue>, ApiError>")]
pub struct ReadChanges {
    pub since: i64,
    pub topic: Option<Topic>,
    pub limit: i64,
}

/// A change-log page as REST answers it.
#[derive(Serialize)]
struct ChangesPage<'a> {
    epoch: &'a str,
    seq: i64,
    events: &'a [EventFrame<'a>],
}

impl Db {
    fn tasks(&mut self, status: Option<TaskStatus>, assignee_id: Option<i64>) -> Result<Vec<Task>, ApiError> {
        Ok(q::list_tasks(&mut self.conn, status, assignee_id)?)
    }

    /// Every agent, by id, with heartbeat times not yet on disk.
    fn agents(&mut self) -> Result<Vec<Agent>, ApiError> {
        let agents = q::list_agents(&mut self.conn)?;
        Ok(agents.into_iter().map(|a| self.live.overlay(a)).collect())
    }

    fn agent(&mut self, id: i64) -> Result<Option<Agent>, ApiError> {
        Ok(q::find_agent(&mut self.conn, id)?.map(|a| self.live.overlay(a)))
    }

    fn listing<T>(&self, items: Vec<T>) -> Listing<T> {
        Listing {
            epoch: self.position.epoch.clone(),
            seq: self.seq,
            items,
        }
    }

    /// The current state of a topic; `None` for a single entity that does not exist.
    pub(super) fn snapshot(&mut self, topic: &Topic) -> Result<Option<Value>, ApiError> {
        Ok(match topic {
            Topic::Tasks => Some(Value::Array(
                self.tasks(None, None)?.iter().map(Task::to_json).collect(),
            )),
            Topic::Agents => Some(Value::Array(self.agents()?.iter().map(Agent::to_json).collect())),
            Topic::Task(id) => q::find_task(&mut self.conn, *id)?.map(|t| t.to_json()),
            Topic::Agent(id) => self.agent(*id)?.map(|a| a.to_json()),
        })
    }

    fn read(&mut self, read: Read) -> Result<ReadAnswer, ApiError> {
        Ok(match read {
            Read::Tasks { status, assignee_id } => {
                let tasks = self.tasks(status, assignee_id)?;
                ReadAnswer::Tasks(self.listing(tasks))
            }
            Read::Agents => {
                let agents = self.agents()?;
                ReadAnswer::Agents(self.listing(agents))
            }
            Read::Task(id) => ReadAnswer::Task(
                q::find_task(&mut self.conn, id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?,
            ),
            Read::Agent(id) => ReadAnswer::Agent(
                self.agent(id)?
                    .ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))?,
            ),
        })
    }

    /// A page of the change log after `since`.
    fn changes(&mut self, msg: ReadChanges) -> Result<Box<RawValue>, ApiError> {
        let ReadChanges { since, topic, limit } = msg;
        if since < self.floor {
            return Err(ApiError::gone(format!(
                "changes up to {} are no longer kept; load a snapshot",
                self.floor
            )));
        }
        let filter = topic.as_ref().map(Topic::filter);
        // One page looks through at most `log_scan_window` changes; it is
        // complete up to the end of that window, or up to its last event when
        // `limit` cut it short.
        let window_end = self.seq.min(since.saturating_add(self.config.log_scan_window));
        let rows = q::changes_since(&mut self.conn, since, window_end, filter, limit)?;
        let upto = if rows.len() as i64 == limit {
            rows.last().map_or(window_end, |r| r.seq)
        } else {
            window_end
        };
        let changes = rows
            .into_iter()
            .map(change_of_row)
            .collect::<Result<Vec<_>, ApiError>>()?;
        let events: Vec<_> = changes
            .iter()
            .map(|c| c.frame(topic.as_ref().unwrap_or(Topic::collection(c.entity))))
            .collect();
        let page = ChangesPage {
            epoch: &self.position.epoch,
            seq: upto,
            events: &events,
        };
        to_raw_value(&page).map_err(ApiError::internal)
    }
}

impl Handler<Read> for Db {
    type Result = Result<ReadAnswer, ApiError>;
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        self.read(msg)
    }
}

impl Handler<ReadChanges> for Db {
    type Result = Result<Box<RawValue>, ApiError>;
    fn handle(&mut self, msg: ReadChanges, _: &mut Context<Self>) -> Self::Result {
        self.changes(msg)
    }
}
