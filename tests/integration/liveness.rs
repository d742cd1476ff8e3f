//! Liveness: agents that stop heartbeating go `offline` and come back on their
//! next heartbeat, both pushed to `agents` subscribers as changes; heartbeats
//! themselves never enter the change log. A socket whose peer stops answering
//! the server's pings is dropped after three intervals, while a peer that
//! answers stays.

use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const AGENT_TIMEOUT: Duration = Duration::from_millis(300);
const PING_EVERY: Duration = Duration::from_millis(100);

/// The agent's `agent.updated` event must be a status change to `status`
/// (setting `also`, if given, beside it).
fn assert_status_change(ev: &Value, status: &str, version: i64, also: Option<&str>) {
    assert_eq!(ev["type"], "event", "{ev}");
    assert_eq!(ev["topic"], "agents", "{ev}");
    assert_eq!(ev["event"], "agent.updated", "{ev}");
    let mut changed: Vec<&str> = ev["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .filter(|c| Some(*c) != also)
        .collect();
    changed.sort();
    assert_eq!(changed, ["status"], "{ev}");
    assert_eq!(ev["data"]["status"], status, "{ev}");
    assert_eq!(ev["data"]["version"], version, "{ev}");
    assert!(ev["seq"].is_i64(), "a status change has a seq: {ev}");
}

#[tokio::test]
async fn an_agent_goes_offline_without_heartbeats_and_comes_back_on_the_next() {
    let app = spawn_app_with(|c| c.db.heartbeat_timeout = AGENT_TIMEOUT);
    let mut sub = app.ws().await;
    assert_eq!(sub.hello["agent_timeout_ms"], 300, "{}", sub.hello);
    let r = sub.subscribe("agents").await;
    assert_eq!(r["data"]["snapshot"], json!([]), "{r}");

    let t0 = Instant::now();
    let res = app
        .post("/api/agents", json!({"name": "builder", "status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let agent: Value = res.json().await.unwrap();
    let id = agent["id"].as_i64().unwrap();
    let token = agent["token"].as_str().expect("agent token").to_string();
    let created = sub.next_event().await;
    assert_eq!(created["event"], "agent.created", "{created}");
    let seq = created["seq"].as_i64().unwrap();

    // No heartbeat since its creation: offline after the timeout.
    let offline = sub.next_event().await;
    let silent_for = t0.elapsed();
    assert_status_change(&offline, "offline", 2, None);
    assert_eq!(offline["seq"], seq + 1, "{offline}");
    assert!(
        silent_for >= AGENT_TIMEOUT && silent_for < AGENT_TIMEOUT + Duration::from_secs(2),
        "offline after {silent_for:?}, the timeout is {AGENT_TIMEOUT:?}"
    );
    let now = app.get_json(&format!("/api/agents/{id}")).await;
    assert_eq!(now["status"], "offline", "{now}");

    // Its next heartbeat brings back the status it reported: a change, with
    // a seq, and the heartbeat event beside it. (Over REST: an open socket of
    // its token would keep it alive by itself, see agent_sockets.)
    let beat = rest_heartbeat(&app, &token, id).await;
    assert_eq!(beat, Some(seq + 2), "a heartbeat that changes status is a change");
    let mut two = vec![sub.next_event().await, sub.next_event().await];
    two.sort_by_key(|e| e["event"].as_str().unwrap().to_string());
    assert_eq!(two[0]["event"], "agent.heartbeat", "{two:?}");
    assert_eq!(two[0]["data"]["id"], id);
    assert!(two[0].get("seq").is_none(), "a heartbeat has no seq: {}", two[0]);
    // The heartbeat set its time too, so `changed` may name it.
    assert_status_change(&two[1], "busy", 3, Some("last_heartbeat_at"));
    assert_eq!(two[1]["seq"], seq + 2);

    // While it heartbeats more often than the timeout it stays busy: each
    // heartbeat is pushed, and nothing else is.
    let beats = 8;
    for _ in 0..beats {
        tokio::time::sleep(PING_EVERY).await;
        let r = rest_heartbeat(&app, &token, id).await;
        assert_eq!(r, None, "a plain heartbeat is not a change");
        let ev = sub.next_event().await;
        assert_eq!(ev["event"], "agent.heartbeat", "only heartbeats while alive: {ev}");
        assert!(ev.get("seq").is_none(), "{ev}");
    }
    let last_beat = Instant::now();

    // It stops: offline again, counted from the last heartbeat.
    let offline = sub.next_event().await;
    let silent_for = last_beat.elapsed();
    assert_status_change(&offline, "offline", 4, None);
    assert_eq!(offline["seq"], seq + 3);
    assert!(
        silent_for >= AGENT_TIMEOUT - Duration::from_millis(20),
        "offline {silent_for:?} after its last heartbeat"
    );

    // Four changes in the log; the heartbeats are not there.
    let body = app.changes(0, None).await;
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["agent.created", "agent.updated", "agent.updated", "agent.updated"],
        "{body}"
    );
    eprintln!("offline {silent_for:?} after the last of {beats} heartbeats");
}

/// A heartbeat over REST with the agent's token; the seq if it was a change.
async fn rest_heartbeat(app: &TestApp, token: &str, id: i64) -> Option<i64> {
    let res = app
        .http()
        .post(app.url(&format!("/api/agents/{id}/heartbeat")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    crate::shared::seq_header(&res)
}

async fn sockets_open(app: &TestApp) -> i64 {
    let text = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("taskwire_sockets_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no taskwire_sockets_open in\n{text}")) as i64
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let app = spawn_app_with(|c| c.heartbeat_interval = PING_EVERY);
    let mut alive = app.ws().await;
    // Never polled again, so tungstenite never answers the server's pings.
    let t0 = Instant::now();
    let mut dead = app.ws().await;
    assert_eq!(dead.hello["heartbeat_ms"], 100);
    assert_eq!(sockets_open(&app).await, 2);

    // The live peer is read all along, which answers every ping.
    let watch_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let live = tokio::spawn(async move {
        let mut pings = 0;
        while let Ok(msg) = tokio::time::timeout_at(watch_until, alive.stream.next()).await {
            match msg {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("the live socket got {other:?}"),
            }
        }
        (alive, pings)
    });

    // Nothing to await on the server side but its metric: poll it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockets_open(&app).await != 1 {
        assert!(Instant::now() < deadline, "the silent peer was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped_after = t0.elapsed();
    assert!(
        dropped_after >= PING_EVERY * 3,
        "dropped after {dropped_after:?}, before three ping intervals"
    );

    // Its connection has ended: past the pings it had buffered, no more data.
    let mut pings = 0;
    let end = loop {
        match tokio::time::timeout(WAIT, dead.stream.next())
            .await
            .expect("the dropped socket stays open")
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(f))) => break format!("close frame {f:?}"),
            Some(Ok(other)) => panic!("the dropped socket got {other:?}"),
            Some(Err(e)) => break format!("error {e}"),
            None => break "end of stream".to_string(),
        }
    };
    assert!(pings >= 2, "only {pings} pings before the drop");

    // The peer that answered is still there, well past three intervals.
    let (mut alive, live_pings) = live.await.unwrap();
    assert!(live_pings >= 10, "the live peer saw {live_pings} pings");
    let r = alive.request(json!({"type": "ping"})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(sockets_open(&app).await, 1);
    eprintln!(
        "silent peer dropped after {dropped_after:?} ({pings} unanswered pings, then {end}); live peer answered {live_pings} pings"
    );
}
