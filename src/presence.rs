//! Presence: who is subscribed to each topic right now, one entry per
//! principal (token) however many sockets it subscribed from, and the
//! `presence.joined` / `presence.left` frames for the sessions that asked.
//!
//! One map for the whole server, behind one lock: a subscribe, unsubscribe or
//! disconnect takes it once, briefly. Frames are sent under the lock, so each
//! watcher's mailbox gets them in the order the map changed, after the list
//! its subscribe reply carried. Presence is not a change: no seq, no log, no
//! replay.

use actix::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::auth::Role;
use crate::protocol::Topic;

/// A principal as presence shows it.
#[derive(Debug, Clone)]
pub struct Member {
    pub token_id: i64,
    pub name: Arc<str>,
    pub role: Role,
    pub agent_id: Option<i64>,
}

impl Member {
    pub fn to_json(&self) -> Value {
        let mut v = json!({"token_id": self.token_id, "name": &*self.name, "role": self.role.as_str()});
        if let Some(id) = self.agent_id {
            v["agent_id"] = json!(id);
        }
        v
    }
}

/// A presence frame's text, for a session to send.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct PresenceFrame(pub Arc<str>);

/// One topic's members and the sessions watching them.
#[derive(Default)]
struct Here {
    /// By token id: the member and how many of its sessions hold the topic.
    members: BTreeMap<i64, (Member, usize)>,
    watchers: HashMap<u64, Recipient<PresenceFrame>>,
}

impl Here {
    fn send(&self, topic: &Topic, event: &str, member: &Member) {
        if self.watchers.is_empty() {
            return;
        }
        let text: Arc<str> = json!({"type": "presence", "topic": topic.to_string(), "event": event,
                                    "data": member.to_json()})
        .to_string()
        .into();
        for w in self.watchers.values() {
            w.do_send(PresenceFrame(text.clone()));
        }
    }
}

#[derive(Default)]
pub struct Presence {
    topics: Mutex<HashMap<Topic, Here>>,
}

impl Presence {
    /// A session's subscribe of `topic` was answered: counts `member` in
    /// (unless the session already was: `None`), and makes the session a
    /// watcher if `watcher` is given (else not one). Returns the members, for
    /// a watcher's reply.
    pub fn enter(
        &self,
        topic: &Topic,
        member: Option<&Member>,
        session_id: u64,
        watcher: Option<Recipient<PresenceFrame>>,
    ) -> Option<Value> {
        let mut topics = self.topics.lock().expect("presence lock");
        let here = topics.entry(topic.clone()).or_default();
        if let Some(m) = member {
            let entry = here.members.entry(m.token_id).or_insert_with(|| (m.clone(), 0));
            entry.1 += 1;
            if entry.1 == 1 {
                // Others hear of it; the session itself gets the list.
                here.watchers.remove(&session_id);
                here.send(topic, "presence.joined", m);
            }
        }
        match watcher {
            Some(w) => {
                here.watchers.insert(session_id, w);
                Some(Value::Array(here.members.values().map(|(m, _)| m.to_json()).collect()))
            }
            None => {
                here.watchers.remove(&session_id);
                None
            }
        }
    }

    /// A session left `topic` (unsubscribed or closed): its token leaves when
    /// this was its last session on the topic.
    pub fn leave(&self, topic: &Topic, token_id: i64, session_id: u64) {
        let mut topics = self.topics.lock().expect("presence lock");
        let Some(here) = topics.get_mut(topic) else {
            return;
        };
        here.watchers.remove(&session_id);
        if let Some(entry) = here.members.get_mut(&token_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                let (member, _) = here.members.remove(&token_id).expect("a member");
                here.send(topic, "presence.left", &member);
            }
        }
        if here.members.is_empty() && here.watchers.is_empty() {
            topics.remove(topic);
        }
    }
}
