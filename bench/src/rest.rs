//! The REST side of a run: a client for the server's `/api` with one token,
//! and the admin calls the flood scenarios set up with.

use crate::cli::Common;
use crate::client::STEP;
use crate::Res;
use reqwest::Method;
use serde_json::{json, Value};

/// An HTTP client (keep-alive, one connection per concurrent request) that
/// sends every request with one bearer token.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Rest {
    pub fn new(c: &Common, token: &str) -> Res<Rest> {
        let http = reqwest::Client::builder()
            .timeout(STEP)
            // The server is on loopback: a proxy from the environment must
            // not carry the requests anywhere else.
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Rest {
            http,
            base: format!("http://{}", c.addr),
            token: token.to_string(),
        })
    }

    /// Sends one request and reads the whole answer: its status and body. A
    /// request that got no answer (refused connection, timeout) is an error.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, String), String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(|e| format!("{path}: reading the body: {e}"))?;
        Ok((status, text))
    }

    /// A request that must answer `want`; its body as JSON.
    async fn expect(&self, method: Method, path: &str, body: &Value, want: u16) -> Res<Value> {
        let (status, text) = self.send(method.clone(), path, Some(body)).await?;
        if status != want {
            return Err(format!("{method} {path} answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// A new token of `role` (this client's token must be an admin's); its secret.
    pub async fn create_token(&self, role: &str, name: &str) -> Res<String> {
        let v = self
            .expect(Method::POST, "/api/tokens", &json!({"role": role, "name": name}), 201)
            .await?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("POST /api/tokens gave no token: {v}"))
    }

    /// A new agent and its agent token.
    pub async fn create_agent(&self, name: &str) -> Res<(i64, String)> {
        let v = self
            .expect(Method::POST, "/api/agents", &json!({ "name": name }), 201)
            .await?;
        match (v["id"].as_i64(), v["token"].as_str()) {
            (Some(id), Some(token)) => Ok((id, token.to_string())),
            _ => Err(format!("POST /api/agents gave no id or token: {v}")),
        }
    }
}
