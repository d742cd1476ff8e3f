//! The Db actor: the only writer of the SQLite file and the sequencer.
//!
//! Writes that wait in its mailbox are committed together in one transaction
//! (group commit): each write is handled into a pending batch, and a `Flush`
//! the actor sends itself runs once the mailbox is drained. A write that breaks
//! a rule fails alone (rules are checked before a call's first write). Replies,
//! then `Publish`, go out only after the commit; events in seq order.

pub mod logic;
pub mod models;
pub mod queries;
pub mod schema;

use actix::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::auth::{self, authorize, Action, Principal, Role, TokenCache};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::protocol::{Call, Change, EventFrame, Position, Ref, Topic};
use crate::registry::{Hub, Published, RegistryHandle};
use logic::{Outcome, TaskRows, WriteCtx};
use queries as q;

/// How the Db actor keeps the log and watches agents.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub heartbeat_timeout: Duration,
    pub log_keep: i64,
    pub log_max_age: Duration,
    /// A resume that would replay more changes than this gets a snapshot.
    pub max_replay: i64,
    /// How long remembered op_ids are kept.
    pub op_keep: Duration,
    /// How many of the newest changes are kept in memory for resumes; older
    /// positions are read from the log.
    pub recent_changes: usize,
    /// The most changes one read of the log looks through (10,000: about 2 ms).
    /// A resume further back than this and past the memory gets a snapshot; a
    /// page of `GET /api/changes` ends at the window's end.
    pub log_scan_window: i64,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            heartbeat_timeout: Duration::from_secs(30),
            log_keep: 100_000,
            log_max_age: Duration::from_secs(7 * 24 * 3600),
            max_replay: 1000,
            op_keep: Duration::from_secs(24 * 3600),
            recent_changes: 4096,
            log_scan_window: 10_000,
        }
    }
}

/// What everyone may read without asking the Db actor: the epoch and the seq
/// of the last commit.
#[derive(Debug)]
pub struct Head {
    pub epoch: String,
    pub seq: AtomicI64,
}

impl Head {
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Acquire)
    }
}

/// An opened, migrated database with its epoch and position.
pub struct Opened {
    pub conn: SqliteConnection,
    pub position: Arc<Head>,
    /// Changes with seq above this are all in the log.
    pub floor: i64,
}

/// Opens the file and reads (or on a new file, fixes) its epoch.
pub fn open(path: &str) -> Result<Opened, String> {
    let mut conn = q::open(path)?;
    // Fixed once, under the write lock, so two processes opening a new file
    // agree on it.
    let epoch = conn
        .immediate_transaction(|conn| match q::get_meta(conn, "epoch")? {
            Some(e) => Ok(e),
            None => {
                let mut bytes = [0u8; 12];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                let e = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
                q::set_meta(conn, "epoch", &e)?;
                Ok::<_, diesel::result::Error>(e)
            }
        })
        .map_err(|e| e.to_string())?;
    let seq = q::max_seq(&mut conn).map_err(|e| e.to_string())?.unwrap_or(0);
    let floor = q::get_meta(&mut conn, "pruned_through")
        .map_err(|e| e.to_string())?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Opened {
        conn,
        position: Arc::new(Head {
            epoch,
            seq: AtomicI64::new(seq),
        }),
        floor,
    })
}

/// On a database without tokens, creates the admin token: `given` if set, else a
/// new random one, which is returned so it can be shown once.
pub fn ensure_admin_token(conn: &mut SqliteConnection, given: Option<&str>) -> Result<Option<String>, String> {
    if q::count_tokens(conn).map_err(|e| e.to_string())? > 0 {
        return Ok(None);
    }
    let (token, generated) = match given {
        Some(t) if !t.is_empty() => (t.to_string(), false),
        _ => (auth::generate_token(), true),
    };
    let now = logic::now();
    q::insert_token(
        conn,
        &models::NewToken {
            hash: &auth::hash_token(&token),
            role: "admin",
            name: "admin",
            agent_id: None,
            created_at: &now,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(generated.then_some(token))
}

/// Loads every live token into the cache.
pub fn load_tokens(conn: &mut SqliteConnection, cache: &TokenCache) -> Result<(), String> {
    for t in q::list_tokens(conn).map_err(|e| e.to_string())? {
        if t.revoked_at.is_none() {
            if let Some(role) = Role::parse(&t.role) {
                cache.insert(
                    t.hash.clone(),
                    Principal {
                        token_id: t.id,
                        role,
                        agent_id: t.agent_id,
                    },
                );
            }
        }
    }
    for (hash, token_id, expires_at) in q::live_web_sessions(conn, &logic::now()).map_err(|e| e.to_string())? {
        cache.insert_session(hash, token_id, expires_at);
    }
    Ok(())
}

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

/// A read for REST, answered at one position.
#[derive(Message)]
#[rtype(result = "Result<Value, ApiError>")]
pub enum Read {
    Tasks {
        status: Option<String>,
        assignee_id: Option<i64>,
    },
    Task(i64),
    Agents,
    Agent(i64),
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

/// Token administration (not changes: nothing is published).
#[derive(Message)]
#[rtype(result = "Result<Value, ApiError>")]
pub enum Tokens {
    Create {
        by: Principal,
        role: String,
        name: String,
        agent_id: Option<i64>,
    },
    List {
        by: Principal,
    },
    Revoke {
        by: Principal,
        id: i64,
    },
    /// Opens a browser session acting as `by`; answers `{"secret", "max_age"}`.
    Login {
        by: Principal,
    },
    /// Ends the browser session whose cookie holds `secret`.
    Logout {
        secret: String,
    },
}

/// How long a browser session lasts.
pub const WEB_SESSION_DAYS: i64 = 30;

/// Stops taking writes: commits what is pending, writes heartbeat times, and
/// answers every later write `unavailable`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Commits the pending batch; sent by the actor to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

enum Job {
    Call {
        principal: Principal,
        call: Call,
        reply: oneshot::Sender<Result<Committed, ApiError>>,
    },
    Offline(i64),
}

/// The Db actor.
pub struct Db {
    conn: SqliteConnection,
    position: Arc<Head>,
    seq: i64,
    floor: i64,
    hub: Arc<Hub>,
    tokens: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    config: DbConfig,
    pending: Vec<Job>,
    flush_scheduled: bool,
    draining: bool,
    /// Heartbeat times by agent; `dirty` ones are not on disk yet.
    beats: HashMap<i64, String>,
    tasks: TaskRows,
    dirty: HashSet<i64>,
    /// When each agent was last heard from, or the server started or it was created.
    seen: HashMap<i64, Instant>,
    /// The newest committed changes, oldest first, so a resume needs neither
    /// SQL nor JSON parsing.
    recent: VecDeque<Arc<Change>>,
    /// When the revocation watch last looked.
    revocations_seen: String,
    /// Subscribe replies since the last commit, by topic and resume position.
    replies: HashMap<(Topic, Option<i64>), Arc<RawValue>>,
}

impl Db {
    pub fn new(
        opened: Opened,
        hub: Arc<Hub>,
        tokens: Arc<TokenCache>,
        metrics: Arc<Metrics>,
        config: DbConfig,
    ) -> Result<Db, String> {
        let Opened {
            mut conn,
            position,
            floor,
        } = opened;
        let now = Instant::now();
        let seen = q::list_agents(&mut conn)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|a| (a.id, now))
            .collect();
        let from = (position.seq() - config.recent_changes as i64).max(floor);
        let recent = q::changes_since(&mut conn, from, i64::MAX, None, config.recent_changes as i64)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|row| logic::change_of_row(row).map(Arc::new))
            .collect::<Result<VecDeque<_>, _>>()
            .map_err(|e| e.message)?;
        Ok(Db {
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
            beats: HashMap::new(),
            tasks: TaskRows::default(),
            dirty: HashSet::new(),
            seen,
            recent,
            replies: HashMap::new(),
            revocations_seen: String::new(),
        })
    }

    fn enqueue(&mut self, job: Job, ctx: &mut Context<Self>) {
        self.pending.push(job);
        self.metrics.db_mailbox.set(self.pending.len() as i64);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // `notify` runs after the mailbox is drained: that is the batch.
            ctx.notify(Flush);
        }
    }

    /// Commits every pending job in one transaction and answers them.
    fn flush(&mut self) {
        self.flush_scheduled = false;
        let jobs = std::mem::take(&mut self.pending);
        // Any write, even a heartbeat, may change what a subscribe answers.
        self.replies.clear();
        self.metrics.db_mailbox.set(0);
        if jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        let start_seq = self.seq;
        let mut seq = start_seq;
        let mut results: Vec<Result<Outcome, ApiError>> = Vec::with_capacity(jobs.len());
        // Undone if the batch fails: calls answered with an error leave no trace.
        let beats_before = self.beats.clone();
        let beats = &mut self.beats;
        let tasks = &mut self.tasks;
        let now = logic::now();
        let committed = self.conn.immediate_transaction::<_, ApiError, _>(|conn| {
            tasks.follow(q::data_version(conn)?);
            for job in &jobs {
                let before = seq;
                // No savepoint per write: `logic` checks every rule before its
                // first write, so a call refused by a rule wrote nothing. Any
                // other failure may have written half a call, so it fails the
                // whole batch.
                let mut ctx = WriteCtx {
                    seq: &mut seq,
                    beats,
                    tasks,
                    now: now.clone(),
                };
                let result = match job {
                    Job::Call { principal, call, .. } => logic::execute(conn, &mut ctx, principal, call),
                    Job::Offline(id) => logic::mark_offline(conn, &mut ctx, *id),
                };
                match result {
                    Err(e) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal) => return Err(e),
                    Err(e) => {
                        seq = before;
                        results.push(Err(e));
                    }
                    Ok(o) => results.push(Ok(o)),
                }
            }
            Ok(())
        });
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(jobs.len() as f64);
        if let Err(e) = committed {
            self.beats = beats_before;
            // Rows saved by the batch were rolled back with it.
            self.tasks.clear();
            let overdue = Instant::now()
                .checked_sub(self.config.heartbeat_timeout)
                .unwrap_or_else(Instant::now);
            for job in jobs {
                match job {
                    Job::Call { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    // Still overdue: the next sweep tries again.
                    Job::Offline(id) => {
                        self.seen.insert(id, overdue);
                    }
                }
            }
            return;
        }
        self.seq = seq;
        self.position.seq.store(seq, Ordering::Release);
        let mut items = Vec::new();
        let mut revoked = Vec::new();
        let mut answers = Vec::with_capacity(jobs.len());
        for (job, result) in jobs.into_iter().zip(results) {
            let answer = result.map(|out| {
                // One copy of each change, shared by the resume memory and
                // the Registry.
                for change in out.changes.into_iter().map(Arc::new) {
                    if self.recent.len() >= self.config.recent_changes {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(change.clone());
                    items.push(Published::Change(change));
                }
                if let Some((agent_id, at)) = out.heartbeat {
                    self.dirty.insert(agent_id);
                    self.seen.insert(agent_id, Instant::now());
                    items.push(Published::Heartbeat { agent_id, at });
                }
                if let Some(id) = out.new_agent {
                    self.seen.insert(id, Instant::now());
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
        self.metrics.change_log_len.add(seq - start_seq);
        // Revoked tokens are gone before their revoker hears so.
        self.forget_tokens(revoked);
        // Replies before events (the two have no fixed order, see
        // docs/protocol.md): a reply sent after the publish waited on the
        // writer's thread behind that thread's share of the subscribers' events
        // (acks at about 70 ms at the median with 10,000 subscribers, about
        // 1 ms since).
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        if !items.is_empty() {
            self.hub.publish(items, &self.metrics);
        }
    }

    /// Writes heartbeat times kept in memory, in one transaction.
    fn flush_beats(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let beats: Vec<(i64, String)> = self
            .dirty
            .iter()
            .filter_map(|id| self.beats.get(id).map(|at| (*id, at.clone())))
            .collect();
        let written = self
            .conn
            .immediate_transaction(|conn| q::write_heartbeats(conn, &beats));
        match written {
            Ok(()) => self.dirty.clear(),
            Err(e) => log::warn!("heartbeat times not written yet: {e}"),
        }
    }

    /// Queues agents that stopped heartbeating to go offline.
    fn sweep_offline(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.config.heartbeat_timeout;
        let late: Vec<i64> = self
            .seen
            .iter()
            .filter(|(_, t)| t.elapsed() >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            // Until it heartbeats again there is nothing more to check.
            self.seen.remove(&id);
            self.enqueue(Job::Offline(id), ctx);
        }
    }

    /// Prunes the change log by count and age, and old op_ids.
    fn prune(&mut self) {
        let max_age = chrono::Duration::from_std(self.config.log_max_age).unwrap_or(chrono::TimeDelta::MAX);
        let cutoff = (chrono::Utc::now() - max_age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let op_age = chrono::Duration::from_std(self.config.op_keep).unwrap_or(chrono::TimeDelta::MAX);
        let op_cutoff = (chrono::Utc::now() - op_age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let keep = self.config.log_keep;
        let result = self.conn.immediate_transaction::<_, diesel::result::Error, _>(|conn| {
            let cut = q::prune_changes(conn, keep, &cutoff)?;
            if let Some(cut) = cut {
                q::set_meta(conn, "pruned_through", &cut.to_string())?;
            }
            q::prune_ops(conn, &op_cutoff)?;
            q::prune_web_sessions(conn, &logic::now())?;
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

    /// The reply data of a subscribe: a snapshot, or the missed changes.
    fn subscribe(&mut self, topic: &Topic, resume: Option<&Position>) -> Result<Box<RawValue>, ApiError> {
        let epoch = self.position.epoch.clone();
        if let Some(pos) = resume {
            let same_db = pos.epoch.as_deref() == Some(epoch.as_str());
            if same_db && pos.since <= self.seq && pos.since >= self.floor {
                let filter = topic.filter();
                let limit = self.config.max_replay as usize;
                let missed = match self.recent.front() {
                    // Everything after `since` is in memory.
                    Some(first) if first.seq <= pos.since + 1 => Some(
                        self.recent
                            .iter()
                            .skip((pos.since + 1 - first.seq) as usize)
                            .filter(|c| topic.matches(c.entity, c.entity_id))
                            .take(limit + 1)
                            .cloned()
                            .collect::<Vec<_>>(),
                    ),
                    _ if pos.since == self.seq => Some(Vec::new()),
                    // Too far back to look through on the writer's thread: a
                    // snapshot is cheaper than the scan.
                    _ if self.seq - pos.since > self.config.log_scan_window => None,
                    _ => Some(
                        q::changes_since(&mut self.conn, pos.since, self.seq, Some(filter), limit as i64 + 1)?
                            .into_iter()
                            .map(|r| logic::change_of_row(r).map(Arc::new))
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                };
                if let Some(missed) = missed.filter(|m| m.len() <= limit) {
                    if missed.is_empty() && filter.1.is_some() && self.snapshot(topic)?.is_none() {
                        return Err(ApiError::not_found(format!("{topic} does not exist")));
                    }
                    let events: Vec<_> = missed.iter().map(|c| c.frame(topic)).collect();
                    return SubscribeReply::text(topic, &epoch, self.seq, Some(&events), None);
                }
            }
        }
        let snapshot = self
            .snapshot(topic)?
            .ok_or_else(|| ApiError::not_found(format!("{topic} does not exist")))?;
        SubscribeReply::text(topic, &epoch, self.seq, None, Some(&snapshot))
    }

    /// The current state of a topic; `None` for a single entity that does not exist.
    fn snapshot(&mut self, topic: &Topic) -> Result<Option<Value>, ApiError> {
        Ok(match topic {
            Topic::Tasks => Some(Value::Array(logic::list_tasks(&mut self.conn, None, None)?)),
            Topic::Agents => Some(Value::Array(logic::list_agents(&mut self.conn, &self.beats)?)),
            Topic::Task(id) => logic::get_task(&mut self.conn, *id)?,
            Topic::Agent(id) => logic::get_agent(&mut self.conn, &self.beats, *id)?,
        })
    }

    fn read(&mut self, read: Read) -> Result<Value, ApiError> {
        let epoch = self.position.epoch.clone();
        let seq = self.seq;
        match read {
            Read::Tasks { status, assignee_id } => {
                let items = logic::list_tasks(&mut self.conn, status.as_deref(), assignee_id)?;
                Ok(json!({"epoch": epoch, "seq": seq, "items": items}))
            }
            Read::Agents => {
                let items = logic::list_agents(&mut self.conn, &self.beats)?;
                Ok(json!({"epoch": epoch, "seq": seq, "items": items}))
            }
            Read::Task(id) => {
                logic::get_task(&mut self.conn, id)?.ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
            }
            Read::Agent(id) => logic::get_agent(&mut self.conn, &self.beats, id)?
                .ok_or_else(|| ApiError::not_found(format!("agent {id} not found"))),
        }
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
            .map(logic::change_of_row)
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

    fn tokens(&mut self, msg: Tokens) -> Result<Value, ApiError> {
        match msg {
            Tokens::Create {
                by,
                role,
                name,
                agent_id,
            } => {
                authorize(&by, Action::ManageTokens)?;
                let (created, hash, principal) = self
                    .conn
                    .immediate_transaction(|conn| logic::create_token(conn, &role, &name, agent_id))?;
                self.tokens.insert(hash, principal);
                Ok(created)
            }
            Tokens::List { by } => {
                authorize(&by, Action::ManageTokens)?;
                let items: Vec<Value> = q::list_tokens(&mut self.conn)?
                    .iter()
                    .map(models::TokenRow::to_json)
                    .collect();
                Ok(json!({ "items": items }))
            }
            Tokens::Revoke { by, id } => {
                authorize(&by, Action::ManageTokens)?;
                self.conn.immediate_transaction(|conn| logic::revoke_token(conn, id))?;
                self.forget_tokens(vec![id]);
                Ok(json!({}))
            }
            Tokens::Login { by } => {
                let secret = auth::generate_token();
                let hash = auth::hash_token(&secret);
                let now = logic::now();
                let expires = (chrono::Utc::now() + chrono::Duration::days(WEB_SESSION_DAYS))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                self.conn
                    .immediate_transaction(|conn| q::insert_web_session(conn, &hash, by.token_id, &now, &expires))?;
                self.tokens.insert_session(hash, by.token_id, expires);
                Ok(json!({"secret": secret, "max_age": WEB_SESSION_DAYS * 24 * 3600}))
            }
            Tokens::Logout { secret } => {
                let hash = auth::hash_token(&secret);
                self.conn
                    .immediate_transaction(|conn| q::delete_web_session(conn, &hash))?;
                self.tokens.remove_session(&hash);
                Ok(json!({}))
            }
        }
    }

    /// Closes the sockets of tokens revoked in the file by someone else (the
    /// command line), so revocation takes effect within a second either way.
    fn watch_revocations(&mut self) {
        // Only revocations since the last look (a little overlap is harmless:
        // tokens no longer cached are skipped).
        let now = logic::now();
        let Ok(ids) = q::revoked_token_ids_since(&mut self.conn, &self.revocations_seen) else {
            return;
        };
        self.revocations_seen = now;
        let newly: Vec<i64> = ids.into_iter().filter(|id| self.tokens.has_token(*id)).collect();
        self.forget_tokens(newly);
    }

    /// Drops revoked tokens from the cache and closes their sockets (1008).
    fn forget_tokens(&mut self, token_ids: Vec<i64>) {
        if token_ids.is_empty() {
            return;
        }
        for id in &token_ids {
            self.tokens.remove_token(*id);
        }
        self.hub.close_tokens(token_ids, 1008, "token revoked");
    }
}

impl Actor for Db {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.prune();
        ctx.run_interval(Duration::from_secs(1), |db, _| db.flush_beats());
        ctx.run_interval(Duration::from_millis(500), |db, _| db.watch_revocations());
        let sweep = (self.config.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(sweep, |db, ctx| db.sweep_offline(ctx));
        ctx.run_interval(Duration::from_secs(60), |db, _| db.prune());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flush();
        self.flush_beats();
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

impl Handler<Flush> for Db {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<Subscribe> for Db {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        // Clients that (re)subscribe alike between two commits, as after a
        // restart, share one reply: it is read and serialized once.
        let same_db = msg
            .resume
            .as_ref()
            .is_some_and(|p| p.epoch.as_deref() == Some(self.position.epoch.as_str()));
        let key = (
            msg.topic.clone(),
            msg.resume.as_ref().filter(|_| same_db).map(|p| p.since),
        );
        let result = match self.replies.get(&key) {
            Some(data) => Ok(data.clone()),
            None => self.subscribe(&msg.topic, msg.resume.as_ref()).map(|raw| {
                let raw: Arc<RawValue> = Arc::from(raw);
                if self.replies.len() >= 256 {
                    self.replies.clear();
                }
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

impl Handler<Read> for Db {
    type Result = Result<Value, ApiError>;
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

impl Handler<Tokens> for Db {
    type Result = Result<Value, ApiError>;
    fn handle(&mut self, msg: Tokens, _: &mut Context<Self>) -> Self::Result {
        self.tokens(msg)
    }
}

impl Handler<Drain> for Db {
    type Result = ();
    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.flush();
        self.flush_beats();
        self.draining = true;
    }
}
