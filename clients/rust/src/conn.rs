//! One socket, no reconnects: the URL, the upgrade with the token, the hello,
//! and reading frames. [`crate::Client`] builds on it; so does a program that
//! wants the bare socket (the load generator).

use crate::{Error, Hello, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The socket URL for what a user typed: `ws://host:port/ws` as given,
/// `http(s)://host:port` or a bare `host:port` with `/ws` added.
pub fn ws_url(given: &str) -> String {
    let given = given.trim().trim_end_matches('/');
    let (scheme, rest) = match given.split_once("://") {
        Some(("http", rest)) => ("ws", rest),
        Some(("https", rest)) => ("wss", rest),
        Some((scheme, rest)) => (scheme, rest),
        None => ("ws", given),
    };
    if rest.contains('/') {
        format!("{scheme}://{rest}")
    } else {
        format!("{scheme}://{rest}/ws")
    }
}

/// Opens a socket to `url` (see [`ws_url`]) with `token` and reads its hello.
/// `config` tunes the socket (the load generator turns off write buffering).
pub async fn connect(url: &str, token: &str, config: Option<WebSocketConfig>) -> Result<(Ws, Hello)> {
    let url = ws_url(url);
    let fail = |reason: String| Error::Connect {
        url: url.clone(),
        reason,
    };
    let mut req = url.as_str().into_client_request().map_err(|e| fail(e.to_string()))?;
    let header = format!("Bearer {token}")
        .parse()
        .map_err(|_| fail("the token is not a valid header value".into()))?;
    req.headers_mut().insert("Authorization", header);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, config, true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(res) => refused_upgrade(res.status().as_u16(), res.body().as_deref()),
            e => fail(e.to_string()),
        })?;
    let text = next_text(&mut ws).await?;
    let hello: Hello = match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["type"] == "hello" => {
            serde_json::from_value(v).map_err(|e| Error::Protocol(format!("hello: {e}")))?
        }
        _ => return Err(Error::Protocol(format!("expected hello, got {text}"))),
    };
    Ok((ws, hello))
}

/// An upgrade the server answered with an HTTP error (401 for a bad token,
/// 503 over the socket limits): its body carries the contract's error.
fn refused_upgrade(status: u16, body: Option<&[u8]>) -> Error {
    #[derive(Deserialize)]
    struct Body {
        error: WireError,
    }
    match body.and_then(|b| serde_json::from_slice::<Body>(b).ok()) {
        Some(b) => Error::from_wire(&b.error.code, b.error.message),
        None => Error::Protocol(format!("the upgrade was refused with HTTP {status}")),
    }
}

/// The error of a refused reply or an error frame.
#[derive(Debug, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
}

/// The next text frame, skipping pings and pongs. A close 1008 is
/// [`Error::Revoked`]; any other close, or a lost connection, is
/// [`Error::Unavailable`] (worth a reconnect).
pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(frame))) => return Err(closed(frame.map(|f| (f.code, f.reason.into_owned())))),
            Some(Ok(Message::Binary(_))) => return Err(Error::Protocol("unexpected binary frame".into())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Error::Unavailable(format!("the connection was lost: {e}"))),
            None => return Err(Error::Unavailable("the connection was lost".into())),
        }
    }
}

/// What a close frame means to a client: 1008 stops it, anything else
/// (1001 shutdown, 1013 too slow, ...) is worth a reconnect.
pub fn closed(frame: Option<(CloseCode, String)>) -> Error {
    match frame {
        Some((CloseCode::Policy, reason)) => Error::Revoked(reason),
        Some((code, reason)) => Error::Unavailable(format!("the server closed the socket ({code}: {reason})")),
        None => Error::Unavailable("the server closed the socket".into()),
    }
}

/// Sends one frame.
pub async fn send(ws: &mut Ws, frame: &Value) -> Result<()> {
    ws.send(Message::Text(frame.to_string()))
        .await
        .map_err(|e| Error::Unavailable(format!("the connection was lost: {e}")))
}

/// Sends `frame` with ref `r` and returns its reply frame, whatever `ok`
/// says; frames before it are dropped. For a socket that has nothing else
/// to read (no subscription yet).
pub async fn request(ws: &mut Ws, mut frame: Value, r: i64) -> Result<Value> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        ty: &'a str,
        #[serde(rename = "ref", default)]
        reference: Option<i64>,
    }
    frame["ref"] = json!(r);
    send(ws, &frame).await?;
    loop {
        let t = next_text(ws).await?;
        let head: Head = serde_json::from_str(&t).map_err(|e| Error::Protocol(format!("bad frame {t}: {e}")))?;
        if head.ty == "reply" && head.reference == Some(r) {
            return serde_json::from_str(&t).map_err(|e| Error::Protocol(e.to_string()));
        }
    }
}

/// Like [`request`], but a refused reply is its error.
pub async fn request_ok(ws: &mut Ws, frame: Value, r: i64) -> Result<Value> {
    let reply = request(ws, frame, r).await?;
    if reply["ok"] != true {
        let e: WireError = serde_json::from_value(reply["error"].clone())
            .map_err(|_| Error::Protocol(format!("a refused reply without an error: {reply}")))?;
        return Err(Error::from_wire(&e.code, e.message));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn what_users_type_becomes_the_socket_url() {
        assert_eq!(ws_url("127.0.0.1:8080"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://tasks.example.com"), "wss://tasks.example.com/ws");
        assert_eq!(ws_url("ws://h:1/ws"), "ws://h:1/ws");
        assert_eq!(
            ws_url("https://example.com/taskwire/ws"),
            "wss://example.com/taskwire/ws"
        );
    }
}
