//! taskwire: a real-time data layer for a team task dashboard. One binary, one
//! SQLite file; clients subscribe to topics over one WebSocket and get every
//! committed change pushed, and resume exactly after any disconnect.
//!
//! The modules:
//! - [`admin`]: the `taskwire token` commands, on the database file.
//! - [`config`]: the server's settings, with the defaults of the contract.
//! - [`protocol`]: the wire contract in serde types (frames, topics, params).
//! - [`demo`]: demo data and simulated agents for `serve --demo`.
//! - [`error`]: the one error type and its stable codes.
//! - [`db`]: the Db actor (the only writer, the sequencer), its SQL and rules.
//! - [`registry`]: the Registry, one per HTTP worker thread: topic → subscribed
//!   sessions, and the delivery of events to them.
//! - [`peer`]: what a session shares with its Registry: its outbound queue
//!   and the position of each subscription.
//! - [`session`]: the Session actor, one per WebSocket.
//! - [`rest`]: the REST routes, auth extraction, `/healthz`, `/metrics`.
//! - [`auth`]: tokens, roles and the policy table.
//! - [`limits`]: rate limits and socket counts.
//! - [`metrics`]: the Prometheus metrics.
//!
//! [`run`] starts the whole server on an already bound listener and stops it
//! when the given shutdown future resolves, so tests can bind port 0.

pub mod admin;
pub mod auth;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod protocol;
pub mod registry;
pub mod rest;
pub mod session;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use auth::TokenCache;
pub use config::Config;
use db::{Db, Drain, Head};
use limits::{RestLimiter, SocketCounts};
use metrics::Metrics;
use registry::{Hub, LocalRegistry};

/// What every request handler and session shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Addr<Db>,
    pub tokens: Arc<TokenCache>,
    pub head: Arc<Head>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub sockets: Arc<SocketCounts>,
    pub rest_limits: Arc<RestLimiter>,
}

/// Binds a listener with a backlog large enough for thousands of clients
/// connecting at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Runs the server on `listener` until `shutdown` resolves, then stops
/// gracefully: pending commits finish and are answered, every socket is closed
/// with 1001. Must be called inside an actix system.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let other = |e: String| std::io::Error::other(e);
    let mut opened = db::open(&config.db_path).map_err(other)?;
    if let Some(token) = db::ensure_admin_token(&mut opened.conn, config.admin_token.as_deref()).map_err(other)? {
        let addr = listener.local_addr()?;
        // Shown once, on the terminal only, so the token is in no log file.
        eprintln!("taskwire: created the admin token. Log in at http://{addr}/login?token={token}");
    }
    let tokens = Arc::new(TokenCache::with_file(&config.db_path).map_err(other)?);
    db::load_tokens(&mut opened.conn, &tokens).map_err(other)?;
    let metrics = Arc::new(Metrics::new());
    let head = opened.position.clone();

    let hub = Arc::new(Hub::default());
    let db = Db::new(opened, hub.clone(), tokens.clone(), metrics.clone(), config.db.clone()).map_err(other)?;
    let db = Db::start_in_arbiter(&Arbiter::new().handle(), move |_| db);

    let state = AppState {
        db: db.clone(),
        tokens,
        head,
        sockets: Arc::new(SocketCounts::new(config.max_sockets, config.max_sockets_per_token)),
        rest_limits: Arc::new(RestLimiter::new(config.rest_rate_limit)),
        config: Arc::new(config),
        metrics,
    };
    if state.config.demo {
        demo::start(&state);
    }
    let addr = listener.local_addr()?;
    let data = web::Data::new(state.clone());
    let workers_hub = hub.clone();
    let server = HttpServer::new(move || {
        // Runs on each worker thread: its sessions get a Registry of their own.
        let registry = LocalRegistry::start(&workers_hub, data.metrics.clone());
        App::new()
            .app_data(data.clone())
            .app_data(registry)
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("Content-Security-Policy", rest::CSP))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "no-referrer")),
            )
            .configure(rest::routes)
    })
    .workers(state.config.workers)
    .backlog(4096)
    .tcp_nodelay(true)
    .max_connection_rate(4096)
    .client_request_timeout(Duration::from_secs(10))
    .shutdown_timeout(3)
    .on_connect(session::on_connect)
    .disable_signals()
    .listen(listener)?
    .run();
    log::info!(
        "taskwire listening on http://{addr} (database {})",
        state.config.db_path
    );
    let handle = server.handle();
    let stopper = async move {
        shutdown.await;
        log::info!("shutting down");
        handle.pause().await;
        let _ = db.send(Drain).await;
        let n = hub.close_all(1001, "server shutting down").await;
        log::info!("closed {n} sockets");
        handle.stop(true).await;
    };
    let (served, ()) = futures_util::future::join(server, stopper).await;
    served
}
