//! The Session actor, one per WebSocket. All use of actix-web-actors (deprecated
//! upstream) stays in this module, so a move to actix-ws would stay local.
//!
//! A session parses frames, enforces the per-connection limits, turns
//! `subscribe` and `call` frames into Db messages, and writes replies. Its
//! outbound queue is shared with its thread's Registry, which writes events into
//! it (the [`Peer`]): a pump task drives the actor whatever the peer does, the
//! bytes and frames the peer has not taken yet are counted, and a peer that
//! falls too far behind, or whose token's sockets together are, is closed
//! with 1013 and its queue dropped at once. A subscribe's reply is checked
//! against the bounds before its frame is built; calls are limited per token.
//!
//! A close ends with the server closing the TCP connection (RFC 6455, 7.1.1):
//! at once after both close frames, and after [`CLOSE_TIMEOUT`] whether or not
//! the client answered or read (see `Socket`).

use actix::prelude::*;
use actix_http::ws::{Codec, Item};
use actix_web::dev::Extensions;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;
use serde_json::Value;
use std::any::Any;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use crate::auth::Principal;
use crate::db::{execute, AgentSocket, LeaveWindow, Subscribe, Subscribed};
use crate::error::ApiError;
use crate::limits::Bucket;
use crate::peer::{text_frame, Peer, Pushed};
use crate::presence::{Member, PresenceFrame};
use crate::protocol::{self, empty_object, Hello, Ref, Request, Topic};
use crate::registry::{CloseSession, Leave, LocalRegistry};
use crate::state::AppState;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// How long a closing connection may stay open: after the server's close frame,
/// for the client's answering one; after the client's close frame (or a session
/// that ended without one), for the client to take what is still queued. Then
/// the server closes the TCP connection whether or not the client answered or
/// read, so a silent or stalled client holds nothing for longer.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A message that arrives in fragments, joined before it is read.
struct Fragments {
    text: bool,
    buf: BytesMut,
}

/// One WebSocket connection.
pub struct Session {
    id: u64,
    principal: Principal,
    app: AppState,
    registry: LocalRegistry,
    /// The outbound queue and the subscribed topics, shared with the Registry.
    peer: Rc<Peer>,
    /// Topics whose subscribe is on its way, with the number of the newest one.
    pending: HashMap<Topic, u64>,
    /// Numbers subscribes, so only the newest answer for a topic settles it.
    generation: u64,
    last_heard: Instant,
    /// Calls sent to the Db actor and not yet answered.
    in_flight: usize,
    /// A close asked for while calls were in flight: done once they are answered.
    closing: Option<(CloseCode, &'static str)>,
    /// The server sent its close frame and waits for the client's.
    close_sent: bool,
    socket: Socket,
    fragments: Option<Fragments>,
    bucket: Bucket,
    /// Topics this session is counted in the presence of.
    present: HashSet<Topic>,
    /// Window topics, with the subscribes of each the writer answered.
    windows: HashMap<Topic, usize>,
}

impl Session {
    /// Queues a reply or other frame; closes the socket (1013) instead when
    /// the peer has already fallen too far behind.
    fn send(&mut self, ctx: &mut WebsocketContext<Self>, text: &str) {
        if self.peer.send(text_frame(text)) == Pushed::GaveUp {
            self.close_slow(ctx);
        }
    }

    /// Writes nothing more of `topic` and takes the session off it. The Leave
    /// goes through the Registry's mailbox, after any Join already sent.
    fn leave(&mut self, topic: Topic) {
        if let Some(subscribes) = self.windows.remove(&topic) {
            self.app.db.do_send(LeaveWindow {
                topic: topic.clone(),
                subscribes,
            });
        }
        if self.present.remove(&topic) {
            self.app.presence.leave(&topic, self.principal.token_id, self.id);
        }
        self.peer.forget(&topic);
        self.registry.handle.addr.do_send(Leave {
            session_id: self.id,
            topic,
        });
    }

    fn close_slow(&mut self, ctx: &mut WebsocketContext<Self>) {
        self.close(ctx, CloseCode::Again, "too slow to keep up; reconnect and resume");
    }

    /// Starts a close: sends the close frame, then waits for the client's
    /// answering one, which ends the session (see the stream handler).
    fn close(&mut self, ctx: &mut WebsocketContext<Self>, code: CloseCode, reason: &str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        self.peer.close();
        ctx.close(Some(CloseReason {
            code,
            description: Some(reason.to_string()),
        }));
        ctx.run_later(CLOSE_TIMEOUT, |act, ctx| {
            log::debug!("session {}: no close frame from the client; cutting it off", act.id);
            // Nothing more can reach the client: what waits is dropped now,
            // not when the HTTP layer lets go of the connection.
            act.peer.discard();
            act.socket.shutdown(Shutdown::Both);
            ctx.stop();
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
        if self.closing.is_some() {
            // Closing (a revoked token, a shutdown): nothing more is executed;
            // the client resends after it reconnects.
            return;
        }
        let max_frame = self.app.config.max_frame_bytes;
        if !self.bucket.take() {
            let abusive = self
                .bucket
                .over_since
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(10));
            if abusive {
                return self.close(ctx, CloseCode::Policy, "rate limit exceeded for too long");
            }
            let e = ApiError::rate_limited("too many frames; slow down");
            // Read the ref only from frames small enough to be real requests.
            let reference = (text.len() <= max_frame)
                .then(|| protocol::parse_frame(text))
                .and_then(|p| match p {
                    Ok((r, _)) => Some(r),
                    Err((r, _)) => r,
                });
            return self.answer(ctx, reference, Err(e));
        }
        match protocol::parse_frame(text) {
            Ok((reference, request)) => self.dispatch(reference, request, ctx),
            Err((reference, e)) => self.answer(ctx, reference, Err(e)),
        }
    }

    /// Sends a reply (with a ref) or an error frame (without one).
    fn answer(
        &mut self,
        ctx: &mut WebsocketContext<Self>,
        reference: Option<Ref>,
        result: Result<(Arc<RawValue>, Option<i64>), ApiError>,
    ) {
        let frame = match (&reference, &result) {
            (Some(r), Ok((data, seq))) => protocol::reply_ok(r, &**data, *seq),
            (Some(r), Err(e)) => protocol::reply_err(r, e),
            (None, Err(e)) => protocol::error_frame(e),
            (None, Ok(_)) => return,
        };
        self.send(ctx, &frame);
    }

    fn dispatch(&mut self, reference: Ref, request: Request, ctx: &mut WebsocketContext<Self>) {
        match request {
            Request::Ping => self.answer(ctx, Some(reference), Ok((empty_object(), None))),
            Request::Subscribe {
                topic,
                resume,
                history,
                presence,
            } => {
                if self.peer.gave_up() || self.peer.is_behind() {
                    // Its reply could not be queued after what waits: the
                    // socket closes now, without reading for it.
                    log::info!("session {}: a subscribe while its queue is full; closing it", self.id);
                    self.peer.give_up();
                    return self.close_slow(ctx);
                }
                let already = self.peer.is_live(&topic) || self.pending.contains_key(&topic);
                if !already && self.peer.live_count() + self.pending.len() >= self.app.config.max_subscriptions {
                    let e = ApiError::invalid(format!(
                        "this connection holds {} subscriptions, the most allowed",
                        self.app.config.max_subscriptions
                    ));
                    return self.answer(ctx, Some(reference), Err(e));
                }
                // A repeated subscribe replies like a fresh one.
                let resume = if already { None } else { resume };
                self.generation += 1;
                self.pending.insert(topic.clone(), self.generation);
                // Joined before the read, so every change committed after the
                // reader's position reaches this session, held until the reply
                // is written; those at or before it are in the reply.
                self.registry.handle.join(self.id, topic.clone(), self.generation);
                let window = topic.is_window();
                let msg = Subscribe {
                    reference,
                    topic,
                    generation: self.generation,
                    resume,
                    history,
                    principal: self.principal.clone(),
                    reply_to: ctx.address().recipient(),
                    presence,
                };
                if window {
                    // A window is the writer's (see db::windows).
                    self.app.db.do_send(msg);
                } else {
                    self.app.reader.do_send(msg);
                }
            }
            Request::Unsubscribe { topic } => {
                self.pending.remove(&topic);
                self.leave(topic);
                self.answer(ctx, Some(reference), Ok((empty_object(), None)));
            }
            Request::Call(call) => {
                if let Err(e) = self.app.call_limits.check(&self.principal) {
                    return self.answer(ctx, Some(reference), Err(e));
                }
                let request = execute(&self.app.db, self.principal.clone(), call);
                self.in_flight += 1;
                ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
                    act.answer(ctx, Some(reference), result.map(|c| (c.data, c.seq)));
                    act.in_flight -= 1;
                    if act.in_flight == 0 {
                        if let Some((code, reason)) = act.closing.take() {
                            act.close(ctx, code, reason);
                        }
                    }
                }));
            }
        }
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut WebsocketContext<Self>) {
        let (first, text, data, last) = match item {
            Item::FirstText(b) => (true, true, b, false),
            Item::FirstBinary(b) => (true, false, b, false),
            Item::Continue(b) => (false, false, b, false),
            Item::Last(b) => (false, false, b, true),
        };
        match (&mut self.fragments, first) {
            (Some(_), true) => {
                return self.close(ctx, CloseCode::Protocol, "a new message began inside a fragmented one")
            }
            (None, false) => return self.close(ctx, CloseCode::Protocol, "a continuation with nothing to continue"),
            (None, true) => {
                self.fragments = Some(Fragments {
                    text,
                    buf: BytesMut::new(),
                })
            }
            (Some(_), false) => {}
        }
        let frags = self.fragments.as_mut().expect("fragments started above");
        if frags.buf.len() + data.len() > self.app.config.max_frame_bytes {
            return self.close(ctx, CloseCode::Size, "message too large");
        }
        frags.buf.extend_from_slice(&data);
        if last {
            let Fragments { text, buf } = self.fragments.take().expect("fragments started above");
            if !text {
                return self.answer(
                    ctx,
                    None,
                    Err(ApiError::bad_request("binary messages are not JSON text")),
                );
            }
            match std::str::from_utf8(&buf) {
                Ok(s) => self.on_text(s, ctx),
                Err(_) => self.close(ctx, CloseCode::Invalid, "text message is not UTF-8"),
            }
        }
    }
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.app.metrics.sockets_open.inc();
        if let Some(agent_id) = self.principal.agent_id {
            // An agent's open socket keeps it alive (and brings it back).
            self.app.db.do_send(AgentSocket { agent_id, open: true });
        }
        self.registry
            .connect(self.peer.clone(), self.principal.token_id, ctx.address().recipient());
        let config = &self.app.config;
        let hello = Hello {
            r#type: "hello",
            server: protocol::SERVER_NAME,
            epoch: &self.app.head.epoch,
            seq: self.app.head.seq(),
            heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
            agent_timeout_ms: config.db.heartbeat_timeout.as_millis() as u64,
            stuck_after_ms: config.stuck_after.as_millis() as u64,
            role: self.principal.role.as_str(),
            token_id: self.principal.token_id,
            name: &self.principal.name,
            agent_id: self.principal.agent_id,
        };
        let hello = serde_json::to_string(&hello).expect("hello serializes");
        let interval = config.heartbeat_interval;
        self.send(ctx, &hello);
        ctx.run_interval(interval, move |act, ctx| {
            if act.close_sent {
                return;
            }
            if act.last_heard.elapsed() > interval * 3 {
                log::debug!("session {} missed three pings; dropping it", act.id);
                ctx.stop();
                return;
            }
            act.peer.outbox().borrow_mut().wrote_frame();
            ctx.ping(b"");
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.registry.disconnect(self.id);
        for topic in std::mem::take(&mut self.present) {
            self.app.presence.leave(&topic, self.principal.token_id, self.id);
        }
        for (topic, subscribes) in std::mem::take(&mut self.windows) {
            self.app.db.do_send(LeaveWindow { topic, subscribes });
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.app.metrics.sockets_open.dec();
        if let Some(agent_id) = self.principal.agent_id {
            self.app.db.do_send(AgentSocket { agent_id, open: false });
        }
        self.app.sockets.release(&self.principal);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        if self.close_sent {
            // After its close frame the server sends nothing more (RFC 6455,
            // 5.5.1): it reads on only for the client's close frame. An error
            // ends the wait too, since the input cannot be read on.
            if matches!(msg, Ok(ws::Message::Close(_)) | Err(_)) {
                ctx.stop();
            }
            return;
        }
        match msg {
            Ok(ws::Message::Text(text)) => {
                if self.fragments.is_some() {
                    return self.close(ctx, CloseCode::Protocol, "a new message began inside a fragmented one");
                }
                self.on_text(&text, ctx)
            }
            Ok(ws::Message::Binary(_)) => {
                if self.fragments.is_some() {
                    return self.close(ctx, CloseCode::Protocol, "a new message began inside a fragmented one");
                }
                self.answer(
                    ctx,
                    None,
                    Err(ApiError::bad_request("binary messages are not JSON text")),
                )
            }
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(p)) => {
                self.peer.outbox().borrow_mut().wrote_frame();
                ctx.pong(&p)
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                self.close_sent = true;
                self.peer.close();
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => self.close(ctx, CloseCode::Size, "frame too large"),
            Err(ProtocolError::Io(e)) if e.to_string().to_ascii_lowercase().contains("utf") => {
                self.close(ctx, CloseCode::Invalid, "text message is not UTF-8")
            }
            Err(e) => {
                log::debug!("session {}: protocol error: {e}", self.id);
                self.close(ctx, CloseCode::Protocol, "protocol error")
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Session {
    /// Counts this session in the topic's presence (once), and makes it a
    /// watcher if its newest subscribe asked: then returns the members.
    fn enter_presence(&mut self, topic: &Topic, watch: bool, ctx: &mut WebsocketContext<Self>) -> Option<Value> {
        let member = Member {
            token_id: self.principal.token_id,
            name: self.principal.name.clone(),
            role: self.principal.role,
            agent_id: self.principal.agent_id,
        };
        let first = self.present.insert(topic.clone());
        let watcher = watch.then(|| ctx.address().recipient());
        self.app
            .presence
            .enter(topic, first.then_some(&member), self.id, watcher)
    }
}

/// A subscribe reply's data with its `presence` list: the shared reply text
/// (a JSON object, possibly a large snapshot) is extended, not parsed again.
fn with_presence(data: &RawValue, list: &Value) -> Box<RawValue> {
    let text = data.get();
    let body = text
        .trim_end()
        .strip_suffix('}')
        .expect("a subscribe reply is an object");
    RawValue::from_string(format!("{body},\"presence\":{list}}}")).expect("valid JSON")
}

impl Handler<PresenceFrame> for Session {
    type Result = ();
    fn handle(&mut self, msg: PresenceFrame, ctx: &mut Self::Context) {
        if !self.close_sent {
            self.send(ctx, &msg.0);
        }
    }
}

impl Handler<Subscribed> for Session {
    type Result = ();
    fn handle(&mut self, mut msg: Subscribed, ctx: &mut Self::Context) {
        if self.close_sent {
            // Nothing more is sent; the reply is not even built.
            return;
        }
        if let Ok((data, _)) = &msg.result {
            // Checked before the reply's frame is built: a snapshot that
            // cannot be queued costs no copy.
            if self.peer.admit_reply(data.get().len()) != Pushed::Queued {
                return self.close_slow(ctx);
            }
        }
        let newest = self.pending.get(&msg.topic) == Some(&msg.generation);
        if newest {
            self.pending.remove(&msg.topic);
        }
        let live = self.peer.is_live(&msg.topic);
        if let Some(ticket) = msg.window.take() {
            // The writer counted it: it is told when the topic is left.
            ticket.keep();
            *self.windows.entry(msg.topic.clone()).or_default() += 1;
        }
        match msg.result {
            Ok((data, seq)) => {
                let here = (live || newest).then(|| self.enter_presence(&msg.topic, msg.presence, ctx));
                match here.flatten() {
                    Some(list) => self.send(
                        ctx,
                        &protocol::reply_ok(&msg.reference, &with_presence(&data, &list), None),
                    ),
                    None => self.send(ctx, &protocol::reply_ok(&msg.reference, &*data, None)),
                }
                if live || newest {
                    // The reply is out: the topic is live from its seq.
                    if self.peer.subscribed(&msg.topic, msg.generation, seq) == Pushed::GaveUp {
                        self.close_slow(ctx);
                    }
                } else if !self.pending.contains_key(&msg.topic) {
                    // Unsubscribed while the subscribe was on its way.
                    self.leave(msg.topic);
                }
            }
            Err(e) => {
                if newest && !live {
                    // An earlier subscribe of this topic may have joined it.
                    self.leave(msg.topic);
                }
                self.send(ctx, &protocol::reply_err(&msg.reference, &e));
            }
        }
    }
}

impl Handler<CloseSession> for Session {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Self::Context) {
        // Calls already committed are answered before the close, unless the
        // peer is too far behind to read them.
        if self.in_flight > 0 && !self.peer.gave_up() {
            self.closing = Some((CloseCode::from(msg.code), msg.reason));
            ctx.run_later(Duration::from_secs(2), |act, ctx| {
                if let Some((code, reason)) = act.closing.take() {
                    act.close(ctx, code, reason);
                }
            });
            return;
        }
        self.close(ctx, CloseCode::from(msg.code), msg.reason);
    }
}

/// The connection's TCP socket, so that a session can close it.
///
/// actix-http takes the WebSocket's request payload for an unread request
/// body: when the response body ends, it waits for the client to close the
/// connection first (up to its client disconnect timeout), and while the
/// client does not read, it waits without end. So the session closes the
/// socket itself: when the body ends, with `shutdown(SHUT_RD)`, after which
/// actix-http sends what it holds, closes the connection and drops it; when a
/// client is cut off, with `shutdown(SHUT_RDWR)`, after which its writes fail
/// and it drops the connection at once.
///
/// The descriptor is only used while the body lives: the body is owned by the
/// connection's HTTP dispatcher, which owns the socket, and it clears the
/// descriptor when dropped. So a descriptor that is set is this connection's,
/// never a closed one reused by another connection.
#[derive(Clone)]
struct Socket(Rc<Cell<Option<RawFd>>>);

/// A connection's descriptor, noted by [`on_connect`].
#[derive(Clone, Copy)]
struct ConnectionFd(RawFd);

/// Notes each connection's socket; registered with `HttpServer::on_connect`.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ConnectionFd(tcp.as_raw_fd()));
    }
}

impl Socket {
    fn new(req: &HttpRequest) -> Self {
        Socket(Rc::new(Cell::new(req.conn_data::<ConnectionFd>().map(|c| c.0))))
    }

    fn shutdown(&self, how: Shutdown) {
        let Some(fd) = self.0.get() else { return };
        // SAFETY: set only while the body lives, so the dispatcher that owns
        // the body holds the socket open (see the type's doc).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = socket2::SockRef::from(&fd).shutdown(how) {
            log::debug!("socket shutdown ({how:?}): {e}");
        }
    }

    /// The body is gone, and with it the guarantee the descriptor is ours.
    fn detach(&self) {
        self.0.set(None);
    }
}

/// The response body: what the pump parked in the outbox.
struct OutboxBody {
    peer: Rc<Peer>,
    socket: Socket,
}

impl Stream for OutboxBody {
    type Item = Result<Bytes, actix_web::Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let mut outbox = self.peer.outbox().borrow_mut();
        if let Some(chunk) = outbox.pop() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if outbox.is_done() {
            // Nothing more is read: actix-http sends the rest and closes.
            self.socket.shutdown(Shutdown::Read);
            return Poll::Ready(None);
        }
        outbox.wait(cx.waker());
        Poll::Pending
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        self.socket.detach();
    }
}

/// Upgrades an authenticated request to a WebSocket served by a new Session.
pub fn start(
    req: &HttpRequest,
    payload: web::Payload,
    app: AppState,
    principal: Principal,
) -> Result<HttpResponse, actix_web::Error> {
    let mut res = ws::handshake(req)?;
    let registry = req
        .app_data::<LocalRegistry>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("no registry on this thread"))?;
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    let socket = Socket::new(req);
    let config = &app.config;
    let peer = Rc::new(Peer::new(
        id,
        config.max_queue_bytes,
        config.max_queue_frames,
        app.queues.for_token(principal.token_id),
        app.metrics.clone(),
    ));
    let session = Session {
        id,
        principal,
        bucket: Bucket::new(config.rate_limit),
        registry,
        peer: peer.clone(),
        pending: HashMap::new(),
        generation: 0,
        present: HashSet::new(),
        windows: HashMap::new(),
        last_heard: Instant::now(),
        fragments: None,
        in_flight: 0,
        closing: None,
        close_sent: false,
        socket: socket.clone(),
        app: app.clone(),
    };
    let codec = Codec::new().max_size(app.config.max_frame_bytes);
    let mut stream = Box::pin(WebsocketContext::with_codec(session, payload, codec));
    let pumped = peer.clone();
    let cut = Rc::downgrade(&peer);
    let pump_socket = socket.clone();
    actix_web::rt::spawn(async move {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => pumped.outbox().borrow_mut().push_from_context(bytes),
                Err(e) => {
                    log::debug!("socket output failed: {e}");
                    break;
                }
            }
        }
        pumped.outbox().borrow_mut().finish();
        // The session's memory is not held through the wait.
        drop(stream);
        drop(pumped);
        // The body ends once the client took the rest; a client that does
        // not is cut off (a no-op once the body is gone).
        actix_web::rt::time::sleep(CLOSE_TIMEOUT).await;
        if let Some(peer) = cut.upgrade() {
            peer.discard();
        }
        pump_socket.shutdown(Shutdown::Both);
    });
    Ok(res.streaming(OutboxBody { peer, socket }))
}
