//! The Registry actor: which session is subscribed to which topic. It receives
//! every committed change from the Db actor, in seq order, and forwards each
//! event to the subscribers of the topics it matches. It never touches the
//! database.

use actix::prelude::*;
use bytestring::ByteString;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::protocol::{heartbeat_event, Change, Topic};

/// One event frame for one session, serialized once per topic and shared.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    pub topic: Topic,
    /// The change's seq; `None` for heartbeats.
    pub seq: Option<i64>,
    pub frame: ByteString,
}

/// Asks a session to close, with a WebSocket close code and reason.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: u16,
    pub reason: &'static str,
}

/// A session opened: it can now be closed by token revocation or shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session_id: u64,
    pub token_id: i64,
    pub close: Recipient<CloseSession>,
}

/// A session stopped: forget it and all its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session_id: u64,
}

/// Adds a session to a topic. Sent by the Db actor right after the subscribe
/// reply, so the join lands between the snapshot's seq and the next change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub session_id: u64,
    pub topic: Topic,
    pub deliver: Recipient<Deliver>,
}

/// Removes a session from a topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session_id: u64,
    pub topic: Topic,
}

/// Something the Db actor committed or received, in order.
#[derive(Debug, Clone)]
pub enum Published {
    Change(Arc<Change>),
    Heartbeat { agent_id: i64, at: String },
}

/// Committed changes and heartbeats of one group commit, in seq order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub items: Vec<Published>,
}

/// Closes every open socket of these tokens (they were revoked).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseTokens {
    pub token_ids: Vec<i64>,
    pub code: u16,
    pub reason: &'static str,
}

/// Closes every open socket (the server is shutting down).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub code: u16,
    pub reason: &'static str,
}

struct SessionEntry {
    token_id: i64,
    close: Recipient<CloseSession>,
    topics: HashSet<Topic>,
}

/// Topic → subscribed sessions.
pub struct Registry {
    topics: HashMap<Topic, HashMap<u64, Recipient<Deliver>>>,
    sessions: HashMap<u64, SessionEntry>,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Registry {
            topics: HashMap::new(),
            sessions: HashMap::new(),
            metrics,
        }
    }

    fn leave(&mut self, session_id: u64, topic: &Topic) {
        if let Some(subs) = self.topics.get_mut(topic) {
            if subs.remove(&session_id).is_some() {
                self.metrics.subscriptions.with_label_values(&[topic.kind()]).dec();
            }
            if subs.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// Sends one frame to every subscriber of `topic`, dropping the ones whose
    /// session has stopped.
    fn fan_out(&mut self, topic: &Topic, seq: Option<i64>, frame: impl FnOnce() -> String) {
        let Some(subs) = self.topics.get(topic) else {
            return;
        };
        let msg = Deliver {
            topic: topic.clone(),
            seq,
            frame: ByteString::from(frame()),
        };
        let mut dead = Vec::new();
        for (id, r) in subs {
            if r.connected() {
                r.do_send(msg.clone());
            } else {
                dead.push(*id);
            }
        }
        self.metrics.events_delivered.inc_by((subs.len() - dead.len()) as u64);
        for id in dead {
            self.leave(id, topic);
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Connect> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.sessions.insert(
            msg.session_id,
            SessionEntry {
                token_id: msg.token_id,
                close: msg.close,
                topics: HashSet::new(),
            },
        );
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.remove(&msg.session_id) {
            for topic in entry.topics {
                self.leave(msg.session_id, &topic);
            }
        }
    }
}

impl Handler<Join> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        // A session that already stopped must not be joined back in.
        let Some(entry) = self.sessions.get_mut(&msg.session_id) else {
            return;
        };
        entry.topics.insert(msg.topic.clone());
        let kind = msg.topic.kind();
        if self
            .topics
            .entry(msg.topic)
            .or_default()
            .insert(msg.session_id, msg.deliver)
            .is_none()
        {
            self.metrics.subscriptions.with_label_values(&[kind]).inc();
        }
    }
}

impl Handler<Leave> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&msg.session_id) {
            entry.topics.remove(&msg.topic);
        }
        self.leave(msg.session_id, &msg.topic);
    }
}

impl Handler<Publish> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        for item in msg.items {
            match item {
                Published::Change(change) => {
                    self.metrics.events_published.inc();
                    for topic in Topic::for_entity(change.entity, change.entity_id) {
                        self.fan_out(&topic, Some(change.seq), || change.event_text(&topic));
                    }
                }
                Published::Heartbeat { agent_id, at } => {
                    for topic in [Topic::Agents, Topic::Agent(agent_id)] {
                        self.fan_out(&topic, None, || heartbeat_event(&topic, agent_id, &at).to_string());
                    }
                }
            }
        }
    }
}

impl Handler<CloseTokens> for Registry {
    type Result = ();
    fn handle(&mut self, msg: CloseTokens, _: &mut Context<Self>) {
        for entry in self.sessions.values() {
            if msg.token_ids.contains(&entry.token_id) {
                entry.close.do_send(CloseSession {
                    code: msg.code,
                    reason: msg.reason,
                });
            }
        }
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;
    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        for entry in self.sessions.values() {
            entry.close.do_send(CloseSession {
                code: msg.code,
                reason: msg.reason,
            });
        }
        self.sessions.len()
    }
}
