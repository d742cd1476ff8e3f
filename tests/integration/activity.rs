//! Who did what (issue 20): authored changes with their previous values,
//! notes and progress, a task's activity and its history on subscribe,
//! claiming work, and knowing who you are.

use serde_json::{json, Value};
use std::time::Duration;

use crate::common::*;

/// An agent and its token.
async fn agent(app: &TestApp, name: &str) -> (i64, String) {
    let a = app.create_agent(name).await;
    (a["id"].as_i64().unwrap(), a["token"].as_str().unwrap().to_string())
}

fn as_token(app: &TestApp, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.http().request(method, app.url(path)).bearer_auth(token)
}

async fn activity(app: &TestApp, path: &str) -> Vec<Value> {
    app.get_json(path).await["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn hello_and_api_me_say_who_the_token_is() {
    let app = spawn_app();
    let (agent_id, agent_token) = agent(&app, "builder-2").await;
    let member = app.token("member", "alice").await;

    let ws = app.ws_as(&agent_token).await;
    assert_eq!(ws.hello["role"], "agent", "{}", ws.hello);
    assert_eq!(ws.hello["name"], "builder-2", "{}", ws.hello);
    assert_eq!(ws.hello["agent_id"], agent_id, "{}", ws.hello);
    assert!(ws.hello["token_id"].as_i64().unwrap() > 0, "{}", ws.hello);
    assert_eq!(ws.hello["stuck_after_ms"], 1_800_000, "{}", ws.hello);

    let ws = app.ws_as(&member).await;
    assert_eq!(ws.hello["name"], "alice", "{}", ws.hello);
    assert!(ws.hello.get("agent_id").is_none(), "{}", ws.hello);

    let res = as_token(&app, reqwest::Method::GET, "/api/me", &member)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["name"], "alice");
    assert_eq!(me["role"], "member");
    assert_eq!(me["token_id"], ws.hello["token_id"]);
    let res = as_token(&app, reqwest::Method::GET, "/api/me", &agent_token)
        .send()
        .await
        .unwrap();
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        (me["role"].clone(), me["agent_id"].clone()),
        (json!("agent"), json!(agent_id))
    );
}

/// Every change says who made it, over the socket, in the change log and in
/// the activity, whichever door it came through; an update also says what
/// the changed fields were before.
#[tokio::test]
async fn changes_carry_their_author_and_previous_values() {
    let app = spawn_app();
    let (agent_id, agent_token) = agent(&app, "builder-2").await;
    let member = app.token("member", "alice").await;
    let mut sub = app.ws().await;
    sub.subscribe("tasks").await;

    // A member creates over the socket.
    let mut alice = app.ws_as(&member).await;
    let alice_id = alice.hello["token_id"].as_i64().unwrap();
    let created = alice
        .call_ok("task.create", json!({"title": "Write docs", "assignee_id": agent_id}))
        .await;
    let id = created["data"]["id"].as_i64().unwrap();
    let ev = sub.next_event().await;
    assert_eq!(ev["event"], "task.created");
    assert_eq!(
        ev["by"],
        json!({"kind": "member", "token_id": alice_id, "name": "alice"}),
        "{ev}"
    );
    assert!(ev.get("before").is_none(), "{ev}");
    assert!(ev["at"].as_str().unwrap().ends_with('Z'), "{ev}");
    assert_eq!(ev["data"]["progress"], Value::Null, "{ev}");

    // The assigned agent moves it over REST.
    let res = as_token(&app, reqwest::Method::PATCH, &format!("/api/tasks/{id}"), &agent_token)
        .json(&json!({"status": "in_progress", "progress": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ev = sub.next_event().await;
    assert_eq!(ev["changed"], json!(["progress", "status"]), "{ev}");
    assert_eq!(ev["before"], json!({"progress": null, "status": "todo"}), "{ev}");
    assert_eq!(ev["by"]["kind"], "agent", "{ev}");
    assert_eq!(ev["by"]["agent_id"], agent_id, "{ev}");
    assert_eq!(ev["by"]["name"], "builder-2", "{ev}");

    // The admin renames it; the log keeps the same authors.
    app.patch(&format!("/api/tasks/{id}"), json!({"title": "Write the docs"}))
        .send()
        .await
        .unwrap();
    let ev = sub.next_event().await;
    assert_eq!(ev["before"], json!({"title": "Write docs"}), "{ev}");
    assert_eq!(ev["by"]["kind"], "admin", "{ev}");
    let log = app.changes(0, Some("tasks")).await;
    let kinds: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["by"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["member", "agent", "admin"], "{log}");
    let entries = activity(&app, &format!("/api/tasks/{id}/activity")).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["before"], json!({"title": "Write docs"}));
    assert_eq!(entries[1]["by"]["agent_id"], agent_id);
    assert_eq!(entries[2]["event"], "task.created");
    assert_eq!(entries[2]["task_id"], id);

    // A resume replays the same authors.
    let epoch = sub.hello["epoch"].as_str().unwrap().to_string();
    let mut again = app.ws().await;
    let r = again.resume("tasks", &epoch, 0).await;
    let events = r["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{r}");
    assert_eq!(events[1]["before"], json!({"progress": null, "status": "todo"}), "{r}");
}

/// The server's own change (an agent timing out) is authored by `system`.
#[tokio::test]
async fn the_servers_own_changes_are_by_system() {
    let app = spawn_app_with(|c| c.db.heartbeat_timeout = Duration::from_millis(300));
    let mut sub = app.ws().await;
    sub.subscribe("agents").await;
    app.create_agent("quiet").await;
    let created = sub.next_event().await;
    assert_eq!(created["by"]["kind"], "admin", "{created}");
    let offline = sub.next_event().await;
    assert_eq!(offline["data"]["status"], "offline", "{offline}");
    assert_eq!(offline["by"], json!({"kind": "system"}), "{offline}");
    assert_eq!(offline["before"], json!({"status": "idle"}), "{offline}");
}

#[tokio::test]
async fn notes_are_allowed_to_members_admins_and_the_assigned_agent() {
    let app = spawn_app();
    let (mine, my_token) = agent(&app, "builder-1").await;
    let (_, other_token) = agent(&app, "builder-2").await;
    let member = app.token("member", "alice").await;
    let id = app.create_task("Ship it").await["id"].as_i64().unwrap();

    let note = |token: &str, body: Value| {
        as_token(&app, reqwest::Method::POST, &format!("/api/tasks/{id}/notes"), token).json(&body)
    };
    // Unassigned: no agent may note it.
    let res = note(&my_token, json!({"text": "mine?"})).send().await.unwrap();
    assert_eq!(res.status(), 403);
    app.patch(&format!("/api/tasks/{id}"), json!({"assignee_id": mine}))
        .send()
        .await
        .unwrap();
    for (token, status) in [(&my_token, 201), (&other_token, 403), (&member, 201), (&app.admin, 201)] {
        let res = note(token, json!({"text": "hello"})).send().await.unwrap();
        assert_eq!(res.status(), status);
    }
    for (body, code) in [
        (json!({"text": ""}), "invalid"),
        (json!({"text": "   "}), "invalid"),
        (json!({"text": "x".repeat(4097)}), "invalid"),
        (json!({"text": "ok", "progress": 101}), "invalid"),
        (json!({"text": "ok", "progress": -1}), "invalid"),
        (json!({}), "invalid"),
        (json!({"text": 5}), "bad_request"),
        (json!({"text": "ok", "mood": "great"}), "bad_request"),
    ] {
        let res = note(&member, body.clone()).send().await.unwrap();
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
    }
    let res = note(&member, json!({"text": "x".repeat(4096)})).send().await.unwrap();
    assert_eq!(res.status(), 201, "4,096 characters are allowed");
    let res = as_token(&app, reqwest::Method::POST, "/api/tasks/999/notes", &member)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// A note goes to the task's own topic with its seq, author and text; its
/// progress goes to the overview as the task's own change, the note itself
/// does not.
#[tokio::test]
async fn a_note_is_pushed_to_its_task_and_its_progress_to_the_overview() {
    let app = spawn_app();
    let (agent_id, token) = agent(&app, "builder-2").await;
    let task = app.create_task("Index the logs").await;
    let id = task["id"].as_i64().unwrap();
    app.patch(&format!("/api/tasks/{id}"), json!({"assignee_id": agent_id}))
        .send()
        .await
        .unwrap();
    let mut overview = app.ws().await;
    overview.subscribe("tasks").await;
    let mut page = app.ws().await;
    page.subscribe(&format!("task:{id}")).await;

    let mut me = app.ws_as(&token).await;
    let r = me
        .call_ok("task.note", json!({"id": id, "text": "halfway there", "progress": 50}))
        .await;
    let note = &r["data"];
    assert_eq!(note["event"], "task.noted", "{r}");
    assert_eq!(
        note["data"],
        json!({"task_id": id, "text": "halfway there", "progress": 50})
    );
    assert_eq!(note["by"]["agent_id"], agent_id);
    assert_eq!(note["seq"], r["seq"]);
    let note_seq = r["seq"].as_i64().unwrap();

    let progress = page.next_event().await;
    assert_eq!(progress["event"], "task.updated", "{progress}");
    assert_eq!(progress["changed"], json!(["progress"]));
    assert_eq!(progress["seq"], note_seq - 1);
    let noted = page.next_event().await;
    assert_eq!(noted["event"], "task.noted", "{noted}");
    assert_eq!(noted["seq"], note_seq);
    assert_eq!(noted["data"]["text"], "halfway there");
    assert_eq!(noted["by"]["name"], "builder-2");
    assert_eq!(noted["at"], note["at"]);

    // The overview gets the progress, then nothing for the note: the next
    // thing it sees is a later change.
    let ev = overview.next_event().await;
    assert_eq!(
        (ev["event"].clone(), ev["seq"].clone()),
        (json!("task.updated"), json!(note_seq - 1))
    );
    me.call_ok("task.note", json!({"id": id, "text": "no progress this time"}))
        .await;
    app.patch(&format!("/api/tasks/{id}"), json!({"priority": 2}))
        .send()
        .await
        .unwrap();
    let ev = overview.next_event().await;
    assert_eq!(ev["changed"], json!(["priority"]), "{ev}");
    let log = app.changes(0, Some("tasks")).await;
    assert!(
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"] != "task.noted"),
        "{log}"
    );
    // A resume of the task's topic replays the notes too.
    let epoch = page.hello["epoch"].as_str().unwrap().to_string();
    let mut again = app.ws().await;
    let r = again.resume(&format!("task:{id}"), &epoch, note_seq - 2).await;
    let kinds: Vec<&str> = r["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["task.updated", "task.noted", "task.noted", "task.updated"],
        "{r}"
    );
}

/// A repeated op_id gives the same note once.
#[tokio::test]
async fn a_note_with_a_repeated_op_id_is_added_once() {
    let app = spawn_app();
    let id = app.create_task("Once").await["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    let frame = json!({"type": "call", "method": "task.note", "params": {"id": id, "text": "once"}, "op_id": "n-1"});
    let first = ws.request(frame.clone()).await;
    let second = ws.request(frame).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["data"], second["data"]);
    assert_eq!(first["seq"], second["seq"]);
    let res = app
        .post(&format!("/api/tasks/{id}/notes"), json!({"text": "twice"}))
        .header("Idempotency-Key", "n-2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let again = app
        .post(&format!("/api/tasks/{id}/notes"), json!({"text": "twice"}))
        .header("Idempotency-Key", "n-2")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    let notes: Vec<Value> = activity(&app, &format!("/api/tasks/{id}/activity"))
        .await
        .into_iter()
        .filter(|e| e["event"] == "task.noted")
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
}

/// The history comes in the same reply as the snapshot: with writes going on,
/// the history (at or before the reply's seq) and the live events after it
/// are together the task's whole activity, nothing missed or twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_atomic_with_the_snapshot_under_concurrent_writes() {
    let app = spawn_app();
    let id = app.create_task("Busy").await["id"].as_i64().unwrap();
    let topic = format!("task:{id}");
    let writer = {
        let http = app.http();
        let url = app.url(&format!("/api/tasks/{id}/notes"));
        let admin = app.admin.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let res = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({"text": format!("note {i}"), "progress": i % 101}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };
    // Subscribe while the writes go on.
    while app
        .sqlite()
        .int(&format!("SELECT COUNT(*) AS n FROM activity WHERE task_id = {id}"))
        < 50
    {
        tokio::task::yield_now().await;
    }
    let mut page = app.ws().await;
    let r = page
        .request(json!({"type": "subscribe", "topic": topic, "history": 200}))
        .await;
    let seq = r["data"]["seq"].as_i64().unwrap();
    let history = r["data"]["history"].as_array().unwrap().clone();
    assert!(!history.is_empty(), "{r}");
    assert!(history.iter().all(|e| e["seq"].as_i64().unwrap() <= seq));
    let snapshot_progress = &r["data"]["snapshot"]["progress"];
    writer.await.unwrap();
    let last = app.sqlite().int("SELECT MAX(seq) AS n FROM changes");
    let live: Vec<Value> = page
        .events_until(&topic, last)
        .await
        .into_iter()
        .filter(|e| e["type"] == "event")
        .collect();
    assert!(live.iter().all(|e| e["seq"].as_i64().unwrap() > seq));

    let mut seen: Vec<i64> = history
        .iter()
        .rev()
        .chain(&live)
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let all: Vec<i64> = {
        let mut all = Vec::new();
        let mut before = String::new();
        loop {
            let page = app
                .get_json(&format!("/api/tasks/{id}/activity?limit=200{before}"))
                .await;
            all.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["seq"].as_i64().unwrap()),
            );
            match page["next_before"].as_i64() {
                Some(b) => before = format!("&before={b}"),
                None => break,
            }
        }
        all.reverse();
        all
    };
    // The history is the newest 200 at the reply's seq: what precedes it is
    // older than the history reaches.
    let from = seen[0];
    let expected: Vec<i64> = all.into_iter().filter(|s| *s >= from).collect();
    seen.dedup();
    assert_eq!(seen, expected);
    // The snapshot's progress is the last one at or before the reply's seq.
    let last_progress = history
        .iter()
        .find(|e| e["event"] == "task.updated")
        .map(|e| e["data"]["progress"].clone());
    if let Some(p) = last_progress {
        assert_eq!(&p, snapshot_progress);
    }
}

#[tokio::test]
async fn history_is_only_for_a_task_and_at_most_200() {
    let app = spawn_app();
    let id = app.create_task("t").await["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    for (topic, history, code) in [
        (format!("task:{id}"), json!(201), "invalid"),
        ("tasks".to_string(), json!(5), "invalid"),
        (format!("task:{id}"), json!(-1), "bad_request"),
        (format!("task:{id}"), json!("5"), "bad_request"),
    ] {
        let r = ws
            .request(json!({"type": "subscribe", "topic": topic, "history": history}))
            .await;
        assert_eq!(r["error"]["code"], code, "{r}");
    }
    // A resume that replays events carries none: the events are the entries.
    let r = ws
        .request(json!({"type": "subscribe", "topic": format!("task:{id}"), "history": 10}))
        .await;
    assert_eq!(r["data"]["history"].as_array().unwrap().len(), 1, "{r}");
    let epoch = ws.hello["epoch"].clone();
    let since = r["data"]["seq"].clone();
    let mut again = app.ws().await;
    let r = again
        .request(
            json!({"type": "subscribe", "topic": format!("task:{id}"), "history": 10, "epoch": epoch, "since": since}),
        )
        .await;
    assert!(r["data"].get("history").is_none(), "{r}");
    assert_eq!(r["data"]["events"], json!([]), "{r}");
}

/// Two agents claim the same task at once: exactly one gets it, the other is
/// told who has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_race_has_exactly_one_winner() {
    let app = spawn_app();
    let (a, a_token) = agent(&app, "builder-1").await;
    let (b, b_token) = agent(&app, "builder-2").await;
    for round in 0..10 {
        let id = app.create_task(&format!("race {round}")).await["id"].as_i64().unwrap();
        let mut wa = app.ws_as(&a_token).await;
        let mut wb = app.ws_as(&b_token).await;
        let (ra, rb) = tokio::join!(
            wa.call("task.claim", json!({ "id": id })),
            wb.call("task.claim", json!({ "id": id }))
        );
        let (winner, loser, winner_id, winner_name) = match (ra["ok"].as_bool(), rb["ok"].as_bool()) {
            (Some(true), Some(false)) => (ra, rb, a, "builder-1"),
            (Some(false), Some(true)) => (rb, ra, b, "builder-2"),
            _ => panic!("exactly one claim wins: {ra} {rb}"),
        };
        assert_eq!(winner["data"]["assignee_id"], winner_id);
        assert_eq!(winner["data"]["status"], "in_progress");
        assert_eq!(loser["error"]["code"], "conflict", "{loser}");
        let message = loser["error"]["message"].as_str().unwrap();
        assert!(message.contains(winner_name), "the loser is told who has it: {message}");
        let task = app.get_json(&format!("/api/tasks/{id}")).await;
        assert_eq!(task["assignee_id"], winner_id);
    }
}

#[tokio::test]
async fn only_agents_claim_and_a_claim_of_ones_own_task_changes_nothing() {
    let app = spawn_app();
    let (_, token) = agent(&app, "builder-1").await;
    let member = app.token("member", "alice").await;
    let id = app.create_task("mine").await["id"].as_i64().unwrap();
    for t in [&member, &app.admin] {
        let res = as_token(&app, reqwest::Method::POST, &format!("/api/tasks/{id}/claim"), t)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }
    let claim = || as_token(&app, reqwest::Method::POST, &format!("/api/tasks/{id}/claim"), &token);
    let res = claim().send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("Taskwire-Seq"));
    let again = claim().send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(!again.headers().contains_key("Taskwire-Seq"), "nothing changed");
    let res = claim().body("{\"x\":1}").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let res = as_token(&app, reqwest::Method::POST, "/api/tasks/404/claim", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// The change log forgets; a task's activity does not, until the task goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_outlives_the_change_log_and_goes_with_its_task() {
    let app = spawn_app_with(|c| c.db.log_keep = 5);
    let (agent_id, token) = agent(&app, "builder-1").await;
    let id = app.create_task("long-lived").await["id"].as_i64().unwrap();
    app.patch(&format!("/api/tasks/{id}"), json!({"assignee_id": agent_id}))
        .send()
        .await
        .unwrap();
    for i in 0..20 {
        let res = as_token(&app, reqwest::Method::POST, &format!("/api/tasks/{id}/notes"), &token)
            .json(&json!({ "text": format!("step {i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    // Pruning runs every second; ten leave room for a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.sqlite().int("SELECT COUNT(*) AS n FROM changes") > 5 {
        assert!(std::time::Instant::now() < deadline, "the log was not cut back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = activity(&app, &format!("/api/tasks/{id}/activity?limit=200")).await;
    assert_eq!(entries.len(), 22, "created, assigned, 20 notes");
    let page = app.get_json(&format!("/api/tasks/{id}/activity?limit=5")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let next = page["next_before"].as_i64().unwrap();
    let rest = activity(&app, &format!("/api/tasks/{id}/activity?limit=200&before={next}")).await;
    assert_eq!(rest.len(), 17);
    // The agent's own history across tasks: its 20 notes.
    let mine = activity(&app, &format!("/api/agents/{agent_id}/activity?limit=200")).await;
    assert_eq!(mine.len(), 20);
    assert!(mine
        .iter()
        .all(|e| e["task_id"] == id && e["by"]["agent_id"] == agent_id));

    let res = app.delete(&format!("/api/tasks/{id}")).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = app.get(&format!("/api/tasks/{id}/activity")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.sqlite()
            .int(&format!("SELECT COUNT(*) AS n FROM activity WHERE task_id = {id}")),
        0
    );
    for bad in ["?limit=0", "?limit=201", "?before=x", "?before=0", "?what=1"] {
        let res = app
            .get(&format!("/api/agents/{agent_id}/activity{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
}
