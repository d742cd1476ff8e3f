//! Agent tokens: the heartbeat, and stopping when the token is revoked.

use crate::common::{self, ADMIN, WAIT};
use serde_json::json;
use taskwire_client::{Client, Error, Item, NewTask, Options, State};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_client_heartbeats_at_a_third_of_the_timeout() {
    let server = common::start_with(|c| c.db.heartbeat_timeout = std::time::Duration::from_millis(1500));
    let (agent, _, token) = server.agent("runner").await;
    let watcher = Client::connect(&server.ws_url(), ADMIN).await.unwrap();
    let mut sub = watcher.subscribe(&format!("agent:{agent}")).await.unwrap();

    // The agent's id comes from hello.
    let client = Client::connect(&server.ws_url(), &token).await.unwrap();
    assert_eq!(
        (client.hello().agent_timeout_ms, client.hello().agent_id),
        (1500, Some(agent))
    );
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

/// The job helpers, as an agent: claim, note with progress, progress,
/// finish; each change is authored by the agent, and the task's history
/// shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claims_notes_and_finishes_a_task() {
    let server = common::start();
    let (agent, _, token) = server.agent("builder").await;
    let (_, _, rival_token) = server.agent("rival").await;
    let admin = Client::connect(&server.ws_url(), ADMIN).await.unwrap();
    let task = admin
        .create_task(&NewTask {
            title: "ship it".into(),
            ..NewTask::default()
        })
        .await
        .unwrap();
    let mut watch = admin.subscribe(&format!("task:{}", task.id)).await.unwrap();
    assert!(matches!(watch.next().await, Some(Ok(Item::Snapshot { .. }))));

    let mut opts = Options::default();
    opts.heartbeat = false;
    let me = Client::connect_with(&server.ws_url(), &token, opts.clone())
        .await
        .unwrap();
    let rival = Client::connect_with(&server.ws_url(), &rival_token, opts)
        .await
        .unwrap();
    let claimed = me.claim(task.id).await.unwrap();
    assert_eq!(
        (claimed.assignee_id, claimed.status.as_str()),
        (Some(agent), "in_progress")
    );
    let lost = rival.claim(task.id).await.unwrap_err();
    assert!(
        matches!(lost, Error::Conflict(ref m) if m.contains("builder")),
        "{lost:?}"
    );
    assert!(matches!(admin.claim(task.id).await, Err(Error::Forbidden(_))));

    let note = me.note_progress(task.id, "half way", 50).await.unwrap();
    assert_eq!(
        (note["data"]["text"].as_str(), note["data"]["progress"].as_i64()),
        (Some("half way"), Some(50))
    );
    assert_eq!(me.progress(task.id, 80).await.unwrap().progress, Some(80));
    assert_eq!(me.finish(task.id).await.unwrap().status, "done");

    let mut events = Vec::new();
    while events.len() < 5 {
        match timeout(WAIT, watch.next()).await.unwrap().unwrap().unwrap() {
            Item::Event(e) => events.push(e),
            other => panic!("{other:?}"),
        }
    }
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "task.updated",
            "task.updated",
            "task.noted",
            "task.updated",
            "task.updated"
        ]
    );
    for e in &events {
        let by = e.by.as_ref().expect("authored");
        assert_eq!((by.kind.as_str(), by.agent_id), ("agent", Some(agent)), "{e:?}");
        assert!(e.at.is_some(), "{e:?}");
    }
    assert_eq!(events[3].before.as_ref().unwrap()["progress"], 50);

    drop(watch); // one subscription per topic and client
    let (now, history) = admin.snapshot(&format!("task:{}", task.id), Some(3)).await.unwrap();
    assert_eq!(now["status"], "done");
    let history = history.expect("history asked for");
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["event"], "task.noted", "newest first: {history:?}");
}

/// New heartbeat fields go out at once, not at the next beat (10 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_fields_are_reported_at_once() {
    let server = common::start();
    let (agent, _, token) = server.agent("runner").await;
    let client = Client::connect(&server.ws_url(), &token).await.unwrap();
    let mut sub = client.subscribe(&format!("agent:{agent}")).await.unwrap();
    client.set_heartbeat(json!({"status": "busy"}));
    let quick = std::time::Duration::from_secs(3);
    loop {
        match timeout(quick, sub.next())
            .await
            .expect("reported within 3 s")
            .unwrap()
            .unwrap()
        {
            Item::Event(e) if e.event == "agent.updated" && e.data["status"] == "busy" => break,
            _ => {}
        }
    }
}
