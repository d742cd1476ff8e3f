//! An agent's open socket keeps it alive: an offline agent whose token opens a
//! socket is back at once; its last socket closing takes it offline after
//! `--presence-grace`, unless a socket opens again meanwhile.

use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(300);
const GRACE: Duration = Duration::from_millis(500);

/// The next event, or `None` if none comes within `d` (a wait for nothing
/// to happen is a wait of some length).
async fn event_within(ws: &mut Ws, d: Duration) -> Option<Value> {
    tokio::time::timeout(d, ws.next_event()).await.ok()
}

fn assert_status(ev: &Value, id: i64, status: &str) {
    assert_eq!(ev["event"], "agent.updated", "{ev}");
    assert_eq!(ev["data"]["id"], id, "{ev}");
    assert_eq!(ev["changed"], json!(["status"]), "{ev}");
    assert_eq!(ev["data"]["status"], status, "{ev}");
}

#[tokio::test]
async fn an_agents_socket_keeps_it_alive_and_its_last_close_starts_the_grace() {
    let app = spawn_app_with(|c| {
        c.db.heartbeat_timeout = TIMEOUT;
        c.db.presence_grace = GRACE;
    });
    let mut sub = app.ws().await;
    sub.subscribe("agents").await;
    let res = app
        .post("/api/agents", json!({"name": "builder", "status": "busy"}))
        .send()
        .await
        .unwrap();
    let agent: Value = res.json().await.unwrap();
    let (id, token) = (
        agent["id"].as_i64().unwrap(),
        agent["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(sub.next_event().await["event"], "agent.created");
    // No heartbeat and no socket: offline after the timeout, as before.
    assert_status(&sub.next_event().await, id, "offline");

    // Its socket opens: back to what it last reported, without a heartbeat.
    let mut a1 = app.ws_as(&token).await;
    assert_status(&sub.next_event().await, id, "busy");
    // Open, it stays, well past the heartbeat timeout.
    assert_eq!(event_within(&mut sub, TIMEOUT * 3).await, None);

    // A second socket; the first closes: still here, past the grace.
    let a2 = app.ws_as(&token).await;
    drop(a1);
    assert_eq!(event_within(&mut sub, GRACE * 2).await, None);
    // The last closes: offline once the grace is over.
    let closed = Instant::now();
    drop(a2);
    assert_status(&sub.next_event().await, id, "offline");
    let after = closed.elapsed();
    assert!(
        after >= GRACE - Duration::from_millis(50),
        "offline {after:?} after the close"
    );

    // Back, then a close and a socket again within the grace: it never goes.
    a1 = app.ws_as(&token).await;
    assert_status(&sub.next_event().await, id, "busy");
    drop(a1);
    tokio::time::sleep(GRACE / 4).await;
    let _a3 = app.ws_as(&token).await;
    assert_eq!(event_within(&mut sub, GRACE * 2).await, None);
    let got = app.get_json(&format!("/api/agents/{id}")).await;
    assert_eq!(got["status"], "busy", "{got}");
}
