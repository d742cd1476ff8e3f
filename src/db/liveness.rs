//! What the Db actor knows of agents' liveness beyond their rows: heartbeat
//! times not yet on disk, and when each agent was last heard from.
//!
//! A heartbeat changes no row (its time is written once a second, not per
//! beat), so reads overlay the newest time here on the agent's row. The
//! changes a call makes here are journaled, so a call that fails, or a batch
//! that does, takes them back.
//!
//! An agent with an open socket (of its token) is alive whatever its
//! heartbeats: the timeout does not apply to it. When its last socket
//! closes it has a grace period (`--presence-grace`), then goes offline,
//! unless a socket opens again or it heartbeats (which puts it back under
//! the timeout rule of agents that heartbeat over REST).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::models::Agent;

#[derive(Default)]
pub struct Liveness {
    /// The newest heartbeat time of each agent.
    beats: HashMap<i64, String>,
    /// Agents whose time in `beats` is not on disk yet.
    dirty: HashSet<i64>,
    /// When each agent was last heard from, or created, or the server started.
    seen: HashMap<i64, Instant>,
    /// What `beats` held before each change of the batch being committed.
    undo: Vec<(i64, Option<String>)>,
    /// Open sockets of each agent's tokens, for agents with any.
    sockets: HashMap<i64, usize>,
    /// Agents whose last socket closed, and when their grace ends.
    grace: HashMap<i64, Instant>,
}

/// A point in the journal to roll back to.
#[derive(Debug, Clone, Copy)]
pub struct Mark(usize);

impl Liveness {
    /// Every agent counts as heard from now, so none goes offline before it
    /// had a chance to heartbeat after a restart.
    pub fn starting(agents: impl IntoIterator<Item = i64>) -> Liveness {
        let now = Instant::now();
        Liveness {
            seen: agents.into_iter().map(|id| (id, now)).collect(),
            ..Liveness::default()
        }
    }

    /// The agent as clients see it: with its newest heartbeat time.
    pub fn overlay(&self, mut agent: Agent) -> Agent {
        if let Some(at) = self.beats.get(&agent.id) {
            agent.last_heartbeat_at = Some(at.clone());
        }
        agent
    }

    pub fn beat_at(&self, agent_id: i64) -> Option<&str> {
        self.beats.get(&agent_id).map(String::as_str)
    }

    /// Records a heartbeat time (inside a batch: journaled).
    pub fn set_beat(&mut self, agent_id: i64, at: String) {
        let before = self.beats.insert(agent_id, at);
        self.undo.push((agent_id, before));
    }

    /// Forgets a deleted agent (inside a batch: journaled).
    pub fn remove(&mut self, agent_id: i64) {
        let before = self.beats.remove(&agent_id);
        self.undo.push((agent_id, before));
    }

    pub fn mark(&self) -> Mark {
        Mark(self.undo.len())
    }

    /// Takes back every change made since `mark`.
    pub fn roll_back(&mut self, mark: Mark) {
        while self.undo.len() > mark.0 {
            let (id, before) = self.undo.pop().expect("undo holds more than mark");
            match before {
                Some(at) => self.beats.insert(id, at),
                None => self.beats.remove(&id),
            };
        }
    }

    /// The batch committed: its changes stay.
    pub fn keep(&mut self) {
        self.undo.clear();
    }

    /// A committed heartbeat: its time is to be written, and the agent's
    /// clock restarts (a grace it was in ends: the timeout rules it again).
    pub fn heard(&mut self, agent_id: i64) {
        self.dirty.insert(agent_id);
        self.seen.insert(agent_id, Instant::now());
        self.grace.remove(&agent_id);
    }

    /// A socket of the agent's token opened; true if it is its only one.
    pub fn socket_opened(&mut self, agent_id: i64) -> bool {
        self.grace.remove(&agent_id);
        let n = self.sockets.entry(agent_id).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// A socket of the agent's token closed: the last one starts its grace.
    pub fn socket_closed(&mut self, agent_id: i64, grace: Duration) {
        if let Some(n) = self.sockets.get_mut(&agent_id) {
            *n -= 1;
            if *n == 0 {
                self.sockets.remove(&agent_id);
                self.grace.insert(agent_id, Instant::now() + grace);
            }
        }
    }

    /// A new agent's liveness clock starts now.
    pub fn created(&mut self, agent_id: i64) {
        self.seen.insert(agent_id, Instant::now());
    }

    /// Agents not heard from for `timeout`, and agents whose grace after
    /// their last socket ended; none with an open socket or in its grace.
    /// Each is returned once, until it is heard from again.
    pub fn take_overdue(&mut self, timeout: Duration) -> Vec<i64> {
        let now = Instant::now();
        let mut late: Vec<i64> = self
            .seen
            .iter()
            .filter(|(id, t)| {
                now.duration_since(**t) >= timeout && !self.sockets.contains_key(id) && !self.grace.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        self.grace.retain(|id, until| {
            let over = *until <= now;
            if over {
                late.push(*id);
            }
            !over
        });
        for id in &late {
            self.seen.remove(id);
        }
        late
    }

    /// An agent whose going offline did not commit: still overdue, so the
    /// next sweep tries again.
    pub fn still_overdue(&mut self, agent_id: i64, timeout: Duration) {
        let overdue = Instant::now().checked_sub(timeout).unwrap_or_else(Instant::now);
        self.seen.insert(agent_id, overdue);
    }

    /// The heartbeat times not on disk yet.
    pub fn unwritten(&self) -> Vec<(i64, String)> {
        self.dirty
            .iter()
            .filter_map(|id| self.beats.get(id).map(|at| (*id, at.clone())))
            .collect()
    }

    /// The times from [`Liveness::unwritten`] are on disk.
    pub fn written(&mut self) {
        self.dirty.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_call_leaves_the_times_as_they_were() {
        let mut l = Liveness::default();
        l.set_beat(1, "a".into());
        l.keep();
        let mark = l.mark();
        l.set_beat(1, "b".into());
        l.set_beat(2, "c".into());
        l.remove(1);
        l.roll_back(mark);
        assert_eq!(l.beat_at(1), Some("a"));
        assert_eq!(l.beat_at(2), None);
    }

    #[test]
    fn an_open_socket_keeps_an_agent_until_its_grace_ends() {
        let mut l = Liveness::starting([1, 2]);
        assert!(l.socket_opened(1));
        assert!(!l.socket_opened(1));
        assert_eq!(l.take_overdue(Duration::ZERO), vec![2], "a socket keeps agent 1");
        l.socket_closed(1, Duration::from_secs(60));
        assert!(l.take_overdue(Duration::ZERO).is_empty(), "one socket is still open");
        l.socket_closed(1, Duration::from_secs(60));
        assert!(l.take_overdue(Duration::ZERO).is_empty(), "in its grace");
        l.socket_opened(1);
        l.socket_closed(1, Duration::ZERO);
        assert_eq!(l.take_overdue(Duration::from_secs(60)), vec![1], "its grace ended");
        assert!(l.take_overdue(Duration::ZERO).is_empty(), "once");
        l.socket_opened(2);
        l.socket_closed(2, Duration::from_secs(60));
        l.heard(2);
        assert!(
            l.take_overdue(Duration::from_secs(60)).is_empty(),
            "a heartbeat ends the grace"
        );
        assert_eq!(l.take_overdue(Duration::ZERO), vec![2], "and the timeout rules again");
    }

    #[test]
    fn overdue_agents_are_returned_once() {
        let mut l = Liveness::starting([1, 2]);
        assert!(l.take_overdue(Duration::from_secs(60)).is_empty());
        let mut late = l.take_overdue(Duration::ZERO);
        late.sort();
        assert_eq!(late, vec![1, 2]);
        assert!(l.take_overdue(Duration::ZERO).is_empty());
        l.still_overdue(1, Duration::from_secs(5));
        assert_eq!(l.take_overdue(Duration::from_secs(5)), vec![1]);
    }
}
