//! Reads on a reader's connection, each in one read transaction, so what it
//! answers is the state at one position: entity lists and single entities
//! for REST and snapshots, and pages of the change log.

use actix::prelude::*;
use diesel::connection::Connection;
use diesel::sqlite::SqliteConnection;
use diesel::QueryResult;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use super::models::{ActivityRow, Agent, ChangeRow, Task};
use super::queries::{self as q, ActivityOf};
use super::rules::change_of_row;
use super::shared::Shared;
use super::DbConfig;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::filter::{Filter, SortKey};
use crate::model::{ChangeKind, Entity};
use crate::protocol::{Change, EventFrame, Seen, Topic};

/// Where a read transaction stands: its last change, and the newest change
/// pruned from the log.
pub struct Position {
    pub seq: i64,
    pub floor: i64,
}

impl Position {
    /// Read inside the transaction, first, so it is the transaction's position.
    pub fn read(conn: &mut SqliteConnection) -> QueryResult<Position> {
        let seq = q::max_seq(conn)?.unwrap_or(0);
        let floor = q::get_meta(conn, "pruned_through")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Position { seq, floor })
    }
}

/// A list of entities and the position it was read at.
#[derive(Debug, Serialize)]
pub struct Listing<T> {
    pub epoch: String,
    pub seq: i64,
    pub items: Vec<T>,
}

/// A list of tasks, and where the next page starts (a window's; `null`
/// when this page is its last).
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub epoch: String,
    pub seq: i64,
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// What a REST read asks for.
#[derive(Debug, Clone)]
pub enum Query {
    /// Tasks by id, optionally those a filter matches; with a window, a page
    /// of it, after a cursor if given.
    Tasks(Option<Filter>, Option<SortKey>),
    Task(i64),
    /// Agents by id, optionally those a filter matches.
    Agents(Option<Filter>),
    Agent(i64),
    /// A page of a task's or an agent's activity, newest first: entries with
    /// a seq below `before`.
    Activity {
        of: ActivityOf,
        before: i64,
        limit: i64,
    },
}

/// A REST read, by a principal whose read budget it is charged to.
pub struct Read {
    pub query: Query,
    pub by: Principal,
}

impl Message for Read {
    type Result = Result<ReadAnswer, ApiError>;
}

/// The answer to a [`Read`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ReadAnswer {
    Page(Page<Task>),
    Task(Task),
    Agents(Listing<Agent>),
    Agent(Agent),
    Activity(ActivityPage),
}

/// An activity entry: a change of a task or a note on it, as history lists
/// and REST pages show it. Its fields are an event's, plus `task_id`.
#[derive(Debug, Serialize)]
pub struct Entry {
    seq: i64,
    event: String,
    task_id: i64,
    changed: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<Box<RawValue>>,
    data: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<Box<RawValue>>,
    at: String,
}

impl TryFrom<ActivityRow> for Entry {
    type Error = ApiError;
    fn try_from(row: ActivityRow) -> Result<Entry, ApiError> {
        let text = |t: String| RawValue::from_string(t).map_err(ApiError::internal);
        Ok(Entry {
            seq: row.seq,
            event: format!("{}.{}", Entity::Task.as_str(), row.kind),
            task_id: row.task_id,
            changed: text(row.changed)?,
            before: row.prior.map(text).transpose()?,
            data: text(row.data)?,
            by: row.author.map(text).transpose()?,
            at: row.at,
        })
    }
}

/// A page of activity, newest first; `next_before` continues it, `null` at
/// the end.
#[derive(Debug, Serialize)]
pub struct ActivityPage {
    pub epoch: String,
    pub seq: i64,
    pub items: Vec<Entry>,
    pub next_before: Option<i64>,
}

impl TryFrom<ChangeRow> for Entry {
    type Error = ApiError;
    fn try_from(row: ChangeRow) -> Result<Entry, ApiError> {
        let text = |t: String| RawValue::from_string(t).map_err(ApiError::internal);
        Ok(Entry {
            seq: row.seq,
            event: format!("{}.{}", row.entity.as_str(), row.kind),
            task_id: row.entity_id,
            changed: text(row.changed)?,
            before: row.prior.map(text).transpose()?,
            data: text(row.data)?,
            by: row.author.map(text).transpose()?,
            at: row.at,
        })
    }
}

/// Activity entries of `of` with seq below `before` and at most `upto`,
/// newest first, at most `limit`. Run inside a read transaction: the newest
/// changes may not be filed into the activity yet (the writer files them a
/// moment after their commit), so those after the filed position are read
/// from the log, which keeps them until they are filed.
pub fn activity(
    conn: &mut SqliteConnection,
    of: ActivityOf,
    before: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Entry>, ApiError> {
    let through = q::activity_through(conn)?;
    let mut entries = Vec::new();
    let newest = upto.min(before - 1);
    if newest > through {
        let filter = match of {
            ActivityOf::Task(id) => Some((Entity::Task, Some(id))),
            ActivityOf::Agent(_) => None,
        };
        for row in q::changes_since(conn, through, newest, filter, i64::MAX)?
            .into_iter()
            .rev()
        {
            let keep = row.entity == Entity::Task
                && row.kind != ChangeKind::Deleted
                && match of {
                    ActivityOf::Task(_) => true,
                    ActivityOf::Agent(id) => {
                        author_agent(row.author.as_deref()) == Some(id) && q::find_task(conn, row.entity_id)?.is_some()
                    }
                };
            if keep {
                entries.push(Entry::try_from(row)?);
                if entries.len() as i64 == limit {
                    return Ok(entries);
                }
            }
        }
    }
    let filed = q::activity(conn, of, before, upto.min(through), limit - entries.len() as i64)?;
    for row in filed {
        entries.push(Entry::try_from(row)?);
    }
    Ok(entries)
}

/// The agent of a change's author, if an agent made it.
fn author_agent(author: Option<&str>) -> Option<i64> {
    let by: Value = serde_json::from_str(author?).ok()?;
    by["agent_id"].as_i64()
}

impl ReadAnswer {
    /// The entity's version, for an `ETag`; none for a list.
    pub fn version(&self) -> Option<i64> {
        match self {
            ReadAnswer::Task(t) => Some(t.version),
            ReadAnswer::Agent(a) => Some(a.version),
            ReadAnswer::Page(_) | ReadAnswer::Agents(_) | ReadAnswer::Activity(_) => None,
        }
    }

    /// Rows read, for the read budget.
    pub fn rows(&self) -> usize {
        match self {
            ReadAnswer::Page(l) => l.items.len(),
            ReadAnswer::Agents(l) => l.items.len(),
            ReadAnswer::Activity(p) => p.items.len(),
            ReadAnswer::Task(_) | ReadAnswer::Agent(_) => 1,
        }
    }
}

/// A page of the change log for REST, as JSON text: its events are printed
/// straight from the stored rows, not parsed into trees.
#[derive(Message)]
#[rtype(result = "Result<Box<RawValue>, ApiError>")]
pub struct ReadChanges {
    pub since: i64,
    pub topic: Option<Topic>,
    pub limit: i64,
    pub by: Principal,
}

/// A change-log page as REST answers it.
#[derive(Serialize)]
struct ChangesPage<'a> {
    epoch: &'a str,
    seq: i64,
    events: &'a [EventFrame<'a>],
}

/// Agents by id, those `filter` matches (few: filtered here, with the same
/// test as the live path's).
fn agents(conn: &mut SqliteConnection, shared: &Shared, filter: Option<&Filter>) -> QueryResult<Vec<Agent>> {
    Ok(q::list_agents(conn)?
        .into_iter()
        .map(|a| shared.overlay(a))
        .filter(|a| filter.is_none_or(|f| f.matches_json(&a.to_json())))
        .collect())
}

fn agent(conn: &mut SqliteConnection, shared: &Shared, id: i64) -> QueryResult<Option<Agent>> {
    Ok(q::find_agent(conn, id)?.map(|a| shared.overlay(a)))
}

/// The current state of a topic; `None` for a single entity that does not exist.
pub fn snapshot(conn: &mut SqliteConnection, shared: &Shared, topic: &Topic) -> QueryResult<Option<Value>> {
    Ok(match topic {
        Topic::Tasks => Some(Value::Array(
            q::list_tasks(conn, None, None)?.iter().map(Task::to_json).collect(),
        )),
        Topic::Agents => Some(Value::Array(
            agents(conn, shared, None)?.iter().map(Agent::to_json).collect(),
        )),
        Topic::Filtered(f) => Some(Value::Array(match f.entity() {
            Entity::Task => q::list_tasks(conn, Some(f), None)?.iter().map(Task::to_json).collect(),
            Entity::Agent => agents(conn, shared, Some(f))?.iter().map(Agent::to_json).collect(),
        })),
        Topic::Task(id) => q::find_task(conn, *id)?.map(|t| t.to_json()),
        Topic::Agent(id) => agent(conn, shared, *id)?.map(|a| a.to_json()),
    })
}

/// Answers a REST read, in one read transaction.
pub fn read(conn: &mut SqliteConnection, shared: &Shared, query: Query) -> Result<ReadAnswer, ApiError> {
    conn.transaction(|conn| {
        let listing = |conn: &mut SqliteConnection| -> QueryResult<(String, i64)> {
            Ok((shared.head.epoch.clone(), Position::read(conn)?.seq))
        };
        Ok(match query {
            Query::Tasks(filter, after) => {
                let (epoch, seq) = listing(conn)?;
                let items = q::list_tasks(conn, filter.as_ref(), after.as_ref())?;
                // A full page of a window goes on after its last task.
                let next = filter.as_ref().and_then(Filter::window).and_then(|w| {
                    (items.len() == w.limit as usize)
                        .then(|| items.last().and_then(|t| w.order.key_of(&t.to_raw())))
                        .flatten()
                        .map(|k| k.cursor())
                });
                ReadAnswer::Page(Page {
                    epoch,
                    seq,
                    items,
                    next,
                })
            }
            Query::Agents(filter) => {
                let (epoch, seq) = listing(conn)?;
                let items = agents(conn, shared, filter.as_ref())?;
                ReadAnswer::Agents(Listing { epoch, seq, items })
            }
            Query::Task(id) => ReadAnswer::Task(
                q::find_task(conn, id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?,
            ),
            Query::Agent(id) => ReadAnswer::Agent(
                agent(conn, shared, id)?.ok_or_else(|| ApiError::not_found(format!("agent {id} not found")))?,
            ),
            Query::Activity { of, before, limit } => {
                let exists = match of {
                    ActivityOf::Task(id) => q::find_task(conn, id)?.is_some(),
                    ActivityOf::Agent(id) => q::find_agent(conn, id)?.is_some(),
                };
                if !exists {
                    let (kind, id) = match of {
                        ActivityOf::Task(id) => ("task", id),
                        ActivityOf::Agent(id) => ("agent", id),
                    };
                    return Err(ApiError::not_found(format!("{kind} {id} not found")));
                }
                let (epoch, seq) = listing(conn)?;
                let items = activity(conn, of, before, seq, limit)?;
                let next_before = (items.len() as i64 == limit)
                    .then(|| items.last().map(|e| e.seq))
                    .flatten();
                ReadAnswer::Activity(ActivityPage {
                    epoch,
                    seq,
                    items,
                    next_before,
                })
            }
        })
    })
}

/// A page of the change log after `since`, and the rows it looked through.
pub fn changes(
    conn: &mut SqliteConnection,
    shared: &Shared,
    config: &DbConfig,
    msg: &ReadChanges,
) -> Result<(Box<RawValue>, usize), ApiError> {
    conn.transaction(|conn| {
        let at = Position::read(conn)?;
        if msg.since < at.floor {
            return Err(ApiError::gone(format!(
                "changes up to {} are no longer kept; load a snapshot",
                at.floor
            )));
        }
        let filter = msg.topic.as_ref().map(Topic::filter);
        // One page looks through at most `log_scan_window` changes; it is
        // complete up to the end of that window, or up to its last event when
        // `limit` cut it short.
        let window_end = at.seq.min(msg.since.saturating_add(config.log_scan_window));
        let rows = q::changes_since(conn, msg.since, window_end, filter, msg.limit)?;
        let upto = if rows.len() as i64 == msg.limit {
            rows.last().map_or(window_end, |r| r.seq)
        } else {
            window_end
        };
        let scanned = (upto - msg.since).max(0) as usize;
        let changes = rows
            .into_iter()
            .map(change_of_row)
            .collect::<Result<Vec<_>, ApiError>>()?;
        let topics: Vec<(&Change, Topic, Seen)> = changes
            .iter()
            .filter_map(|c| match &msg.topic {
                Some(t) => t.sees(c).map(|seen| (c, t.clone(), seen)),
                // A note is only ever on its task's own topic.
                None if c.kind == ChangeKind::Noted => Some((c, Topic::Task(c.entity_id), Seen::of(c.kind))),
                None => Some((c, Topic::collection(c.entity).clone(), Seen::of(c.kind))),
            })
            .collect();
        let events: Vec<_> = topics.iter().map(|(c, t, seen)| c.frame_as(t, *seen)).collect();
        let page = ChangesPage {
            epoch: &shared.head.epoch,
            seq: upto,
            events: &events,
        };
        Ok((to_raw_value(&page).map_err(ApiError::internal)?, scanned))
    })
}
