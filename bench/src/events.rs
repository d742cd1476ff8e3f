//! Subscribers reading their events while a scenario runs.

use crate::client::{Light, Ws};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// A dashboard's view of a run: the seqs of its events in arrival order, how
/// many events it read in all (heartbeat events carry no seq), and how the
/// server closed it, if it did.
pub struct Watched {
    pub seqs: Vec<i64>,
    pub events: u64,
    pub ended: Option<String>,
    /// The close frame's code, when the server closed the socket with one.
    pub close_code: Option<u16>,
}

/// Reads every event until told to stop, counting them in `all` and those
/// with a seq in `with_seq` as they come.
pub async fn watch_events(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    all: Arc<AtomicU64>,
    with_seq: Arc<AtomicU64>,
) -> Watched {
    let mut w = Watched {
        seqs: Vec::new(),
        events: 0,
        ended: None,
        close_code: None,
    };
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let Ok(l) = serde_json::from_str::<Light>(&t) else { continue };
                    if l.ty != "event" {
                        continue;
                    }
                    w.events += 1;
                    all.fetch_add(1, Ordering::Relaxed);
                    if let Some(seq) = l.seq {
                        w.seqs.push(seq);
                        with_seq.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    w.close_code = f.as_ref().map(|f| u16::from(f.code));
                    w.ended = Some(format!("closed by the server: {f:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    w.ended = Some(format!("socket error: {e}"));
                    break;
                }
                None => {
                    w.ended = Some("socket ended".into());
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    w
}

/// Waits until `count` reaches `want`, or until it has not moved for `drain`
/// (events that will never come: a socket the server closed). `on_progress`
/// sees each reading.
pub async fn wait_for_count(count: &AtomicU64, want: u64, drain: Duration, on_progress: impl Fn(u64)) {
    let mut last = (count.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = count.load(Ordering::Relaxed);
        on_progress(now);
        if now >= want {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= drain {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
