//! The REST calls `taskwire mcp` makes on a running server, each one request,
//! and their failures in the contract's shape (`code`, `message`).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A refusal from the server (its `code` and `message`), or a failure to reach
/// it, as a code of the same table (`unavailable`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

type Answer = Result<Value, ApiError>;

/// A client of one server with one token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    base: String,
    token: String,
}

impl Api {
    /// Checks the URL (`http://` or `https://`, the server's root) and the token.
    pub fn new(url: &str, token: &str) -> Result<Api, String> {
        let base = url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--url {url:?} must start with http:// or https:// (the server's root, like http://127.0.0.1:8080)"
            ));
        }
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err("a token is needed: --token or TASKWIRE_TOKEN".into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("taskwire-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Api { http, base, token })
    }

    /// The server's root URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token, for the socket's upgrade request.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request; the JSON body of a 2xx (`null` for 204), or the error
    /// the server answered.
    async fn send(&self, req: RequestBuilder) -> Answer {
        let res = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "no answer in time from"
            } else {
                "cannot reach"
            };
            ApiError::new(
                "unavailable",
                format!("{what} the taskwire server at {}: {}", self.base, causes(&e)),
            )
        })?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| {
            ApiError::new(
                "unavailable",
                format!("the answer from {} broke off: {}", self.base, causes(&e)),
            )
        })?;
        if status.is_success() {
            if body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&body)
                .map_err(|e| ApiError::new("internal", format!("the server answered {status} with no JSON: {e}")));
        }
        // The contract's error body, else a code for the status alone.
        let error = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some(ApiError::new(e.get("code")?.as_str()?, e.get("message")?.as_str()?))
        });
        Err(error.unwrap_or_else(|| ApiError::new(code_of(status), format!("the server answered {status}"))))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// `GET /api/tasks` with the server's filters.
    pub async fn list_tasks(&self, status: Option<&str>, assignee_id: Option<i64>) -> Answer {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = status {
            query.push(("status", s.to_string()));
        }
        if let Some(a) = assignee_id {
            query.push(("assignee_id", a.to_string()));
        }
        self.send(self.request(Method::GET, "/api/tasks").query(&query)).await
    }

    pub async fn list_agents(&self) -> Answer {
        self.get("/api/agents").await
    }

    pub async fn task(&self, id: i64) -> Answer {
        self.get(&format!("/api/tasks/{id}")).await
    }

    /// The task's newest activity entries, newest first.
    pub async fn activity(&self, id: i64, limit: u32) -> Answer {
        let req = self
            .request(Method::GET, &format!("/api/tasks/{id}/activity"))
            .query(&[("limit", limit)]);
        self.send(req).await
    }

    /// `PATCH /api/tasks/{id}`; with `if_version`, only from that version.
    pub async fn update_task(&self, id: i64, patch: Map<String, Value>, if_version: Option<i64>) -> Answer {
        let mut req = self.request(Method::PATCH, &format!("/api/tasks/{id}")).json(&patch);
        if let Some(v) = if_version {
            req = req.header("If-Match", format!("\"{v}\""));
        }
        self.send(req).await
    }

    pub async fn claim(&self, id: i64) -> Answer {
        self.send(self.request(Method::POST, &format!("/api/tasks/{id}/claim")))
            .await
    }

    pub async fn note(&self, id: i64, text: &str, progress: Option<u8>) -> Answer {
        let mut body = json!({ "text": text });
        if let Some(p) = progress {
            body["progress"] = json!(p);
        }
        self.send(
            self.request(Method::POST, &format!("/api/tasks/{id}/notes"))
                .json(&body),
        )
        .await
    }

    /// `GET /api/me`: who the token is.
    pub async fn me(&self) -> Answer {
        self.get("/api/me").await
    }

    /// An empty heartbeat: keeps the agent's status, refreshes its time.
    pub async fn heartbeat(&self, agent_id: i64) -> Answer {
        self.send(self.request(Method::POST, &format!("/api/agents/{agent_id}/heartbeat")))
            .await
    }
}

/// The contract's code for an HTTP status, for answers without an error body
/// (a proxy's, say).
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 | 412 => "conflict",
        410 => "gone",
        413 => "too_large",
        422 => "invalid",
        429 => "rate_limited",
        502..=504 => "unavailable",
        _ => "internal",
    }
}

/// An error and its causes on one line: reqwest's own message leaves out why
/// (refused, TLS, DNS).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
