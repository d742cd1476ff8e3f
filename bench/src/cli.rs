//! The command line: the flags every scenario shares, the scenarios, and the
//! bounds a run must stay within.

use crate::Res;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Most sockets one run may open (one client address holds ~28k ports).
const MAX_SOCKETS: usize = 20_000;

/// Most loops of one kind a flood scenario may run.
const MAX_LOOPS: usize = 64;

#[derive(Parser)]
#[command(
    name = "taskwire-bench",
    version,
    about = "Load generator and benchmarks for taskwire (loopback only)"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Clone)]
pub struct Common {
    /// The server's address; must be a loopback address.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// A bearer token (an admin token: only those may hold thousands of sockets).
    #[arg(
        long,
        global = true,
        env = "TASKWIRE_ADMIN_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub token: String,
    /// The server's pid, to read its CPU time and resident memory from /proc.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// A folder on the database's disk, to measure the fsync ceiling there (and,
    /// for `fanout`, the fsync floor at the writes' pace).
    #[arg(long, global = true)]
    pub db_dir: Option<PathBuf>,
    /// Handshakes in flight at once while opening many sockets.
    #[arg(long, global = true, default_value_t = 1000)]
    pub concurrency: usize,
    /// A free-form label copied into the JSON line.
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// No progress bar and no table: only the JSON line.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// N subscribers of `tasks`, one writer sending W updates at R per second.
    Fanout {
        #[arg(short = 'n', long, default_value_t = 100)]
        subscribers: usize,
        #[arg(short = 'w', long, default_value_t = 1000)]
        writes: usize,
        /// Calls per second.
        #[arg(short = 'r', long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds to wait for the last events after the last ack.
        #[arg(long, default_value_t = 10)]
        drain_secs: u64,
    },
    /// N subscribers over F filtered topics and U of `tasks`, one writer
    /// sending W updates at R per second that cycle a task's status and
    /// priority; filtered and plain event latency side by side.
    Filtered {
        #[arg(short = 'n', long, default_value_t = 1000)]
        subscribers: usize,
        /// Distinct filters, 1 to 120.
        #[arg(short = 'f', long, default_value_t = 100)]
        filters: usize,
        /// Subscribers of plain `tasks`, for comparison.
        #[arg(short = 'u', long, default_value_t = 100)]
        plain: usize,
        #[arg(short = 'w', long, default_value_t = 1000)]
        writes: usize,
        #[arg(short = 'r', long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        drain_secs: u64,
    },
    /// C sockets each sending `task.update` as fast as acks return, for S seconds.
    Writes {
        #[arg(short = 'c', long, default_value_t = 32)]
        conns: usize,
        #[arg(short = 's', long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// N idle sockets subscribed to `tasks`: connect time and server memory.
    Conns {
        #[arg(short = 'n', long, default_value_t = 5000)]
        sockets: usize,
        /// Seconds to hold the sockets before reading the server's memory.
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
    },
    /// N clients subscribe, disconnect, M writes happen, all resume at once.
    Resume {
        #[arg(short = 'n', long, default_value_t = 1000)]
        clients: usize,
        #[arg(short = 'm', long, default_value_t = 100)]
        writes: usize,
    },
    /// One task with N activity entries, then O page opens: a fresh socket
    /// subscribing to `task:{id}` with `history: 200`, timed to its reply.
    History {
        #[arg(short = 'n', long, default_value_t = 100_000)]
        entries: usize,
        #[arg(short = 'o', long, default_value_t = 200)]
        opens: usize,
    },
    /// A paced writer's ack latency, idle and then while a member token floods
    /// the readers (change-log pages over HTTP, far resumes over sockets).
    Readflood {
        /// Tasks the database holds (created through the API if missing).
        #[arg(short = 'n', long, default_value_t = 30_000)]
        tasks: usize,
        /// Seconds of each phase: idle, then flood.
        #[arg(short = 's', long, default_value_t = 10.0)]
        seconds: f64,
        /// The writer's calls per second, one at a time (an admin's token,
        /// under the REST limit of 2,000 requests per second).
        #[arg(short = 'r', long, default_value_t = 200.0)]
        write_rate: f64,
        /// How the writer writes: `PATCH /api/tasks/{id}` or a socket `task.update`.
        #[arg(long, value_enum, default_value_t = Via::Rest)]
        via: Via,
        /// Loops of `GET /api/changes?since=0&topic=task:999999&limit=10000`.
        #[arg(long, default_value_t = 4)]
        http_flooders: usize,
        /// Sockets subscribing to `tasks` from `since` 0 and unsubscribing.
        #[arg(long, default_value_t = 4)]
        ws_flooders: usize,
        /// The HTTP loops' requests per second in all (0: each loop sends as
        /// soon as it is answered).
        #[arg(long, default_value_t = 0.0)]
        http_rate: f64,
        /// The sockets' subscribes per second in all (0: as soon as answered).
        #[arg(long, default_value_t = 0.0)]
        ws_rate: f64,
    },
    /// One agent's sockets sending status-changing heartbeats as fast as they
    /// are answered while K dashboards subscribed to `agents` read the events.
    Tokenflood {
        /// The agent's sockets.
        #[arg(long, default_value_t = 4)]
        agent_sockets: usize,
        /// Dashboard sockets (one member token).
        #[arg(short = 'k', long, default_value_t = 20)]
        dashboards: usize,
        /// Seconds the agent loops.
        #[arg(short = 's', long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds without a new event after which the dashboards' last
        /// events are no longer waited for.
        #[arg(long, default_value_t = 2.0)]
        drain_secs: f64,
    },
    /// Only the fsync ceiling of the disk under --db-dir.
    Fsync {
        /// Seconds to sample for.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

/// How the measured writer of `readflood` writes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Rest,
    Socket,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::Socket => "socket",
        }
    }
}

/// Counts and times are bounded: this is a benchmark, not a stress tool.
pub fn check_bounds(s: &Scenario, c: &Common) -> Res<()> {
    let sockets = |n: usize, what: &str| {
        if n == 0 || n > MAX_SOCKETS {
            Err(format!("{what} must be 1..={MAX_SOCKETS}"))
        } else {
            Ok(())
        }
    };
    if c.concurrency == 0 || c.concurrency > MAX_SOCKETS {
        return Err(format!("--concurrency must be 1..={MAX_SOCKETS}"));
    }
    match s {
        Scenario::Filtered {
            subscribers,
            filters,
            plain,
            writes,
            rate,
            drain_secs,
        } => {
            sockets(*subscribers + *plain, "--subscribers + --plain")?;
            if !(1..=120).contains(filters) || *subscribers == 0 {
                return Err("--filters must be 1..=120, with at least one subscriber".into());
            }
            if *writes == 0 || *writes > 1_000_000 || !(*rate > 0.0 && *rate <= 100_000.0) {
                return Err("--writes must be 1..=1000000 and --rate in (0, 100000]".into());
            }
            if *writes as f64 / *rate > 600.0 || *drain_secs > 120 {
                return Err("writes / rate must be at most 600 seconds, --drain-secs at most 120".into());
            }
        }
        Scenario::Fanout {
            subscribers,
            writes,
            rate,
            drain_secs,
        } => {
            sockets(*subscribers, "--subscribers")?;
            if *writes == 0 || *writes > 1_000_000 {
                return Err("--writes must be 1..=1000000".into());
            }
            if !(*rate > 0.0 && *rate <= 100_000.0) {
                return Err("--rate must be in (0, 100000]".into());
            }
            if *writes as f64 / *rate > 600.0 {
                return Err("writes / rate must be at most 600 seconds".into());
            }
            if (*subscribers as u64) * (*writes as u64) > 50_000_000 {
                return Err("subscribers × writes must be at most 50,000,000".into());
            }
            if *drain_secs > 120 {
                return Err("--drain-secs must be at most 120".into());
            }
        }
        Scenario::Writes { conns, seconds } => {
            if *conns == 0 || *conns > 1000 {
                return Err("--conns must be 1..=1000".into());
            }
            if !(*seconds > 0.0 && *seconds <= 600.0) {
                return Err("--seconds must be in (0, 600]".into());
            }
        }
        Scenario::Conns { sockets: n, hold_secs } => {
            sockets(*n, "--sockets")?;
            if !(*hold_secs >= 0.0 && *hold_secs <= 600.0) {
                return Err("--hold-secs must be in [0, 600]".into());
            }
        }
        Scenario::Resume { clients, writes } => {
            sockets(*clients, "--clients")?;
            if *writes == 0 || *writes > 100_000 {
                return Err("--writes must be 1..=100000".into());
            }
        }
        Scenario::History { entries, opens } => {
            if *entries == 0 || *entries > 10_000_000 || *opens == 0 || *opens > 100_000 {
                return Err("--entries must be 1..=10000000 and --opens 1..=100000".into());
            }
        }
        Scenario::Readflood {
            tasks,
            seconds,
            write_rate,
            via: _,
            http_flooders,
            ws_flooders,
            http_rate,
            ws_rate,
        } => {
            if *tasks == 0 || *tasks > 200_000 {
                return Err("--tasks must be 1..=200000".into());
            }
            if !(*seconds > 0.0 && *seconds <= 300.0) {
                return Err("--seconds must be in (0, 300]".into());
            }
            // Above the REST limit the writer itself would be refused.
            if !(*write_rate > 0.0 && *write_rate <= 1000.0) {
                return Err("--write-rate must be in (0, 1000]".into());
            }
            if *http_flooders > MAX_LOOPS || *ws_flooders > MAX_LOOPS {
                return Err(format!("--http-flooders and --ws-flooders must be 0..={MAX_LOOPS}"));
            }
            if http_flooders + ws_flooders == 0 {
                return Err("give at least one flooder".into());
            }
            if !(*http_rate >= 0.0 && *http_rate <= 100_000.0 && *ws_rate >= 0.0 && *ws_rate <= 100_000.0) {
                return Err("--http-rate and --ws-rate must be in [0, 100000]".into());
            }
        }
        Scenario::Tokenflood {
            agent_sockets,
            dashboards,
            seconds,
            drain_secs,
        } => {
            if *agent_sockets == 0 || *agent_sockets > MAX_LOOPS {
                return Err(format!("--agent-sockets must be 1..={MAX_LOOPS}"));
            }
            // The dashboards share one member token, which may hold 1,000.
            if *dashboards == 0 || *dashboards > 1000 {
                return Err("--dashboards must be 1..=1000".into());
            }
            if !(*seconds > 0.0 && *seconds <= 300.0) {
                return Err("--seconds must be in (0, 300]".into());
            }
            if !(*drain_secs >= 0.0 && *drain_secs <= 60.0) {
                return Err("--drain-secs must be in [0, 60]".into());
            }
        }
        Scenario::Fsync { seconds } => {
            if !(*seconds > 0.0 && *seconds <= 60.0) {
                return Err("--seconds must be in (0, 60]".into());
            }
        }
    }
    Ok(())
}
