//! Subscribes: a snapshot of the topic, or, for a client that resumes, the
//! changes it missed, read on a reader at one position. The session joins its
//! Registry to the topic before it asks, so every change committed after that
//! position reaches it, and those at or before it are in the reply.

use actix::prelude::*;
use diesel::connection::Connection;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::queries as q;
use super::queries::ActivityOf;
use super::reads::{activity, snapshot, Entry, Position as At};
use super::rules::change_of_row;
use super::shared::Shared;
use super::DbConfig;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::protocol::{Change, EventFrame, Position, Ref, Topic};

/// The answer to a subscribe.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribed {
    pub reference: Ref,
    pub topic: Topic,
    /// The session's number for this subscribe, echoed back.
    pub generation: u64,
    /// The reply's data, serialized once (many sessions may share it), and its seq.
    pub result: Result<(Arc<RawValue>, i64), ApiError>,
    /// Echoed: the reply lists the topic's presence.
    pub presence: bool,
    /// A window subscribe the writer counted (see `super::windows`).
    pub window: Option<super::windows::WindowTicket>,
}

/// Reads a snapshot or the missed changes of a topic and answers the session.
/// The session has joined the topic already.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub reference: Ref,
    pub topic: Topic,
    /// The session's number for this subscribe, echoed in the answer.
    pub generation: u64,
    pub resume: Option<Position>,
    /// Activity entries to send with a snapshot of `task:N`.
    pub history: u32,
    pub principal: Principal,
    pub reply_to: Recipient<Subscribed>,
    /// Whether the reply lists the topic's presence (echoed).
    pub presence: bool,
}

/// The newest committed changes, oldest first, so a resume needs neither SQL
/// nor JSON parsing. The writer pushes a commit's changes after it committed,
/// so a reader may see a position the memory does not reach yet.
pub struct RecentChanges {
    changes: VecDeque<Arc<Change>>,
    capacity: usize,
}

impl RecentChanges {
    /// The newest `capacity` changes of the log.
    pub fn load(conn: &mut SqliteConnection, head: i64, floor: i64, capacity: usize) -> Result<Self, ApiError> {
        let from = (head - capacity as i64).max(floor);
        let changes = q::changes_since(conn, from, i64::MAX, None, capacity as i64)?
            .into_iter()
            .map(|row| change_of_row(row).map(Arc::new))
            .collect::<Result<VecDeque<_>, _>>()?;
        Ok(RecentChanges { changes, capacity })
    }

    pub fn push(&mut self, change: Arc<Change>) {
        if self.changes.len() >= self.capacity {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// The changes of `topic` in (`since`, `upto`], at most `limit`, if memory
    /// holds that whole range.
    fn of_topic(&self, topic: &Topic, since: i64, upto: i64, limit: usize) -> Option<Vec<Arc<Change>>> {
        let first = self.changes.front()?;
        let last = self.changes.back()?;
        (first.seq <= since + 1 && last.seq >= upto).then(|| {
            self.changes
                .iter()
                .skip((since + 1 - first.seq) as usize)
                .take_while(|c| c.seq <= upto)
                .filter(|c| topic.receives(c))
                .take(limit)
                .cloned()
                .collect()
        })
    }
}

/// What a subscribe reply depends on: the topic, the resume position (of this
/// database) and the history asked for.
type ReplyKey = (Topic, Option<i64>, u32);

/// Subscribe replies at one position, by topic and resume position: clients
/// that (re)subscribe alike at the same position, as after a restart, share
/// one reply, read and serialized once.
#[derive(Default)]
pub struct ReplyCache {
    seq: i64,
    replies: HashMap<ReplyKey, Arc<RawValue>>,
}

impl ReplyCache {
    const MAX: usize = 256;

    fn get(&mut self, seq: i64, key: &ReplyKey) -> Option<Arc<RawValue>> {
        (self.seq == seq).then(|| self.replies.get(key).cloned()).flatten()
    }

    fn insert(&mut self, seq: i64, key: ReplyKey, reply: Arc<RawValue>) {
        if self.seq != seq || self.replies.len() >= Self::MAX {
            self.replies.clear();
            self.seq = seq;
        }
        self.replies.insert(key, reply);
    }
}

/// A subscribe's reply data: the missed events, or a snapshot.
#[derive(Serialize)]
struct SubscribeReply<'a> {
    topic: String,
    epoch: &'a str,
    seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<&'a [EventFrame<'a>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a [Entry]>,
}

/// A subscribe's reply, read in one transaction, and the rows it read (for
/// the token's read budget).
pub fn reply(
    conn: &mut SqliteConnection,
    shared: &Shared,
    config: &DbConfig,
    topic: &Topic,
    resume: Option<&Position>,
    history: u32,
) -> Result<(Arc<RawValue>, i64, usize), ApiError> {
    let epoch = shared.head.epoch.as_str();
    let same_db = resume.is_some_and(|p| p.epoch.as_deref() == Some(epoch));
    let key = (topic.clone(), resume.filter(|_| same_db).map(|p| p.since), history);
    conn.transaction(|conn| {
        let at = At::read(conn)?;
        if let Some(cached) = shared.replies.lock().expect("replies poisoned").get(at.seq, &key) {
            return Ok((cached, at.seq, 0));
        }
        let mut rows = 0;
        let missed = match resume.filter(|_| same_db) {
            Some(pos) => missed(conn, shared, config, &at, topic, pos.since, &mut rows)?,
            None => None,
        };
        let text = match missed {
            Some(missed) => {
                if missed.is_empty() && topic.filter().1.is_some() && snapshot(conn, shared, topic)?.is_none() {
                    return Err(ApiError::not_found(format!("{topic} does not exist")));
                }
                // What the live path sent: the same function decides.
                let events: Vec<_> = missed
                    .iter()
                    .filter_map(|c| topic.sees(c).map(|seen| c.frame_as(topic, seen)))
                    .collect();
                text(topic, epoch, at.seq, Some(&events), None, None)?
            }
            None => {
                let snapshot = snapshot(conn, shared, topic)?
                    .ok_or_else(|| ApiError::not_found(format!("{topic} does not exist")))?;
                rows += snapshot.as_array().map_or(1, Vec::len);
                let history = match (topic, history) {
                    (Topic::Task(id), n) if n > 0 => {
                        let entries = activity(conn, ActivityOf::Task(*id), i64::MAX, at.seq, n.into())?;
                        rows += entries.len();
                        Some(entries)
                    }
                    _ => None,
                };
                text(topic, epoch, at.seq, None, Some(&snapshot), history.as_deref())?
            }
        };
        let text: Arc<RawValue> = Arc::from(text);
        shared
            .replies
            .lock()
            .expect("replies poisoned")
            .insert(at.seq, key, text.clone());
        Ok((text, at.seq, rows))
    })
}

fn text(
    topic: &Topic,
    epoch: &str,
    seq: i64,
    events: Option<&[EventFrame<'_>]>,
    snapshot: Option<&Value>,
    history: Option<&[Entry]>,
) -> Result<Box<RawValue>, ApiError> {
    let reply = SubscribeReply {
        topic: topic.to_string(),
        epoch,
        seq,
        events,
        snapshot,
        history,
    };
    to_raw_value(&reply).map_err(ApiError::internal)
}

/// The changes of `topic` a client at `since` (of this database) missed, or
/// `None` when it must take a snapshot: a position pruned or ahead, more than
/// `max_replay` changes, or too far back to scan.
fn missed(
    conn: &mut SqliteConnection,
    shared: &Shared,
    config: &DbConfig,
    at: &At,
    topic: &Topic,
    since: i64,
    rows: &mut usize,
) -> Result<Option<Vec<Arc<Change>>>, ApiError> {
    if since > at.seq || since < at.floor {
        return Ok(None);
    }
    let limit = config.max_replay as usize;
    let in_memory = shared
        .recent
        .read()
        .expect("recent poisoned")
        .of_topic(topic, since, at.seq, limit + 1);
    let missed = match in_memory {
        Some(missed) => missed,
        None if since == at.seq => Vec::new(),
        // Too far back to scan: a snapshot is cheaper.
        None if at.seq - since > config.log_scan_window => return Ok(None),
        None => {
            *rows += (at.seq - since) as usize;
            q::changes_since(conn, since, at.seq, Some(topic.filter()), limit as i64 + 1)?
                .into_iter()
                .map(|r| change_of_row(r).map(Arc::new))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok((missed.len() <= limit).then_some(missed))
}
