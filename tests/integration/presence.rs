//! Presence: a subscribe with `"presence": true` lists who holds the topic,
//! one entry per token however many sockets it has, then `presence.joined`
//! and `presence.left` frames follow; a resume lists everyone again.

use crate::common::*;
use serde_json::{json, Value};

async fn watch(ws: &mut Ws, topic: &str) -> Value {
    let r = ws
        .request(json!({"type": "subscribe", "topic": topic, "presence": true}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    r
}

/// The next presence frame, skipping events.
async fn next_presence(ws: &mut Ws) -> Value {
    loop {
        let f = ws.next_event().await;
        if f["type"] == "presence" {
            return f;
        }
        assert_eq!(f["type"], "event", "{f}");
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn presence_lists_principals_once_and_follows_them_across_sockets_and_resumes() {
    let app = spawn_app();
    let task = app.create_task("shared").await["id"].as_i64().unwrap();
    let topic = format!("task:{task}");
    let alice = app.token("member", "alice").await;
    let bob = app.token("member", "bob").await;
    let agent = app.create_agent("builder").await;
    let (agent_id, agent_token) = (agent["id"].as_i64().unwrap(), agent["token"].as_str().unwrap());

    let mut a1 = app.ws_as(&alice).await;
    let r = watch(&mut a1, &topic).await;
    let me = &r["data"]["presence"];
    assert_eq!(me.as_array().unwrap().len(), 1, "{r}");
    assert_eq!(me[0]["name"], "alice");
    assert_eq!(me[0]["role"], "member");
    assert!(
        me[0]["token_id"].as_i64().is_some() && me[0].get("agent_id").is_none(),
        "{me}"
    );
    assert!(r["data"]["snapshot"]["id"] == task, "the snapshot is still there: {r}");

    // Bob subscribes without asking for presence: alice hears of him.
    let mut b = app.ws_as(&bob).await;
    let plain = b.subscribe(&topic).await;
    assert!(plain["data"].get("presence").is_none(), "{plain}");
    let f = next_presence(&mut a1).await;
    assert_eq!(f["type"], "presence");
    assert_eq!(f["topic"], topic.as_str());
    assert_eq!(f["event"], "presence.joined");
    assert_eq!(f["data"]["name"], "bob");
    assert!(f.get("seq").is_none(), "{f}");

    // Alice's second socket and its close are not news: she is still here.
    let mut a2 = app.ws_as(&alice).await;
    let r2 = watch(&mut a2, &topic).await;
    assert_eq!(names(&r2["data"]["presence"]), ["alice", "bob"]);
    drop(a2);
    // Bob leaves; then the agent comes: alice hears exactly those two.
    drop(b);
    let f = next_presence(&mut a1).await;
    assert_eq!(
        (&f["event"], &f["data"]["name"]),
        (&json!("presence.left"), &json!("bob"))
    );
    let mut ag = app.ws_as(agent_token).await;
    ag.subscribe(&topic).await;
    let f = next_presence(&mut a1).await;
    assert_eq!(f["event"], "presence.joined", "{f}");
    assert_eq!(f["data"]["name"], "builder");
    assert_eq!(f["data"]["role"], "agent");
    assert_eq!(f["data"]["agent_id"], agent_id);

    // Alice drops and resumes: the reply lists everyone again.
    let epoch = a1.hello["epoch"].as_str().unwrap().to_string();
    let seq = r["data"]["seq"].as_i64().unwrap();
    drop(a1);
    let mut a3 = app.ws_as(&alice).await;
    let r = a3
        .request(json!({"type": "subscribe", "topic": topic, "epoch": epoch, "since": seq, "presence": true}))
        .await;
    assert!(r["data"]["events"].is_array(), "a resumed reply: {r}");
    assert_eq!(names(&r["data"]["presence"]), ["alice", "builder"]);

    // An unsubscribe is a leave too.
    let u = ag.request(json!({"type": "unsubscribe", "topic": topic})).await;
    assert_eq!(u["ok"], true);
    let f = next_presence(&mut a3).await;
    assert_eq!(
        (&f["event"], &f["data"]["name"]),
        (&json!("presence.left"), &json!("builder"))
    );
    // Presence is per topic: another topic's comings are not heard here.
    ag.subscribe("tasks").await;
    b = app.ws_as(&bob).await;
    b.subscribe(&topic).await;
    let f = next_presence(&mut a3).await;
    assert_eq!(
        (&f["event"], &f["data"]["name"]),
        (&json!("presence.joined"), &json!("bob"))
    );
    let bad = a3
        .request(json!({"type": "subscribe", "topic": "tasks", "presence": 1}))
        .await;
    assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
}
