//! A client for taskwire (docs/protocol.md) that does what every agent
//! otherwise writes by hand:
//!
//! - [`Client::call`] gives each call an op_id and sends it again, unchanged,
//!   after every reconnect until it is answered, and after `unavailable` or
//!   `rate_limited` refusals (jittered), so a write is committed once;
//!   refusals come back as [`Error`], one variant per error code;
//! - [`Client::subscribe`] yields a snapshot, then every change once, in seq
//!   order; after any drop it resumes from its last (epoch, seq), and yields
//!   a fresh snapshot only when the server sent one;
//! - reconnects with exponential backoff and full jitter, on 1001 (a server
//!   shutting down) and on any drop; stops on 1008 (a revoked token);
//! - for an agent token, heartbeats at a third of hello's `agent_timeout_ms`;
//! - helpers that read as the job: [`Client::claim`], [`Client::update`],
//!   [`Client::note`], [`Client::progress`], [`Client::finish`].
//!
//! ```no_run
//! # async fn agent() -> taskwire_client::Result<()> {
//! use taskwire_client::{Client, Item};
//! let client = Client::connect("ws://127.0.0.1:8080/ws", "tw_...").await?;
//! let mut tasks = client.subscribe("tasks").await?;
//! while let Some(item) = tasks.next().await {
//!     match item? {
//!         Item::Snapshot { data, .. } => println!("{} tasks", data.as_array().map_or(0, |a| a.len())),
//!         Item::Event(e) => println!("{} {}", e.event, e.data["id"]),
//!         Item::Resumed { replayed, .. } => println!("back; {replayed} missed changes replayed"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`conn`] is the bare socket (connect with the token, hello, request and
//! reply) without reconnects, for programs that want to drive it themselves.

mod client;
pub mod conn;
mod driver;
mod error;
mod subscription;
mod tasks;
mod types;

pub use client::{Client, Options, State};
pub use error::{Error, Result};
pub use subscription::Subscription;
pub use types::{Agent, By, Event, Hello, Item, NewTask, Position, Reply, Task, TaskPatch};
