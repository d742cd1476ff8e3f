//! Window topics (`tasks?limit=50&order=-updated_at&status=done`): the first
//! `limit` matching tasks by `order`, kept live by the writer.
//!
//! Why the writer: a task leaving a full window lets the next one in, and
//! which task is next is a question for the database *at that change's seq*.
//! Only the writer sees the file at every seq: each change is computed here
//! right after its own statements, inside the call's savepoint
//! ([`super::rules::WriteCtx::record`]), so the query sees exactly the state
//! the change made, and nothing of later calls of the batch. For the same
//! reason the writer answers window subscribes itself (between batches, at
//! its committed seq): the window then exists, with the reply's content, from
//! that seq on, and every later change is computed against it. A reader
//! could answer a snapshot at a seq the writer never computed a window for.
//!
//! A call that fails after touching a window reloads that window from the
//! file once its savepoint is rolled back; a batch that fails reloads all.
//! Events reach the windows' memory (for resumes) only once committed.
//!
//! The window is a prefix of the matching tasks in order, held with each
//! task's JSON; `exhausted` says it holds every matching task. Between
//! changes, it holds `limit` tasks or is exhausted, so only a task leaving a
//! full window costs a query (one task, after the window's last).

use diesel::sqlite::SqliteConnection;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queries as q;
use crate::error::ApiError;
use crate::filter::{Filter, SortKey, Window};
use crate::model::{ChangeKind, Entity};
use crate::protocol::{raw, Change, Position, Topic};

/// Event groups kept per window for resumes (one group per change).
const RECENT: usize = 1024;

/// Windows kept with no subscriber at most; past it the longest idle go.
const IDLE_MAX: usize = 64;

/// The events one change made on one window, in the order to apply them.
#[derive(Debug)]
pub struct WindowEvents {
    pub topic: Topic,
    pub seq: i64,
    /// Each event frame's text.
    pub frames: Vec<Arc<RawValue>>,
}

struct Row {
    key: SortKey,
    data: Arc<RawValue>,
}

struct Win {
    filter: Arc<Filter>,
    window: Window,
    rows: Vec<Row>,
    exhausted: bool,
    /// Successful subscribes not yet left.
    subscribers: usize,
    /// The events of the newest changes, for resumes of positions in
    /// (`covered_from`, now].
    recent: VecDeque<(i64, Vec<Arc<RawValue>>)>,
    covered_from: i64,
    /// Changed by the call in progress.
    touched: bool,
    /// Since when it has had no subscriber.
    idle_since: Option<Instant>,
}

impl Win {
    fn load(conn: &mut SqliteConnection, filter: &Filter, window: Window) -> Result<(Vec<Row>, bool), ApiError> {
        let tasks = q::list_tasks(conn, Some(filter), None)?;
        let exhausted = tasks.len() < window.limit as usize;
        let rows = tasks
            .iter()
            .map(|t| {
                let data = t.to_raw();
                let key = window
                    .order
                    .key_of(&data)
                    .ok_or_else(|| ApiError::internal("a task without its keys"))?;
                Ok(Row { key, data })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok((rows, exhausted))
    }

    fn reload(&mut self, conn: &mut SqliteConnection) -> Result<(), ApiError> {
        (self.rows, self.exhausted) = Win::load(conn, &self.filter, self.window)?;
        self.touched = false;
        Ok(())
    }

    /// Applies a task change; returns the window's events for it.
    fn apply(
        &mut self,
        conn: &mut SqliteConnection,
        topic: &Topic,
        c: &Change,
    ) -> Result<Vec<Arc<RawValue>>, ApiError> {
        let (order, limit) = (self.window.order, self.window.limit as usize);
        let x = c.entity_id;
        let was = self.rows.iter().position(|r| r.key.id == x);
        if let Some(i) = was {
            self.rows.remove(i);
        }
        let now = (c.kind != ChangeKind::Deleted
            && self
                .filter
                .matches_json(&serde_json::from_str(c.data.get()).map_err(ApiError::internal)?))
        .then(|| order.key_of(&c.data))
        .flatten();
        let mut touched = was.is_some();
        if let Some(key) = now {
            let fits = self.exhausted
                || self
                    .rows
                    .last()
                    .is_some_and(|l| order.cmp(&key, &l.key) == std::cmp::Ordering::Less);
            if fits {
                let at = self
                    .rows
                    .partition_point(|r| order.cmp(&r.key, &key) == std::cmp::Ordering::Less);
                self.rows.insert(
                    at,
                    Row {
                        key,
                        data: c.data.clone(),
                    },
                );
                touched = true;
            }
        }
        let popped = if self.rows.len() > limit {
            self.exhausted = false;
            self.rows.pop()
        } else {
            None
        };
        let mut filled = Vec::new();
        if self.rows.len() < limit && !self.exhausted {
            let need = limit - self.rows.len();
            let mut next = (*self.filter).clone();
            if let Filter::Tasks { window, .. } = &mut next {
                *window = Some(Window {
                    limit: need as u32,
                    order,
                });
            }
            let after = self.rows.last().map(|r| r.key.clone());
            let got = q::list_tasks(conn, Some(&next), after.as_ref())?;
            self.exhausted = got.len() < need;
            for t in got {
                let data = t.to_raw();
                let key = order
                    .key_of(&data)
                    .ok_or_else(|| ApiError::internal("a task without its keys"))?;
                filled.push((t.id, data.clone()));
                self.rows.push(Row { key, data });
            }
            touched = true;
        }
        self.touched |= touched;
        if !touched {
            return Ok(Vec::new());
        }
        let is_in = self.rows.iter().any(|r| r.key.id == x);
        let gone = raw(&serde_json::json!({ "id": x }));
        let frame = |event: &str, changed: &[String], data: &RawValue| -> Result<Arc<RawValue>, ApiError> {
            let text = c.window_event(topic, event, changed, data);
            Ok(Arc::from(RawValue::from_string(text).map_err(ApiError::internal)?))
        };
        let mut frames = Vec::new();
        if let Some(p) = popped.filter(|p| p.key.id != x) {
            frames.push(frame("task.left", &[], &raw(&serde_json::json!({ "id": p.key.id })))?);
        }
        match (was.is_some(), is_in) {
            (true, true) => frames.push(frame("task.updated", &c.changed, &c.data)?),
            (true, false) if c.kind == ChangeKind::Deleted => frames.push(frame("task.deleted", &[], &gone)?),
            (true, false) => frames.push(frame("task.left", &c.changed, &gone)?),
            (false, true) if c.kind == ChangeKind::Created => frames.push(frame("task.created", &c.changed, &c.data)?),
            (false, true) => frames.push(frame("task.entered", &c.changed, &c.data)?),
            (false, false) => {}
        }
        for (_, data) in filled.iter().filter(|(id, _)| *id != x) {
            frames.push(frame("task.entered", &[], data)?);
        }
        Ok(frames)
    }
}

/// A window subscribe the writer counted, on its way to its session: the
/// session keeps it (and tells the writer when it leaves the topic); if the
/// answer is dropped instead (the session is gone or closing), the writer
/// is told at once, so no window outlives its subscribers.
pub struct WindowTicket {
    topic: Option<Topic>,
    db: actix::Addr<super::Db>,
}

impl WindowTicket {
    pub fn new(topic: Topic, db: actix::Addr<super::Db>) -> Self {
        WindowTicket { topic: Some(topic), db }
    }

    /// The session counts the subscribe now.
    pub fn keep(mut self) {
        self.topic = None;
    }
}

impl Drop for WindowTicket {
    fn drop(&mut self) {
        if let Some(topic) = self.topic.take() {
            self.db.do_send(super::LeaveWindow { topic, subscribes: 1 });
        }
    }
}

/// The window topics someone holds, on the writer.
#[derive(Default)]
pub struct Windows {
    active: HashMap<Topic, Win>,
}

/// A window subscribe's reply data.
#[derive(Serialize)]
struct Reply<'a> {
    topic: String,
    epoch: &'a str,
    seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<&'a RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<Vec<&'a RawValue>>,
}

impl Windows {
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The events of a change on every window, computed against the file as
    /// the change left it.
    pub fn apply(&mut self, conn: &mut SqliteConnection, c: &Change) -> Result<Vec<WindowEvents>, ApiError> {
        if c.entity != Entity::Task {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (topic, win) in &mut self.active {
            let frames = win.apply(conn, topic, c)?;
            if !frames.is_empty() {
                out.push(WindowEvents {
                    topic: topic.clone(),
                    seq: c.seq,
                    frames,
                });
            }
        }
        Ok(out)
    }

    /// The call in progress committed its savepoint.
    pub fn keep_call(&mut self) {
        for w in self.active.values_mut() {
            w.touched = false;
        }
    }

    /// The call in progress was rolled back: the windows it changed are read
    /// again (the file is as before the call).
    pub fn roll_back_call(&mut self, conn: &mut SqliteConnection) -> Result<(), ApiError> {
        for w in self.active.values_mut().filter(|w| w.touched) {
            w.reload(conn)?;
        }
        Ok(())
    }

    /// The batch was rolled back: every window is read again.
    pub fn reload_all(&mut self, conn: &mut SqliteConnection) {
        for (topic, w) in &mut self.active {
            if let Err(e) = w.reload(conn) {
                log::error!("window {topic} could not be read again: {e}");
            }
        }
    }

    /// Committed events, kept for resumes.
    pub fn committed(&mut self, events: &WindowEvents) {
        if let Some(w) = self.active.get_mut(&events.topic) {
            if w.recent.len() >= RECENT {
                if let Some((seq, _)) = w.recent.pop_front() {
                    w.covered_from = seq;
                }
            }
            w.recent.push_back((events.seq, events.frames.clone()));
        }
    }

    /// A subscribe of a window topic, at the committed `seq`: the window's
    /// tasks (by id), or the events after a resumed position if this window
    /// has been kept since then. The window lives while it has subscribers.
    pub fn subscribe(
        &mut self,
        conn: &mut SqliteConnection,
        topic: &Topic,
        resume: Option<&Position>,
        epoch: &str,
        seq: i64,
    ) -> Result<Arc<RawValue>, ApiError> {
        let Topic::Filtered(filter) = topic else {
            return Err(ApiError::internal("not a window topic"));
        };
        let window = filter
            .window()
            .ok_or_else(|| ApiError::internal("not a window topic"))?;
        if !self.active.contains_key(topic) {
            let (rows, exhausted) = Win::load(conn, filter, window)?;
            self.active.insert(
                topic.clone(),
                Win {
                    filter: filter.clone(),
                    window,
                    rows,
                    exhausted,
                    subscribers: 0,
                    recent: VecDeque::new(),
                    covered_from: seq,
                    touched: false,
                    idle_since: None,
                },
            );
        }
        let w = self.active.get_mut(topic).expect("inserted above");
        w.subscribers += 1;
        w.idle_since = None;
        let since = resume
            .filter(|p| p.epoch.as_deref() == Some(epoch))
            .map(|p| p.since)
            .filter(|s| (w.covered_from..=seq).contains(s));
        let mut reply = Reply {
            topic: topic.to_string(),
            epoch,
            seq,
            events: None,
            snapshot: None,
        };
        match since {
            Some(since) => {
                reply.events = Some(
                    w.recent
                        .iter()
                        .filter(|(s, _)| *s > since)
                        .flat_map(|(_, frames)| frames.iter().map(|f| &**f))
                        .collect(),
                )
            }
            None => {
                let mut rows: Vec<&Row> = w.rows.iter().collect();
                rows.sort_by_key(|r| r.key.id);
                reply.snapshot = Some(rows.into_iter().map(|r| &*r.data).collect());
            }
        }
        Ok(Arc::from(
            serde_json::value::to_raw_value(&reply).map_err(ApiError::internal)?,
        ))
    }

    /// Subscribes of a window left (unsubscribed, or their socket closed).
    /// A window left by all is kept for `linger` (see [`Windows::drop_idle`]):
    /// a page reloaded, or come back to, finds it in memory, not a query.
    pub fn leave(&mut self, topic: &Topic, n: usize, linger: Duration) {
        if let Some(w) = self.active.get_mut(topic) {
            w.subscribers = w.subscribers.saturating_sub(n);
            if w.subscribers == 0 && linger.is_zero() {
                self.active.remove(topic);
            } else if w.subscribers == 0 && w.idle_since.is_none() {
                w.idle_since = Some(Instant::now());
            }
        }
    }

    /// Drops the windows idle for longer than `linger`, and the longest idle
    /// past [`IDLE_MAX`] of them.
    pub fn drop_idle(&mut self, linger: Duration) {
        self.active
            .retain(|_, w| w.idle_since.is_none_or(|t| t.elapsed() < linger));
        let mut idle: Vec<(Instant, Topic)> = self
            .active
            .iter()
            .filter_map(|(topic, w)| w.idle_since.map(|t| (t, topic.clone())))
            .collect();
        if idle.len() > IDLE_MAX {
            idle.sort_by_key(|(t, _)| *t);
            for (_, topic) in &idle[..idle.len() - IDLE_MAX] {
                self.active.remove(topic);
            }
        }
    }
}
