//! The Registry: which session is subscribed to which topic. There is one
//! Registry per HTTP worker thread, for the sessions that thread serves; the
//! Db actor publishes every group commit, in seq order, to all of them through
//! the [`Hub`]. A Registry encodes each event frame once (shared by every
//! Registry through the [`Batch`]) and writes it straight into the
//! subscribers' outboxes, on their own thread: no message, no copy and no
//! wake-up of another thread per subscriber. It never touches the database.

use actix::prelude::*;
use actix::WeakAddr;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::db::windows::WindowEvents;
use crate::metrics::Metrics;
use crate::peer::{text_frame, Peer, Pushed};
use crate::protocol::{heartbeat_event, Change, Entity, Topic};

/// Asks a session to close, with a WebSocket close code and reason.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: u16,
    pub reason: &'static str,
}

/// Adds a session to a topic. Sent by the Db actor to the session's Registry
/// before the subscribe reply, and before any later change, so the join lands
/// between the snapshot's seq and the next change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub session_id: u64,
    pub topic: Topic,
    /// The session's number for this subscribe.
    pub generation: u64,
}

/// Removes a session from a topic. Sent through the mailbox, so it comes after
/// any Join the Db actor sent before it.
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
    /// A change's events on one window topic (see `crate::db::windows`).
    Window(Arc<WindowEvents>),
    Heartbeat {
        agent_id: i64,
        at: String,
    },
}

/// Committed changes and heartbeats of one group commit, in seq order, with
/// their event frames, encoded by the first Registry that needs them.
pub struct Batch {
    items: Vec<Published>,
    /// For each item, the frame on each of its two topics.
    frames: Vec<[OnceLock<Bytes>; 2]>,
    /// For each filtered topic some Registry has subscribers of, each item's
    /// frame on it, if the topic hears of it: one evaluation of the filter
    /// per topic and change, shared by every thread and subscriber.
    filtered: Mutex<HashMap<Topic, Arc<[Option<Bytes>]>>>,
}

impl Batch {
    pub fn new(items: Vec<Published>) -> Self {
        let frames = items.iter().map(|_| Default::default()).collect();
        Batch {
            items,
            frames,
            filtered: Mutex::default(),
        }
    }

    /// Each item's frame on a filtered topic (heartbeats are not sent on
    /// filtered topics), computed by the first Registry that asks.
    fn filtered_frames(&self, topic: &Topic) -> Arc<[Option<Bytes>]> {
        if let Some(frames) = self.filtered.lock().expect("batch lock").get(topic) {
            return frames.clone();
        }
        let frames: Arc<[Option<Bytes>]> = self
            .items
            .iter()
            .map(|item| match item {
                Published::Change(c) => c.event_text(topic).map(|text| text_frame(&text)),
                Published::Heartbeat { .. } | Published::Window(_) => None,
            })
            .collect();
        let mut all = self.filtered.lock().expect("batch lock");
        all.entry(topic.clone()).or_insert(frames).clone()
    }

    fn seq(&self, i: usize) -> Option<i64> {
        match &self.items[i] {
            Published::Change(c) => Some(c.seq),
            Published::Heartbeat { .. } | Published::Window(_) => None,
        }
    }

    /// The item's two topics and its seq (none for a heartbeat; a window's
    /// events go to their one topic, see [`Shard::publish`]).
    fn topics(&self, i: usize) -> Option<([Topic; 2], Option<i64>)> {
        match &self.items[i] {
            Published::Change(c) => Some((Topic::for_entity(c.entity, c.entity_id), Some(c.seq))),
            Published::Heartbeat { agent_id, .. } => Some((Topic::for_entity(Entity::Agent, *agent_id), None)),
            Published::Window(_) => None,
        }
    }

    /// A window's events of one change: their frames back to back, so a
    /// subscriber takes all of them (one seq) or none.
    fn window_frames(&self, i: usize, w: &WindowEvents) -> &Bytes {
        self.frames[i][0].get_or_init(|| {
            let mut all = bytes::BytesMut::new();
            for f in &w.frames {
                all.extend_from_slice(&text_frame(f.get()));
            }
            all.freeze()
        })
    }

    /// True unless the item is a change `topic` does not receive (a note, on
    /// the collection topic).
    fn goes_to(&self, i: usize, topic: &Topic) -> bool {
        match &self.items[i] {
            Published::Change(c) => topic.receives(c),
            Published::Heartbeat { .. } | Published::Window(_) => true,
        }
    }

    /// The item's frame on its `j`th topic, encoded on first use.
    fn frame(&self, i: usize, j: usize, topic: &Topic) -> &Bytes {
        self.frames[i][j].get_or_init(|| match &self.items[i] {
            Published::Change(c) => text_frame(&c.event_text(topic).expect("a change's own topics hear of it")),
            Published::Heartbeat { agent_id, at } => text_frame(&heartbeat_event(topic, *agent_id, at).to_string()),
            Published::Window(_) => unreachable!("a window's frames are made by window_frames"),
        })
    }
}

/// A group commit for every Registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub batch: Arc<Batch>,
}

/// Closes every open socket of these tokens (they were revoked).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseTokens {
    pub token_ids: Arc<[i64]>,
    pub code: u16,
    pub reason: &'static str,
}

/// Closes every open socket (the server is shutting down); answers how many.
#[derive(Message, Clone)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub code: u16,
    pub reason: &'static str,
}

/// A Registry as other threads reach it.
#[derive(Clone)]
pub struct RegistryHandle {
    pub addr: Addr<Registry>,
    /// Subscriptions held plus joins on their way: while it is 0, the
    /// Registry has no one to publish to, and its thread is not woken.
    listeners: Arc<AtomicUsize>,
}

impl RegistryHandle {
    /// Joins a session to a topic. Counted here, before the subscribe's read
    /// starts, so no publish of a change committed after that read can skip
    /// this Registry.
    pub fn join(&self, session_id: u64, topic: Topic, generation: u64) {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        self.addr.do_send(Join {
            session_id,
            topic,
            generation,
        });
    }
}

/// Every thread's Registry, for the Db actor and the shutdown.
#[derive(Default)]
pub struct Hub {
    /// Weak: a Registry lives as long as its thread's App and sessions hold
    /// it, so one whose worker restarted its service is dropped from here.
    registries: Mutex<Vec<(WeakAddr<Registry>, Arc<AtomicUsize>)>>,
}

impl Hub {
    fn registries(&self) -> Vec<RegistryHandle> {
        let mut all = self.registries.lock().expect("hub lock");
        let mut live = Vec::with_capacity(all.len());
        all.retain(|(weak, listeners)| match weak.upgrade() {
            Some(addr) if addr.connected() => {
                live.push(RegistryHandle {
                    addr,
                    listeners: listeners.clone(),
                });
                true
            }
            _ => false,
        });
        live
    }

    /// Sends one group commit to every Registry that has subscribers.
    pub fn publish(&self, items: Vec<Published>, metrics: &Metrics) {
        let changes = items.iter().filter(|i| matches!(i, Published::Change(_))).count();
        metrics.events_published.inc_by(changes as u64);
        let listening: Vec<_> = self
            .registries()
            .into_iter()
            .filter(|r| r.listeners.load(Ordering::SeqCst) > 0)
            .collect();
        if listening.is_empty() {
            return;
        }
        let batch = Arc::new(Batch::new(items));
        for r in listening {
            r.addr.do_send(Publish { batch: batch.clone() });
        }
    }

    /// Closes the sockets of revoked tokens, on every thread.
    pub fn close_tokens(&self, token_ids: Vec<i64>, code: u16, reason: &'static str) {
        let msg = CloseTokens {
            token_ids: token_ids.into(),
            code,
            reason,
        };
        for r in self.registries() {
            r.addr.do_send(msg.clone());
        }
    }

    /// Closes every socket on every thread; returns how many there were.
    pub async fn close_all(&self, code: u16, reason: &'static str) -> usize {
        let asks = self
            .registries()
            .into_iter()
            .map(|r| r.addr.send(CloseAll { code, reason }));
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .map(|n| n.unwrap_or(0))
            .sum()
    }
}

/// The current thread's Registry, as its sessions reach it: its address for
/// messages that must keep their order with the Db actor's, and its state for
/// what they do at once (connect, disconnect).
#[derive(Clone)]
pub struct LocalRegistry {
    pub handle: RegistryHandle,
    shard: Rc<RefCell<Shard>>,
}

impl LocalRegistry {
    /// Starts a Registry on the current thread (an HTTP worker) and adds it
    /// to the hub.
    pub fn start(hub: &Hub, metrics: Arc<Metrics>) -> Self {
        let listeners = Arc::new(AtomicUsize::new(0));
        let shard = Rc::new(RefCell::new(Shard {
            topics: HashMap::new(),
            filtered: HashSet::new(),
            sessions: HashMap::new(),
            listeners: listeners.clone(),
            metrics,
        }));
        let addr = Registry { shard: shard.clone() }.start();
        let handle = RegistryHandle { addr, listeners };
        hub.registries
            .lock()
            .expect("hub lock")
            .push((handle.addr.downgrade(), handle.listeners.clone()));
        LocalRegistry { handle, shard }
    }

    /// A session opened: it can now be joined to topics and closed by token
    /// revocation or shutdown.
    pub fn connect(&self, peer: Rc<Peer>, token_id: i64, close: Recipient<CloseSession>) {
        self.shard.borrow_mut().sessions.insert(
            peer.id,
            SessionEntry {
                peer,
                token_id,
                close,
                topics: HashSet::new(),
            },
        );
    }

    /// A session stopped: forget it and all its subscriptions.
    pub fn disconnect(&self, session_id: u64) {
        let mut shard = self.shard.borrow_mut();
        if let Some(entry) = shard.sessions.remove(&session_id) {
            for topic in entry.topics {
                shard.leave(session_id, &topic);
            }
        }
    }
}

struct SessionEntry {
    peer: Rc<Peer>,
    token_id: i64,
    close: Recipient<CloseSession>,
    topics: HashSet<Topic>,
}

/// One thread's sessions and subscriptions.
struct Shard {
    topics: HashMap<Topic, HashMap<u64, Rc<Peer>>>,
    /// The filtered topics among `topics`: a change is matched against
    /// these only, so unfiltered topics pay nothing for them.
    filtered: HashSet<Topic>,
    sessions: HashMap<u64, SessionEntry>,
    /// Shared with the [`RegistryHandle`]: one per subscription held here.
    listeners: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Shard {
    /// A worker thread that stops takes its subscriptions with it.
    fn drop(&mut self) {
        for (topic, subs) in &self.topics {
            self.metrics
                .subscriptions
                .with_label_values(&[topic.kind()])
                .sub(subs.len() as i64);
        }
    }
}

impl Shard {
    fn leave(&mut self, session_id: u64, topic: &Topic) {
        if let Some(subs) = self.topics.get_mut(topic) {
            if subs.remove(&session_id).is_some() {
                self.listeners.fetch_sub(1, Ordering::Relaxed);
                self.metrics.subscriptions.with_label_values(&[topic.kind()]).dec();
            }
            if subs.is_empty() {
                self.topics.remove(topic);
                self.filtered.remove(topic);
            }
        }
    }

    fn publish(&self, batch: &Batch) {
        let mut delivered = 0;
        let mut slow = Vec::new();
        let mut deliver = |subs: &HashMap<u64, Rc<Peer>>, topic: &Topic, seq: Option<i64>, frame: &Bytes| {
            for peer in subs.values() {
                match peer.deliver(topic, seq, frame) {
                    Pushed::Queued => delivered += 1,
                    // Counted when the session writes them.
                    Pushed::Held | Pushed::Skipped => {}
                    Pushed::GaveUp => slow.push(peer.id),
                }
            }
        };
        for i in 0..batch.items.len() {
            let Some((topics, seq)) = batch.topics(i) else {
                if let Published::Window(w) = &batch.items[i] {
                    if let Some(subs) = self.topics.get(&w.topic) {
                        deliver(subs, &w.topic, Some(w.seq), batch.window_frames(i, w));
                    }
                }
                continue;
            };
            for (j, topic) in topics.iter().enumerate() {
                let Some(subs) = self.topics.get(topic) else {
                    continue;
                };
                if !batch.goes_to(i, topic) {
                    continue;
                }
                deliver(subs, topic, seq, batch.frame(i, j, topic));
            }
        }
        for topic in &self.filtered {
            let Some(subs) = self.topics.get(topic) else {
                continue;
            };
            let frames = batch.filtered_frames(topic);
            for (i, frame) in frames.iter().enumerate() {
                if let Some(frame) = frame {
                    deliver(subs, topic, batch.seq(i), frame);
                }
            }
        }
        self.metrics.events_delivered.inc_by(delivered);
        for id in slow {
            if let Some(entry) = self.sessions.get(&id) {
                entry.close.do_send(CloseSession {
                    code: 1013,
                    reason: "too slow to keep up; reconnect and resume",
                });
            }
        }
    }
}

/// The actor that receives, for one thread's sessions, what other threads send.
pub struct Registry {
    shard: Rc<RefCell<Shard>>,
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Join> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let mut shard = self.shard.borrow_mut();
        let shard = &mut *shard;
        // A session that already stopped must not be joined back in.
        let Some(entry) = shard.sessions.get_mut(&msg.session_id) else {
            shard.listeners.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        entry.peer.joined(&msg.topic, msg.generation);
        entry.topics.insert(msg.topic.clone());
        if matches!(msg.topic, Topic::Filtered(_)) && !msg.topic.is_window() {
            shard.filtered.insert(msg.topic.clone());
        }
        let kind = msg.topic.kind();
        if shard
            .topics
            .entry(msg.topic)
            .or_default()
            .insert(msg.session_id, entry.peer.clone())
            .is_none()
        {
            shard.metrics.subscriptions.with_label_values(&[kind]).inc();
        } else {
            // Already joined: the handle counted this join once more.
            shard.listeners.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Handler<Leave> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        let mut shard = self.shard.borrow_mut();
        if let Some(entry) = shard.sessions.get_mut(&msg.session_id) {
            entry.topics.remove(&msg.topic);
            entry.peer.left(&msg.topic);
        }
        shard.leave(msg.session_id, &msg.topic);
    }
}

impl Handler<Publish> for Registry {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        self.shard.borrow().publish(&msg.batch);
    }
}

impl Handler<CloseTokens> for Registry {
    type Result = ();
    fn handle(&mut self, msg: CloseTokens, _: &mut Context<Self>) {
        for entry in self.shard.borrow().sessions.values() {
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
        let shard = self.shard.borrow();
        for entry in shard.sessions.values() {
            entry.close.do_send(CloseSession {
                code: msg.code,
                reason: msg.reason,
            });
        }
        shard.sessions.len()
    }
}
