//! The handle: connect, call, subscribe, close. Cheap to clone; every clone
//! talks to the one task that holds the socket ([`crate::driver`]).

use crate::conn;
use crate::driver::{Cmd, Driver};
use crate::subscription::Subscription;
use crate::{Error, Hello, Position, Reply, Result};
use rand::Rng;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How the client waits and retries. The defaults suit an agent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The first reconnect delay's ceiling; doubles per failed try (full jitter).
    pub backoff_base: Duration,
    /// The largest ceiling.
    pub backoff_cap: Duration,
    /// A connection that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// Wait (×0.5 to ×1.5) before re-sending a call or subscribe answered
    /// `unavailable` or `rate_limited`.
    pub retry_busy: Duration,
    /// Ping after this long without a frame from the server.
    pub ping_interval: Duration,
    /// A ping with no frame back for this long: drop the socket, reconnect.
    pub ping_timeout: Duration,
    /// A connect with no hello by then is given up.
    pub connect_timeout: Duration,
    /// Heartbeat for an agent token (every third of hello's `agent_timeout_ms`).
    pub heartbeat: bool,
    /// The agent to heartbeat for, on servers whose hello lacks `agent_id`.
    pub agent_id: Option<i64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(5),
            retry_busy: Duration::from_secs(1),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat: true,
            agent_id: None,
        }
    }
}

/// Where the connection is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Live,
    /// Lost the socket; trying again (calls and subscribes wait).
    Reconnecting {
        attempt: u32,
        last_error: String,
    },
    /// Closed for good: by [`Client::close`] (None), or by the server (a revocation).
    Closed(Option<Error>),
}

/// A connection to a taskwire server that stays up: see the crate docs.
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    state: watch::Receiver<State>,
    hello: watch::Receiver<Hello>,
    ops: Arc<OpIds>,
}

struct OpIds {
    prefix: String,
    next: AtomicU64,
}

impl Client {
    /// Connects with `token` and the default [`Options`]. `url` is
    /// `ws://host:port/ws`, `http://host:port` or `host:port`. The first
    /// connect's failure is returned; later drops are reconnected.
    pub async fn connect(url: &str, token: &str) -> Result<Client> {
        Client::connect_with(url, token, Options::default()).await
    }

    pub async fn connect_with(url: &str, token: &str, opts: Options) -> Result<Client> {
        let (ws, hello) = tokio::time::timeout(opts.connect_timeout, conn::connect(url, token, None))
            .await
            .map_err(|_| Error::Connect {
                url: conn::ws_url(url),
                reason: "no hello in time".into(),
            })??;
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Live);
        let (hello_tx, hello_rx) = watch::channel(hello.clone());
        let prefix = format!("rs-{:012x}", rand::thread_rng().gen::<u64>() & 0xffff_ffff_ffff);
        let driver = Driver::new(
            url.to_string(),
            token.to_string(),
            opts,
            rx,
            tx.downgrade(),
            state_tx,
            hello_tx,
            prefix.clone(),
        );
        tokio::spawn(driver.run(ws, hello));
        Ok(Client {
            cmds: tx,
            state,
            hello: hello_rx,
            ops: Arc::new(OpIds {
                prefix,
                next: AtomicU64::new(0),
            }),
        })
    }

    /// The last hello (of the current or the last connection).
    pub fn hello(&self) -> Hello {
        self.hello.borrow().clone()
    }

    /// The connection's state, to watch (`changed().await`) or read.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// A new op_id, unique to this client.
    pub fn new_op_id(&self) -> String {
        format!(
            "{}-{}",
            self.ops.prefix,
            self.ops.next.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Calls `method` with a fresh op_id: sent again, unchanged, after every
    /// reconnect until answered, and after `unavailable`/`rate_limited`
    /// refusals, so it is committed at most once. Waits while disconnected.
    pub async fn call(&self, method: &str, params: Value) -> Result<Reply> {
        self.call_with_op_id(method, params, self.new_op_id()).await
    }

    /// Like [`Client::call`] with your own op_id (say, one saved across a
    /// restart of your program; 1 to 100 characters).
    pub async fn call_with_op_id(&self, method: &str, params: Value, op_id: String) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Call {
            method: method.to_string(),
            params,
            op_id,
            tx,
        })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Subscribes to `topic` (`tasks`, `task:N`, `agents`, `agent:N`); returns
    /// once the server answered, with the snapshot as the first item.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        self.subscribe_with(topic, None, None).await
    }

    /// Subscribes from a saved position (a resume if the server can replay,
    /// else a snapshot), and asks for `history` activity entries with a
    /// snapshot of `task:N`.
    pub async fn subscribe_with(
        &self,
        topic: &str,
        from: Option<Position>,
        history: Option<u32>,
    ) -> Result<Subscription> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ack, acked) = oneshot::channel();
        self.send(Cmd::Subscribe {
            topic: topic.to_string(),
            from: from.clone(),
            history,
            tx,
            ack,
        })?;
        acked.await.map_err(|_| Error::Closed)??;
        Ok(Subscription::new(topic.to_string(), rx, self.cmds.clone(), from))
    }

    /// What the heartbeat reports besides the agent's id, an object such as
    /// `json!({"status": "busy", "current_task_id": 4})`; sent from the next
    /// beat on (anything but an object reports nothing more).
    pub fn set_heartbeat(&self, fields: Value) {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let _ = self.cmds.send(Cmd::SetHeartbeat(fields));
    }

    /// Closes the socket for good; unanswered calls fail with [`Error::Closed`].
    pub async fn close(&self) {
        let _ = self.cmds.send(Cmd::Close);
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| matches!(s, State::Closed(_))).await;
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        if let State::Closed(Some(e)) = &*self.state.borrow() {
            return Err(e.clone());
        }
        self.cmds.send(cmd).map_err(|_| Error::Closed)
    }
}
