//! The Db actor and its group commit.
//!
//! Writes that wait in its mailbox are committed together in one transaction:
//! each is queued into a pending batch, and a `Flush` the actor sends itself
//! runs once the mailbox is drained. Each call runs in its own savepoint, so a
//! call that fails fails alone. A failure of the database itself (full,
//! read-only, I/O) fails the whole batch: SQLite may have rolled the
//! transaction back already, and a later call must not run outside it.
//! Replies, then events, go out only after the commit; events in seq order.

use actix::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

use super::files::Files;
use super::liveness::Liveness;
use super::open::{Head, Opened};
use super::queries as q;
use super::resume::{Subscribe, Subscribed};
use super::row_cache::TaskRows;
use super::rules::{self, Outcome, WriteCtx};
use super::shared::Shared;
use super::sqlite_log;
use super::tokens::{load_tokens, RevocationWatch};
use super::windows::{WindowTicket, Windows};
use super::DbConfig;
use crate::auth::{Principal, TokenCache};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::protocol::Call;
use crate::registry::{Hub, Published};

/// A write's answer: the reply's `data` and, if it committed a change, its seq.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Serialized once on the writer's thread.
    pub data: Arc<RawValue>,
    pub seq: Option<i64>,
}

impl Committed {
    /// The reply's data as a JSON value, for callers that look into it.
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_str(self.data.get()).map_err(ApiError::internal)
    }
}

/// Runs a call (from a socket or REST) through the group commit. The answer
/// goes to `reply` straight from the commit, not through the Db actor's
/// context, so it can leave before the commit's events are published; use
/// [`execute`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    pub principal: Principal,
    pub call: Call,
    pub reply: oneshot::Sender<Result<Committed, ApiError>>,
}

/// Runs a call through the group commit. Unless the Db mailbox is full, the
/// call is queued at once, in the order the caller reads its frames, even if
/// the returned future is never polled (a call followed by a close in the same
/// read); the future waits for the answer.
pub fn execute(
    db: &Addr<Db>,
    principal: Principal,
    call: Call,
) -> impl std::future::Future<Output = Result<Committed, ApiError>> + 'static {
    let (reply, answer) = oneshot::channel();
    // Not `send`: its own answer (that the call was queued) would wake the
    // caller's thread once more per call. `try_send` still parks this sender
    // when the mailbox is full, so one flood of calls cannot fill it; then
    // `send` waits for room. A call to a stopped actor is dropped with its
    // `reply`, which answers `unavailable` below.
    let waiting = match db.try_send(Execute { principal, call, reply }) {
        Err(SendError::Full(msg)) => Some(db.send(msg)),
        Ok(()) | Err(SendError::Closed(_)) => None,
    };
    async move {
        if let Some(queued) = waiting {
            queued
                .await
                .map_err(|_| ApiError::unavailable("the database is not running"))?;
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("the database is not running")))
    }
}

/// Stops taking writes: commits what is pending, writes heartbeat times, and
/// answers every later write `unavailable`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Commits the pending batch; sent by the actor to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// One job of a batch.
pub(super) enum Job {
    Call {
        principal: Principal,
        call: Call,
        reply: oneshot::Sender<Result<Committed, ApiError>>,
    },
    /// The server's own change: an agent went silent.
    Offline(i64),
    /// The server's own change: an offline agent's socket opened.
    Online(i64),
}

/// The Db actor.
pub struct Db {
    pub(super) conn: SqliteConnection,
    pub(super) position: Arc<Head>,
    pub(super) seq: i64,
    /// Changes with seq at or below this were pruned from the log.
    pub(super) floor: i64,
    /// Changes with seq at or below this are filed in the tasks' activity.
    pub(super) activity_through: i64,
    pub(super) hub: Arc<Hub>,
    pub(super) tokens: Arc<TokenCache>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: DbConfig,
    pending: Vec<Job>,
    flush_scheduled: bool,
    draining: bool,
    pub(super) live: Liveness,
    tasks: TaskRows,
    /// The window topics held (see [`super::windows`]).
    pub(super) windows: Windows,
    /// What the readers see of the writer's memory.
    shared: Arc<Shared>,
    pub(super) revocations: RevocationWatch,
    files: Files,
    /// Set when the state on disk can no longer be trusted: every write is
    /// refused with this reason, and the server stops.
    failed: Option<String>,
    /// Tells the server to stop, with the reason.
    stop: Option<oneshot::Sender<String>>,
}

/// Why a batch did not commit: the database's own error (kept whole, to tell
/// a failed sync from a refusal), or a call's.
enum BatchError {
    Db(diesel::result::Error),
    Call(ApiError),
}

impl From<diesel::result::Error> for BatchError {
    fn from(e: diesel::result::Error) -> Self {
        BatchError::Db(e)
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Db(e) => e.into(),
            BatchError::Call(e) => e,
        }
    }
}

/// What a write of a batch whose outcome is unknown is answered.
fn outcome_unknown(reason: &str) -> ApiError {
    ApiError::unavailable(format!(
        "the outcome of this write is unknown ({reason}); the server stops: retry it with the same op_id once it is back"
    ))
}

impl Db {
    pub fn new(
        opened: Opened,
        hub: Arc<Hub>,
        tokens: Arc<TokenCache>,
        metrics: Arc<Metrics>,
        config: DbConfig,
        shared: Arc<Shared>,
        stop: oneshot::Sender<String>,
    ) -> Result<Db, ApiError> {
        let Opened {
            mut conn,
            position,
            floor,
        } = opened;
        let live = Liveness::starting(q::list_agents(&mut conn)?.into_iter().map(|a| a.id));
        let revocations = RevocationWatch::start(&mut conn)?;
        let files = Files::open(&opened_path(&mut conn)?).map_err(ApiError::internal)?;
        let activity_through = q::activity_through(&mut conn)?;
        Ok(Db {
            activity_through,
            seq: position.seq(),
            conn,
            position,
            floor,
            hub,
            tokens,
            metrics,
            config,
            pending: Vec::new(),
            flush_scheduled: false,
            draining: false,
            live,
            tasks: TaskRows::default(),
            windows: Windows::default(),
            shared,
            revocations,
            files,
            failed: None,
            stop: Some(stop),
        })
    }

    /// The state on disk can no longer be trusted: the calls of the batch in
    /// hand get `outcome_unknown`, every later write is refused, and the
    /// server stops (non-zero), so a restart recovers from the WAL.
    pub(super) fn fail(&mut self, reason: String) {
        if self.failed.is_some() {
            return;
        }
        log::error!("storage failure, refusing writes and stopping: {reason}");
        // A WAL deleted under us is still open here: copying its frames into
        // the database file saves the writes acknowledged since the last
        // checkpoint.
        if let Err(e) = q::checkpoint(&mut self.conn) {
            log::error!("checkpoint after the failure failed too: {e}");
        }
        self.failed = Some(reason.clone());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(reason);
        }
    }

    /// Checks the files on disk are the ones open; stops writes if not.
    pub(super) fn check_files(&mut self) -> bool {
        match self.files.check() {
            Ok(()) => true,
            Err(why) => {
                self.fail(why);
                false
            }
        }
    }

    /// A checkpoint that empties the WAL, at a graceful stop: the database
    /// file alone then holds everything.
    pub(super) fn checkpoint(&mut self) {
        if let Err(e) = q::checkpoint(&mut self.conn) {
            log::warn!("the checkpoint at stop failed: {e}");
        }
    }

    pub(super) fn enqueue(&mut self, job: Job, ctx: &mut Context<Self>) {
        self.pending.push(job);
        self.metrics.db_mailbox.set(self.pending.len() as i64);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // `notify` runs after the mailbox is drained: that is the batch.
            ctx.notify(Flush);
        }
    }

    /// Commits every pending job in one transaction and answers them.
    pub(super) fn flush(&mut self) {
        self.flush_scheduled = false;
        let jobs = std::mem::take(&mut self.pending);
        self.metrics.db_mailbox.set(0);
        if jobs.is_empty() {
            return;
        }
        if let Some(reason) = &self.failed {
            let e = ApiError::unavailable(format!("the server refuses writes: {reason}"));
            answer_all(jobs, &e);
            return;
        }
        let started = Instant::now();
        let start_seq = self.seq;
        let mut seq = start_seq;
        let mut results: Vec<Result<Outcome, ApiError>> = Vec::with_capacity(jobs.len());
        let batch_mark = self.live.mark();
        let (live, tasks, tokens, watch) = (&mut self.live, &mut self.tasks, &self.tokens, &mut self.revocations);
        let windows = &mut self.windows;
        let fail_op_id = self.config.fail_op_id.as_deref();
        let mut revoked_elsewhere = Vec::new();
        let mut body_done = false;
        let syncs_failed = sqlite_log::sync_failures();
        let committed = self.conn.immediate_transaction::<_, BatchError, _>(|conn| {
            // Another process (the token command) may have written: the rows
            // cached are then stale, and a token it revoked must not write.
            // This transaction holds the write lock, so no revocation can
            // commit between this look and the batch's commit.
            let version = q::data_version(conn)?;
            tasks.follow(version);
            if version != watch.data_version {
                revoked_elsewhere = load_tokens(conn, tokens)?;
                watch.data_version = version;
            }
            let mut ctx = WriteCtx {
                fail_op_id,
                windows: Some(windows),
                ..WriteCtx::new(&mut seq, live, tasks)
            };
            for job in &jobs {
                let result = match job {
                    Job::Call { principal, .. } if principal.token_id != 0 && !tokens.has_token(principal.token_id) => {
                        Err(ApiError::unauthorized("the token was revoked"))
                    }
                    Job::Call { principal, call, .. } => {
                        rules::run(conn, &mut ctx, |conn, ctx| rules::execute(conn, ctx, principal, call))
                    }
                    Job::Offline(id) => {
                        rules::run(conn, &mut ctx, |conn, ctx| rules::agents::mark_offline(conn, ctx, *id))
                    }
                    Job::Online(id) => {
                        rules::run(conn, &mut ctx, |conn, ctx| rules::agents::mark_online(conn, ctx, *id))
                    }
                };
                match result {
                    Err(e) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal) => {
                        return Err(BatchError::Call(e))
                    }
                    result => results.push(result),
                }
            }
            body_done = true;
            Ok(())
        });
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(jobs.len() as f64);
        self.forget_tokens(revoked_elsewhere);
        // After a failed sync the state on disk is unknown (the writes may or
        // may not be there after a restart): no answer may say either.
        let sync_failed = match &committed {
            Err(BatchError::Db(diesel::result::Error::DatabaseError(_, info)))
                if body_done && sqlite_log::sync_failures() > syncs_failed =>
            {
                Some(format!("the commit's sync failed: {}", info.message()))
            }
            Ok(())
                if self.config.fail_sync_op_id.is_some()
                    && jobs
                        .iter()
                        .any(|j| matches!(j, Job::Call { call, .. } if call.op_id == self.config.fail_sync_op_id)) =>
            {
                Some("the commit's sync failed (test hook)".to_string())
            }
            _ => None,
        };
        if let Some(reason) = sync_failed {
            self.fail(reason.clone());
            answer_all(jobs, &outcome_unknown(&reason));
            return;
        }
        if let Err(e) = committed {
            let e = ApiError::from(e);
            self.live.roll_back(batch_mark);
            self.windows.reload_all(&mut self.conn);
            // Rows saved by the batch were rolled back with it.
            self.tasks.clear();
            for job in jobs {
                match job {
                    Job::Call { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Job::Offline(id) => self.live.still_overdue(id, self.config.heartbeat_timeout),
                    Job::Online(id) => log::warn!("agent {id}'s socket opened, but its coming back failed: {e}"),
                }
            }
            return;
        }
        // Committed, but into the files at the paths? If not, nobody will
        // read these writes again.
        if !self.check_files() {
            let reason = self.failed.clone().unwrap_or_default();
            answer_all(jobs, &outcome_unknown(&reason));
            return;
        }
        self.live.keep();
        self.seq = seq;
        self.position.seq.store(seq, Ordering::Release);
        let mut items = Vec::new();
        let mut revoked = Vec::new();
        let mut answers = Vec::with_capacity(jobs.len());
        let mut recent = self.shared.recent.write().expect("recent poisoned");
        for (job, result) in jobs.into_iter().zip(results) {
            let answer = result.map(|out| {
                // One copy of each change, shared by the resume memory and
                // the Registry.
                for change in out.changes.into_iter().map(Arc::new) {
                    recent.push(change.clone());
                    items.push(Published::Change(change));
                }
                for w in out.windows {
                    self.windows.committed(&w);
                    items.push(Published::Window(Arc::new(w)));
                }
                if let Some((agent_id, at)) = out.heartbeat {
                    self.live.heard(agent_id);
                    self.shared.beat(agent_id, &at);
                    items.push(Published::Heartbeat { agent_id, at });
                }
                if let Some(id) = out.new_agent {
                    self.live.created(id);
                }
                if let Some((hash, p)) = out.new_token {
                    self.tokens.insert(hash, p);
                }
                revoked.extend(out.revoked_tokens);
                Committed {
                    data: out.data,
                    seq: out.seq,
                }
            });
            if let Job::Call { reply, .. } = job {
                answers.push((reply, answer));
            }
        }
        drop(recent);
        self.metrics.change_log_len.add(seq - start_seq);
        // Revoked tokens are gone before their revoker hears so.
        self.forget_tokens(revoked);
        // Replies before events (the two have no fixed order, see
        // docs/protocol.md): a reply sent after the publish waits on the
        // writer's thread behind that thread's share of the subscribers'
        // events.
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        if !items.is_empty() {
            self.hub.publish(items, &self.metrics);
        }
    }
}

/// Answers every call of `jobs` with `e`.
fn answer_all(jobs: Vec<Job>, e: &ApiError) {
    for job in jobs {
        if let Job::Call { reply, .. } = job {
            let _ = reply.send(Err(e.clone()));
        }
    }
}

/// The path of the main database file the connection has open.
fn opened_path(conn: &mut SqliteConnection) -> Result<String, ApiError> {
    Ok(q::database_file(conn)?)
}

impl Actor for Db {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_upkeep(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flush();
        self.flush_beats();
        self.checkpoint();
    }
}

impl Handler<Execute> for Db {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        if self.draining {
            let _ = msg
                .reply
                .send(Err(ApiError::unavailable("the server is shutting down")));
            return;
        }
        self.enqueue(
            Job::Call {
                principal: msg.principal,
                call: msg.call,
                reply: msg.reply,
            },
            ctx,
        );
    }
}

/// Subscribes of a window topic left (see [`super::windows`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveWindow {
    pub topic: crate::protocol::Topic,
    /// How many of the session's subscribes of it were answered.
    pub subscribes: usize,
}

impl Handler<LeaveWindow> for Db {
    type Result = ();
    fn handle(&mut self, msg: LeaveWindow, _: &mut Context<Self>) {
        self.windows
            .leave(&msg.topic, msg.subscribes, self.config.window_linger);
    }
}

/// A window topic's subscribe is answered by the writer, between batches, at
/// its committed seq: the window is computed from there on (see
/// [`super::windows`]).
impl Handler<Subscribe> for Db {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        let seq = self.seq;
        let result = self
            .windows
            .subscribe(
                &mut self.conn,
                &msg.topic,
                msg.resume.as_ref(),
                &self.position.epoch,
                seq,
            )
            .map(|data| (data, seq));
        let (ok, topic) = (result.is_ok(), msg.topic.clone());
        msg.reply_to.do_send(Subscribed {
            reference: msg.reference,
            topic: msg.topic,
            generation: msg.generation,
            result,
            presence: msg.presence,
            window: ok.then(|| WindowTicket::new(topic, ctx.address())),
        });
    }
}

impl Handler<Flush> for Db {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<Drain> for Db {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.flush();
        self.flush_beats();
        self.file_activity();
        self.draining = true;
        self.checkpoint();
    }
}
