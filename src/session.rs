//! The Session actor, one per WebSocket. All use of actix-web-actors (deprecated
//! upstream) stays in this module, so a move to actix-ws would stay local.
//!
//! A session parses frames, enforces the per-connection limits, turns
//! `subscribe` and `call` frames into Db messages, and writes replies and events.
//! It owns its outbound queue: the bytes it handed to the socket that the peer
//! has not taken yet are counted, and a peer that falls too far behind is closed
//! with 1013.

use actix::prelude::*;
use actix_http::ws::{Codec, Item};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError, WebsocketContext};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use crate::auth::Principal;
use crate::db::{Execute, Subscribe, Subscribed};
use crate::error::ApiError;
use crate::limits::Bucket;
use crate::protocol::{self, Hello, Ref, Request, Topic};
use crate::registry::{CloseSession, Connect, Deliver, Disconnect, Leave};
use crate::AppState;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Subscribed topics and the seq of the last event sent on each.
    subs: HashMap<Topic, i64>,
    /// Topics whose subscribe is waiting for the Db actor.
    pending: HashSet<Topic>,
    last_heard: Instant,
    /// Bytes written to the socket that the peer has not taken yet.
    queued: Arc<AtomicUsize>,
    fragments: Option<Fragments>,
    bucket: Bucket,
}

impl Session {
    fn send(&self, ctx: &mut WebsocketContext<Self>, text: impl Into<ByteString>) {
        let text = text.into();
        self.queued.fetch_add(frame_len(text.len()), Ordering::Relaxed);
        ctx.text(text);
    }

    fn close(&self, ctx: &mut WebsocketContext<Self>, code: CloseCode, reason: &str) {
        ctx.close(Some(CloseReason {
            code,
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut WebsocketContext<Self>) {
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
        &self,
        ctx: &mut WebsocketContext<Self>,
        reference: Option<Ref>,
        result: Result<(serde_json::Value, Option<i64>), ApiError>,
    ) {
        let frame = match (&reference, &result) {
            (Some(r), Ok((data, seq))) => protocol::reply_ok(r, data.clone(), *seq),
            (Some(r), Err(e)) => protocol::reply_err(r, e),
            (None, Err(e)) => protocol::error_frame(e),
            (None, Ok(_)) => return,
        };
        self.send(ctx, frame);
    }

    fn dispatch(&mut self, reference: Ref, request: Request, ctx: &mut WebsocketContext<Self>) {
        match request {
            Request::Ping => self.answer(ctx, Some(reference), Ok((serde_json::json!({}), None))),
            Request::Subscribe { topic, resume } => {
                let already = self.subs.contains_key(&topic) || self.pending.contains(&topic);
                if !already && self.subs.len() + self.pending.len() >= self.app.config.max_subscriptions {
                    let e = ApiError::invalid(format!(
                        "this connection holds {} subscriptions, the most allowed",
                        self.app.config.max_subscriptions
                    ));
                    return self.answer(ctx, Some(reference), Err(e));
                }
                // A repeated subscribe replies like a fresh one.
                let resume = if already { None } else { resume };
                self.pending.insert(topic.clone());
                let addr = ctx.address();
                self.app.db.do_send(Subscribe {
                    reference,
                    topic,
                    resume,
                    session_id: self.id,
                    reply_to: addr.clone().recipient(),
                    deliver: addr.recipient(),
                });
            }
            Request::Unsubscribe { topic } => {
                self.subs.remove(&topic);
                self.pending.remove(&topic);
                self.app.registry.do_send(Leave {
                    session_id: self.id,
                    topic,
                });
                self.answer(ctx, Some(reference), Ok((serde_json::json!({}), None)));
            }
            Request::Call(call) => {
                let request = self.app.db.send(Execute {
                    principal: self.principal.clone(),
                    call,
                });
                ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
                    let result = match result {
                        Ok(r) => r.map(|c| (c.data, c.seq)),
                        Err(_) => Err(ApiError::unavailable("the database is not running")),
                    };
                    act.answer(ctx, Some(reference), result);
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

/// The bytes a server text frame of `n` payload bytes takes on the wire.
fn frame_len(n: usize) -> usize {
    n + match n {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

impl Actor for Session {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.app.metrics.sockets_open.inc();
        self.app.registry.do_send(Connect {
            session_id: self.id,
            token_id: self.principal.token_id,
            close: ctx.address().recipient(),
        });
        let config = &self.app.config;
        let hello = Hello {
            r#type: "hello",
            server: protocol::SERVER_NAME,
            epoch: &self.app.head.epoch,
            seq: self.app.head.seq(),
            heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
            agent_timeout_ms: config.db.heartbeat_timeout.as_millis() as u64,
            role: self.principal.role.as_str(),
        };
        let hello = serde_json::to_string(&hello).expect("hello serializes");
        self.send(ctx, hello);
        let interval = config.heartbeat_interval;
        ctx.run_interval(interval, move |act, ctx| {
            if act.last_heard.elapsed() > interval * 3 {
                log::debug!("session {} missed three pings; dropping it", act.id);
                ctx.stop();
                return;
            }
            act.queued.fetch_add(2, Ordering::Relaxed);
            ctx.ping(b"");
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.app.registry.do_send(Disconnect { session_id: self.id });
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.app.metrics.sockets_open.dec();
        self.app.sockets.release(&self.principal);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
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
                self.queued.fetch_add(frame_len(p.len()), Ordering::Relaxed);
                ctx.pong(&p)
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
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

impl Handler<Subscribed> for Session {
    type Result = ();
    fn handle(&mut self, msg: Subscribed, ctx: &mut Self::Context) {
        let still_wanted = self.pending.remove(&msg.topic);
        match msg.result {
            Ok((data, seq)) => {
                if still_wanted {
                    self.subs.insert(msg.topic, seq);
                } else {
                    // Unsubscribed while the subscribe was on its way.
                    self.app.registry.do_send(Leave {
                        session_id: self.id,
                        topic: msg.topic,
                    });
                }
                self.answer(ctx, Some(msg.reference), Ok((data, None)));
            }
            Err(e) => self.answer(ctx, Some(msg.reference), Err(e)),
        }
    }
}

impl Handler<Deliver> for Session {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let Some(last) = self.subs.get_mut(&msg.topic) else {
            return;
        };
        if let Some(seq) = msg.seq {
            // Already in the snapshot or sent: never twice.
            if seq <= *last {
                return;
            }
            *last = seq;
        }
        let queued = self.queued.load(Ordering::Relaxed);
        if queued + msg.frame.len() > self.app.config.max_queue_bytes {
            log::info!("session {} is {queued} bytes behind; closing it", self.id);
            self.app.metrics.sockets_closed_slow.inc();
            return self.close(ctx, CloseCode::Again, "too slow to keep up; reconnect and resume");
        }
        self.send(ctx, msg.frame);
    }
}

impl Handler<CloseSession> for Session {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Self::Context) {
        self.close(ctx, CloseCode::from(msg.code), msg.reason);
    }
}

/// The socket's outgoing byte stream, which counts what the peer has taken.
struct Counted<S> {
    inner: S,
    queued: Arc<AtomicUsize>,
}

impl<S: Stream<Item = Result<Bytes, actix_web::Error>> + Unpin> Stream for Counted<S> {
    type Item = Result<Bytes, actix_web::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let n = chunk.len();
            let _ = self
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(n)));
        }
        polled
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
    let queued = Arc::new(AtomicUsize::new(0));
    let session = Session {
        id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
        principal,
        bucket: Bucket::new(app.config.rate_limit),
        app: app.clone(),
        subs: HashMap::new(),
        pending: HashSet::new(),
        last_heard: Instant::now(),
        queued: queued.clone(),
        fragments: None,
    };
    let codec = Codec::new().max_size(app.config.max_frame_bytes);
    let stream = WebsocketContext::with_codec(session, payload, codec);
    Ok(res.streaming(Counted {
        inner: Box::pin(stream),
        queued,
    }))
}
