//! What a session shares with its thread's Registry: the socket's outbound
//! queue (the [`Outbox`]) and, for each subscribed topic, the seq of the last
//! event written. The Registry writes events straight into it, on the thread
//! that owns the socket, so an event costs no message and no copy per
//! subscriber; the session writes its replies into the same queue, so the
//! order the two are written in is the order the client reads.

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;

use crate::metrics::Metrics;
use crate::protocol::Topic;

/// Encodes one WebSocket text frame as the server sends it (unmasked), so it
/// can be shared by every socket it goes to.
pub fn text_frame(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 10);
    Parser::write_message(&mut buf, text, OpCode::Text, true, false);
    buf.freeze()
}

/// Where a subscription stands. Subscribes are numbered by the session
/// (generations); the Registry learns of one when the Db actor joins it, the
/// session when it writes its reply, and the two happen in either order.
#[derive(Default)]
struct Sub {
    /// The seq the client holds the topic at, once a reply made it live.
    last: Option<i64>,
    /// The newest subscribe whose reply was written.
    replied: u64,
    /// The newest subscribe the Registry joined.
    joined: u64,
    /// Events (and heartbeats) that came while a joined subscribe's reply
    /// was not written yet: they go out after it, those past its seq.
    held: Vec<(Option<i64>, Bytes)>,
}

impl Sub {
    /// Events wait for a reply that is on its way.
    fn holding(&self) -> bool {
        self.joined > self.replied
    }
}

/// The result of handing a frame to a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the socket.
    Queued,
    /// Held until the subscribe's reply is written.
    Held,
    /// Not for this peer (not subscribed, already sent, or closing).
    Skipped,
    /// The peer is too far behind: the frame was dropped and the socket must
    /// close with 1013. Returned once; later frames are `Skipped`.
    GaveUp,
}

/// One socket's outbound side.
pub struct Peer {
    pub id: u64,
    subs: RefCell<HashMap<Topic, Sub>>,
    outbox: RefCell<Outbox>,
    max_bytes: usize,
    max_frames: usize,
    /// Set once the socket began to close: nothing more is written.
    closed: Cell<bool>,
    /// Set once the peer was found too far behind.
    gave_up: Cell<bool>,
    metrics: Arc<Metrics>,
}

impl Peer {
    pub fn new(id: u64, max_bytes: usize, max_frames: usize, metrics: Arc<Metrics>) -> Self {
        Peer {
            id,
            subs: RefCell::new(HashMap::new()),
            outbox: RefCell::new(Outbox::default()),
            max_bytes,
            max_frames,
            closed: Cell::new(false),
            gave_up: Cell::new(false),
            metrics,
        }
    }

    /// Queues a reply or other frame. A reply larger than the bound still goes
    /// out to a peer that keeps up, so any snapshot can be had.
    pub fn send(&self, frame: Bytes) -> Pushed {
        self.push(frame, false)
    }

    /// Delivers an event of `topic` (a heartbeat has no seq): held while a
    /// subscribe's reply is on its way, written if the topic is live and the
    /// seq is past what the client holds, skipped otherwise.
    pub fn deliver(&self, topic: &Topic, seq: Option<i64>, frame: &Bytes) -> Pushed {
        if self.closed.get() {
            return Pushed::Skipped;
        }
        let mut subs = self.subs.borrow_mut();
        let Some(sub) = subs.get_mut(topic) else {
            return Pushed::Skipped;
        };
        if seq.is_some() && seq <= sub.last {
            // Already in the snapshot or sent: never twice.
            return Pushed::Skipped;
        }
        if sub.holding() {
            if sub.held.len() >= self.max_frames {
                drop(subs);
                log::info!(
                    "session {}: {} events wait for a subscribe's reply; closing it",
                    self.id,
                    self.max_frames
                );
                return self.give_up();
            }
            sub.held.push((seq, frame.clone()));
            return Pushed::Held;
        }
        if sub.last.is_none() {
            return Pushed::Skipped;
        }
        if seq.is_some() {
            sub.last = seq;
        }
        drop(subs);
        self.push(frame.clone(), true)
    }

    /// The Registry joined this peer to `topic` for subscribe `generation`:
    /// unless its reply is already written, events wait for it.
    pub fn joined(&self, topic: &Topic, generation: u64) {
        let mut subs = self.subs.borrow_mut();
        let sub = subs.entry(topic.clone()).or_default();
        sub.joined = sub.joined.max(generation);
    }

    /// The Registry took this peer off `topic`: drop what it held for a
    /// subscribe that never became live.
    pub fn left(&self, topic: &Topic) {
        let mut subs = self.subs.borrow_mut();
        if subs.get(topic).is_some_and(|s| s.last.is_none()) {
            subs.remove(topic);
        }
    }

    /// The session wrote the reply of subscribe `generation`, at `seq`: the
    /// topic is live from there, and once no newer joined subscribe waits for
    /// its reply, the events held meanwhile that are past it go out.
    pub fn subscribed(&self, topic: &Topic, generation: u64, seq: i64) -> Pushed {
        let (held, mut last) = {
            let mut subs = self.subs.borrow_mut();
            let sub = subs.entry(topic.clone()).or_default();
            sub.replied = sub.replied.max(generation);
            sub.last = sub.last.max(Some(seq));
            if sub.holding() {
                return Pushed::Held;
            }
            (std::mem::take(&mut sub.held), sub.last)
        };
        let mut written = 0;
        for (s, frame) in held {
            if s.is_some() {
                if s <= last {
                    continue;
                }
                last = s;
            }
            if self.push(frame, true) == Pushed::GaveUp {
                return Pushed::GaveUp;
            }
            written += 1;
        }
        self.metrics.events_delivered.inc_by(written);
        if let Some(sub) = self.subs.borrow_mut().get_mut(topic) {
            sub.last = sub.last.max(last);
        }
        Pushed::Queued
    }

    /// The session unsubscribed, or its subscribe failed: nothing more of
    /// `topic` is written.
    pub fn forget(&self, topic: &Topic) {
        self.subs.borrow_mut().remove(topic);
    }

    /// True if the client holds `topic` (a reply made it live).
    pub fn is_live(&self, topic: &Topic) -> bool {
        self.subs.borrow().get(topic).is_some_and(|s| s.last.is_some())
    }

    /// How many topics are live.
    pub fn live_count(&self) -> usize {
        self.subs.borrow().values().filter(|s| s.last.is_some()).count()
    }

    /// The socket began to close: nothing more is written.
    pub fn close(&self) {
        self.closed.set(true);
    }

    pub fn gave_up(&self) -> bool {
        self.gave_up.get()
    }

    /// The shared queue, for the session's response body and pump.
    pub fn outbox(&self) -> &RefCell<Outbox> {
        &self.outbox
    }

    /// Queues `frame`; an event (`counted`) must fit under the bound, any
    /// other frame only needs the queue to be under it.
    fn push(&self, frame: Bytes, counted: bool) -> Pushed {
        if self.closed.get() {
            return Pushed::Skipped;
        }
        let mut outbox = self.outbox.borrow_mut();
        let (bytes, frames) = (outbox.queued_bytes(), outbox.queued_frames());
        let over = if counted {
            bytes + frame.len() > self.max_bytes
        } else {
            bytes >= self.max_bytes
        };
        if over || frames >= self.max_frames {
            drop(outbox);
            log::info!(
                "session {} is {bytes} bytes and {frames} frames behind; closing it",
                self.id
            );
            return self.give_up();
        }
        outbox.push(frame, 1);
        Pushed::Queued
    }

    fn give_up(&self) -> Pushed {
        // What already waits stays: dropping it could leave the client a gap
        // before a later frame, and it resumes from the last event it read.
        self.closed.set(true);
        if self.gave_up.replace(true) {
            return Pushed::Skipped;
        }
        self.metrics.sockets_closed_slow.inc();
        Pushed::GaveUp
    }
}

/// The encoded frames the HTTP layer has not taken yet.
///
/// actix-web-actors runs the actor inside the response body stream, and the HTTP
/// layer stops polling that stream while the peer is not reading. So frames are
/// parked here, by the session, the Registry, and a pump task that drives the
/// actor all the time; the session keeps handling messages (and noticing that
/// it is behind) whatever the peer does.
#[derive(Default)]
pub struct Outbox {
    /// Encoded chunks, each with the number of frames it holds.
    chunks: VecDeque<(Bytes, usize)>,
    bytes: usize,
    frames: usize,
    /// Control frames the session handed its context that the pump has not
    /// parked yet.
    written: usize,
    done: bool,
    reader: Option<Waker>,
}

impl Outbox {
    /// Bytes waiting for the peer.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Frames waiting for the peer.
    pub fn queued_frames(&self) -> usize {
        self.frames + self.written
    }

    /// Counts a control frame the session hands to its context.
    pub fn wrote_frame(&mut self) {
        self.written += 1;
    }

    /// Parks a chunk from the context: it holds every control frame written
    /// since the last one, since the context encodes all it has on each poll.
    pub fn push_from_context(&mut self, chunk: Bytes) {
        let frames = std::mem::take(&mut self.written);
        self.push(chunk, frames);
    }

    fn push(&mut self, chunk: Bytes, frames: usize) {
        self.bytes += chunk.len();
        self.frames += frames;
        self.chunks.push_back((chunk, frames));
        self.wake();
    }

    /// The next chunk for the socket.
    pub fn pop(&mut self) -> Option<Bytes> {
        let (chunk, frames) = self.chunks.pop_front()?;
        self.bytes -= chunk.len();
        self.frames -= frames;
        Some(chunk)
    }

    /// The context ended: once the chunks are taken, the body ends.
    pub fn finish(&mut self) {
        self.done = true;
        self.wake();
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Wakes the body's reader when the next chunk is parked.
    pub fn wait(&mut self, waker: &Waker) {
        self.reader = Some(waker.clone());
    }

    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(max_frames: usize) -> Peer {
        Peer::new(1, 1 << 20, max_frames, Arc::new(Metrics::new()))
    }

    fn drain(p: &Peer) -> Vec<Bytes> {
        std::iter::from_fn(|| p.outbox().borrow_mut().pop()).collect()
    }

    fn ev(s: i64) -> Bytes {
        text_frame(&format!("e{s}"))
    }

    #[test]
    fn events_held_while_joining_go_out_after_the_reply_past_its_seq() {
        let p = peer(100);
        let t = Topic::Agents;
        assert_eq!(p.deliver(&t, Some(1), &ev(1)), Pushed::Skipped, "not joined yet");
        p.joined(&t, 1);
        for s in [2, 3, 4] {
            assert_eq!(p.deliver(&t, Some(s), &ev(s)), Pushed::Held);
        }
        let beat = text_frame("heartbeat");
        assert_eq!(p.deliver(&t, None, &beat), Pushed::Held);
        assert!(drain(&p).is_empty(), "nothing before the reply");
        p.send(text_frame("reply"));
        p.subscribed(&t, 1, 3);
        assert_eq!(drain(&p), vec![text_frame("reply"), ev(4), beat]);
        assert_eq!(p.deliver(&t, Some(4), &ev(4)), Pushed::Skipped, "never twice");
        assert_eq!(p.deliver(&t, Some(5), &ev(5)), Pushed::Queued);
        assert_eq!(drain(&p), vec![ev(5)]);
    }

    #[test]
    fn a_repeated_subscribe_of_a_live_topic_holds_events_until_its_reply() {
        let p = peer(100);
        let t = Topic::Tasks;
        p.joined(&t, 1);
        p.subscribed(&t, 1, 5);
        p.joined(&t, 2);
        assert_eq!(p.deliver(&t, Some(6), &ev(6)), Pushed::Held);
        assert_eq!(p.deliver(&t, Some(7), &ev(7)), Pushed::Held);
        assert!(p.is_live(&t));
        p.send(text_frame("reply at 6"));
        p.subscribed(&t, 2, 6);
        assert_eq!(drain(&p), vec![text_frame("reply at 6"), ev(7)]);
    }

    #[test]
    fn a_reply_before_its_join_makes_the_topic_live_at_its_seq() {
        let p = peer(100);
        let t = Topic::Task(7);
        p.subscribed(&t, 1, 10);
        p.joined(&t, 1);
        assert!(p.is_live(&t));
        assert_eq!(p.deliver(&t, Some(10), &text_frame("x")), Pushed::Skipped);
        assert_eq!(p.deliver(&t, Some(11), &text_frame("y")), Pushed::Queued);
        p.left(&t);
        assert!(p.is_live(&t), "a Leave only drops a subscribe that never went live");
        p.forget(&t);
        assert_eq!(p.deliver(&t, Some(12), &text_frame("z")), Pushed::Skipped);
    }

    #[test]
    fn an_older_reply_does_not_release_events_a_newer_subscribe_waits_for() {
        let p = peer(100);
        let t = Topic::Tasks;
        p.joined(&t, 1);
        p.joined(&t, 2);
        assert_eq!(p.deliver(&t, Some(4), &ev(4)), Pushed::Held);
        p.send(text_frame("reply 1"));
        assert_eq!(p.subscribed(&t, 1, 3), Pushed::Held);
        assert_eq!(p.deliver(&t, Some(5), &ev(5)), Pushed::Held);
        p.send(text_frame("reply 2"));
        p.subscribed(&t, 2, 4);
        assert_eq!(drain(&p), vec![text_frame("reply 1"), text_frame("reply 2"), ev(5)]);
    }

    #[test]
    fn a_peer_too_far_behind_is_given_up_once_and_then_skipped() {
        let p = peer(2);
        let t = Topic::Tasks;
        p.subscribed(&t, 1, 0);
        assert_eq!(p.deliver(&t, Some(1), &text_frame("1")), Pushed::Queued);
        assert_eq!(p.deliver(&t, Some(2), &text_frame("2")), Pushed::Queued);
        assert_eq!(p.deliver(&t, Some(3), &text_frame("3")), Pushed::GaveUp);
        assert_eq!(p.deliver(&t, Some(4), &text_frame("4")), Pushed::Skipped);
        assert_eq!(p.send(text_frame("reply")), Pushed::Skipped);
        assert!(p.gave_up());
        assert_eq!(drain(&p).len(), 2, "what waited stays");
    }
}
