//! Bearer tokens on REST and on the socket upgrade, and the member role.

use crate::common::*;
use serde_json::{json, Value};

async fn unauthorized(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), 401, "{what}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
}

#[tokio::test]
async fn no_or_a_wrong_token_is_unauthorized_on_rest() {
    let app = spawn_app();
    let http = app.http();
    let routes = [
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/1"),
        ("PATCH", "/api/tasks/1"),
        ("DELETE", "/api/tasks/1"),
        ("GET", "/api/agents"),
        ("POST", "/api/agents"),
        ("GET", "/api/changes?since=0"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
    ];
    app.create_task("exists").await;
    for (method, path) in routes {
        let req = || {
            http.request(method.parse().unwrap(), app.url(path))
                .json(&json!({"title": "x", "name": "x", "role": "admin"}))
        };
        unauthorized(req().send().await.unwrap(), &format!("{method} {path} without token")).await;
        unauthorized(
            req().bearer_auth("tw_wrong").send().await.unwrap(),
            &format!("{method} {path} with a wrong token"),
        )
        .await;
        unauthorized(
            req()
                .header("Authorization", format!("Basic {}", app.admin))
                .send()
                .await
                .unwrap(),
            &format!("{method} {path} with another scheme"),
        )
        .await;
    }
    let tasks = app.get_json("/api/tasks").await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 1, "nothing written");
    assert_eq!(tasks["items"][0]["version"], 1);
    // Health needs no token.
    let res = http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn no_or_a_wrong_token_is_refused_on_the_socket_upgrade() {
    let app = spawn_app();
    assert_eq!(app.upgrade_status(&[]).await, 401);
    assert_eq!(app.upgrade_status(&[("Authorization", "Bearer tw_wrong")]).await, 401);
    assert_eq!(app.upgrade_status(&[("Authorization", "Bearer ")]).await, 401);
    let good = format!("Bearer {}", app.admin);
    assert_eq!(app.upgrade_status(&[("Authorization", good.as_str())]).await, 101);
}

#[tokio::test]
async fn a_member_writes_tasks_but_not_agents_or_tokens() {
    let app = spawn_app();
    let res = app
        .post("/api/tokens", json!({"role": "member", "name": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["role"], "member");
    assert_eq!(created["name"], "alice");
    assert_eq!(created["agent_id"], Value::Null);
    assert!(created["id"].as_i64().is_some(), "{created}");
    let member = created["token"].as_str().unwrap().to_string();
    assert_ne!(member, app.admin);

    let admin_ws = app.ws().await;
    assert_eq!(admin_ws.hello["role"], "admin");
    let mut ws = app.ws_as(&member).await;
    assert_eq!(ws.hello["role"], "member");
    let t = ws.call_ok("task.create", json!({"title": "mine"})).await;
    ws.call_ok(
        "task.update",
        json!({"id": t["data"]["id"], "patch": {"status": "done"}}),
    )
    .await;
    let r = ws.call("agent.create", json!({"name": "nope"})).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert_eq!(ws.subscribe("agents").await["ok"], true, "members read all");

    let as_member = |req: reqwest::RequestBuilder| req.bearer_auth(&member);
    let http = app.http();
    for (res, what) in [
        (
            as_member(http.post(app.url("/api/agents")).json(&json!({"name": "nope"})))
                .send()
                .await
                .unwrap(),
            "POST /api/agents",
        ),
        (
            as_member(
                http.post(app.url("/api/tokens"))
                    .json(&json!({"role": "admin", "name": "escalate"})),
            )
            .send()
            .await
            .unwrap(),
            "POST /api/tokens",
        ),
        (
            as_member(http.get(app.url("/api/tokens"))).send().await.unwrap(),
            "GET /api/tokens",
        ),
    ] {
        assert_eq!(res.status(), 403, "{what}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{what}: {body}");
    }
    let res = as_member(http.get(app.url("/api/tasks"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.get_json("/api/agents").await["items"], json!([]));
    let tokens = app.get_json("/api/tokens").await;
    assert_eq!(tokens["items"].as_array().unwrap().len(), 2, "{tokens}");
    assert!(
        tokens["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none()),
        "no secrets in the list: {tokens}"
    );

    // A revoked token is refused from then on.
    let res = app
        .delete(&format!("/api/tokens/{}", created["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    unauthorized(
        as_member(http.get(app.url("/api/tasks"))).send().await.unwrap(),
        "revoked",
    )
    .await;
    let bearer = format!("Bearer {member}");
    assert_eq!(app.upgrade_status(&[("Authorization", bearer.as_str())]).await, 401);
}
