//! A reference for the fan-out benchmarks: the smallest WebSocket fan-out the
//! load generator can drive. No database, no actors, no HTTP framework: tokio
//! and tungstenite only, one task per socket, a broadcast channel for events.
//!
//! It speaks only the part of the protocol `taskwire-bench fanout` uses (hello,
//! subscribe and unsubscribe of `tasks`, `task.create` and `task.update` calls,
//! and events with the same fields as taskwire's, about 8% larger), keeps one
//! task in memory and writes nothing to disk. It copies each event into every
//! subscriber's frame, as a plain tungstenite server does; taskwire encodes an
//! event once and shares it. Issue 8's fan-out targets were set from
//! a server like this one; running the same generator against it on the same
//! machine shows how much of a fan-out figure is the machine and the generator,
//! and how much is taskwire (see docs/benchmarks.md).
//!
//! ```text
//! cargo run --release -p taskwire-bench --bin fanout-baseline -- 127.0.0.1:18090
//! target/release/taskwire-bench --addr 127.0.0.1:18090 fanout -n 1000
//! ```

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// The one task, the seq, and the channel every `tasks` subscriber reads.
struct Shared {
    seq: i64,
    task: Value,
    events: broadcast::Sender<Arc<str>>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18090".into());
    // Thousands of sockets need more than the usual soft limit of 1,024 files.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("fanout-baseline: could not raise the open-file limit: {e}");
    }
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("fanout-baseline listening on {}", listener.local_addr()?);
    let (events, _) = broadcast::channel(4096);
    let shared = Arc::new(Mutex::new(Shared {
        seq: 0,
        task: json!({
            "id": 1, "title": "bench-0", "description": "", "status": "todo",
            "priority": 0, "assignee_id": null, "version": 1,
            "created_at": "2026-11-25T12:27:54.105Z",
            "updated_at": "2026-11-25T12:27:54.105Z"
        }),
        events,
    }));
    loop {
        // One failed accept (out of files, a reset handshake) ends one socket,
        // not the server.
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("fanout-baseline: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, shared.clone()));
    }
}

/// One socket: answers its frames and forwards events while subscribed.
async fn serve(stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let hello = json!({"type": "hello", "server": "fanout_baseline"}).to_string();
    if ws.send(Message::Text(hello)).await.is_err() {
        return;
    }
    let mut events: Option<broadcast::Receiver<Arc<str>>> = None;
    loop {
        tokio::select! {
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = answer(&text, &shared, &mut events);
                if ws.send(Message::Text(reply)).await.is_err() {
                    return;
                }
            }
            e = next_event(&mut events), if events.is_some() => {
                match e {
                    Ok(frame) => {
                        if ws.send(Message::Text(frame.to_string())).await.is_err() {
                            return;
                        }
                    }
                    // A reader more than the channel's 4,096 events behind
                    // loses some; the generator counts them as lost.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("fanout-baseline: a socket lagged and lost {n} events");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}

/// The next event for a subscribed socket (never ready for one that is not).
async fn next_event(
    events: &mut Option<broadcast::Receiver<Arc<str>>>,
) -> Result<Arc<str>, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The reply to one frame; a `task.update` also publishes its event.
fn answer(text: &str, shared: &Mutex<Shared>, events: &mut Option<broadcast::Receiver<Arc<str>>>) -> String {
    let Ok(f) = serde_json::from_str::<Value>(text) else {
        return json!({"type": "error", "error": {"code": "bad_frame", "message": "not JSON"}}).to_string();
    };
    let r = &f["ref"];
    let mut s = shared.lock().expect("no panics under the lock");
    let reply = match (f["type"].as_str(), f["method"].as_str()) {
        (Some("subscribe"), _) => {
            // Subscribed under the lock, so no event falls between the
            // snapshot's seq and the first event read.
            *events = Some(s.events.subscribe());
            json!({"type": "reply", "ref": r, "ok": true, "data": {
                "topic": "tasks", "epoch": "baseline", "seq": s.seq, "snapshot": [s.task]}})
        }
        (Some("unsubscribe"), _) => {
            *events = None;
            json!({"type": "reply", "ref": r, "ok": true, "data": {}})
        }
        (Some("ping"), _) => json!({"type": "reply", "ref": r, "ok": true, "data": {}}),
        (Some("call"), Some("task.create")) => {
            json!({"type": "reply", "ref": r, "ok": true, "data": s.task})
        }
        (Some("call"), Some("task.update")) => {
            s.seq += 1;
            let seq = s.seq;
            if let Some(d) = f["params"]["patch"]["description"].as_str() {
                s.task["description"] = json!(d);
            }
            let version = s.task["version"].as_i64().unwrap_or(0) + 1;
            s.task["version"] = json!(version);
            let event = json!({"type": "event", "topic": "tasks", "seq": seq,
                "event": "task.updated", "changed": ["description", "updated_at", "version"],
                "data": s.task});
            // No subscriber is not an error.
            let _ = s.events.send(event.to_string().into());
            json!({"type": "reply", "ref": r, "ok": true, "seq": seq, "data": s.task})
        }
        _ => json!({"type": "reply", "ref": r, "ok": false,
                    "error": {"code": "bad_request", "message": "not in the baseline"}}),
    };
    reply.to_string()
}
