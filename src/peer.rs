//! What a session shares with its thread's Registry: the socket's outbound
//! queue (the [`Outbox`]) and, for each subscribed topic, the seq of the last
//! event written. The Registry writes events straight into it, on the thread
//! that owns the socket, so an event costs no message and no copy per
//! subscriber; the session writes its replies into the same queue, so the
//! order the two are written in is the order the client reads.
//!
//! The queue is bounded per socket (`--max-queue-bytes`, `--max-queue-frames`)
//! and per token (`--max-queue-bytes-per-token`, over all the token's sockets,
//! through its [`TokenQueue`]): a frame that does not fit is not queued, and
//! the socket closes 1013. What waited is dropped then (the client resumes
//! from the last event it read), all but the rest of a frame the client began
//! to receive, which the close frame must follow.

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Waker;

use crate::limits::TokenQueue;
use crate::metrics::Metrics;
use crate::protocol::Topic;

/// The most of a frame handed to the connection at once: a large one (a
/// snapshot) goes out in slices, so the HTTP layer's buffer holds little of
/// it, and the rest waits here, counted against the bounds and dropped if the
/// socket is closed.
pub const MAX_SLICE: usize = 16 * 1024;

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

/// Why a frame was not queued.
enum Refusal {
    /// The socket's own bounds.
    Socket { bytes: usize, frames: usize },
    /// Its token's sockets together (with what they hold now).
    Token { bytes: usize },
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
    pub fn new(id: u64, max_bytes: usize, max_frames: usize, token: Arc<TokenQueue>, metrics: Arc<Metrics>) -> Self {
        Peer {
            id,
            subs: RefCell::new(HashMap::new()),
            outbox: RefCell::new(Outbox::new(token)),
            max_bytes,
            max_frames,
            closed: Cell::new(false),
            gave_up: Cell::new(false),
            metrics,
        }
    }

    /// Queues a reply or other frame. A reply larger than the bound still goes
    /// out to a peer that keeps up, so any snapshot can be had (see
    /// [`Peer::fits`]).
    pub fn send(&self, frame: Bytes) -> Pushed {
        self.push(frame, false)
    }

    /// Asked before a reply of at least `len` bytes is built: `Queued` if
    /// it could be queued now (nothing is queued yet); if not, gives up on
    /// the peer as [`Peer::send`] would (`GaveUp`, once), so that a snapshot
    /// that cannot be queued costs no copy.
    pub fn admit_reply(&self, len: usize) -> Pushed {
        if self.closed.get() {
            return Pushed::Skipped;
        }
        let refused = {
            let outbox = self.outbox.borrow();
            self.socket_refusal(&outbox, len, false).or_else(|| {
                (!outbox.token.fits(len)).then(|| Refusal::Token {
                    bytes: outbox.token.bytes(),
                })
            })
        };
        match refused {
            None => Pushed::Queued,
            Some(why) => self.refuse(why, len),
        }
    }

    /// The queue is at or over its bound: no reply could be queued after
    /// what waits, so a subscribe is not worth reading for. (Only a reply to
    /// a queue that was nearly empty takes it over the bound.)
    pub fn is_behind(&self) -> bool {
        let outbox = self.outbox.borrow();
        outbox.queued_bytes() >= self.max_bytes || outbox.queued_frames() >= self.max_frames
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

    /// The socket's own bound: an event must fit under it; so must a reply,
    /// unless the queue holds less than an eighth of the bound (the client
    /// keeps up), so that a snapshot larger than the bound can still be had.
    fn fits(&self, queued: usize, len: usize, event: bool) -> bool {
        queued.saturating_add(len) <= self.max_bytes || (!event && queued < self.max_bytes / 8)
    }

    /// Why the socket's own bounds refuse a frame of `len` bytes, if they do.
    fn socket_refusal(&self, outbox: &Outbox, len: usize, event: bool) -> Option<Refusal> {
        let (bytes, frames) = (outbox.queued_bytes(), outbox.queued_frames());
        (!self.fits(bytes, len, event) || frames >= self.max_frames).then_some(Refusal::Socket { bytes, frames })
    }

    /// Gives up on the peer for a frame of `len` bytes that it cannot take.
    fn refuse(&self, why: Refusal, len: usize) -> Pushed {
        match why {
            Refusal::Socket { bytes, frames } => {
                log::info!(
                    "session {} is {bytes} bytes and {frames} frames behind; closing it",
                    self.id
                );
                self.give_up()
            }
            Refusal::Token { bytes } => {
                log::info!(
                    "session {}: its token's sockets hold {bytes} bytes, and {len} more would take them over {}; closing it",
                    self.id,
                    self.outbox.borrow().token.max()
                );
                let gave_up = self.give_up();
                if gave_up == Pushed::GaveUp {
                    self.metrics.sockets_closed_token_queue.inc();
                }
                gave_up
            }
        }
    }

    /// Queues `frame` if it fits the socket's bounds (see [`Peer::fits`]) and
    /// its token's; if not, gives up on the peer.
    fn push(&self, frame: Bytes, event: bool) -> Pushed {
        if self.closed.get() {
            return Pushed::Skipped;
        }
        let mut outbox = self.outbox.borrow_mut();
        // Checked and counted on the token in one step: other threads count
        // on it too.
        let refused = self.socket_refusal(&outbox, frame.len(), event).or_else(|| {
            (!outbox.token.try_add(frame.len())).then(|| Refusal::Token {
                bytes: outbox.token.bytes(),
            })
        });
        if let Some(why) = refused {
            drop(outbox);
            return self.refuse(why, frame.len());
        }
        outbox.park(frame, 1);
        Pushed::Queued
    }

    /// Gives up on a peer too far behind: nothing more is queued, and what
    /// waits is dropped at once, as the client resumes from the last event it
    /// read; only the rest of a frame the client began to receive stays, for
    /// the close frame to follow. Returns `GaveUp` once, then `Skipped`.
    pub fn give_up(&self) -> Pushed {
        self.closed.set(true);
        if self.gave_up.replace(true) {
            return Pushed::Skipped;
        }
        self.outbox.borrow_mut().drop_waiting();
        for sub in self.subs.borrow_mut().values_mut() {
            sub.held = Vec::new();
        }
        self.metrics.sockets_closed_slow.inc();
        Pushed::GaveUp
    }

    /// The connection is being cut: nothing more can be sent, so nothing
    /// more is kept, and the response body ends.
    pub fn discard(&self) {
        self.closed.set(true);
        self.outbox.borrow_mut().discard();
    }
}

/// The encoded frames the HTTP layer has not taken yet.
///
/// actix-web-actors runs the actor inside the response body stream, and the HTTP
/// layer stops polling that stream while the peer is not reading. So frames are
/// parked here, by the session, the Registry, and a pump task that drives the
/// actor all the time; the session keeps handling messages (and noticing that
/// it is behind) whatever the peer does.
///
/// Its bytes are counted on its token's [`TokenQueue`] too, from when they are
/// parked until they are taken or dropped (or the outbox is).
pub struct Outbox {
    /// Encoded chunks, each with the number of frames it holds.
    chunks: VecDeque<(Bytes, usize)>,
    bytes: usize,
    frames: usize,
    /// Control frames the session handed its context that the pump has not
    /// parked yet.
    written: usize,
    /// A slice of the first chunk was taken: the rest of it must go out
    /// before anything else can.
    begun: bool,
    done: bool,
    reader: Option<Waker>,
    token: Arc<TokenQueue>,
}

impl Outbox {
    pub fn new(token: Arc<TokenQueue>) -> Self {
        Outbox {
            chunks: VecDeque::new(),
            bytes: 0,
            frames: 0,
            written: 0,
            begun: false,
            done: false,
            reader: None,
            token,
        }
    }

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
    /// Control frames are never refused: a close frame must go out.
    pub fn push_from_context(&mut self, chunk: Bytes) {
        let frames = std::mem::take(&mut self.written);
        if self.done {
            // Cut off (see `discard`): nothing more is sent.
            return;
        }
        self.token.add(chunk.len());
        self.park(chunk, frames);
    }

    /// Parks a chunk whose bytes the token already counts.
    fn park(&mut self, chunk: Bytes, frames: usize) {
        self.bytes += chunk.len();
        self.frames += frames;
        self.chunks.push_back((chunk, frames));
        self.wake();
    }

    /// The next chunk for the socket: a whole chunk, or the next
    /// [`MAX_SLICE`] bytes of a larger one.
    pub fn pop(&mut self) -> Option<Bytes> {
        let front = self.chunks.front_mut()?;
        let piece = if front.0.len() > MAX_SLICE {
            self.begun = true;
            front.0.split_to(MAX_SLICE)
        } else {
            let (chunk, frames) = self.chunks.pop_front().expect("a front chunk");
            self.frames -= frames;
            self.begun = false;
            chunk
        };
        self.bytes -= piece.len();
        self.token.sub(piece.len());
        Some(piece)
    }

    /// Drops every chunk that waits, but the rest of one the socket began
    /// to send.
    fn drop_waiting(&mut self) {
        let keep = usize::from(self.begun).min(self.chunks.len());
        for (chunk, frames) in self.chunks.drain(keep..) {
            self.bytes -= chunk.len();
            self.frames -= frames;
            self.token.sub(chunk.len());
        }
    }

    /// Drops everything and ends the body: the connection is being cut.
    fn discard(&mut self) {
        self.begun = false;
        self.drop_waiting();
        self.finish();
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

impl Drop for Outbox {
    fn drop(&mut self) {
        self.token.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(max_frames: usize) -> Peer {
        Peer::new(
            1,
            1 << 20,
            max_frames,
            TokenQueue::standalone(usize::MAX),
            Arc::new(Metrics::new()),
        )
    }

    /// A peer whose queue may hold `max_bytes`, of a token's `token`.
    fn bounded(max_bytes: usize, token: &Arc<TokenQueue>) -> Peer {
        Peer::new(1, max_bytes, 1000, token.clone(), Arc::new(Metrics::new()))
    }

    /// A frame of `n` bytes (a text frame's header included).
    fn sized(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    fn queued(p: &Peer) -> usize {
        p.outbox().borrow().queued_bytes()
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
        assert!(drain(&p).is_empty(), "what waited is dropped: the client resumes");
    }

    #[test]
    fn a_peer_given_up_keeps_only_the_rest_of_a_frame_it_began_to_send() {
        let token = TokenQueue::standalone(usize::MAX);
        let p = bounded(1 << 20, &token);
        let t = Topic::Tasks;
        p.subscribed(&t, 1, 0);
        assert_eq!(p.send(sized(3 * MAX_SLICE)), Pushed::Queued);
        assert_eq!(p.deliver(&t, Some(1), &sized(100)), Pushed::Queued);
        p.joined(&t, 2);
        assert_eq!(p.deliver(&t, Some(2), &sized(100)), Pushed::Held);
        let first = p.outbox().borrow_mut().pop().unwrap();
        assert_eq!(first.len(), MAX_SLICE, "a large frame goes out in slices");
        assert_eq!(token.bytes(), 2 * MAX_SLICE + 100);
        assert_eq!(p.give_up(), Pushed::GaveUp);
        assert_eq!(queued(&p), 2 * MAX_SLICE, "only the begun frame's rest stays");
        assert_eq!(token.bytes(), 2 * MAX_SLICE, "and only it is counted on the token");
        p.outbox().borrow_mut().push_from_context(sized(10));
        assert_eq!(
            drain(&p).iter().map(Bytes::len).collect::<Vec<_>>(),
            [MAX_SLICE, MAX_SLICE, 10]
        );
        assert_eq!(p.subscribed(&t, 2, 1), Pushed::Queued, "nothing held is released");
        assert_eq!(token.bytes(), 0);

        let p = bounded(1 << 20, &token);
        p.send(sized(3 * MAX_SLICE));
        p.outbox().borrow_mut().pop();
        p.give_up();
        p.discard();
        assert_eq!((queued(&p), token.bytes()), (0, 0), "a cut connection keeps nothing");
        assert!(p.outbox().borrow().is_done());
    }

    #[test]
    fn a_reply_must_fit_unless_the_queue_is_nearly_empty() {
        let token = TokenQueue::standalone(usize::MAX);
        let p = bounded(800, &token);
        assert_eq!(
            p.send(sized(2000)),
            Pushed::Queued,
            "a snapshot over the bound, to an empty queue"
        );
        assert!(p.is_behind());
        assert_eq!(p.send(sized(10)), Pushed::GaveUp, "then nothing until it is taken");

        let p = bounded(800, &token);
        p.send(sized(99));
        assert_eq!(
            p.send(sized(2000)),
            Pushed::Queued,
            "under an eighth of the bound waits"
        );
        assert_eq!(token.bytes(), 2099);

        let p = bounded(800, &token);
        p.send(sized(100));
        assert_eq!(p.admit_reply(701), Pushed::GaveUp, "asked before it is built");
        assert_eq!(p.send(sized(1)), Pushed::Skipped);

        let p = bounded(800, &token);
        p.send(sized(100));
        assert_eq!(p.admit_reply(700), Pushed::Queued, "it fits");
        assert_eq!(queued(&p), 100, "asking queues nothing");
        assert_eq!(p.send(sized(700)), Pushed::Queued);

        let p = bounded(800, &token);
        p.subscribed(&Topic::Tasks, 1, 0);
        assert_eq!(
            p.deliver(&Topic::Tasks, Some(1), &sized(801)),
            Pushed::GaveUp,
            "an event must fit, even in an empty queue"
        );
    }

    #[test]
    fn a_tokens_sockets_share_one_bound() {
        let token = TokenQueue::standalone(1000);
        let (a, b) = (bounded(800, &token), bounded(800, &token));
        let t = Topic::Agents;
        for p in [&a, &b] {
            p.subscribed(&t, 1, 0);
        }
        assert_eq!(a.deliver(&t, Some(1), &sized(600)), Pushed::Queued);
        assert_eq!(b.deliver(&t, Some(1), &sized(300)), Pushed::Queued);
        assert_eq!(
            b.deliver(&t, Some(2), &sized(300)),
            Pushed::GaveUp,
            "the socket that would take the token over closes"
        );
        assert_eq!(token.bytes(), 600, "and its queue is dropped");
        assert_eq!(a.admit_reply(401), Pushed::GaveUp, "a reply too, before it is built");

        let c = bounded(800, &token);
        assert_eq!(c.send(sized(400)), Pushed::Queued);
        a.outbox().borrow_mut().pop();
        assert_eq!(token.bytes(), 400, "what is taken leaves the token's count");
        drop(c);
        assert_eq!(token.bytes(), 0, "and so does a queue that is dropped");
    }
}
