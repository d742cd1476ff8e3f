//! The task behind a [`crate::Client`]: holds the socket, reconnects with
//! jittered backoff, re-sends unanswered calls (same op_id) and re-subscribes
//! from each topic's position, retries busy refusals, pings, heartbeats.

use crate::conn::{self, Ws};
use crate::{Error, Event, Hello, Item, Options, Position, Reply, Result, State};
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// What the handles ask of the driver.
pub(crate) enum Cmd {
    Call {
        method: String,
        params: Value,
        op_id: String,
        tx: oneshot::Sender<Result<Reply>>,
    },
    Subscribe {
        topic: String,
        from: Option<Position>,
        history: Option<u32>,
        tx: mpsc::UnboundedSender<Result<Item>>,
        ack: oneshot::Sender<Result<()>>,
    },
    Unsubscribe {
        topic: String,
    },
    /// Fields the heartbeat sends besides `id` (`status`, `current_task_id`).
    SetHeartbeat(Map<String, Value>),
    /// A busy refusal's wait is over: send it again.
    Resend(Resend),
    Close,
}

pub(crate) enum Resend {
    Call(u64),
    Subscribe(String),
}

struct Call {
    method: String,
    params: Value,
    op_id: String,
    /// None for the driver's own heartbeats.
    tx: Option<oneshot::Sender<Result<Reply>>>,
    /// The ref it was sent with on this connection; None while waiting.
    sent: Option<i64>,
    /// The frame's length, once sent.
    bytes: usize,
}

struct Sub {
    tx: mpsc::UnboundedSender<Result<Item>>,
    /// The last seq delivered, under its epoch.
    position: Option<Position>,
    history: Option<u32>,
    /// The ref of the subscribe on its way; its events wait in `early`.
    sent: Option<i64>,
    early: Vec<Event>,
    /// The caller of `subscribe`, until the first reply.
    ack: Option<oneshot::Sender<Result<()>>>,
}

enum Pending {
    Call(u64),
    Sub(String),
    Ping,
    Ignore,
}

/// Why a connection ended.
enum Ended {
    /// Reconnect.
    Lost(Error),
    /// Stop for good: revoked, or closed by the user (None).
    Stop(Option<Error>),
}

pub(crate) struct Driver {
    url: String,
    token: String,
    opts: Options,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    me: mpsc::WeakUnboundedSender<Cmd>,
    state: watch::Sender<State>,
    hello: watch::Sender<Hello>,
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    op_prefix: String,
    subs: HashMap<String, Sub>,
    refs: HashMap<i64, Pending>,
    next_ref: i64,
    beat_params: Map<String, Value>,
    beat_in_flight: Option<u64>,
    /// New heartbeat fields: report them at once.
    beat_now: bool,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        url: String,
        token: String,
        opts: Options,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        me: mpsc::WeakUnboundedSender<Cmd>,
        state: watch::Sender<State>,
        hello: watch::Sender<Hello>,
        op_prefix: String,
    ) -> Driver {
        Driver {
            url,
            token,
            opts,
            cmds,
            me,
            state,
            hello,
            calls: BTreeMap::new(),
            next_call: 0,
            op_prefix,
            subs: HashMap::new(),
            refs: HashMap::new(),
            next_ref: 0,
            beat_params: Map::new(),
            beat_in_flight: None,
            beat_now: false,
        }
    }

    pub(crate) async fn run(mut self, mut ws: Ws, mut hello: Hello) {
        let mut attempt: u32 = 0;
        loop {
            let began = Instant::now();
            let lost = match self.connected(&mut ws, hello).await {
                Ended::Stop(why) => {
                    let _ = ws.close(None).await;
                    return self.stop(why);
                }
                Ended::Lost(e) => e,
            };
            drop(ws);
            log::debug!("taskwire: connection lost ({lost}); reconnecting");
            if began.elapsed() >= self.opts.stable_after {
                attempt = 0;
            }
            let mut last = lost;
            (ws, hello) = loop {
                let ceiling = self
                    .opts
                    .backoff_base
                    .saturating_mul(1 << attempt.min(16))
                    .min(self.opts.backoff_cap);
                let wait = ceiling.mul_f64(rand::thread_rng().gen_range(0.0..=1.0));
                self.state.send_replace(State::Reconnecting {
                    attempt,
                    last_error: last.to_string(),
                });
                if let Some(why) = self.idle(wait).await {
                    return self.stop(why);
                }
                attempt = attempt.saturating_add(1);
                let connecting = conn::connect(&self.url, &self.token, None);
                match tokio::time::timeout(self.opts.connect_timeout, connecting).await {
                    Ok(Ok(up)) => break up,
                    // The token was revoked while we were away.
                    Ok(Err(e @ (Error::Unauthorized(_) | Error::Forbidden(_)))) => {
                        return self.stop(Some(Error::Revoked(e.to_string())));
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = Error::Unavailable("no hello in time".into()),
                }
            };
        }
    }

    /// Waits `wait` while disconnected, taking commands; Some if told to stop.
    async fn idle(&mut self, wait: Duration) -> Option<Option<Error>> {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                cmd = self.cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => return Some(None),
                    Some(cmd) => {
                        if let Err(Ended::Stop(why)) = self.on_cmd(cmd, None).await {
                            return Some(why);
                        }
                    }
                },
            }
        }
    }

    /// Serves one connection until it ends.
    async fn connected(&mut self, ws: &mut Ws, hello: Hello) -> Ended {
        self.refs.clear();
        let agent_id = hello.agent_id.or(self.opts.agent_id);
        let beat_every = (self.opts.heartbeat && hello.role == "agent")
            .then_some(agent_id)
            .flatten()
            .map(|id| {
                (
                    id,
                    Duration::from_millis(hello.agent_timeout_ms / 3).max(Duration::from_millis(100)),
                )
            });
        self.hello.send_replace(hello);
        // A heartbeat is only worth sending now, and a re-sent one (same
        // op_id) would be no new heartbeat: this connection beats afresh.
        if let Some(id) = self.beat_in_flight.take() {
            self.calls.remove(&id);
        }
        if let Err(e) = self.send_all(ws).await {
            return e;
        }
        self.state.send_replace(State::Live);
        let mut last_heard = Instant::now();
        let mut ping: Option<Instant> = None;
        let mut next_beat = Instant::now();
        loop {
            let mut wake = match ping {
                Some(sent) => sent + self.opts.ping_timeout,
                None => last_heard + self.opts.ping_interval,
            };
            // One beat at a time: while one is on its way, its reply wakes us.
            // New fields go at once.
            if beat_every.is_some() && !self.beating() {
                wake = wake.min(if self.beat_now { Instant::now() } else { next_beat });
            }
            tokio::select! {
                msg = ws.next() => {
                    // Any frame shows the socket still carries frames.
                    last_heard = Instant::now();
                    ping = None;
                    match msg {
                        Some(Ok(Message::Text(t))) => self.on_frame(&t),
                        Some(Ok(Message::Close(f))) => {
                            if f.as_ref().is_some_and(|f| f.code == CloseCode::Size) {
                                self.fail_largest_call();
                            }
                            return match conn::closed(f.map(|f| (f.code, f.reason.into_owned()))) {
                                e @ Error::Revoked(_) => Ended::Stop(Some(e)),
                                e => Ended::Lost(e),
                            };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(Error::Unavailable(format!("the connection was lost: {e}"))),
                        None => return Ended::Lost(Error::Unavailable("the connection was lost".into())),
                    }
                }
                cmd = self.cmds.recv() => {
                    let cmd = match cmd {
                        None | Some(Cmd::Close) => return Ended::Stop(None),
                        Some(cmd) => cmd,
                    };
                    if let Err(e) = self.on_cmd(cmd, Some(ws)).await {
                        return e;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if let Some(sent) = ping {
                        if now >= sent + self.opts.ping_timeout {
                            return Ended::Lost(Error::Unavailable("ping timeout".into()));
                        }
                    } else if now >= last_heard + self.opts.ping_interval {
                        let r = self.take_ref(Pending::Ping);
                        if let Err(e) = send(ws, json!({"type": "ping", "ref": r})).await {
                            return e;
                        }
                        ping = Some(now);
                    }
                    if let Some((id, every)) = beat_every {
                        if (now >= next_beat || self.beat_now) && !self.beating() {
                            self.beat_now = false;
                            next_beat = now + every;
                            if let Err(e) = self.heartbeat(id, ws).await {
                                return e;
                            }
                        }
                    }
                }
            }
        }
    }

    /// After a (re)connect: every subscription from its position, then every
    /// unanswered call, unchanged.
    async fn send_all(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        let topics: Vec<String> = self.subs.keys().cloned().collect();
        for topic in topics {
            self.send_subscribe(ws, &topic).await?;
        }
        // A call whose caller stopped waiting (its future dropped) is not
        // sent again: nobody would read the answer.
        self.calls.retain(|_, c| c.tx.as_ref().is_none_or(|tx| !tx.is_closed()));
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.send_call(ws, id).await?;
        }
        Ok(())
    }

    /// A heartbeat is on its way, unanswered.
    fn beating(&self) -> bool {
        self.beat_in_flight.is_some_and(|id| self.calls.contains_key(&id))
    }

    async fn heartbeat(&mut self, agent_id: i64, ws: &mut Ws) -> Result<(), Ended> {
        let mut params = self.beat_params.clone();
        params.insert("id".into(), json!(agent_id));
        self.next_call += 1;
        let id = self.next_call;
        // A fresh op_id per beat: a repeated op_id is no new heartbeat.
        let op_id = format!("{}-hb{id}", self.op_prefix);
        self.calls.insert(
            id,
            Call {
                method: "agent.heartbeat".into(),
                params: Value::Object(params),
                op_id,
                tx: None,
                sent: None,
                bytes: 0,
            },
        );
        self.beat_in_flight = Some(id);
        self.send_call(ws, id).await
    }

    async fn on_cmd(&mut self, cmd: Cmd, ws: Option<&mut Ws>) -> Result<(), Ended> {
        match cmd {
            Cmd::Call {
                method,
                params,
                op_id,
                tx,
            } => {
                self.next_call += 1;
                let id = self.next_call;
                self.calls.insert(
                    id,
                    Call {
                        method,
                        params,
                        op_id,
                        tx: Some(tx),
                        sent: None,
                        bytes: 0,
                    },
                );
                if let Some(ws) = ws {
                    self.send_call(ws, id).await?;
                }
            }
            Cmd::Subscribe {
                topic,
                from,
                history,
                tx,
                ack,
            } => {
                if self.subs.contains_key(&topic) {
                    let _ = ack.send(Err(Error::Usage(format!("already subscribed to {topic}"))));
                    return Ok(());
                }
                let sub = Sub {
                    tx,
                    position: from,
                    history,
                    sent: None,
                    early: Vec::new(),
                    ack: Some(ack),
                };
                self.subs.insert(topic.clone(), sub);
                if let Some(ws) = ws {
                    self.send_subscribe(ws, &topic).await?;
                }
            }
            Cmd::Unsubscribe { topic } => {
                if self.subs.remove(&topic).is_some() {
                    if let Some(ws) = ws {
                        let r = self.take_ref(Pending::Ignore);
                        send(ws, json!({"type": "unsubscribe", "ref": r, "topic": topic})).await?;
                    }
                }
            }
            Cmd::SetHeartbeat(params) => {
                self.beat_now = params != self.beat_params;
                self.beat_params = params;
            }
            Cmd::Resend(Resend::Call(id)) => {
                if let (Some(ws), Some(call)) = (ws, self.calls.get(&id)) {
                    if call.sent.is_none() {
                        self.send_call(ws, id).await?;
                    }
                }
            }
            Cmd::Resend(Resend::Subscribe(topic)) => {
                if let (Some(ws), Some(sub)) = (ws, self.subs.get(&topic)) {
                    if sub.sent.is_none() {
                        self.send_subscribe(ws, &topic).await?;
                    }
                }
            }
            Cmd::Close => return Err(Ended::Stop(None)),
        }
        Ok(())
    }

    fn take_ref(&mut self, pending: Pending) -> i64 {
        self.next_ref += 1;
        self.refs.insert(self.next_ref, pending);
        self.next_ref
    }

    async fn send_call(&mut self, ws: &mut Ws, id: u64) -> Result<(), Ended> {
        let r = self.take_ref(Pending::Call(id));
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        call.sent = Some(r);
        let frame =
            json!({"type": "call", "ref": r, "method": call.method, "params": call.params, "op_id": call.op_id});
        call.bytes = frame.to_string().len();
        send(ws, frame).await
    }

    async fn send_subscribe(&mut self, ws: &mut Ws, topic: &str) -> Result<(), Ended> {
        let r = self.take_ref(Pending::Sub(topic.to_string()));
        let Some(sub) = self.subs.get_mut(topic) else {
            return Ok(());
        };
        sub.sent = Some(r);
        sub.early.clear();
        let mut frame = json!({"type": "subscribe", "ref": r, "topic": topic});
        if let Some(p) = &sub.position {
            frame["epoch"] = json!(p.epoch);
            frame["since"] = json!(p.seq);
        }
        if let Some(h) = sub.history {
            frame["history"] = json!(h);
        }
        send(ws, frame).await
    }

    /// Handles one text frame.
    fn on_frame(&mut self, text: &str) {
        let frame: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return log::warn!("taskwire: a frame that is not JSON ({e})"),
        };
        match frame["type"].as_str() {
            Some("reply") => {
                let r = frame["ref"].as_i64();
                match r.and_then(|r| self.refs.remove(&r)) {
                    Some(Pending::Call(id)) => self.on_call_reply(id, frame),
                    Some(Pending::Sub(topic)) => self.on_subscribe_reply(&topic, r, frame),
                    Some(Pending::Ping | Pending::Ignore) | None => {}
                }
            }
            Some("event") => {
                let event: Event = match serde_json::from_value(frame) {
                    Ok(e) => e,
                    Err(e) => return log::warn!("taskwire: an event this client cannot read ({e})"),
                };
                let topic = event.topic.clone();
                let Some(sub) = self.subs.get_mut(&topic) else { return };
                if sub.sent.is_some() {
                    sub.early.push(event);
                } else if !deliver(sub, event) {
                    self.subs.remove(&topic);
                }
            }
            _ => log::warn!("taskwire: unexpected frame from the server: {text}"),
        }
    }

    fn on_call_reply(&mut self, id: u64, frame: Value) {
        if frame["ok"] == true {
            if let Some(call) = self.calls.remove(&id) {
                let seq = frame["seq"].as_i64();
                let data = frame.get("data").cloned().unwrap_or(Value::Null);
                if let Some(tx) = call.tx {
                    let _ = tx.send(Ok(Reply { data, seq }));
                }
            }
            return;
        }
        let err = wire_error(&frame);
        if err.is_busy() {
            if let Some(call) = self.calls.get_mut(&id) {
                call.sent = None;
                self.later(Resend::Call(id));
            }
        } else if let Some(call) = self.calls.remove(&id) {
            match call.tx {
                Some(tx) => {
                    let _ = tx.send(Err(err));
                }
                None => log::warn!("taskwire: heartbeat refused: {err}"),
            }
        }
    }

    fn on_subscribe_reply(&mut self, topic: &str, r: Option<i64>, frame: Value) {
        let Some(sub) = self.subs.get_mut(topic) else { return };
        if sub.sent != r {
            return; // an answer to a subscribe sent before a later one
        }
        sub.sent = None;
        if frame["ok"] != true {
            let err = wire_error(&frame);
            if err.is_busy() {
                self.later(Resend::Subscribe(topic.to_string()));
                return;
            }
            let sub = self.subs.remove(topic).expect("held");
            match sub.ack {
                Some(ack) => {
                    let _ = ack.send(Err(err));
                }
                None => {
                    let _ = sub.tx.send(Err(err));
                }
            }
            return;
        }
        let data = &frame["data"];
        let (Some(epoch), Some(seq)) = (data["epoch"].as_str(), data["seq"].as_i64()) else {
            log::warn!("taskwire: a subscribe reply without epoch and seq: {frame}");
            return;
        };
        let mut open = true;
        if let Some(snapshot) = data.get("snapshot") {
            let history = data.get("history").and_then(|h| h.as_array().cloned());
            // It replaces a state the caller holds (an earlier snapshot, or
            // the position it subscribed from).
            let resync = sub.position.is_some();
            sub.position = Some(Position {
                epoch: epoch.into(),
                seq,
            });
            open = sub
                .tx
                .send(Ok(Item::Snapshot {
                    data: snapshot.clone(),
                    epoch: epoch.into(),
                    seq,
                    history,
                    resync,
                }))
                .is_ok();
        } else {
            let mut replayed = 0;
            for e in data["events"].as_array().into_iter().flatten() {
                match serde_json::from_value::<Event>(e.clone()) {
                    Ok(event) => {
                        let seq_before = sub.position.as_ref().map(|p| p.seq);
                        open &= deliver(sub, event);
                        if sub.position.as_ref().map(|p| p.seq) != seq_before {
                            replayed += 1;
                        }
                    }
                    Err(err) => log::warn!("taskwire: a replayed event this client cannot read ({err})"),
                }
            }
            let p = sub.position.get_or_insert(Position {
                epoch: epoch.into(),
                seq,
            });
            p.seq = p.seq.max(seq);
            open &= sub
                .tx
                .send(Ok(Item::Resumed {
                    epoch: epoch.into(),
                    seq,
                    replayed,
                }))
                .is_ok();
        }
        for event in std::mem::take(&mut sub.early) {
            open &= deliver(sub, event);
        }
        if let Some(ack) = sub.ack.take() {
            let _ = ack.send(Ok(()));
        }
        if !open {
            self.subs.remove(topic);
        }
    }

    /// The server closed the socket 1009: a message was over its limit. That
    /// is the largest call sent on it (sent again, it would close the next
    /// socket too); it fails, the others are sent again.
    fn fail_largest_call(&mut self) {
        let largest = self
            .calls
            .iter()
            .filter(|(_, c)| c.sent.is_some())
            .max_by_key(|(_, c)| c.bytes);
        let Some((&id, _)) = largest else { return };
        let call = self.calls.remove(&id).expect("held");
        let err = Error::TooLarge(format!(
            "the {} call ({} bytes) is over the server's frame limit",
            call.method, call.bytes
        ));
        match call.tx {
            Some(tx) => {
                let _ = tx.send(Err(err));
            }
            None => log::warn!("taskwire: {err}"),
        }
    }

    /// Sends `what` back to this driver after the busy wait (jittered).
    fn later(&self, what: Resend) {
        let wait = self.opts.retry_busy.mul_f64(rand::thread_rng().gen_range(0.5..1.5));
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = me.send(Cmd::Resend(what));
            });
        }
    }

    /// Ends every call and subscription: with `why` (a revocation), or as closed.
    fn stop(mut self, why: Option<Error>) {
        let err = why.clone().unwrap_or(Error::Closed);
        for (_, call) in std::mem::take(&mut self.calls) {
            if let Some(tx) = call.tx {
                let _ = tx.send(Err(err.clone()));
            }
        }
        for (_, sub) in self.subs.drain() {
            match sub.ack {
                Some(ack) => {
                    let _ = ack.send(Err(err.clone()));
                }
                None => {
                    if let Some(e) = &why {
                        let _ = sub.tx.send(Err(e.clone()));
                    }
                }
            }
        }
        self.state.send_replace(State::Closed(why));
    }
}

/// Passes an event on unless its change was already delivered; false when
/// the subscription's receiver is gone.
fn deliver(sub: &mut Sub, event: Event) -> bool {
    if let (Some(seq), Some(p)) = (event.seq, sub.position.as_mut()) {
        if seq <= p.seq {
            return true;
        }
        p.seq = seq;
    }
    sub.tx.send(Ok(Item::Event(event))).is_ok()
}

fn wire_error(frame: &Value) -> Error {
    let code = frame["error"]["code"].as_str().unwrap_or("internal");
    let message = frame["error"]["message"].as_str().unwrap_or("").to_string();
    Error::from_wire(code, message)
}

async fn send(ws: &mut Ws, frame: Value) -> Result<(), Ended> {
    conn::send(ws, &frame).await.map_err(Ended::Lost)
}
