//! The protocol client: one socket's connect, frames and request/reply.

use crate::cli::Common;
use crate::Res;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one protocol step (a connect, a reply) may take before the run fails.
pub const STEP: Duration = Duration::from_secs(30);

/// The fields of a server frame the generator reads on its hot path; the rest
/// of the frame is skipped without building a tree.
#[derive(Deserialize)]
pub struct Light<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: &'a str,
    #[serde(rename = "ref", default)]
    pub reference: Option<i64>,
    #[serde(default)]
    pub seq: Option<i64>,
    #[serde(default)]
    pub ok: Option<bool>,
    /// A failed reply's error; only its code is read.
    #[serde(default)]
    pub error: Option<ErrorCode>,
}

#[derive(Deserialize)]
pub struct ErrorCode {
    pub code: String,
}

impl Light<'_> {
    /// A failed reply refused by a rate limit, not executed.
    pub fn refused(&self) -> bool {
        self.error.as_ref().is_some_and(|e| e.code == "rate_limited")
    }
}

/// Opens a socket with the token and reads its hello.
pub async fn connect(c: &Common) -> Res<(Ws, Value)> {
    let mut req = format!("ws://{}/ws", c.addr)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", c.token)
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?,
    );
    let config = WebSocketConfig {
        // Write each frame at once: this is a latency benchmark.
        write_buffer_size: 0,
        ..WebSocketConfig::default()
    };
    let (mut ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async_with_config(req, Some(config), true),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let hello = next_text(&mut ws).await?;
    let hello: Value = serde_json::from_str(&hello).map_err(|e| format!("hello: {e}"))?;
    if hello["type"] != "hello" {
        return Err(format!("expected hello, got {hello}"));
    }
    Ok((ws, hello))
}

/// The next text frame, skipping pings and pongs.
pub async fn next_text(ws: &mut Ws) -> Res<String> {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .map_err(|_| "no frame from the server within 30 s".to_string())?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(f))) => {
                return Err(format!("the server closed the socket: {f:?}"));
            }
            Some(Ok(Message::Binary(_))) => return Err("unexpected binary frame".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("socket error: {e}")),
            None => return Err("the socket ended".into()),
        }
    }
}

pub async fn send(ws: &mut Ws, frame: &Value) -> Res<()> {
    ws.send(Message::Text(frame.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Sends `frame` with ref `r` and returns its reply; other frames are dropped.
pub async fn request(ws: &mut Ws, mut frame: Value, r: i64) -> Res<Value> {
    frame["ref"] = json!(r);
    send(ws, &frame).await?;
    loop {
        let t = next_text(ws).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
        if l.ty == "reply" && l.reference == Some(r) {
            return serde_json::from_str(&t).map_err(|e| e.to_string());
        }
    }
}

/// Like `request`, but an error reply is an error.
pub async fn request_ok(ws: &mut Ws, frame: Value, r: i64) -> Res<Value> {
    let reply = request(ws, frame, r).await?;
    if reply["ok"] != true {
        return Err(format!("request failed: {reply}"));
    }
    Ok(reply)
}
