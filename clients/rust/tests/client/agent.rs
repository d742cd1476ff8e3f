//! Agent tokens: the heartbeat, and stopping when the token is revoked.

use crate::common::{self, ADMIN, WAIT};
use serde_json::json;
use taskwire_client::{Client, Error, Item, Options, State};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_client_heartbeats_at_a_third_of_the_timeout() {
    let server = common::start_with(|c| c.db.heartbeat_timeout = std::time::Duration::from_millis(600));
    let (agent, _, token) = server.agent("runner").await;
    let watcher = Client::connect(&server.ws_url(), ADMIN).await.unwrap();
    let mut sub = watcher.subscribe(&format!("agent:{agent}")).await.unwrap();

    let mut opts = Options::default();
    opts.agent_id = Some(agent); // servers before hello's agent_id
    let client = Client::connect_with(&server.ws_url(), &token, opts).await.unwrap();
    assert_eq!(client.hello().agent_timeout_ms, 600);
    let mut beats = 0;
    while beats < 4 {
        match timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap() {
            Item::Event(e) if e.event == "agent.heartbeat" => beats += 1,
            _ => {}
        }
    }
    let me = server.rest("GET", &format!("/api/agents/{agent}"), None).await;
    assert_ne!(me["status"], "offline", "{me}");
}

/// Revoking the token closes the socket 1008: the client stops, its
/// subscription ends with the error, and calls fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_the_client() {
    let server = common::start();
    let (_, token_id, token) = server.agent("doomed").await;
    let client = Client::connect(&server.ws_url(), &token).await.unwrap();
    let mut sub = client.subscribe("tasks").await.unwrap();
    assert!(matches!(sub.next().await, Some(Ok(Item::Snapshot { .. }))));

    server.rest("DELETE", &format!("/api/tokens/{token_id}"), None).await;
    let ended = loop {
        match timeout(WAIT, sub.next()).await.expect("the end in time") {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(ended, Some(Err(Error::Revoked(_)))), "{ended:?}");
    assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    assert!(matches!(
        *client.state().borrow(),
        State::Closed(Some(Error::Revoked(_)))
    ));
    let call = client.call("task.create", json!({"title": "x"})).await.unwrap_err();
    assert!(matches!(call, Error::Revoked(_)), "{call:?}");
}
