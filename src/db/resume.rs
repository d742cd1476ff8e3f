//! Subscribes: a snapshot of the topic, or, for a client that resumes, the
//! changes it missed. Answered on the writer's thread between two commits, so
//! the reply and the events after it neither overlap nor leave a gap.

use actix::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::queries as q;
use super::rules::change_of_row;
use super::writer::Db;
use crate::error::ApiError;
use crate::protocol::{Change, EventFrame, Position, Ref, Topic};
use crate::registry::RegistryHandle;

/// The answer to a subscribe, sent to the session's mailbox before the Join, so
/// no later event can overtake it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribed {
    pub reference: Ref,
    pub topic: Topic,
    /// The session's number for this subscribe, echoed back.
    pub generation: u64,
    /// The reply's data, serialized once (many sessions may share it), and its seq.
    pub result: Result<(Arc<RawValue>, i64), ApiError>,
}

/// Reads a snapshot or the missed changes of a topic, replies to the session
/// and joins it to the topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub reference: Ref,
    pub topic: Topic,
    /// The session's number for this subscribe, echoed in the answer.
    pub generation: u64,
    pub resume: Option<Position>,
    pub session_id: u64,
    pub reply_to: Recipient<Subscribed>,
    /// The Registry of the session's thread.
    pub registry: RegistryHandle,
}

/// The newest committed changes, oldest first, so a resume needs neither SQL
/// nor JSON parsing. Only committed changes go in.
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

    /// The changes of `topic` after `since`, if memory reaches back that far.
    fn of_topic_since(&self, topic: &Topic, since: i64, limit: usize) -> Option<Vec<Arc<Change>>> {
        let first = self.changes.front()?;
        (first.seq <= since + 1).then(|| {
            self.changes
                .iter()
                .skip((since + 1 - first.seq) as usize)
                .filter(|c| topic.matches(c.entity, c.entity_id))
                .take(limit)
                .cloned()
                .collect()
        })
    }
}

/// Subscribe replies since the last commit, by topic and resume position:
/// clients that (re)subscribe alike between two commits, as after a restart,
/// share one reply, read and serialized once.
#[derive(Default)]
pub struct ReplyCache(HashMap<(Topic, Option<i64>), Arc<RawValue>>);

impl ReplyCache {
    const MAX: usize = 256;

    /// Any commit may change what a subscribe answers.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    fn get(&self, key: &(Topic, Option<i64>)) -> Option<Arc<RawValue>> {
        self.0.get(key).cloned()
    }

    fn insert(&mut self, key: (Topic, Option<i64>), reply: Arc<RawValue>) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(key, reply);
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
}

impl<'a> SubscribeReply<'a> {
    /// The reply as text: `events` for an exact resume, else `snapshot`.
    fn text(
        topic: &Topic,
        epoch: &'a str,
        seq: i64,
        events: Option<&'a [EventFrame<'a>]>,
        snapshot: Option<&'a Value>,
    ) -> Result<Box<RawValue>, ApiError> {
        let reply = SubscribeReply {
            topic: topic.to_string(),
            epoch,
            seq,
            events,
            snapshot,
        };
        to_raw_value(&reply).map_err(ApiError::internal)
    }
}

impl Db {
    /// The reply data of a subscribe: a snapshot, or the missed changes.
    fn subscribe(&mut self, topic: &Topic, resume: Option<&Position>) -> Result<Box<RawValue>, ApiError> {
        let epoch = self.position.epoch.clone();
        if let Some(missed) = resume.and_then(|pos| self.missed(topic, pos).transpose()) {
            let missed = missed?;
            if missed.is_empty() && topic.filter().1.is_some() && self.snapshot(topic)?.is_none() {
                return Err(ApiError::not_found(format!("{topic} does not exist")));
            }
            let events: Vec<_> = missed.iter().map(|c| c.frame(topic)).collect();
            return SubscribeReply::text(topic, &epoch, self.seq, Some(&events), None);
        }
        let snapshot = self
            .snapshot(topic)?
            .ok_or_else(|| ApiError::not_found(format!("{topic} does not exist")))?;
        SubscribeReply::text(topic, &epoch, self.seq, None, Some(&snapshot))
    }

    /// The changes of `topic` a client at `pos` missed, or `None` when it
    /// must take a snapshot: another database, a position pruned or ahead,
    /// more than `max_replay` changes, or too far back to scan.
    fn missed(&mut self, topic: &Topic, pos: &Position) -> Result<Option<Vec<Arc<Change>>>, ApiError> {
        let same_db = pos.epoch.as_deref() == Some(self.position.epoch.as_str());
        if !same_db || pos.since > self.seq || pos.since < self.floor {
            return Ok(None);
        }
        let limit = self.config.max_replay as usize;
        let missed = match self.recent.of_topic_since(topic, pos.since, limit + 1) {
            Some(missed) => missed,
            None if pos.since == self.seq => Vec::new(),
            // Too far back to look through on the writer's thread: a
            // snapshot is cheaper than the scan.
            None if self.seq - pos.since > self.config.log_scan_window => return Ok(None),
            None => q::changes_since(
                &mut self.conn,
                pos.since,
                self.seq,
                Some(topic.filter()),
                limit as i64 + 1,
            )?
            .into_iter()
            .map(|r| change_of_row(r).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?,
        };
        Ok((missed.len() <= limit).then_some(missed))
    }
}

impl Handler<Subscribe> for Db {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        let same_db = msg
            .resume
            .as_ref()
            .is_some_and(|p| p.epoch.as_deref() == Some(self.position.epoch.as_str()));
        let key = (
            msg.topic.clone(),
            msg.resume.as_ref().filter(|_| same_db).map(|p| p.since),
        );
        let result = match self.replies.get(&key) {
            Some(data) => Ok(data),
            None => self.subscribe(&msg.topic, msg.resume.as_ref()).map(|raw| {
                let raw: Arc<RawValue> = Arc::from(raw);
                self.replies.insert(key, raw.clone());
                raw
            }),
        };
        // Join before the reply and before any later change: any Leave the
        // session sends after the reply comes after the join, and the events
        // past the snapshot reach the session's Registry after it; the ones
        // that come before the session writes the reply wait for it there.
        if result.is_ok() {
            msg.registry.join(msg.session_id, msg.topic.clone(), msg.generation);
        }
        msg.reply_to.do_send(Subscribed {
            reference: msg.reference,
            topic: msg.topic,
            generation: msg.generation,
            result: result.map(|d| (d, self.seq)),
        });
    }
}
