//! The server's settings: the `serve` flags of the contract, with their defaults.

use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::db::DbConfig;

/// Flags of `taskwire serve`. Outside scripts start the server with these names;
/// keep them stable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "TASKWIRE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// The SQLite file; its folder is created.
    #[arg(long, env = "DATABASE_URL", default_value = "./data/taskwire.db")]
    pub db: String,
    /// Seconds without a heartbeat before an agent is `offline`.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_timeout: u64,
    /// Seconds an agent stays after its token's last socket closed, before
    /// it is `offline` (unless a socket opens again or it heartbeats).
    #[arg(long, default_value_t = 5)]
    pub presence_grace: u64,
    /// Changes kept in the log (older ones pruned).
    #[arg(long, default_value_t = 100_000)]
    pub log_keep: i64,
    /// Changes older than this many seconds are pruned.
    #[arg(long, default_value_t = 604_800)]
    pub log_max_age: u64,
    /// Origins besides the server's own that may use the session cookie.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    /// A reverse proxy (its IP address) whose `Forwarded` / `X-Forwarded-Proto`
    /// is believed: a request from it that says `https` gets a `Secure` cookie
    /// and an `https://` own origin. From any other peer those headers are
    /// ignored.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<IpAddr>,
    /// Demo data and simulated agents.
    #[arg(long)]
    pub demo: bool,
    /// Largest socket frame (larger: close 1009) and REST body (larger: 413).
    #[arg(long, default_value_t = 65_536)]
    pub max_frame_bytes: usize,
    /// Topics one connection may hold.
    #[arg(long, default_value_t = 1000)]
    pub max_subscriptions: usize,
    /// Frames per second per connection.
    #[arg(long, default_value_t = 20_000)]
    pub rate_limit: u32,
    /// REST requests per second per token.
    #[arg(long, default_value_t = 2000)]
    pub rest_rate_limit: u32,
    /// Sockets in total (lowered to fit the open-file limit).
    #[arg(long, default_value_t = 20_000)]
    pub max_sockets: usize,
    /// Sockets per member or agent token.
    #[arg(long, default_value_t = 1000)]
    pub max_sockets_per_token: usize,
    /// Bytes waiting for one socket before it is closed 1013.
    #[arg(long, default_value_t = 8_388_608)]
    pub max_queue_bytes: usize,
    /// Frames waiting for one socket before it is closed 1013.
    #[arg(long, default_value_t = 65_536)]
    pub max_queue_frames: usize,
    /// Bytes waiting for all the sockets of one token (admin tokens too);
    /// a frame that would go over it closes the socket it is for, 1013.
    #[arg(long, default_value_t = 67_108_864)]
    pub max_queue_bytes_per_token: usize,
    /// Calls (writes, over sockets and REST together) per second per member
    /// or agent token; past it calls are answered `rate_limited`.
    #[arg(long, default_value_t = 1000)]
    pub calls_per_sec_per_token: u32,
    /// HTTP worker threads (at least 1); each holds its sockets and a Registry.
    #[arg(
        long,
        env = "TASKWIRE_WORKERS",
        default_value_t = 2,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub workers: usize,
    /// Rows one member or agent token may read per second (lists, snapshots,
    /// change-log scans); past it reads are answered `rate_limited`.
    #[arg(long, default_value_t = 50_000)]
    pub read_rows_per_sec: u32,
    /// Seconds an `in_progress` task may go unchanged before the pages mark
    /// it stuck (told to clients in `hello`).
    #[arg(long, default_value_t = 1800)]
    pub stuck_after: u64,
    /// The admin token to create on a database with no live admin token.
    #[arg(long, env = "TASKWIRE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl ServeArgs {
    /// The `serve` flags at their defaults, with the environment applied: what
    /// `taskwire` alone runs with.
    pub fn default_from_env() -> ServeArgs {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Only as clap::Parser>::parse_from(["taskwire"]).args
    }
}

/// Everything the running server needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub db_path: String,
    pub admin_token: Option<String>,
    /// Interval of the server's WebSocket pings.
    pub heartbeat_interval: Duration,
    pub db: DbConfig,
    pub allowed_origins: Vec<String>,
    /// Peers whose forwarding headers say which scheme the browser used.
    pub trusted_proxies: Vec<IpAddr>,
    pub demo: bool,
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub rate_limit: u32,
    pub rest_rate_limit: u32,
    pub max_sockets: usize,
    pub max_sockets_per_token: usize,
    pub max_queue_bytes: usize,
    pub max_queue_frames: usize,
    pub max_queue_bytes_per_token: usize,
    pub calls_per_sec_per_token: u32,
    /// HTTP worker threads.
    pub workers: usize,
    /// Read-only connections for reads, each on its own thread.
    pub readers: usize,
    pub read_rows_per_sec: u32,
    /// How long an `in_progress` task may go unchanged before pages call it stuck.
    pub stuck_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db_path: "./data/taskwire.db".into(),
            admin_token: None,
            heartbeat_interval: Duration::from_secs(10),
            db: DbConfig::default(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            demo: false,
            max_frame_bytes: 65_536,
            max_subscriptions: 1000,
            rate_limit: 20_000,
            rest_rate_limit: 2000,
            max_sockets: 20_000,
            max_sockets_per_token: 1000,
            max_queue_bytes: 8_388_608,
            max_queue_frames: 65_536,
            max_queue_bytes_per_token: 67_108_864,
            calls_per_sec_per_token: 1000,
            workers: 2,
            readers: 2,
            read_rows_per_sec: 50_000,
            stuck_after: Duration::from_secs(1800),
        }
    }
}

impl Config {
    /// Raises the open-file limit to the hard limit, and lowers `max_sockets` to
    /// what that limit can hold (each socket is one file; the rest is headroom
    /// for the database and listeners).
    pub fn fit_open_file_limit(&mut self) {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => {
                let fits = (limit as usize).saturating_sub(64);
                log::info!("open-file limit {limit}");
                if fits < self.max_sockets {
                    log::warn!(
                        "max sockets lowered from {} to {fits} to fit the open-file limit",
                        self.max_sockets
                    );
                    self.max_sockets = fits;
                }
            }
            Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
        }
    }
}

impl From<ServeArgs> for Config {
    fn from(a: ServeArgs) -> Config {
        let base = Config::default();
        Config {
            db_path: a.db,
            admin_token: a.admin_token,
            db: DbConfig {
                heartbeat_timeout: Duration::from_secs(a.heartbeat_timeout),
                presence_grace: Duration::from_secs(a.presence_grace),
                log_keep: a.log_keep,
                log_max_age: Duration::from_secs(a.log_max_age),
                ..base.db.clone()
            },
            allowed_origins: a.allowed_origins,
            trusted_proxies: a.trusted_proxies,
            demo: a.demo,
            max_frame_bytes: a.max_frame_bytes,
            max_subscriptions: a.max_subscriptions,
            rate_limit: a.rate_limit,
            rest_rate_limit: a.rest_rate_limit,
            max_sockets: a.max_sockets,
            max_sockets_per_token: a.max_sockets_per_token,
            max_queue_bytes: a.max_queue_bytes,
            max_queue_frames: a.max_queue_frames,
            max_queue_bytes_per_token: a.max_queue_bytes_per_token,
            calls_per_sec_per_token: a.calls_per_sec_per_token,
            workers: a.workers,
            read_rows_per_sec: a.read_rows_per_sec,
            stuck_after: Duration::from_secs(a.stuck_after),
            ..base
        }
    }
}

/// The base URL a browser on this machine reaches a listen address at: an
/// unspecified address (`0.0.0.0`, `[::]`) is reached at loopback.
pub fn local_base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}
