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
/// The longest wait between two tries of the hello.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why there is no hello.
enum Hello {
    /// The upgrade was answered 401 or 403: trying again will not help.
    Refused(String),
    Failed(String),
}

/// Heartbeats until the future is dropped (when stdin closes), or until the
/// server says the token or agent is gone. Logs why when it does not start.
pub async fn keep(api: Api) {
    // The host may start before the server: ask again, backing off, unless
    // the token itself is refused.
    let mut backoff = Duration::from_secs(1);
    let hello = loop {
        match hello(&api).await {
            Ok(h) => break h,
            Err(Hello::Refused(e)) => {
                log::error!("no agent heartbeat: the server refused the token: {e}");
                return;
            }
            Err(Hello::Failed(e)) => {
                log::warn!("the socket's hello could not be read, trying again in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    if hello["role"] != "agent" {
        return;
    }
    // Servers from before authored changes do not say which agent it is.
    let Some(agent_id) = hello["agent_id"].as_i64() else {
        log::warn!("no agent heartbeat: this server's hello does not say which agent the token acts as");
        return;
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
async fn hello(api: &Api) -> Result<Value, Hello> {
    use tokio_tungstenite::tungstenite::Error;
    let url = format!("{}/ws", api.base().replacen("http", "ws", 1));
    let mut req = url.into_client_request().map_err(|e| Hello::Refused(e.to_string()))?;
    let bearer = format!("Bearer {}", api.token())
        .parse()
        .map_err(|_| Hello::Refused("the token is not a valid header value".into()))?;
    req.headers_mut().insert("Authorization", bearer);
    let read = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| match e {
            Error::Http(res) if matches!(res.status().as_u16(), 401 | 403) => {
                Hello::Refused(format!("the upgrade was answered {}", res.status()))
            }
            e => Hello::Failed(e.to_string()),
        })?;
        while let Some(msg) = ws.next().await {
            if let Message::Text(text) = msg.map_err(|e| Hello::Failed(e.to_string()))? {
                let _ = ws.close(None).await;
                let _ = ws.flush().await;
                return serde_json::from_str::<Value>(&text).map_err(|e| Hello::Failed(e.to_string()));
            }
        }
        Err(Hello::Failed("the socket closed before its hello".into()))
    };
    tokio::time::timeout(HELLO_WAIT, read)
        .await
        .map_err(|_| Hello::Failed("no hello within 10 s".into()))?
}
