//! The agent's heartbeat while `taskwire mcp` runs: with an agent token, an
//! empty `POST /api/agents/{id}/heartbeat` every third of the server's agent
//! timeout, so the agent stays online for as long as its MCP host keeps the
//! server. The timeout, the role and the agent come from the socket's `hello`
//! (REST does not tell the timeout).

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::api::Api;

/// How long the hello may take.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// Heartbeats until the future is dropped (when stdin closes), or until the
/// server says the token or agent is gone. Logs why when it does not start.
pub async fn keep(api: Api) {
    let hello = match hello(&api).await {
        Ok(h) => h,
        Err(e) => {
            log::warn!("no agent heartbeat: the socket's hello could not be read: {e}");
            return;
        }
    };
    if hello["role"] != "agent" {
        return;
    }
    let agent_id = match hello["agent_id"].as_i64() {
        Some(id) => id,
        // Servers whose hello has no agent_id may still have GET /api/me.
        None => match api.me().await.map(|me| me["agent_id"].as_i64()) {
            Ok(Some(id)) => id,
            Ok(None) | Err(_) => {
                log::warn!("no agent heartbeat: this server does not tell which agent the token acts as");
                return;
            }
        },
    };
    let Some(timeout_ms) = hello["agent_timeout_ms"].as_u64() else {
        log::warn!("no agent heartbeat: the hello has no agent_timeout_ms");
        return;
    };
    let mut ticks = tokio::time::interval(Duration::from_millis((timeout_ms / 3).max(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    log::info!("keeping agent {agent_id}'s heartbeat every {} ms", timeout_ms / 3);
    loop {
        ticks.tick().await;
        match api.heartbeat(agent_id).await {
            Ok(_) => {}
            // The token was revoked, or the agent deleted: nothing to keep.
            Err(e) if matches!(e.code.as_str(), "unauthorized" | "forbidden" | "not_found") => {
                log::error!("agent {agent_id}'s heartbeat stopped: {e}");
                return;
            }
            Err(e) => log::warn!("agent {agent_id}'s heartbeat failed, trying again at the next beat: {e}"),
        }
    }
}

/// Opens the server's socket with the token, reads its `hello` and closes it.
async fn hello(api: &Api) -> Result<Value, String> {
    let url = format!("{}/ws", api.base().replacen("http", "ws", 1));
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {}", api.token())
        .parse()
        .map_err(|_| "the token is not a valid header value")?;
    req.headers_mut().insert("Authorization", bearer);
    let read = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| e.to_string())?;
        while let Some(msg) = ws.next().await {
            if let Message::Text(text) = msg.map_err(|e| e.to_string())? {
                let _ = ws.close(None).await;
                let _ = ws.flush().await;
                return serde_json::from_str::<Value>(&text).map_err(|e| e.to_string());
            }
        }
        Err("the socket closed before its hello".to_string())
    };
    tokio::time::timeout(HELLO_WAIT, read)
        .await
        .map_err(|_| "no hello within 10 s".to_string())?
}
