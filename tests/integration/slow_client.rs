//! Slow clients: a subscriber that stops reading while tens of thousands of
//! events flow is closed with 1013 once its outbound queue passes the limit
//! (`--max-queue-bytes`, 256 KiB here so that the test stays short), and the
//! server closes its connection `CLOSE_TIMEOUT` later though it reads nothing; the
//! server's resident memory stays under a stated bound; a
//! fast subscriber on the same topic gets every event, in order, on time; the
//! slow one, after reconnecting with its position, ends with the same state.

use crate::child::*;
use crate::shared::by_id;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Creates, each pushed as one event of about 750 B: 15 MB in all.
const EVENTS: usize = 20_000;
const DESCRIPTION_BYTES: usize = 500;
const MAX_QUEUE_BYTES: usize = 256 * 1024;
/// Calls each writer keeps in flight.
const WINDOW: usize = 128;
const WRITERS: usize = 2;
/// How many events the writers may send ahead of what the fast subscriber has
/// read (about 120 KB, under half the queue bound), so that on a loaded machine
/// the fast subscriber is never itself the one closed as too slow.
const MAX_AHEAD: usize = 160;
/// The bound on the server's peak resident memory, over its resident memory
/// before the flow. The slow client's queue may hold 256 KiB; without a bound
/// it would hold every event, 15 MB of frames (about 28 MiB resident).
const RSS_GROWTH_BOUND_MIB: u64 = 16;

/// How a client that stopped reading, and reads at last once the server closed
/// its connection, finds the socket ended: with the 1013 close frame if that
/// had reached the kernel's buffers, else with the end of the stream (which
/// tungstenite reports as a reset without a closing handshake).
fn assert_closed_slow(end: &End) {
    let ended = matches!(end, End::Lost(e) if e.contains("without closing handshake"));
    assert!(
        *end == End::Closed(Some(1013)) || ended,
        "the slow client's close: {end:?}"
    );
}

/// Pipelines `count` creates, staying at most `MAX_AHEAD` sends (`sent`, over
/// all writers) ahead of the events the fast subscriber has read (`read`);
/// returns when each was acknowledged, by seq.
async fn writer(
    addr: SocketAddr,
    n: usize,
    count: usize,
    sent_total: Arc<AtomicUsize>,
    mut read: watch::Receiver<usize>,
) -> Vec<(i64, Instant)> {
    let mut c = Client::connect(addr, ADMIN).await.expect("connect");
    let description = "x".repeat(DESCRIPTION_BYTES);
    let mut acks = Vec::with_capacity(count);
    let (mut sent, mut outstanding) = (0usize, 0usize);
    while acks.len() < count {
        while outstanding < WINDOW && sent < count && sent_total.load(Ordering::Relaxed) < *read.borrow() + MAX_AHEAD {
            sent += 1;
            sent_total.fetch_add(1, Ordering::Relaxed);
            let frame = json!({"type": "call", "ref": sent, "method": "task.create",
                "params": {"title": format!("w{n}-{sent}"), "description": description}});
            c.send(&frame).await.expect("send");
            outstanding += 1;
        }
        if outstanding == 0 {
            read.changed().await.expect("the fast subscriber stopped reading");
            continue;
        }
        let reply = c.recv().await.expect("reply");
        assert_eq!(reply["ok"], true, "{reply}");
        outstanding -= 1;
        acks.push((reply["seq"].as_i64().unwrap(), Instant::now()));
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_is_closed_1013_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limit = MAX_QUEUE_BYTES.to_string();
    let server = Server::start(&dir.path().join("x.db"), &["--max-queue-bytes", &limit]);
    let addr = server.addr;

    let mut fast = server.ws().await;
    let r = fast.subscribe("tasks").await.unwrap();
    let start = r["data"]["seq"].as_i64().unwrap();
    let epoch = fast.epoch();
    let mut slow = tiny_socket(addr, ADMIN).await;
    let r = slow.subscribe("tasks").await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    // From here on nothing reads `slow`.

    // Resident memory, sampled while the events flow.
    let baseline_kib = server.proc_kib("VmRSS");
    let peak = Arc::new(AtomicU64::new(baseline_kib));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), server.pid());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(proc_status_kib(pid, "VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // The fast subscriber: every event, in seq order, timestamped.
    let arrivals = Arc::new(Mutex::new(Vec::<(i64, Instant)>::with_capacity(EVENTS)));
    let (read_tx, read_rx) = watch::channel(0usize);
    let reader = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut tasks = BTreeMap::new();
            let mut last = start;
            for _ in 0..EVENTS {
                let ev = fast.next_event().await.expect("fast subscriber's event");
                let seq = ev["seq"].as_i64().unwrap();
                assert_eq!(seq, last + 1, "the fast subscriber missed a change: {ev}");
                last = seq;
                assert_eq!(ev["event"], "task.created");
                tasks.insert(ev["data"]["id"].as_i64().unwrap(), ev["data"].clone());
                arrivals.lock().unwrap().push((seq, Instant::now()));
                read_tx.send_replace(tasks.len());
            }
            (fast, tasks)
        })
    };

    let t0 = Instant::now();
    let sent_total = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| tokio::spawn(writer(addr, n, EVENTS / WRITERS, sent_total.clone(), read_rx.clone())))
        .collect();
    let mut acked: HashMap<i64, Instant> = HashMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let written = t0.elapsed();
    let (_fast, fast_tasks) = reader.await.expect("fast subscriber");
    let received = t0.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_kib = peak.load(Ordering::Relaxed).max(server.proc_kib("VmRSS"));

    // How late the fast subscriber got each event after its write's reply.
    let mut lags: Vec<Duration> = arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|(seq, at)| at.saturating_duration_since(acked[seq]))
        .collect();
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100];
    let max_lag = *lags.last().unwrap();

    let growth_mib = peak_kib.saturating_sub(baseline_kib) / 1024;
    eprintln!(
        "{EVENTS} events of ~{DESCRIPTION_BYTES} B written in {written:?}, all received by the fast client after {received:?}; \
         lag after the reply p99 {p99:?}, max {max_lag:?}; server RSS {} MiB before, peak {} MiB (+{growth_mib} MiB, bound +{RSS_GROWTH_BOUND_MIB} MiB)",
        baseline_kib / 1024,
        peak_kib / 1024
    );
    // The server gave up on the slow client: 1013, after a gap-free prefix.
    let closed_slow = server.metric("taskwire_sockets_closed_slow_total").await;
    assert_eq!(closed_slow, 1.0, "exactly the one slow socket is closed");
    let (end, frames) = slow.read_to_end().await;
    eprintln!("the slow client got {} events, then {end:?}", frames.len());
    assert_closed_slow(&end);
    let mut last = start;
    for ev in &frames {
        let seq = ev["seq"].as_i64().unwrap();
        assert_eq!(seq, last + 1, "the slow client's events have a gap: {ev}");
        last = seq;
    }
    assert!(
        frames.len() < EVENTS / 2,
        "the slow client was sent {} events before its close",
        frames.len()
    );

    assert!(
        growth_mib < RSS_GROWTH_BOUND_MIB,
        "the server grew by {growth_mib} MiB while a client did not read"
    );
    assert!(max_lag < Duration::from_secs(2), "the fast client lagged {max_lag:?}");

    // The slow client comes back with its position and ends with the state.
    let mut back = server.ws().await;
    let r = back.resume("tasks", &epoch, last).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let body = server.get_json("/api/tasks").await;
    let all = by_id(&body["items"]);
    let state: BTreeMap<i64, Value> = match (r["data"].get("snapshot"), r["data"].get("events")) {
        (Some(snapshot), _) => by_id(snapshot),
        (None, Some(events)) => {
            let mut state: BTreeMap<i64, Value> = frames
                .iter()
                .map(|e| (e["data"]["id"].as_i64().unwrap(), e["data"].clone()))
                .collect();
            for e in events.as_array().unwrap() {
                state.insert(e["data"]["id"].as_i64().unwrap(), e["data"].clone());
            }
            state
        }
        _ => panic!("neither snapshot nor events: {r}"),
    };
    assert_eq!(state, all, "the slow client's state after it resumed");
    assert_eq!(fast_tasks, all, "the fast client's state");
}

/// The queue is bounded by frames too: a client that does not read is closed
/// once `--max-queue-frames` frames wait, long before the byte bound (8 MiB by
/// default) would close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_by_too_many_frames_is_closed_1013() {
    // Enough that the kernel's socket buffers cannot hold them all.
    const SMALL_EVENTS: usize = 6_000;
    let description = "y".repeat(1000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("x.db"), &["--max-queue-frames", "200"]);
    let mut slow = tiny_socket(server.addr, ADMIN).await;
    let r = slow.subscribe("tasks").await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let start = r["data"]["seq"].as_i64().unwrap();
    // From here on nothing reads `slow` until the writes are done.
    let mut w = server.ws().await;
    let mut outstanding = 0usize;
    for i in 0..SMALL_EVENTS {
        let frame = json!({"type": "call", "ref": i, "method": "task.create", "params": {"title": format!("t{i}"), "description": description}});
        w.send(&frame).await.expect("send");
        outstanding += 1;
        if outstanding == WINDOW {
            assert_eq!(w.recv().await.expect("reply")["ok"], true);
            outstanding -= 1;
        }
    }
    while outstanding > 0 {
        assert_eq!(w.recv().await.expect("reply")["ok"], true);
        outstanding -= 1;
    }
    assert_eq!(server.metric("taskwire_sockets_closed_slow_total").await, 1.0);
    let (end, frames) = slow.read_to_end().await;
    assert_closed_slow(&end);
    assert!(frames.len() < SMALL_EVENTS, "{} events before the close", frames.len());
    for (i, ev) in frames.iter().enumerate() {
        assert_eq!(
            ev["seq"].as_i64().unwrap(),
            start + 1 + i as i64,
            "a gap before the close: {ev}"
        );
    }
}
