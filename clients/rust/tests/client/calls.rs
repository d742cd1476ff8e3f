//! Calls: data and typed errors, op_ids re-sent after a lost reply, busy
//! refusals retried.

use crate::common::{self, eventually, Proxy, ADMIN, WAIT};
use serde_json::{json, Value};
use taskwire_client::{Client, Error, NewTask, TaskPatch};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answer_typed_data_and_errors_by_code() {
    let server = common::start();
    let client = Client::connect(&server.ws_url(), ADMIN).await.unwrap();
    assert_eq!(client.hello().role, "admin");

    let draft = NewTask {
        title: "Fix login".into(),
        priority: Some(2),
        ..NewTask::default()
    };
    let task = client.create_task(&draft).await.unwrap();
    assert_eq!((task.title.as_str(), task.priority, task.version), ("Fix login", 2, 1));

    let patch = TaskPatch {
        status: Some("review".into()),
        ..TaskPatch::default()
    };
    let moved = client.update_if(task.id, 1, &patch).await.unwrap();
    assert_eq!((moved.status.as_str(), moved.version), ("review", 2));

    let stale = client.update_if(task.id, 1, &patch).await.unwrap_err();
    assert!(
        matches!(stale, Error::Conflict(ref m) if m.contains("version 2")),
        "{stale:?}"
    );
    let missing = client.finish(999).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    let unknown = client.call("task.paint", json!({})).await.unwrap_err();
    assert_eq!(unknown.code(), "bad_request", "{unknown:?}");
    let bad = client.call("task.create", json!({"title": ""})).await.unwrap_err();
    assert!(matches!(bad, Error::Invalid(_)), "{bad:?}");

    let board = client.tasks().await.unwrap();
    assert_eq!(board, vec![moved]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_fails_the_first_connect() {
    let server = common::start();
    let err = Client::connect(&server.ws_url(), "tw_nope").await.err().unwrap();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    let nobody = Client::connect("127.0.0.1:1", ADMIN).await.err().unwrap();
    assert!(matches!(nobody, Error::Connect { .. }), "{nobody:?}");
}

/// The server commits a call whose reply never arrives; after the reconnect
/// the client sends it again with its op_id and gets the first answer, and
/// the task exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_reply_was_lost_is_sent_again_and_committed_once() {
    let server = common::start();
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(&proxy.ws_url(), ADMIN).await.unwrap();

    proxy.set_hold(true);
    let caller = client.clone();
    let call = tokio::spawn(async move { caller.call("task.create", json!({"title": "once"})).await });
    eventually("the call to commit", || async { server.tasks().await.len() == 1 }).await;
    assert!(!call.is_finished(), "the reply should have been swallowed");
    proxy.cut();
    proxy.set_hold(false);

    let reply = timeout(WAIT, call)
        .await
        .expect("answered after the reconnect")
        .unwrap()
        .unwrap();
    let tasks = server.tasks().await;
    assert_eq!(tasks.len(), 1, "committed twice: {tasks:?}");
    assert_eq!(reply.data, tasks[0]);
    assert_eq!(reply.seq, Some(1), "the first answer, seq included");
}

/// Over the token's call rate, calls are refused `rate_limited`; the client
/// waits and sends them again until each is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_calls_are_retried_until_committed() {
    let server = common::start_with(|c| c.calls_per_sec_per_token = 3);
    let (_, member) = server.member("alice").await;
    let client = Client::connect(&server.ws_url(), &member).await.unwrap();
    let calls = (0..8).map(|i| {
        let c = client.clone();
        async move { c.call("task.create", json!({ "title": format!("t{i}") })).await }
    });
    let replies = timeout(WAIT, futures_util::future::join_all(calls)).await.unwrap();
    for r in &replies {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(server.tasks().await.len(), 8);
}

/// A call over the server's frame limit closes the socket (1009): it fails
/// `TooLarge` instead of closing every socket after it, and the client goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_frame_limit_fails_too_large_and_the_client_goes_on() {
    let server = common::start_with(|c| c.max_frame_bytes = 2048);
    let client = Client::connect(&server.ws_url(), ADMIN).await.unwrap();
    let big = json!({"title": "big", "description": "x".repeat(4000)});
    let err = timeout(WAIT, client.call("task.create", big))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    let small = timeout(WAIT, client.call("task.create", json!({"title": "small"})))
        .await
        .unwrap();
    assert_eq!(small.unwrap().data["title"], "small");
    assert_eq!(server.tasks().await.len(), 1);
}

/// A call whose caller stopped waiting while the client was disconnected is
/// not sent after the reconnect; one still awaited is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_while_disconnected_is_not_sent() {
    let server = common::start();
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(&proxy.ws_url(), ADMIN).await.unwrap();
    proxy.set_down(true);
    proxy.cut();
    let mut state = client.state();
    timeout(
        WAIT,
        state.wait_for(|s| matches!(s, taskwire_client::State::Reconnecting { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let quick = std::time::Duration::from_millis(100);
    let given_up = timeout(quick, client.call("task.create", json!({"title": "given up"}))).await;
    assert!(given_up.is_err(), "no answer while disconnected");
    let caller = client.clone();
    let kept = tokio::spawn(async move { caller.call("task.create", json!({"title": "kept"})).await });
    proxy.set_down(false);
    timeout(WAIT, kept).await.unwrap().unwrap().unwrap();
    let titles: Vec<Value> = server.tasks().await.into_iter().map(|t| t["title"].clone()).collect();
    assert_eq!(titles, [json!("kept")]);
}
