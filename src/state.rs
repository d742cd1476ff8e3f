//! What every request handler and session shares.

use actix::Addr;
use std::sync::Arc;

use crate::auth::TokenCache;
use crate::config::Config;
use crate::db::{Db, Head, Reader};
use crate::limits::{CallLimiter, RestLimiter, SocketCounts, TokenQueues};
use crate::metrics::Metrics;
use crate::presence::Presence;

#[derive(Clone)]
pub struct AppState {
    /// The writer: every call goes here.
    pub db: Addr<Db>,
    /// The readers: lists, pages, snapshots and resumes go here.
    pub reader: Addr<Reader>,
    pub tokens: Arc<TokenCache>,
    pub head: Arc<Head>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub sockets: Arc<SocketCounts>,
    pub rest_limits: Arc<RestLimiter>,
    /// Calls per token, over its sockets and REST.
    pub call_limits: Arc<CallLimiter>,
    /// Outbound bytes queued per token, over its sockets.
    pub queues: Arc<TokenQueues>,
    /// Who holds each topic.
    pub presence: Arc<Presence>,
}
