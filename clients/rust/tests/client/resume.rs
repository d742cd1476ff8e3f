//! Subscriptions: a snapshot, then every change once, across drops and
//! server restarts.

use crate::common::{self, Proxy, ADMIN, WAIT};
use taskwire_client::{Client, Item, State, Subscription};
use tokio::time::timeout;

async fn next(sub: &mut Subscription) -> Item {
    timeout(WAIT, sub.next())
        .await
        .expect("an item in time")
        .expect("the subscription goes on")
        .expect("no error")
}

/// The seq of the next change event (heartbeats are skipped).
async fn next_change(sub: &mut Subscription) -> i64 {
    loop {
        match next(sub).await {
            Item::Event(e) if e.seq.is_some() => return e.seq.unwrap(),
            Item::Event(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gives_a_snapshot_then_each_change() {
    let server = common::start();
    server.create_task("before").await;
    let client = Client::connect(&server.ws_url(), ADMIN).await.unwrap();
    let mut sub = client.subscribe("tasks").await.unwrap();
    match next(&mut sub).await {
        Item::Snapshot { data, seq, resync, .. } => {
            assert_eq!(data.as_array().unwrap().len(), 1);
            assert_eq!((seq, resync), (1, false));
        }
        other => panic!("{other:?}"),
    }
    server.create_task("after").await;
    match next(&mut sub).await {
        Item::Event(e) => {
            assert_eq!((e.event.as_str(), e.seq), ("task.created", Some(2)));
            assert_eq!(e.task().unwrap().title, "after");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sub.position().unwrap().seq, 2);
    let err = client.subscribe("task:99").await.err().unwrap();
    assert_eq!(err.code(), "not_found");
}

/// The server stops (1001) and starts again on the same file; changes made
/// while the client could not reach it are replayed, none twice, and no
/// second snapshot comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_across_a_server_restart_with_nothing_lost_or_repeated() {
    let mut server = common::start();
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(&proxy.ws_url(), ADMIN).await.unwrap();
    let mut sub = client.subscribe("tasks").await.unwrap();
    assert!(matches!(next(&mut sub).await, Item::Snapshot { .. }));
    server.create_task("1").await;
    assert_eq!(next_change(&mut sub).await, 1);

    proxy.set_down(true);
    let stopping = tokio::task::spawn_blocking(move || {
        server.stop();
        server.start_again();
        server
    });
    let server = stopping.await.unwrap();
    let mut state = client.state();
    timeout(WAIT, state.wait_for(|s| matches!(s, State::Reconnecting { .. })))
        .await
        .unwrap()
        .unwrap();
    for i in 2..=4 {
        server.create_task(&i.to_string()).await;
    }
    proxy.set_down(false);

    for want in 2..=4 {
        assert_eq!(next_change(&mut sub).await, want);
    }
    match next(&mut sub).await {
        Item::Resumed { seq, replayed, .. } => assert_eq!((seq, replayed), (4, 3)),
        other => panic!("expected the resume, got {other:?}"),
    }
    server.create_task("5").await;
    assert_eq!(next_change(&mut sub).await, 5);
    assert_eq!(sub.position().unwrap().seq, 5);
}

/// A cut connection (no close frame) while changes keep coming: the client
/// reconnects and resumes, delivering each change exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_cuts_while_changes_keep_coming() {
    let server = common::start();
    let proxy = Proxy::start(server.addr).await;
    let client = Client::connect(&proxy.ws_url(), ADMIN).await.unwrap();
    let mut sub = client.subscribe("tasks").await.unwrap();
    assert!(matches!(next(&mut sub).await, Item::Snapshot { .. }));

    let writer = tokio::spawn(async move {
        for i in 0..30 {
            server.create_task(&format!("t{i}")).await;
            if i % 10 == 5 {
                proxy.cut();
            }
        }
        server
    });
    let mut seen = Vec::new();
    while seen.len() < 30 {
        match next(&mut sub).await {
            Item::Event(e) => seen.push(e.seq.unwrap()),
            Item::Resumed { .. } => {}
            Item::Snapshot { .. } => panic!("a resume within the log must not snapshot"),
        }
    }
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    let _server = writer.await.unwrap();
}
