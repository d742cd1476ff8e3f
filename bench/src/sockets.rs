//! Many sockets at once: the open-file limit they need, and opening them.

use crate::cli::Common;
use crate::client::{connect, request_ok, Ws};
use crate::Res;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Raises this process's open-file limit so it can hold `sockets` sockets.
pub fn raise_nofile(sockets: usize) -> Res<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("raising the open-file limit: {e}"))?;
    let need = sockets as u64 + 64;
    if limit < need {
        return Err(format!(
            "the open-file limit is {limit}, below the {need} this run needs (raise `ulimit -Hn`)"
        ));
    }
    Ok(limit)
}

/// A socket opened (and maybe subscribed) for a scenario.
pub struct Opened {
    pub ws: Ws,
    /// When the hello arrived.
    pub connected: Instant,
    /// The subscribe reply's data, if it subscribed.
    pub subscribed: Option<Value>,
}

/// Opens `n` sockets, at most `concurrency` handshakes at once, each one
/// subscribing to `tasks` if `subscribe`.
pub async fn open_many(c: &Common, n: usize, subscribe: bool, pb: &ProgressBar) -> Res<Vec<Opened>> {
    open_on(c, vec![subscribe.then(|| "tasks".to_string()); n], pb).await
}

/// Opens one socket per entry of `topics`, at most `concurrency` handshakes
/// at once, each subscribing to its topic if it has one.
pub async fn open_on(c: &Common, topics: Vec<Option<String>>, pb: &ProgressBar) -> Res<Vec<Opened>> {
    let n = topics.len();
    let gate = Arc::new(Semaphore::new(c.concurrency));
    let mut handles = Vec::with_capacity(n);
    for topic in topics {
        let gate = gate.clone();
        let c = c.clone();
        let pb = pb.clone();
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let (mut ws, _) = connect(&c).await?;
            let connected = Instant::now();
            let subscribed = match topic {
                Some(topic) => {
                    let r = request_ok(&mut ws, json!({"type": "subscribe", "topic": topic}), 1).await?;
                    Some(r["data"].clone())
                }
                None => None,
            };
            pb.inc(1);
            Ok::<_, String>(Opened {
                ws,
                connected,
                subscribed,
            })
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(o)) => out.push(o),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    match first_err {
        Some(e) => Err(format!(
            "{} of {n} sockets failed to open; the first: {e}",
            n - out.len()
        )),
        None => Ok(out),
    }
}
