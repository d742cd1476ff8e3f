//! Builds and runs the whole server: opens the database, starts the Db actor,
//! the HTTP workers with their Registries, and stops them all on shutdown.

use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::TokenCache;
use crate::config::Config;
use crate::db::resume::RecentChanges;
use crate::db::shared::Shared;
use crate::db::{self, reader, Db, Drain, OpenError};
use crate::error::ApiError;
use crate::limits::{CallLimiter, ReadBudget, RestLimiter, SocketCounts, TokenQueues};
use crate::metrics::Metrics;
use crate::registry::{Hub, LocalRegistry};
use crate::state::AppState;
use crate::{demo, rest, session};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read the database {path}")]
    Load {
        path: String,
        #[source]
        source: LoadError,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("stopped after a storage failure: {0}")]
    Storage(String),
}

/// A failure reading what the server loads at start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Binds a listener with a backlog large enough for thousands of clients
/// connecting at once.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        Ok(socket.into())
    };
    bind().map_err(|source| StartError::Bind { addr, source })
}

/// Runs the server on `listener` until `shutdown` resolves, then stops
/// gracefully: pending commits finish and are answered, every socket is closed
/// with 1001. Must be called inside an actix system.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let load = |source: LoadError| StartError::Load {
        path: config.db_path.clone(),
        source,
    };
    let mut opened = db::open(&config.db_path)?;
    let created =
        db::ensure_admin_token(&mut opened.conn, config.admin_token.as_deref()).map_err(|e| load(e.into()))?;
    if let Some(code) = created {
        let addr = listener.local_addr().map_err(StartError::Serve)?;
        let link = crate::auth::login_link(&crate::config::local_base_url(addr), &code.code);
        // On the terminal only, not the log. The link carries a one-time code,
        // not the token: what stays in the browser's history logs nobody in.
        eprintln!(
            "taskwire: created the admin token. Log in at {link} \
             (once, within {} minutes; `taskwire token login-link admin` makes a new link)",
            db::LOGIN_CODE_MINUTES
        );
    }
    let ended = db::trim_web_sessions(&mut opened.conn).map_err(|e| load(e.into()))?;
    if ended > 0 {
        log::info!(
            "ended {ended} browser sessions over the cap of {} per token",
            db::WEB_SESSIONS_PER_TOKEN
        );
    }
    let tokens = Arc::new(TokenCache::default());
    db::load_tokens(&mut opened.conn, &tokens).map_err(|e| load(e.into()))?;
    let metrics = Arc::new(Metrics::new());
    let head = opened.position.clone();

    let recent = RecentChanges::load(&mut opened.conn, head.seq(), opened.floor, config.db.recent_changes)
        .map_err(|e| load(e.into()))?;
    let shared = Arc::new(Shared::new(head.clone(), recent));
    let budget = Arc::new(ReadBudget::new(config.read_rows_per_sec));
    let reader = reader::start(
        &config.db_path,
        config.readers,
        shared.clone(),
        config.db.clone(),
        budget,
    )?;

    let hub = Arc::new(Hub::default());
    let (failed, storage_failure) = tokio::sync::oneshot::channel();
    let db = Db::new(
        opened,
        hub.clone(),
        tokens.clone(),
        metrics.clone(),
        config.db.clone(),
        shared,
        failed,
    )
    .map_err(|e| load(e.into()))?;
    let db = Db::start_in_arbiter(&Arbiter::new().handle(), move |_| db);

    let state = AppState {
        db: db.clone(),
        reader,
        tokens,
        head,
        sockets: Arc::new(SocketCounts::new(config.max_sockets, config.max_sockets_per_token)),
        rest_limits: Arc::new(RestLimiter::new(config.rest_rate_limit)),
        call_limits: Arc::new(CallLimiter::new(config.calls_per_sec_per_token)),
        queues: Arc::new(TokenQueues::new(config.max_queue_bytes_per_token)),
        presence: Arc::default(),
        config: Arc::new(config),
        metrics,
    };
    if state.config.demo {
        demo::start(&state);
    }
    let addr = listener.local_addr().map_err(StartError::Serve)?;
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
    .listen(listener)
    .map_err(StartError::Serve)?
    .run();
    log::info!(
        "taskwire listening on http://{addr} (database {})",
        state.config.db_path
    );
    let handle = server.handle();
    let stopper = async move {
        // A storage failure stops the server as a signal does, but the exit
        // says so.
        let failure = tokio::select! {
            () = shutdown => None,
            reason = storage_failure => reason.ok(),
        };
        log::info!("shutting down");
        handle.pause().await;
        let _ = db.send(Drain).await;
        let n = hub.close_all(1001, "server shutting down").await;
        log::info!("closed {n} sockets");
        handle.stop(true).await;
        failure
    };
    let (served, failure) = futures_util::future::join(server, stopper).await;
    served.map_err(StartError::Serve)?;
    failure.map_or(Ok(()), |reason| Err(StartError::Storage(reason)))
}
