//! The hostile clients' loops. Each sends its next request as soon as the
//! previous one is answered (or at its pace, if it has one), ignores refusals
//! (no backoff, no `Retry-After`), reconnects when the server closes it, and
//! stops at a deadline; each counts what it sent and how it was answered.

use crate::cli::Common;
use crate::client::{connect, next_text, send, Light, Ws};
use crate::pace::Pace;
use crate::rest::Rest;
use crate::stats::round3;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A pause after a failed connect or a transport error, so that a loop
/// against a server that is gone does not spin.
const PAUSE: Duration = Duration::from_millis(100);

/// What a set of loops sent and how it was answered. Every request is
/// counted once: answered (`ok`, `refused` by a limit, or `other`), or left
/// `unanswered` when its connection ended first.
#[derive(Default)]
pub struct Counts {
    pub requests: u64,
    pub ok: u64,
    pub refused: u64,
    pub other: u64,
    pub unanswered: u64,
    /// Connections the server closed (sockets) or requests that got no
    /// answer (HTTP), and failed reconnects.
    pub dropped: u64,
    pub first_other: Option<String>,
    pub first_drop: Option<String>,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.refused += o.refused;
        self.other += o.other;
        self.unanswered += o.unanswered;
        self.dropped += o.dropped;
        self.first_other = self.first_other.take().or(o.first_other);
        self.first_drop = self.first_drop.take().or(o.first_drop);
    }

    pub fn adds_up(&self) -> bool {
        self.requests == self.ok + self.refused + self.other + self.unanswered
    }

    fn note_other(&mut self, what: String) {
        self.other += 1;
        self.first_other.get_or_insert(what);
    }

    fn note_drop(&mut self, what: String) {
        self.dropped += 1;
        self.first_drop.get_or_insert(what);
    }

    /// The counts, and their rates over `secs`.
    pub fn json(&self, loops: usize, secs: f64) -> Value {
        let per_s = |n: u64| if secs > 0.0 { round3(n as f64 / secs) } else { 0.0 };
        json!({
            "loops": loops,
            "seconds": round3(secs),
            "requests": self.requests,
            "ok": self.ok,
            "refused": self.refused,
            "other": self.other,
            "unanswered": self.unanswered,
            "dropped": self.dropped,
            "requests_per_s": per_s(self.requests),
            "ok_per_s": per_s(self.ok),
            "refused_per_s": per_s(self.refused),
            "first_other": self.first_other,
            "first_drop": self.first_drop,
        })
    }
}

/// The start of an unexpected answer, enough to tell what it was.
fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

/// GETs `path` over and over until `end`: 200 is `ok`, 429 `refused`.
pub async fn http_loop(rest: Rest, path: String, end: Instant, mut pace: Pace) -> Counts {
    let mut n = Counts::default();
    loop {
        pace.wait().await;
        if Instant::now() >= end {
            break;
        }
        n.requests += 1;
        match rest.send(Method::GET, &path, None).await {
            Ok((200, _)) => n.ok += 1,
            Ok((429, _)) => n.refused += 1,
            Ok((status, body)) => n.note_other(format!("{status} {}", clip(&body))),
            Err(e) => {
                n.unanswered += 1;
                n.note_drop(e);
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
    n
}

/// The reply to request `r`, skipping events and other frames.
async fn reply_to(ws: &mut Ws, r: i64) -> Result<String, String> {
    loop {
        let t = next_text(ws).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
        if l.ty == "reply" && l.reference == Some(r) {
            return Ok(t);
        }
    }
}

/// Counts one reply; answers its seq when it was a change.
fn tally_reply(n: &mut Counts, t: &str) -> Option<i64> {
    match serde_json::from_str::<Light>(t) {
        Ok(l) if l.ok == Some(true) => {
            n.ok += 1;
            l.seq
        }
        Ok(l) if l.refused() => {
            n.refused += 1;
            None
        }
        _ => {
            n.note_other(clip(t));
            None
        }
    }
}

/// Opens a socket for a loop, counting a failure as a drop.
async fn open(c: &Common, n: &mut Counts) -> Option<(Ws, Value)> {
    match connect(c).await {
        Ok(x) => Some(x),
        Err(e) => {
            n.note_drop(format!("connect: {e}"));
            tokio::time::sleep(PAUSE).await;
            None
        }
    }
}

/// Subscribes to `tasks` from `since` 0 of the socket's own epoch (the whole
/// change log back, or a snapshot when the server prefers one), unsubscribes,
/// and again, until `end`. Counts the subscribes; an unsubscribe's reply is
/// only waited for.
pub async fn resubscribe_loop(c: Common, end: Instant, mut pace: Pace) -> Counts {
    let mut n = Counts::default();
    let mut r = 0i64;
    while Instant::now() < end {
        let Some((mut ws, hello)) = open(&c, &mut n).await else {
            continue;
        };
        let epoch = hello["epoch"].clone();
        loop {
            pace.wait().await;
            if Instant::now() >= end {
                break;
            }
            r += 1;
            n.requests += 1;
            let sub = json!({"type": "subscribe", "ref": r, "topic": "tasks", "epoch": epoch, "since": 0});
            let answered = match send(&mut ws, &sub).await {
                Ok(()) => reply_to(&mut ws, r).await,
                Err(e) => Err(e),
            };
            match answered {
                Ok(t) => {
                    tally_reply(&mut n, &t);
                }
                Err(e) => {
                    n.unanswered += 1;
                    n.note_drop(e);
                    break;
                }
            }
            r += 1;
            let unsub = json!({"type": "unsubscribe", "ref": r, "topic": "tasks"});
            let left = match send(&mut ws, &unsub).await {
                Ok(()) => reply_to(&mut ws, r).await,
                Err(e) => Err(e),
            };
            if let Err(e) = left {
                n.note_drop(e);
                break;
            }
        }
    }
    n
}

/// An agent's `agent.heartbeat` calls on one socket, each changing `status`
/// (busy, idle, busy, ...), until `end`. Answers the counts and the seqs of
/// the accepted heartbeats that committed a change.
pub async fn heartbeat_loop(c: Common, agent: i64, end: Instant) -> (Counts, Vec<i64>) {
    let mut n = Counts::default();
    let mut seqs = Vec::new();
    let mut r = 0i64;
    while Instant::now() < end {
        let Some((mut ws, _)) = open(&c, &mut n).await else {
            continue;
        };
        while Instant::now() < end {
            r += 1;
            n.requests += 1;
            let status = if r % 2 == 1 { "busy" } else { "idle" };
            let call = json!({"type": "call", "ref": r, "method": "agent.heartbeat",
                              "params": {"id": agent, "status": status}});
            let answered = match send(&mut ws, &call).await {
                Ok(()) => reply_to(&mut ws, r).await,
                Err(e) => Err(e),
            };
            match answered {
                Ok(t) => seqs.extend(tally_reply(&mut n, &t)),
                Err(e) => {
                    n.unanswered += 1;
                    n.note_drop(e);
                    break;
                }
            }
        }
    }
    (n, seqs)
}
