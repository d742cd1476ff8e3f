//! taskwire: a real-time data layer for a team task dashboard. One binary, one
//! SQLite file; clients subscribe to topics over one WebSocket and get every
//! committed change pushed, and resume exactly after any disconnect.
//!
//! The modules, from the wire down:
//! - [`startup`]: builds the server; [`run`] starts it on an already bound
//!   listener and stops it when a shutdown future resolves (tests bind port 0).
//! - [`rest`]: the REST routes, auth extraction, `/healthz`, `/metrics`, login.
//! - [`session`]: the Session actor, one per WebSocket.
//! - [`registry`]: the Registry, one per HTTP worker thread: topic → subscribed
//!   sessions, and the delivery of events to them.
//! - [`peer`]: what a session shares with its Registry: its outbound queue
//!   and the position of each subscription.
//! - [`presence`]: who holds each topic, and the presence frames.
//! - [`state`]: what every handler and session shares.
//! - [`db`]: the Db actor (the only writer, the sequencer), its rules and SQL.
//! - [`demo`]: demo data and simulated agents for `serve --demo`.
//! - [`admin`]: the `taskwire token` and `backup` commands, on the file.
//! - [`mcp`]: `taskwire mcp`, the tools for AI agent hosts over MCP, a
//!   client of a running server.
//! - [`protocol`]: the wire contract in serde types (frames, topics, params).
//! - [`filter`]: filtered collection topics: the filter, its canonical
//!   spelling, and what a change is on such a topic.
//! - [`model`]: entity kinds, change kinds and statuses.
//! - [`auth`]: tokens, roles and the policy table.
//! - [`limits`]: rate limits and socket counts.
//! - [`config`]: the server's settings, with the defaults of the contract.
//! - [`error`]: the one error type and its stable codes.
//! - [`metrics`]: the Prometheus metrics.

pub mod admin;
pub mod auth;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod filter;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod peer;
pub mod presence;
pub mod protocol;
pub mod registry;
pub mod rest;
pub mod session;
pub mod startup;
pub mod state;

pub use config::Config;
pub use startup::{bind, run, StartError};
