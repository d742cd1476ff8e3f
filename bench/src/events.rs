//! A subscriber reading its events while a scenario runs.

use crate::client::{Light, Ws};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// One subscriber's view of a fanout run: each event's seq and arrival time,
/// and how its socket ended if it ended early.
pub struct Received {
    pub events: Vec<(i64, Instant)>,
    pub ended: Option<String>,
}

/// Reads events until told to stop; counts them in `seen` as they come.
pub async fn collect_events(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    seen: Arc<AtomicU64>,
    capacity: usize,
) -> Received {
    let mut events = Vec::with_capacity(capacity);
    let mut ended = None;
    loop {
        tokio::select! {
            m = ws.next() => {
                let at = Instant::now();
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(l) = serde_json::from_str::<Light>(&t) {
                            if l.ty == "event" {
                                if let Some(seq) = l.seq {
                                    events.push((seq, at));
                                    seen.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        ended = Some(format!("closed by the server: {f:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        ended = Some(format!("socket error: {e}"));
                        break;
                    }
                    None => {
                        ended = Some("socket ended".into());
                        break;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    Received { events, ended }
}
