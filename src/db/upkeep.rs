//! The Db actor's timers: heartbeat times to disk, silent agents (and
//! agents whose last socket closed) going offline, the token watch, window
//! topics nobody holds any more, filing
//! task changes into their activity, and pruning the change log; and agents'
//! sockets opening and closing.

use actix::prelude::*;
use std::time::Duration;

use super::queries as q;
use super::rules::now;
use super::writer::{Db, Job};

impl Db {
    /// Starts the timers; called when the actor starts.
    pub(super) fn start_upkeep(&mut self, ctx: &mut Context<Self>) {
        self.prune();
        ctx.run_interval(Duration::from_secs(1), |db, _| db.flush_beats());
        ctx.run_interval(self.config.activity_interval, |db, _| {
            db.file_activity();
        });
        ctx.run_interval(Duration::from_millis(500), |db, _| db.watch_tokens());
        let linger = self.config.window_linger;
        ctx.run_interval(
            (linger / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)),
            move |db, _| db.windows.drop_idle(linger),
        );
        ctx.run_interval(Duration::from_secs(1), |db, _| {
            db.check_files();
        });
        let sweep = (self.config.heartbeat_timeout.min(self.config.presence_grace) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(sweep, |db, ctx| db.sweep_offline(ctx));
        // A log over its count is cut back within seconds; its age is looked at
        // once a minute.
        ctx.run_interval(Duration::from_secs(1), |db, _| {
            if db.seq - db.floor > db.config.log_keep {
                db.prune();
            }
        });
        ctx.run_interval(Duration::from_secs(60), |db, _| db.prune());
    }

    /// Writes heartbeat times kept in memory, in one transaction.
    pub(super) fn flush_beats(&mut self) {
        let beats = self.live.unwritten();
        if beats.is_empty() {
            return;
        }
        let written = self
            .conn
            .immediate_transaction(|conn| q::write_heartbeats(conn, &beats));
        match written {
            Ok(()) => self.live.written(),
            Err(e) => log::warn!("heartbeat times not written yet: {e}"),
        }
    }

    /// Files the task changes committed since the last time into the tasks'
    /// activity, in a transaction of its own. False if it could not (a full
    /// disk, say): the changes stay in the log and are filed next time.
    pub(super) fn file_activity(&mut self) -> bool {
        if self.seq <= self.activity_through {
            return true;
        }
        let through = self.activity_through;
        match self.conn.immediate_transaction(|conn| q::file_activity(conn, through)) {
            Ok(filed) => {
                self.activity_through = filed;
                true
            }
            Err(e) => {
                log::warn!("task activity not filed yet: {e}");
                false
            }
        }
    }

    /// Queues agents that stopped heartbeating to go offline.
    fn sweep_offline(&mut self, ctx: &mut Context<Self>) {
        for id in self.live.take_overdue(self.config.heartbeat_timeout) {
            self.enqueue(Job::Offline(id), ctx);
        }
    }

    /// Queues agents whose socket opened while they were offline to come
    /// back (the rule checks they are offline).
    fn agent_socket(&mut self, msg: AgentSocket, ctx: &mut Context<Self>) {
        if msg.open {
            if self.live.socket_opened(msg.agent_id) {
                self.enqueue(Job::Online(msg.agent_id), ctx);
            }
        } else {
            self.live.socket_closed(msg.agent_id, self.config.presence_grace);
        }
    }

    /// Prunes the change log by count and age, old op_ids, expired browser
    /// sessions and login codes.
    pub(super) fn prune(&mut self) {
        let ago = |d: Duration| {
            let d = chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
            (chrono::Utc::now() - d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let cutoff = ago(self.config.log_max_age);
        let op_cutoff = ago(self.config.op_keep);
        let keep = self.config.log_keep;
        // A change leaves the log only once it is in its task's activity.
        if !self.file_activity() {
            return;
        }
        let result = self.conn.immediate_transaction::<_, diesel::result::Error, _>(|conn| {
            let cut = q::prune_changes(conn, keep, &cutoff)?;
            if let Some(cut) = cut {
                q::set_meta(conn, "pruned_through", &cut.to_string())?;
            }
            q::prune_ops(conn, &op_cutoff)?;
            q::prune_web_sessions(conn, &now())?;
            // A used or expired login code is kept a day, so that using it
            // again is told "already used" or "expired", not "unknown".
            q::prune_login_codes(conn, &ago(std::time::Duration::from_secs(24 * 3600)))?;
            Ok(cut)
        });
        match result {
            Ok(Some(cut)) => self.floor = self.floor.max(cut),
            Ok(None) => {}
            Err(e) => log::warn!("pruning the change log failed: {e}"),
        }
        if let Ok(n) = q::count_changes(&mut self.conn) {
            self.metrics.change_log_len.set(n);
        }
    }
}

/// A socket of an agent's token opened or closed: while it has one, the
/// agent is alive (see [`super::liveness`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentSocket {
    pub agent_id: i64,
    pub open: bool,
}

impl Handler<AgentSocket> for Db {
    type Result = ();
    fn handle(&mut self, msg: AgentSocket, ctx: &mut Context<Self>) {
        self.agent_socket(msg, ctx);
    }
}
