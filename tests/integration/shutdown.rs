//! Graceful shutdown: SIGTERM to the real binary while socket and REST writers
//! are busy. Every socket must see close 1001, the process must exit 0 within
//! 5 s, every acknowledged write must be there after a restart, and no write
//! may commit without its answer (the in-flight commits finish and answer).
//! Subscribers then resume from their positions and lose nothing.

use crate::child::*;
use crate::shared::by_id;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Socket writers and how many calls each keeps in flight.
const WS_WINDOWS: [usize; 4] = [1, 1, 16, 64];
const REST_WRITERS: usize = 2;
const SUBSCRIBERS: usize = 3;
/// Acknowledged creates before the SIGTERM.
const TERM_AFTER: usize = 400;

/// What one writer learnt: creates acknowledged (title → (id, seq)), refused
/// as `unavailable`, and sent without an answer.
#[derive(Debug, Default)]
struct Outcome {
    acked: BTreeMap<String, (i64, i64)>,
    refused: Vec<String>,
    unanswered: Vec<String>,
    end: Option<End>,
}

async fn ws_writer(addr: SocketAddr, n: usize, window: usize, tick: Arc<watch::Sender<usize>>) -> Outcome {
    let mut c = Client::connect(addr, ADMIN).await.expect("connect");
    let mut out = Outcome::default();
    let mut outstanding: HashMap<i64, String> = HashMap::new();
    let mut k = 0i64;
    let mut can_send = true;
    loop {
        while can_send && outstanding.len() < window {
            k += 1;
            let title = format!("s{n}-{k}");
            let frame = json!({"type": "call", "ref": k, "method": "task.create",
                "params": {"title": title}, "op_id": title});
            if c.send(&frame).await.is_err() {
                can_send = false;
                break;
            }
            outstanding.insert(k, title);
        }
        match c.recv().await {
            Ok(v) => {
                assert_eq!(v["type"], "reply", "{v}");
                let title = outstanding.remove(&v["ref"].as_i64().unwrap()).expect("a ref sent");
                if v["ok"] == true {
                    let id = v["data"]["id"].as_i64().unwrap();
                    let seq = v["seq"].as_i64().expect("seq of a create");
                    assert_eq!(v["data"]["title"], title.as_str());
                    out.acked.insert(title, (id, seq));
                    tick.send_modify(|n| *n += 1);
                } else {
                    assert_eq!(
                        v["error"]["code"], "unavailable",
                        "only unavailable while stopping: {v}"
                    );
                    out.refused.push(title);
                }
            }
            Err(end) => {
                out.unanswered = outstanding.into_values().collect();
                out.end = Some(end);
                return out;
            }
        }
    }
}

async fn rest_writer(addr: SocketAddr, n: usize, tick: Arc<watch::Sender<usize>>) -> Outcome {
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut out = Outcome::default();
    for k in 1.. {
        let title = format!("r{n}-{k}");
        let res = http
            .post(format!("http://{addr}/api/tasks"))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", &title)
            .json(&json!({ "title": title }))
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                out.unanswered.push(title);
                out.end = Some(End::Lost(e.to_string()));
                return out;
            }
        };
        let status = res.status().as_u16();
        let seq = res
            .headers()
            .get("Taskwire-Seq")
            .and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
        let body: Value = match res.json().await {
            Ok(b) => b,
            Err(e) => {
                out.unanswered.push(title);
                out.end = Some(End::Lost(e.to_string()));
                return out;
            }
        };
        match status {
            201 => {
                out.acked
                    .insert(title, (body["id"].as_i64().unwrap(), seq.expect("Taskwire-Seq")));
                tick.send_modify(|n| *n += 1);
            }
            503 => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                out.refused.push(title);
            }
            other => panic!("create answered {other}: {body}"),
        }
    }
    unreachable!()
}

/// Applies `tasks` events until the socket ends; returns the last seq seen,
/// the tasks, and how it ended.
async fn subscriber(mut c: Client, mut last: i64) -> (i64, BTreeMap<i64, Value>, End) {
    let mut tasks = BTreeMap::new();
    loop {
        match c.next_event().await {
            Ok(ev) => {
                assert_eq!(ev["event"], "task.created", "{ev}");
                let seq = ev["seq"].as_i64().unwrap();
                assert_eq!(seq, last + 1, "a change missed or twice: {ev}");
                last = seq;
                tasks.insert(ev["data"]["id"].as_i64().unwrap(), ev["data"].clone());
            }
            Err(end) => return (last, tasks, end),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_closes_every_socket_with_1001_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let mut server = Server::start(&db, &[]);
    let addr = server.addr;
    let epoch = server.ws().await.epoch();

    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = server.ws().await;
        let r = c.subscribe("tasks").await.expect("subscribe");
        assert_eq!(r["data"]["snapshot"], json!([]), "{r}");
        let seq = r["data"]["seq"].as_i64().unwrap();
        subs.push(tokio::spawn(subscriber(c, seq)));
    }
    let (tick, mut ticks) = watch::channel(0usize);
    let tick = Arc::new(tick);
    let mut writers = Vec::new();
    for (n, window) in WS_WINDOWS.iter().enumerate() {
        writers.push(tokio::spawn(ws_writer(addr, n, *window, tick.clone())));
    }
    for n in 0..REST_WRITERS {
        writers.push(tokio::spawn(rest_writer(addr, n, tick.clone())));
    }
    tokio::time::timeout(WAIT, ticks.wait_for(|n| *n >= TERM_AFTER))
        .await
        .expect("writers made no progress")
        .unwrap();

    server.terminate();
    let term_at = Instant::now();
    let acked_at_term = *ticks.borrow();
    let (server, status) = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(5));
        (server, status)
    })
    .await
    .unwrap();
    let exit_ms = term_at.elapsed().as_millis();
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM; log:\n{}", server.log()));
    assert!(status.success(), "exit status {status:?}; log:\n{}", server.log());

    let mut outcomes = Vec::new();
    for (i, w) in writers.into_iter().enumerate() {
        let out = w.await.expect("writer");
        if i < WS_WINDOWS.len() {
            assert_eq!(
                out.end,
                Some(End::Closed(Some(1001))),
                "socket writer {i} did not see 1001"
            );
        }
        outcomes.push(out);
    }
    let mut positions = Vec::new();
    for s in subs {
        let (last, tasks, end) = s.await.expect("subscriber");
        assert_eq!(end, End::Closed(Some(1001)), "a subscriber did not see 1001");
        positions.push((last, tasks));
    }

    // Restart: every acknowledged create is there, nothing refused or
    // unanswered is.
    let server = Server::start(&db, &[]);
    let body = server.get_json("/api/tasks").await;
    assert_eq!(body["epoch"], epoch.as_str());
    let by_title: HashMap<String, Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["title"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let (mut acked, mut refused, mut unanswered) = (0, 0, 0);
    for out in &outcomes {
        for (title, (id, _)) in &out.acked {
            let t = by_title
                .get(title)
                .unwrap_or_else(|| panic!("acknowledged {title} is lost"));
            assert_eq!(t["id"], *id);
            assert_eq!(t["version"], 1);
        }
        for title in &out.refused {
            assert!(!by_title.contains_key(title), "{title} was refused but committed");
        }
        for title in &out.unanswered {
            assert!(
                !by_title.contains_key(title),
                "{title} committed but its answer never came before the close"
            );
        }
        acked += out.acked.len();
        refused += out.refused.len();
        unanswered += out.unanswered.len();
    }
    assert_eq!(by_title.len(), acked, "tasks that nobody acknowledged");

    // Each subscriber resumes from its position and ends with the full state.
    let all = by_id(&body["items"]);
    for (last, mut tasks) in positions {
        let mut c = server.ws().await;
        let r = c.resume("tasks", &epoch, last).await.expect("resume");
        let events = r["data"]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("expected a replay: {r}"));
        let mut seq = last;
        for ev in events {
            assert_eq!(ev["seq"].as_i64().unwrap(), seq + 1, "{ev}");
            seq += 1;
            tasks.insert(ev["data"]["id"].as_i64().unwrap(), ev["data"].clone());
        }
        assert_eq!(seq, body["seq"].as_i64().unwrap());
        assert_eq!(tasks, all);
    }
    eprintln!(
        "SIGTERM after {acked_at_term} acks; exit 0 after {exit_ms} ms; {acked} acknowledged, {refused} refused unavailable, {unanswered} unanswered (none committed)"
    );
}
