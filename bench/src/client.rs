//! The protocol client. The socket's connect (the token, the hello) and its
//! request/reply plumbing are taskwire-client's bare-socket layer (`conn`);
//! what stays here is the generator's own: a time limit on every step, and
//! the light parse of its hot path (the client's driver parses each frame
//! into a tree, which the hot path does not need).

use crate::cli::Common;
use crate::Res;
use serde::Deserialize;
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use taskwire_client::conn;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use taskwire_client::conn::Ws;

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

/// `step` within STEP, its error as text.
async fn within<T>(what: &str, step: impl Future<Output = taskwire_client::Result<T>>) -> Res<T> {
    match tokio::time::timeout(STEP, step).await {
        Ok(done) => done.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: nothing within {} s", STEP.as_secs())),
    }
}

/// Opens a socket with the token and reads its hello.
pub async fn connect(c: &Common) -> Res<(Ws, Value)> {
    let config = WebSocketConfig {
        // Write each frame at once: this is a latency benchmark.
        write_buffer_size: 0,
        ..WebSocketConfig::default()
    };
    let (ws, hello) = within("connect", conn::connect(&c.addr.to_string(), &c.token, Some(config))).await?;
    Ok((ws, serde_json::to_value(hello).map_err(|e| e.to_string())?))
}

/// The next text frame, skipping pings and pongs.
pub async fn next_text(ws: &mut Ws) -> Res<String> {
    within("read", conn::next_text(ws)).await
}

pub async fn send(ws: &mut Ws, frame: &Value) -> Res<()> {
    within("send", conn::send(ws, frame)).await
}

/// Sends `frame` with ref `r` and returns its reply, other frames dropped;
/// an error reply is an error.
pub async fn request_ok(ws: &mut Ws, frame: Value, r: i64) -> Res<Value> {
    within("request failed", conn::request_ok(ws, frame, r)).await
}
