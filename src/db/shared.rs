//! What the writer shares with the readers after each commit: the position,
//! the newest changes (for resumes without SQL) and the heartbeat times not
//! yet on disk. Readers take their data from their own read transaction and
//! only these from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use super::models::Agent;
use super::open::Head;
use super::resume::{RecentChanges, ReplyCache};

pub struct Shared {
    pub head: Arc<Head>,
    pub recent: RwLock<RecentChanges>,
    /// Committed heartbeat times by agent.
    beats: RwLock<HashMap<i64, String>>,
    /// Subscribe replies at the newest position read.
    pub replies: Mutex<ReplyCache>,
}

impl Shared {
    pub fn new(head: Arc<Head>, recent: RecentChanges) -> Shared {
        Shared {
            head,
            recent: RwLock::new(recent),
            beats: RwLock::default(),
            replies: Mutex::default(),
        }
    }

    /// A committed heartbeat.
    pub fn beat(&self, agent_id: i64, at: &str) {
        self.beats
            .write()
            .expect("beats poisoned")
            .insert(agent_id, at.to_string());
    }

    /// The agent with its newest committed heartbeat time.
    pub fn overlay(&self, mut agent: Agent) -> Agent {
        if let Some(at) = self.beats.read().expect("beats poisoned").get(&agent.id) {
            if agent.last_heartbeat_at.as_deref() < Some(at.as_str()) {
                agent.last_heartbeat_at = Some(at.clone());
            }
        }
        agent
    }
}
