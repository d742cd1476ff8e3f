//! The Db actor: the only writer of the SQLite file and the sequencer.
//!
//! - [`open`]: opening and migrating the file, its epoch and position.
//! - [`writer`]: the actor itself and the group commit of calls.
//! - [`rules`]: what each call may do and what it changes, run inside the
//!   commit, one savepoint per call.
//! - [`reader`]: the readers, read-only connections on their own threads.
//! - [`reads`]: REST reads and change-log pages, run on a reader.
//! - [`resume`]: subscribes: a snapshot, or the changes a client missed, run
//!   on a reader.
//! - [`shared`]: what the writer shares with the readers after each commit.
//! - [`tokens`]: token, login-code and browser-session administration, and
//!   the watch for revocations made by another process.
//! - [`windows`]: window topics, computed by the writer at each change.
//! - [`upkeep`]: the timers: heartbeat times, agents going offline, pruning.
//! - [`files`]: the database and WAL files the writer has open, by inode.
//! - [`liveness`]: heartbeat times kept in memory and when each agent was heard.
//! - [`row_cache`]: task rows the writer saved, so the next update skips a read.
//! - [`sqlite_log`]: SQLite's error log, which tells a failed sync apart.
//! - [`models`], [`queries`], [`schema`]: rows, the SQL, and the tables.

pub mod files;
pub mod liveness;
pub mod models;
pub mod open;
pub mod queries;
pub mod reader;
pub mod reads;
pub mod resume;
pub mod row_cache;
pub mod rules;
pub mod schema;
pub mod shared;
pub mod sqlite_log;
pub mod tokens;
pub mod upkeep;
pub mod windows;
pub mod writer;

use std::time::Duration;

pub use open::{open, Head, OpenError, Opened};
pub use reader::Reader;
pub use reads::{Listing, Query, Read, ReadAnswer, ReadChanges};
pub use resume::{Subscribe, Subscribed};
pub use tokens::{
    ensure_admin_token, load_tokens, trim_web_sessions, CreateLoginCode, CreateToken, ListTokens, Login, Logout,
    RedeemLoginCode, RevokeToken, WebSession, LOGIN_CODE_MINUTES, WEB_SESSIONS_PER_TOKEN, WEB_SESSION_DAYS,
};
pub use upkeep::AgentSocket;
pub use writer::LeaveWindow;
pub use writer::{execute, Committed, Db, Drain, Execute};

/// How the Db actor keeps the log and watches agents.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub heartbeat_timeout: Duration,
    pub log_keep: i64,
    pub log_max_age: Duration,
    /// A resume that would replay more changes than this gets a snapshot.
    pub max_replay: i64,
    /// How long an agent stays after its token's last socket closed.
    pub presence_grace: Duration,
    /// How long remembered op_ids are kept.
    pub op_keep: Duration,
    /// How many of the newest changes are kept in memory for resumes; older
    /// positions are read from the log.
    pub recent_changes: usize,
    /// The most changes one read of the log looks through. A resume further
    /// back than this and past the memory gets a snapshot; a page of
    /// `GET /api/changes` ends at the window's end.
    pub log_scan_window: i64,
    /// How often committed task changes are filed into the tasks' activity.
    pub activity_interval: Duration,
    /// How long a window topic nobody subscribes to any more is kept live
    /// (zero: dropped when its last subscriber leaves).
    pub window_linger: Duration,
    /// Test-only: a call with this `op_id` fails after all its writes, as a
    /// rule checked late would, to prove that it leaves nothing behind.
    #[doc(hidden)]
    pub fail_op_id: Option<String>,
    /// Test-only: a batch holding a call with this `op_id` is treated as if
    /// its commit's sync failed (after it committed), as an `fdatasync` that
    /// returns EIO would leave it: outcome unknown.
    #[doc(hidden)]
    pub fail_sync_op_id: Option<String>,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            heartbeat_timeout: Duration::from_secs(30),
            presence_grace: Duration::from_secs(5),
            log_keep: 100_000,
            log_max_age: Duration::from_secs(7 * 24 * 3600),
            max_replay: 1000,
            op_keep: Duration::from_secs(24 * 3600),
            recent_changes: 4096,
            log_scan_window: 10_000,
            activity_interval: Duration::from_millis(250),
            window_linger: Duration::from_secs(60),
            fail_op_id: None,
            fail_sync_op_id: None,
        }
    }
}
