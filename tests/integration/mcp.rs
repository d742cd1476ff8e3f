//! `taskwire mcp` end to end: the real binary started as an MCP host starts it
//! (a child speaking MCP on its stdin and stdout, driven by rmcp's client),
//! against a real server on port 0, with a socket watching the changes arrive.

use rmcp::model::{CallToolRequestParams, CallToolResult, GetPromptRequestParams, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::timeout;

use crate::common::{spawn_app, spawn_app_with, TestApp, Ws, WAIT};

type Client = RunningService<RoleClient, ()>;

/// `taskwire mcp` against `url` with `token` (from the environment, as a host's
/// config sets it), initialized.
async fn mcp_at(url: &str, token: &str) -> Client {
    let transport = TokioChildProcess::new(command(url, token)).expect("start taskwire mcp");
    timeout(WAIT, ().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize")
}

async fn mcp(app: &TestApp, token: &str) -> Client {
    mcp_at(&app.url(""), token).await
}

fn command(url: &str, token: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskwire"));
    cmd.args(["mcp", "--url", url])
        .env("TASKWIRE_TOKEN", token)
        .env_remove("TASKWIRE_URL")
        .env("RUST_LOG", "warn");
    cmd
}

/// Calls a tool; the protocol's own failures (not tool errors) panic.
async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool).with_arguments(args.as_object().expect("arguments object").clone());
    timeout(WAIT, client.call_tool(params))
        .await
        .expect("tool call timed out")
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// The structured result of a call that must succeed.
async fn ok(client: &Client, tool: &'static str, args: Value) -> Value {
    let r = call(client, tool, args.clone()).await;
    assert_eq!(r.is_error, Some(false), "{tool} {args}: {r:?}");
    r.structured_content.expect("structured content")
}

/// The `{code, message}` of a call that must be a tool error; its text says the same.
async fn refused(client: &Client, tool: &'static str, args: Value) -> Value {
    let r = call(client, tool, args.clone()).await;
    assert_eq!(r.is_error, Some(true), "{tool} {args}: {r:?}");
    let error = r.structured_content.expect("structured content")["error"].clone();
    let text = r.content[0].as_text().expect("text content").text.clone();
    assert_eq!(
        text,
        format!(
            "{}: {}",
            error["code"].as_str().unwrap(),
            error["message"].as_str().unwrap()
        )
    );
    error
}

/// Reads events (past replies) until one matches.
async fn event_where(ws: &mut Ws, what: impl Fn(&Value) -> bool) -> Value {
    loop {
        let ev = ws.next_event().await;
        if ev["type"] == "event" && what(&ev) {
            return ev;
        }
    }
}

#[tokio::test]
async fn a_host_lists_the_tools_and_a_member_changes_a_task_live() {
    let app = spawn_app();
    let docs = app.create_task("Write docs").await;
    let login = app
        .post("/api/tasks", json!({"title": "Fix login", "priority": 3}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let member = app.token("member", "alice").await;
    let client = mcp(&app, &member).await;

    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().map(|s| s.name.as_str()), Some("taskwire"));
    assert!(info.instructions.as_deref().is_some_and(|i| i.contains("claim_task")));

    let tools = timeout(WAIT, client.list_all_tools()).await.unwrap().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "add_note",
            "claim_task",
            "get_task",
            "list_agents",
            "list_tasks",
            "update_task",
            "whoami"
        ]
    );
    for tool in &tools {
        assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40), "{tool:?}");
        assert_eq!(tool.input_schema["type"], "object", "{tool:?}");
    }
    let update = tools.iter().find(|t| t.name == "update_task").unwrap();
    assert_eq!(update.input_schema["required"], json!(["id"]));
    assert!(update.input_schema["properties"]["status"]
        .to_string()
        .contains("in_progress"));

    // Most urgent first, short.
    let list = ok(&client, "list_tasks", json!({})).await;
    assert_eq!(list["count"], 2);
    assert_eq!(list["tasks"][0]["id"], login["id"]);
    assert_eq!(list["tasks"][1]["id"], docs["id"]);
    assert!(list["tasks"][0].get("description").is_none(), "{list}");
    let limited = ok(
        &client,
        "list_tasks",
        json!({"unassigned": true, "status": "todo", "limit": 1}),
    )
    .await;
    assert_eq!(limited["count"], 2);
    assert_eq!(limited["tasks"].as_array().unwrap().len(), 1);
    assert!(limited["more"].as_str().unwrap().starts_with("1 more"), "{limited}");

    // The server's refusals, as tool errors with its code and message.
    let missing = refused(&client, "get_task", json!({"id": 999})).await;
    assert_eq!(missing["code"], "not_found", "{missing}");
    assert!(missing["message"].as_str().unwrap().contains("999"), "{missing}");
    let stale = refused(
        &client,
        "update_task",
        json!({"id": docs["id"], "status": "blocked", "expected_version": 7}),
    )
    .await;
    assert_eq!(stale["code"], "conflict", "{stale}");
    assert_eq!(stale["message"], format!("task {} is at version 1, not 7", docs["id"]));
    let empty = refused(&client, "update_task", json!({"id": docs["id"]})).await;
    assert_eq!(empty["code"], "bad_request");
    // Arguments outside the schema are refused before any request, naming the field.
    let typo = call(&client, "list_tasks", json!({"colour": "red"})).await;
    assert_eq!(typo.is_error, Some(true), "{typo:?}");
    assert!(
        typo.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("unknown field `colour`"),
        "{typo:?}"
    );

    // A change made through the tool arrives live, like any other.
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("tasks").await["ok"], true);
    let task = ok(
        &client,
        "update_task",
        json!({"id": docs["id"], "status": "in_progress", "priority": 2, "expected_version": 1}),
    )
    .await;
    assert_eq!(
        (task["status"].as_str(), task["version"].as_i64()),
        (Some("in_progress"), Some(2))
    );
    let ev = event_where(&mut ws, |e| e["event"] == "task.updated").await;
    assert_eq!(ev["data"]["id"], docs["id"]);
    assert_eq!(ev["changed"], json!(["priority", "status"]));

    // The board as a resource, the task as a templated one, and the prompt.
    let resources = timeout(WAIT, client.list_all_resources()).await.unwrap().unwrap();
    assert!(resources.iter().any(|r| r.uri == "taskwire://tasks"), "{resources:?}");
    let board = read(&client, "taskwire://tasks").await;
    assert_eq!(board["counts"], json!({"in_progress": 1, "todo": 1}));
    assert_eq!(board["open_tasks"][0]["id"], login["id"]);
    let one = read(&client, &format!("taskwire://tasks/{}", docs["id"])).await;
    assert_eq!(one["title"], "Write docs");
    let missing = timeout(
        WAIT,
        client.read_resource(ReadResourceRequestParams::new("taskwire://tasks/999")),
    )
    .await
    .unwrap();
    assert!(missing.is_err(), "{missing:?}");
    let prompt = timeout(
        WAIT,
        client.get_prompt(GetPromptRequestParams::new("work_on_next_task")),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(format!("{:?}", prompt.messages).contains("claim_task"));

    timeout(WAIT, client.cancel()).await.unwrap().unwrap();
}

/// The text of a JSON resource, parsed.
async fn read(client: &Client, uri: &str) -> Value {
    let res = timeout(WAIT, client.read_resource(ReadResourceRequestParams::new(uri)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    match &res.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, mime_type, .. } => {
            assert_eq!(mime_type.as_deref(), Some("application/json"));
            serde_json::from_str(text).unwrap()
        }
        other => panic!("{uri}: not text: {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_tool_error_and_a_bad_url_is_refused_at_start() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = mcp_at(&format!("http://127.0.0.1:{port}"), "tw_whatever").await;
    let e = refused(&client, "list_tasks", json!({})).await;
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
    timeout(WAIT, client.cancel()).await.unwrap().unwrap();

    let out = timeout(WAIT, command("ftp://example.com", "tw_x").output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must start with http:// or https://"), "{err}");
}

#[tokio::test]
async fn an_agent_claims_notes_and_finishes_a_task_live() {
    let app = spawn_app();
    let agent = app.create_agent("builder-1").await;
    let other = app.create_agent("builder-2").await;
    let (me, token) = (agent["id"].as_i64().unwrap(), agent["token"].as_str().unwrap());
    let task = app.create_task("Write docs").await;
    let taken = app.create_task("Taken already").await;
    let res = app
        .patch(
            &format!("/api/tasks/{}", taken["id"]),
            json!({"assignee_id": other["id"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = task["id"].as_i64().unwrap();
    let topic = format!("task:{id}");
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("tasks").await["ok"], true);
    assert_eq!(ws.subscribe(&topic).await["ok"], true);
    let client = mcp(&app, token).await;

    let who = ok(&client, "whoami", json!({})).await;
    assert_eq!(
        (who["role"].as_str(), who["agent_id"].as_i64()),
        (Some("agent"), Some(me))
    );
    let free = ok(&client, "list_tasks", json!({"status": "todo", "unassigned": true})).await;
    assert_eq!(
        (free["count"].as_i64(), free["tasks"][0]["id"].as_i64()),
        (Some(1), Some(id)),
        "{free}"
    );

    // Claim: the task is the agent's, in progress, and said so on both topics.
    let claimed = ok(&client, "claim_task", json!({"id": id})).await;
    assert_eq!(
        (claimed["assignee_id"].as_i64(), claimed["status"].as_str()),
        (Some(me), Some("in_progress"))
    );
    for t in ["tasks", topic.as_str()] {
        let ev = event_where(&mut ws, |e| e["topic"] == t && e["event"] == "task.updated").await;
        assert_eq!(ev["changed"], json!(["assignee_id", "status"]), "{ev}");
        assert_eq!(
            (ev["by"]["kind"].as_str(), ev["by"]["agent_id"].as_i64()),
            (Some("agent"), Some(me)),
            "{ev}"
        );
    }
    let mine = ok(&client, "list_tasks", json!({"assignee_id": me})).await;
    assert_eq!(
        (mine["count"].as_i64(), mine["tasks"][0]["id"].as_i64()),
        (Some(1), Some(id)),
        "{mine}"
    );
    let bad = refused(&client, "list_tasks", json!({"assignee_id": me, "unassigned": true})).await;
    assert_eq!(bad["code"], "bad_request");
    let conflict = refused(&client, "claim_task", json!({"id": taken["id"]})).await;
    assert_eq!(conflict["code"], "conflict");
    assert!(
        conflict["message"].as_str().unwrap().contains("builder-2"),
        "{conflict}"
    );

    // A note with progress: the progress change, then the note, live on task:N.
    let note = ok(
        &client,
        "add_note",
        json!({"id": id, "text": "Outline drafted", "progress": 40}),
    )
    .await;
    assert_eq!(
        (note["event"].as_str(), note["data"]["text"].as_str()),
        (Some("task.noted"), Some("Outline drafted"))
    );
    let ev = event_where(&mut ws, |e| {
        e["topic"] == topic.as_str() && e["event"] == "task.updated"
    })
    .await;
    assert_eq!(
        (ev["changed"].clone(), ev["data"]["progress"].as_i64()),
        (json!(["progress"]), Some(40))
    );
    let ev = event_where(&mut ws, |e| e["topic"] == topic.as_str() && e["event"] == "task.noted").await;
    assert_eq!(ev["data"]["text"], "Outline drafted");
    assert_eq!(ev["seq"], note["seq"]);

    // Finish it.
    let done = ok(
        &client,
        "update_task",
        json!({"id": id, "status": "done", "progress": 100}),
    )
    .await;
    assert_eq!(done["status"], "done");
    let ev = event_where(&mut ws, |e| e["topic"] == "tasks" && e["data"]["status"] == "done").await;
    assert_eq!(ev["changed"], json!(["progress", "status"]));
    let done_seq = ev["seq"].clone();

    // The task with its activity, newest first.
    let full = ok(&client, "get_task", json!({"id": id, "activity": 3})).await;
    assert_eq!(full["task"]["status"], "done");
    let events: Vec<&str> = full["activity"]
        .as_array()
        .unwrap_or_else(|| panic!("no activity: {full}"))
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["task.updated", "task.noted", "task.updated"]);
    assert_eq!(
        full["activity"][0],
        json!({"seq": done_seq, "event": "task.updated", "changed": ["progress", "status"],
               "before": {"progress": 40, "status": "in_progress"}, "after": {"progress": 100, "status": "done"},
               "by": ev["by"], "at": ev["at"]})
    );
    assert_eq!(full["activity"][1]["text"], "Outline drafted");
    assert_eq!(full["activity"][1]["progress"], 40);

    timeout(WAIT, client.cancel()).await.unwrap().unwrap();
}

#[tokio::test]
async fn an_agents_heartbeat_is_kept_while_it_runs_and_it_exits_when_stdin_closes() {
    let app = spawn_app_with(|c| c.db.heartbeat_timeout = Duration::from_millis(1500));
    let agent = app.create_agent("builder-1").await;
    let me = agent["id"].as_i64().unwrap();
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe(&format!("agent:{me}")).await["ok"], true);

    // Started by hand so its exit can be watched: closing stdin ends it.
    let mut child = command(&app.url(""), agent["token"].as_str().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let client = timeout(WAIT, ().serve(io)).await.unwrap().unwrap();

    // A heartbeat every third of the timeout (500 ms): two within the wait.
    for _ in 0..2 {
        let beat = event_where(&mut ws, |e| e["event"] == "agent.heartbeat").await;
        assert_eq!(beat["data"]["id"], me);
    }
    timeout(WAIT, client.cancel()).await.unwrap().unwrap();
    let status = timeout(WAIT, child.wait())
        .await
        .expect("taskwire mcp went on after stdin closed")
        .unwrap();
    assert!(status.success(), "{status}");
}
