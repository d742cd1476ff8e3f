//! taskwire-bench: the load generator. It speaks the wire protocol as any
//! client would (WebSocket at `/ws`, `Authorization: Bearer` on the upgrade),
//! only to a loopback address, with bounded counts and times.
//!
//! Scenarios (see `docs/benchmarks.md`):
//! - `fanout`: N sockets subscribed to `tasks`, one writer sending W
//!   `task.update` calls at R per second (open loop). Each delivered event's
//!   latency runs from the send of the call whose reply carried its seq.
//! - `writes`: C sockets each sending `task.update` as fast as acks return.
//! - `conns`: N idle subscribed sockets; server RSS per socket, connect time.
//! - `resume`: N clients subscribe, disconnect, M writes happen, all resume at
//!   once; time until every client has its missed events.
//! - `fsync`: only the disk's durable-write ceiling.
//!
//! Every run prints one JSON line of results on stdout and a readable table on
//! stderr (with a progress bar while it runs, when stderr is a terminal). The
//! exit status is 1 when a correctness check failed (an event lost, duplicated
//! or out of order, a failed call), 2 when the run could not be set up.

use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Res<T> = Result<T, String>;

/// How long one protocol step (a connect, a reply) may take before the run fails.
const STEP: Duration = Duration::from_secs(30);
/// Most sockets one run may open (one client address holds ~28k ports).
const MAX_SOCKETS: usize = 20_000;

#[derive(Parser)]
#[command(
    name = "taskwire-bench",
    version,
    about = "Load generator and benchmarks for taskwire (loopback only)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
struct Common {
    /// The server's address; must be a loopback address.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// A bearer token (an admin token: only those may hold thousands of sockets).
    #[arg(
        long,
        global = true,
        env = "TASKWIRE_ADMIN_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// The server's pid, to read its CPU time and resident memory from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// A folder on the database's disk, to measure the fsync ceiling there (and,
    /// for `fanout`, the fsync floor at the writes' pace).
    #[arg(long, global = true)]
    db_dir: Option<PathBuf>,
    /// Handshakes in flight at once while opening many sockets.
    #[arg(long, global = true, default_value_t = 1000)]
    concurrency: usize,
    /// A free-form label copied into the JSON line.
    #[arg(long, global = true)]
    label: Option<String>,
    /// No progress bar and no table: only the JSON line.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Scenario {
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
    /// Only the fsync ceiling of the disk under --db-dir.
    Fsync {
        /// Seconds to sample for.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

fn main() {
    let cli = Cli::parse();
    let c = &cli.common;
    if !c.addr.ip().is_loopback() {
        fail_setup("the load generator only talks to a loopback address");
    }
    if c.token.is_empty() && !matches!(cli.scenario, Scenario::Fsync { .. }) {
        fail_setup("give --token or set TASKWIRE_ADMIN_TOKEN");
    }
    if let Err(e) = check_bounds(&cli.scenario, c) {
        fail_setup(&e);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail_setup(&format!("tokio runtime: {e}")));
    let result = rt.block_on(run(cli.common.clone(), cli.scenario));
    match result {
        Ok((mut report, table)) => {
            let ok = report["ok"].as_bool().unwrap_or(false);
            decorate(&mut report, &cli.common);
            println!("{report}");
            if !cli.common.quiet {
                print_table(&report, &table);
            }
            // Drop the sockets without waiting for their tasks.
            rt.shutdown_timeout(Duration::from_millis(200));
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => fail_setup(&e),
    }
}

fn fail_setup(msg: &str) -> ! {
    eprintln!("taskwire-bench: {msg}");
    std::process::exit(2);
}

/// Counts and times are bounded: this is a benchmark, not a stress tool.
fn check_bounds(s: &Scenario, c: &Common) -> Res<()> {
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
        Scenario::Fsync { seconds } => {
            if !(*seconds > 0.0 && *seconds <= 60.0) {
                return Err("--seconds must be in (0, 60]".into());
            }
        }
    }
    Ok(())
}

/// Raises this process's open-file limit so it can hold `sockets` sockets.
fn raise_nofile(sockets: usize) -> Res<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("raising the open-file limit: {e}"))?;
    let need = sockets as u64 + 64;
    if limit < need {
        return Err(format!(
            "the open-file limit is {limit}, below the {need} this run needs (raise `ulimit -Hn`)"
        ));
    }
    Ok(limit)
}

async fn run(c: Common, s: Scenario) -> Res<(Value, Vec<(String, String)>)> {
    match s {
        Scenario::Fanout {
            subscribers,
            writes,
            rate,
            drain_secs,
        } => {
            raise_nofile(subscribers + 1)?;
            fanout(&c, subscribers, writes, rate, Duration::from_secs(drain_secs)).await
        }
        Scenario::Writes { conns, seconds } => {
            raise_nofile(conns + 1)?;
            writes(&c, conns, Duration::from_secs_f64(seconds)).await
        }
        Scenario::Conns { sockets, hold_secs } => {
            raise_nofile(sockets + 1)?;
            conns(&c, sockets, Duration::from_secs_f64(hold_secs)).await
        }
        Scenario::Resume { clients, writes } => {
            raise_nofile(clients + 1)?;
            resume(&c, clients, writes).await
        }
        Scenario::Fsync { seconds } => {
            let f = fsync_ceiling(&c, Duration::from_secs_f64(seconds))?;
            let mut table = vec![];
            fsync_rows(&f, &mut table);
            Ok((json!({"scenario": "fsync", "ok": true, "fsync": f.json()}), table))
        }
    }
}

// ---------------------------------------------------------------------------
// The protocol client

/// The fields of a server frame the generator reads on its hot path; the rest
/// of the frame is skipped without building a tree.
#[derive(Deserialize)]
struct Light<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(rename = "ref", default)]
    reference: Option<i64>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    ok: Option<bool>,
}

/// Opens a socket with the token and reads its hello.
async fn connect(c: &Common) -> Res<(Ws, Value)> {
    let mut req = format!("ws://{}/ws", c.addr)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", c.token)
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?,
    );
    let config = WebSocketConfig {
        // Write each frame at once: this is a latency benchmark.
        write_buffer_size: 0,
        ..WebSocketConfig::default()
    };
    let (mut ws, _) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async_with_config(req, Some(config), true),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let hello = next_text(&mut ws).await?;
    let hello: Value = serde_json::from_str(&hello).map_err(|e| format!("hello: {e}"))?;
    if hello["type"] != "hello" {
        return Err(format!("expected hello, got {hello}"));
    }
    Ok((ws, hello))
}

/// The next text frame, skipping pings and pongs.
async fn next_text(ws: &mut Ws) -> Res<String> {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .map_err(|_| "no frame from the server within 30 s".to_string())?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(f))) => {
                return Err(format!("the server closed the socket: {f:?}"));
            }
            Some(Ok(Message::Binary(_))) => return Err("unexpected binary frame".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("socket error: {e}")),
            None => return Err("the socket ended".into()),
        }
    }
}

async fn send(ws: &mut Ws, frame: &Value) -> Res<()> {
    ws.send(Message::Text(frame.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// A resume's reply, read for the seqs it replays and nothing else: a
/// thousand clients each read 100 changes at once, and building a JSON tree
/// of each would take the generator more CPU than the server spends.
#[derive(Deserialize)]
struct ResumeReply<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(rename = "ref", default)]
    reference: Option<i64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    data: Option<ResumeData>,
}

#[derive(Deserialize)]
struct ResumeData {
    /// Present when the reply replays changes (absent for a snapshot).
    #[serde(default)]
    events: Option<Vec<SeqOnly>>,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: i64,
}

/// Sends `frame` with ref `r` and returns its reply; other frames are dropped.
async fn request(ws: &mut Ws, mut frame: Value, r: i64) -> Res<Value> {
    frame["ref"] = json!(r);
    send(ws, &frame).await?;
    loop {
        let t = next_text(ws).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
        if l.ty == "reply" && l.reference == Some(r) {
            return serde_json::from_str(&t).map_err(|e| e.to_string());
        }
    }
}

/// Like `request`, but an error reply is an error.
async fn request_ok(ws: &mut Ws, frame: Value, r: i64) -> Res<Value> {
    let reply = request(ws, frame, r).await?;
    if reply["ok"] != true {
        return Err(format!("request failed: {reply}"));
    }
    Ok(reply)
}

/// The ids of tasks titled `bench-0` .. `bench-{n-1}`, created if missing. The
/// runs reuse them, so the `tasks` snapshot stays small however often one runs.
async fn bench_tasks(ws: &mut Ws, n: usize) -> Res<Vec<i64>> {
    let reply = request_ok(ws, json!({"type": "subscribe", "topic": "tasks"}), 1).await?;
    request_ok(ws, json!({"type": "unsubscribe", "topic": "tasks"}), 2).await?;
    let mut found: HashMap<String, i64> = HashMap::new();
    for t in reply["data"]["snapshot"].as_array().into_iter().flatten() {
        if let (Some(title), Some(id)) = (t["title"].as_str(), t["id"].as_i64()) {
            let e = found.entry(title.to_string()).or_insert(id);
            *e = (*e).min(id);
        }
    }
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let title = format!("bench-{k}");
        let id = match found.get(&title) {
            Some(id) => *id,
            None => {
                let r = request_ok(
                    ws,
                    json!({"type": "call", "method": "task.create", "params": {"title": title}}),
                    3 + k as i64,
                )
                .await?;
                r["data"]["id"].as_i64().ok_or("task.create gave no id")?
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// A `task.update` that always changes something (a run nonce and a counter in
/// the description), so every call commits a change and gets a seq.
fn update_frame(r: i64, task: i64, nonce: u64, i: u64) -> String {
    json!({"type": "call", "ref": r, "method": "task.update",
           "params": {"id": task, "patch": {"description": format!("{nonce:x}-{i}")}}})
    .to_string()
}

fn nonce() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ (std::process::id() as u64).rotate_left(40)
}

/// A socket opened (and maybe subscribed) for a scenario.
struct Opened {
    ws: Ws,
    /// When the hello arrived.
    connected: Instant,
    /// The subscribe reply's data, if it subscribed.
    subscribed: Option<Value>,
}

/// Opens `n` sockets, at most `concurrency` handshakes at once, each one
/// subscribing to `tasks` if `subscribe`.
async fn open_many(c: &Common, n: usize, subscribe: bool, pb: &ProgressBar) -> Res<Vec<Opened>> {
    let gate = Arc::new(Semaphore::new(c.concurrency));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let gate = gate.clone();
        let c = c.clone();
        let pb = pb.clone();
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let (mut ws, _) = connect(&c).await?;
            let connected = Instant::now();
            let subscribed = if subscribe {
                let r = request_ok(&mut ws, json!({"type": "subscribe", "topic": "tasks"}), 1).await?;
                Some(r["data"].clone())
            } else {
                None
            };
            pb.inc(1);
            Ok::<_, String>(Opened {
                ws,
                connected,
                subscribed,
            })
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(o)) => out.push(o),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    match first_err {
        Some(e) => Err(format!(
            "{} of {n} sockets failed to open; the first: {e}",
            n - out.len()
        )),
        None => Ok(out),
    }
}

// ---------------------------------------------------------------------------
// Measurement helpers

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// p50/p90/p99/max/mean of a histogram of microseconds, in milliseconds.
fn pct(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "mean": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

fn pct_row(v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!(
        "p50 {} / p90 {} / p99 {} / max {} ms",
        v["p50"], v["p90"], v["p99"], v["max"]
    )
}

/// utime + stime of a process, in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux ABI this runs on; `getconf` confirms it.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, in KiB, from /proc/<pid>/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of the server and of this generator over a phase.
struct CpuMeter {
    server_pid: Option<u32>,
    server: Option<f64>,
    me: Option<f64>,
    wall: Instant,
}

impl CpuMeter {
    fn start(c: &Common) -> CpuMeter {
        CpuMeter {
            server_pid: c.server_pid,
            server: c.server_pid.and_then(|p| cpu_seconds(&p.to_string())),
            me: cpu_seconds("self"),
            wall: Instant::now(),
        }
    }

    /// `{server_cpu_s, bench_cpu_s, wall_s}` of the phase.
    fn stop(&self) -> Value {
        let server = match (self.server_pid, self.server) {
            (Some(p), Some(before)) => cpu_seconds(&p.to_string()).map(|a| a - before),
            _ => None,
        };
        let me = match (self.me, cpu_seconds("self")) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        };
        json!({
            "server_cpu_s": server.map(round3),
            "bench_cpu_s": me.map(round3),
            "wall_s": round3(self.wall.elapsed().as_secs_f64()),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A few counters of the server's `/metrics`, read over a plain HTTP request.
async fn scrape(c: &Common) -> Option<HashMap<String, f64>> {
    let go = async {
        let mut s = TcpStream::connect(c.addr).await.ok()?;
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            c.addr, c.token
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") || head.contains("chunked") && body.is_empty() {
            return None;
        }
        let mut m = HashMap::new();
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    m.insert(name.to_string(), v);
                }
            }
        }
        Some(m)
    };
    tokio::time::timeout(Duration::from_secs(5), go).await.ok().flatten()
}

/// What changed in the server's own counters over a phase.
fn metrics_delta(before: &Option<HashMap<String, f64>>, after: &Option<HashMap<String, f64>>) -> Value {
    let (Some(b), Some(a)) = (before, after) else {
        return json!(null);
    };
    let d = |k: &str| a.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0);
    let commits = d("taskwire_commit_batch_size_count");
    json!({
        "commits": commits,
        "mean_batch": if commits > 0.0 { round3(d("taskwire_commit_batch_size_sum") / commits) } else { 0.0 },
        "mean_commit_ms": if commits > 0.0 { round3(d("taskwire_commit_seconds_sum") / commits * 1000.0) } else { 0.0 },
        "events_delivered": d("taskwire_events_delivered_total"),
        "closed_slow": d("taskwire_sockets_closed_slow_total"),
    })
}

/// The fsync ceiling: time a 4 KiB overwrite plus `fdatasync` of a file beside
/// the database, as a commit in WAL mode with `synchronous=FULL` does.
struct Fsync {
    dir: PathBuf,
    hist: Histogram<u64>,
    /// The idle time before each sync, when paced like a run's writes.
    gap: Option<Duration>,
}

impl Fsync {
    fn p50_us(&self) -> f64 {
        self.hist.value_at_quantile(0.5).max(1) as f64
    }
    /// Durable writes per second with one fdatasync each.
    fn ceiling(&self) -> f64 {
        1e6 / self.p50_us()
    }
    fn json(&self) -> Value {
        let mut v = json!({
            "dir": self.dir.display().to_string(),
            "samples": self.hist.len(),
            "p50_us": self.hist.value_at_quantile(0.5),
            "p99_us": self.hist.value_at_quantile(0.99),
            "max_us": self.hist.max(),
        });
        match self.gap {
            Some(gap) => v["gap_ms"] = json!(round3(gap.as_secs_f64() * 1e3)),
            None => v["ceiling_writes_per_s"] = json!(self.ceiling().round()),
        }
        v
    }
}

/// The fsync figures, or why there are none.
fn fsync_json(f: &Res<Fsync>) -> Value {
    match f {
        Ok(f) => f.json(),
        Err(e) => json!({ "error": e }),
    }
}

fn fsync_ceiling(c: &Common, dur: Duration) -> Res<Fsync> {
    let dir = c
        .db_dir
        .clone()
        .ok_or("give --db-dir (the database's folder) to measure the fsync ceiling")?;
    measure_fsync(&dir, dur, 50, None).map_err(|e| format!("fsync in {}: {e}", dir.display()))
}

/// The fsync floor under a paced run: the same sync, each after `gap` of idle
/// time, as the writes of a `fanout` run come. On a virtual disk a sync after
/// an idle gap can take twice as long as back to back, and every event of
/// such a run waits for one. As many syncs as fit in 2 s, at most 200; a pace
/// slower than 5 in 2 s is not measured.
fn fsync_paced(c: &Common, gap: Duration) -> Res<Fsync> {
    const BUDGET: Duration = Duration::from_secs(2);
    let samples = (BUDGET.as_secs_f64() / gap.as_secs_f64()).min(200.0) as u64;
    if samples < 5 {
        return Err(format!(
            "a pace of one write per {gap:?} is too slow to time in {BUDGET:?}"
        ));
    }
    let dir = c
        .db_dir
        .clone()
        .ok_or("give --db-dir (the database's folder) to measure the fsync floor")?;
    measure_fsync(&dir, Duration::ZERO, samples, Some(gap)).map_err(|e| format!("fsync in {}: {e}", dir.display()))
}

/// Times a 4 KiB overwrite plus `fdatasync`, for at least `dur` and `samples`
/// syncs after 5 unrecorded ones, back to back or with `gap` of sleep before
/// each recorded one (the pace being what is measured).
fn measure_fsync(dir: &Path, dur: Duration, samples: u64, gap: Option<Duration>) -> std::io::Result<Fsync> {
    let path = dir.join(format!(".taskwire-bench-fsync-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let mut page = vec![0x5au8; 4096];
    f.write_all_at(&page, 0)?;
    f.sync_all()?;
    let mut h = hist();
    let start = Instant::now();
    let mut i = 0u64;
    let result = loop {
        // The first 5 syncs are not recorded.
        if (start.elapsed() >= dur && i >= samples + 5) || i >= 100_000 {
            break Ok(());
        }
        page[0] = i as u8;
        if let Some(gap) = gap.filter(|_| i >= 5) {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        if let Err(e) = f.write_all_at(&page, 0).and_then(|_| f.sync_data()) {
            break Err(e);
        }
        if i >= 5 {
            h.saturating_record(micros(t.elapsed()));
        }
        i += 1;
    };
    drop(f);
    let _ = std::fs::remove_file(&path);
    result.map(|_| Fsync {
        dir: dir.to_path_buf(),
        hist: h,
        gap,
    })
}

fn fsync_rows(f: &Fsync, t: &mut Vec<(String, String)>) {
    t.push((
        "fsync (4 KiB overwrite + fdatasync)".into(),
        format!(
            "p50 {} µs / p99 {} µs / max {} µs ({} samples)",
            f.hist.value_at_quantile(0.5),
            f.hist.value_at_quantile(0.99),
            f.hist.max(),
            f.hist.len()
        ),
    ));
    t.push((
        "fsync ceiling (1 / p50)".into(),
        format!("{:.0} durable writes/s", f.ceiling()),
    ));
}

/// Round trips of the protocol's `ping` on an idle socket: the loopback and
/// session cost that a single waiting writer pays on top of the fsync.
async fn ping_rtt(ws: &mut Ws, n: usize) -> Res<Histogram<u64>> {
    let mut h = hist();
    for i in 0..n {
        let t = Instant::now();
        request_ok(ws, json!({"type": "ping"}), 1_000_000 + i as i64).await?;
        h.saturating_record(micros(t.elapsed()));
    }
    Ok(h)
}

fn progress(c: &Common, len: u64, msg: &'static str) -> ProgressBar {
    if c.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(5));
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .expect("progress template"),
    );
    pb.set_message(msg);
    pb
}

// ---------------------------------------------------------------------------
// Scenarios

/// One subscriber's view of a fanout run: each event's seq and arrival time,
/// and how its socket ended if it ended early.
struct Received {
    events: Vec<(i64, Instant)>,
    ended: Option<String>,
}

/// Reads events until told to stop; counts them in `seen` as they come.
async fn collect_events(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    seen: Arc<AtomicU64>,
    capacity: usize,
) -> Received {
    let mut events = Vec::with_capacity(capacity);
    let mut ended = None;
    loop {
        tokio::select! {
            m = ws.next() => {
                let at = Instant::now();
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(l) = serde_json::from_str::<Light>(&t) {
                            if l.ty == "event" {
                                if let Some(seq) = l.seq {
                                    events.push((seq, at));
                                    seen.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        ended = Some(format!("closed by the server: {f:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        ended = Some(format!("socket error: {e}"));
                        break;
                    }
                    None => {
                        ended = Some("socket ended".into());
                        break;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    Received { events, ended }
}

/// Checks one subscriber's events against the acked seqs: how many expected
/// ones arrived, and how many were lost, twice, out of order or unexpected.
#[derive(Default)]
struct Tally {
    delivered: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    unexpected: u64,
}

impl Tally {
    fn check(&mut self, seqs: impl IntoIterator<Item = i64>, expected: &HashSet<i64>) {
        let mut seen = HashSet::with_capacity(expected.len());
        let mut last = i64::MIN;
        for seq in seqs {
            if !seen.insert(seq) {
                self.duplicated += 1;
                continue;
            }
            if seq < last {
                self.out_of_order += 1;
            }
            last = last.max(seq);
            if expected.contains(&seq) {
                self.delivered += 1;
            } else {
                self.unexpected += 1;
            }
        }
        let got = seen.iter().filter(|s| expected.contains(s)).count();
        self.lost += (expected.len() - got) as u64;
    }

    fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

async fn fanout(c: &Common, n: usize, w: usize, rate: f64, drain: Duration) -> Res<(Value, Vec<(String, String)>)> {
    // The disk first, before any socket is open (a socket nobody reads for
    // long would miss the server's pings).
    let fs = fsync_ceiling(c, Duration::from_millis(500));
    let gap = Duration::from_secs_f64(1.0 / rate);
    let paced = fsync_paced(c, gap);
    let (mut writer, hello) = connect(c).await?;
    let task = bench_tasks(&mut writer, 1).await?[0];

    let pb = progress(c, n as u64, "connect");
    let t_open = Instant::now();
    let opened = open_many(c, n, true, &pb).await?;
    let open_s = t_open.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let (stop_tx, stop_rx) = watch::channel(false);
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = opened
        .into_iter()
        .map(|o| tokio::spawn(collect_events(o.ws, stop_rx.clone(), seen.clone(), w + 16)))
        .collect();

    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let pb = progress(c, w as u64, "writes");
    let (mut tx, mut rx) = writer.split();
    let nonce = nonce();
    let pb2 = pb.clone();
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(w);
        for i in 0..w {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let frame = update_frame(i as i64, task, nonce, i as u64);
            let at = Instant::now();
            tx.send(Message::Text(frame))
                .await
                .map_err(|e| format!("writer send: {e}"))?;
            sent.push(at);
            pb2.inc(1);
        }
        Ok::<_, String>((sent, tx))
    });
    // Replies: ref → (arrival, seq or error).
    let receiver = tokio::spawn(async move {
        let mut acks: Vec<Option<(Instant, Result<i64, String>)>> = vec![None; w];
        let mut got = 0;
        while got < w {
            let t = match tokio::time::timeout(STEP, rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(f)))) => return Err(format!("writer closed: {f:?}")),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(format!("writer socket: {e}")),
                Ok(None) => return Err("writer socket ended".into()),
                Err(_) => return Err(format!("no reply for 30 s after {got} of {w}")),
            };
            let at = Instant::now();
            let l: Light = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            if l.ty != "reply" {
                continue;
            }
            let Some(r) = l.reference.filter(|r| *r >= 0 && (*r as usize) < w) else {
                continue;
            };
            let outcome = match (l.ok, l.seq) {
                (Some(true), Some(seq)) => Ok(seq),
                _ => Err(t.clone()),
            };
            if acks[r as usize].is_none() {
                got += 1;
            }
            acks[r as usize] = Some((at, outcome));
        }
        Ok(acks)
    });
    let (sent, _tx) = sender.await.map_err(|e| e.to_string())??;
    let acks = receiver.await.map_err(|e| e.to_string())??;
    pb.finish_and_clear();

    let mut ack_hist = hist();
    let mut sent_at: HashMap<i64, Instant> = HashMap::with_capacity(w);
    let mut failed = 0u64;
    let mut first_failure = None;
    for (i, a) in acks.into_iter().enumerate() {
        match a {
            Some((at, Ok(seq))) => {
                ack_hist.saturating_record(micros(at - sent[i]));
                sent_at.insert(seq, sent[i]);
            }
            Some((_, Err(e))) => {
                failed += 1;
                first_failure.get_or_insert(e);
            }
            None => failed += 1,
        }
    }
    let expected: HashSet<i64> = sent_at.keys().copied().collect();
    let want = (n * expected.len()) as u64;

    // Wait for the events still on their way.
    let pb = progress(c, want, "delivered");
    let mut last = (seen.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = seen.load(Ordering::Relaxed);
        pb.set_position(now.min(want));
        if now >= want {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    let _ = stop_tx.send(true);

    let mut lat = hist();
    let mut tally = Tally::default();
    let mut ended = 0u64;
    let mut first_end = None;
    for h in readers {
        let r = h.await.map_err(|e| e.to_string())?;
        for (seq, at) in &r.events {
            if let Some(sent) = sent_at.get(seq) {
                lat.saturating_record(micros(at.saturating_duration_since(*sent)));
            }
        }
        tally.check(r.events.iter().map(|e| e.0), &expected);
        if let Some(e) = r.ended {
            ended += 1;
            first_end.get_or_insert(e);
        }
    }

    let ok = tally.clean() && failed == 0 && tally.delivered == want;
    let server_cpu = cpu["server_cpu_s"].as_f64();
    let per_event = server_cpu
        .filter(|_| tally.delivered > 0)
        .map(|s| round3(s * 1e6 / tally.delivered as f64));
    let report = json!({
        "scenario": "fanout",
        "ok": ok,
        "subscribers": n,
        "writes": w,
        "rate": rate,
        "acked": expected.len(),
        "failed_calls": failed,
        "first_failure": first_failure,
        "expected": want,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "out_of_order": tally.out_of_order,
        "unexpected": tally.unexpected,
        "sockets_ended_early": ended,
        "first_socket_end": first_end,
        "event_latency_ms": pct(&lat),
        "ack_latency_ms": pct(&ack_hist),
        "open_s": round3(open_s),
        "cpu": cpu,
        "server_cpu_us_per_event": per_event,
        "server_metrics": metrics_delta(&m_before, &m_after),
        "fsync": fsync_json(&fs),
        "fsync_paced": fsync_json(&paced),
        "server": hello["server"],
    });
    let fs = fs.ok();
    let mut t = vec![
        (
            "scenario".into(),
            format!("fanout: {n} subscribers, {w} writes at {rate}/s"),
        ),
        ("delivered / expected".into(), format!("{} / {want}", tally.delivered)),
        (
            "lost / duplicated / out of order".into(),
            format!("{} / {} / {}", tally.lost, tally.duplicated, tally.out_of_order),
        ),
        ("failed calls".into(), failed.to_string()),
        ("event latency".into(), pct_row(&report["event_latency_ms"])),
        ("ack latency".into(), pct_row(&report["ack_latency_ms"])),
        ("sockets opened in".into(), format!("{open_s:.3} s")),
    ];
    cpu_rows(&report, &mut t);
    if let Some(us) = per_event {
        t.push(("server CPU per delivered event".into(), format!("{us} µs")));
    }
    if let Some(f) = &fs {
        fsync_rows(f, &mut t);
    }
    if let Ok(f) = &paced {
        t.push((
            format!("fsync after {:.1} ms idle (the writes' pace)", gap.as_secs_f64() * 1e3),
            format!(
                "p50 {} µs / p99 {} µs ({} samples)",
                f.hist.value_at_quantile(0.5),
                f.hist.value_at_quantile(0.99),
                f.hist.len()
            ),
        ));
    }
    Ok((report, t))
}

fn cpu_rows(report: &Value, t: &mut Vec<(String, String)>) {
    let cpu = &report["cpu"];
    t.push((
        "CPU seconds (server / bench / wall)".into(),
        format!("{} / {} / {}", cpu["server_cpu_s"], cpu["bench_cpu_s"], cpu["wall_s"]),
    ));
    let m = &report["server_metrics"];
    if !m.is_null() {
        t.push((
            "group commits (count / mean batch / mean ms)".into(),
            format!("{} / {} / {}", m["commits"], m["mean_batch"], m["mean_commit_ms"]),
        ));
    }
}

async fn writes(c: &Common, conns: usize, dur: Duration) -> Res<(Value, Vec<(String, String)>)> {
    let (mut ctl, hello) = connect(c).await?;
    let fs = fsync_ceiling(c, Duration::from_secs(1));
    let tasks = bench_tasks(&mut ctl, conns).await?;
    let rtt = ping_rtt(&mut ctl, 200).await?;
    let pb = progress(c, conns as u64, "connect");
    let opened = open_many(c, conns, false, &pb).await?;
    pb.finish_and_clear();

    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + dur;
    let nonce = nonce();
    let mut handles = Vec::with_capacity(conns);
    for (k, o) in opened.into_iter().enumerate() {
        let task = tasks[k];
        let mut ws = o.ws;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut h = hist();
            let mut failed = 0u64;
            let mut first_failure = None;
            let mut i = 0u64;
            while Instant::now() < end {
                let frame = update_frame(i as i64, task, nonce, i);
                let t = Instant::now();
                ws.send(Message::Text(frame)).await.map_err(|e| format!("send: {e}"))?;
                loop {
                    let text = next_text(&mut ws).await?;
                    let l: Light = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    if l.ty == "reply" && l.reference == Some(i as i64) {
                        if l.ok == Some(true) && l.seq.is_some() {
                            h.saturating_record(micros(t.elapsed()));
                        } else {
                            failed += 1;
                            first_failure.get_or_insert(text);
                        }
                        break;
                    }
                }
                i += 1;
            }
            Ok::<_, String>((h, failed, first_failure, Instant::now()))
        }));
    }
    let pb = progress(c, dur.as_secs().max(1), "seconds");
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                pb.set_position(start.elapsed().as_secs());
            }
        })
    };
    let mut acks = hist();
    let mut failed = 0;
    let mut first_failure = None;
    let mut finished = start;
    for h in handles {
        let (hh, f, ff, done) = h.await.map_err(|e| e.to_string())??;
        acks.add(&hh).map_err(|e| e.to_string())?;
        failed += f;
        if let Some(ff) = ff {
            first_failure.get_or_insert(ff);
        }
        finished = finished.max(done);
    }
    ticker.abort();
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    let elapsed = (finished - start).as_secs_f64();
    let acked = acks.len();
    let per_s = acked as f64 / elapsed;
    let rtt_p50 = rtt.value_at_quantile(0.5) as f64;
    let fs_json = fsync_json(&fs);
    let fs = fs.ok();
    let single_ceiling = fs.as_ref().map(|f| 1e6 / (f.p50_us() + rtt_p50));
    let report = json!({
        "scenario": "writes",
        "ok": failed == 0 && acked > 0,
        "conns": conns,
        "seconds": dur.as_secs_f64(),
        "elapsed_s": round3(elapsed),
        "acked": acked,
        "failed_calls": failed,
        "first_failure": first_failure,
        "acked_per_s": per_s.round(),
        "ack_latency_ms": pct(&acks),
        "ping_rtt_us_p50": rtt.value_at_quantile(0.5),
        "fsync": fs_json,
        "single_writer_ceiling_per_s": single_ceiling.map(f64::round),
        "ratio_to_fsync_ceiling": fs.as_ref().map(|f| round3(per_s / f.ceiling())),
        "ratio_to_single_writer_ceiling": single_ceiling.map(|s| round3(per_s / s)),
        "cpu": cpu,
        "server_cpu_us_per_write": cpu["server_cpu_s"].as_f64().filter(|_| acked > 0).map(|s| round3(s * 1e6 / acked as f64)),
        "server_metrics": metrics_delta(&m_before, &m_after),
        "server": hello["server"],
    });
    let mut t = vec![
        (
            "scenario".into(),
            format!(
                "writes: {conns} sockets, {:.1} s, each waiting for its ack",
                dur.as_secs_f64()
            ),
        ),
        ("acked writes".into(), format!("{acked} ({failed} failed)")),
        ("acked writes/s".into(), format!("{per_s:.0}")),
        ("ack latency".into(), pct_row(&report["ack_latency_ms"])),
        ("ping round trip p50".into(), format!("{rtt_p50} µs")),
    ];
    if let Some(f) = &fs {
        fsync_rows(f, &mut t);
        t.push(("ratio to fsync ceiling".into(), format!("{:.2}×", per_s / f.ceiling())));
    }
    if let Some(s) = single_ceiling {
        t.push((
            "single-writer ceiling (fsync + ping)".into(),
            format!("{s:.0}/s; ratio {:.2}×", per_s / s),
        ));
    }
    cpu_rows(&report, &mut t);
    Ok((report, t))
}

async fn conns(c: &Common, n: usize, hold: Duration) -> Res<(Value, Vec<(String, String)>)> {
    let (_ctl, hello) = connect(c).await?;
    // Let the server settle after the control socket opened.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = c.server_pid.and_then(rss_kib);
    let cpu = CpuMeter::start(c);
    let pb = progress(c, n as u64, "connect");
    let t0 = Instant::now();
    let opened = open_many(c, n, false, &pb).await?;
    let connected_s = opened
        .iter()
        .map(|o| o.connected)
        .max()
        .map(|t| (t - t0).as_secs_f64())
        .unwrap_or(0.0);
    pb.finish_and_clear();
    // Subscribe every socket, all at once.
    let pb = progress(c, n as u64, "subscribe");
    let t1 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for o in opened {
        let pb = pb.clone();
        let mut ws = o.ws;
        handles.push(tokio::spawn(async move {
            request_ok(&mut ws, json!({"type": "subscribe", "topic": "tasks"}), 1).await?;
            pb.inc(1);
            Ok::<_, String>(ws)
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for h in handles {
        sockets.push(h.await.map_err(|e| e.to_string())??);
    }
    let subscribed_s = t1.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let cpu = cpu.stop();
    // Hold them (reading, so pings get their pongs), then read the memory.
    let (stop_tx, stop_rx) = watch::channel(false);
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(collect_events(ws, stop_rx.clone(), seen.clone(), 0)))
        .collect();
    tokio::time::sleep(hold).await;
    let rss_after = c.server_pid.and_then(rss_kib);
    let metrics = scrape(c).await;
    let _ = stop_tx.send(true);
    let mut ended = 0;
    for r in readers {
        if r.await.map_err(|e| e.to_string())?.ended.is_some() {
            ended += 1;
        }
    }
    let per_socket = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(round3((a as f64 - b as f64) / n as f64)),
        _ => None,
    };
    let open_gauge = metrics.as_ref().and_then(|m| m.get("taskwire_sockets_open").copied());
    let report = json!({
        "scenario": "conns",
        "ok": ended == 0,
        "sockets": n,
        "concurrency": c.concurrency,
        "connected_s": round3(connected_s),
        "subscribed_s": round3(subscribed_s),
        "total_s": round3(connected_s + subscribed_s),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "server_rss_kib_per_socket": per_socket,
        "server_sockets_open": open_gauge,
        "sockets_ended_early": ended,
        "cpu": cpu,
        "server": hello["server"],
    });
    let mut t = vec![
        (
            "scenario".into(),
            format!("conns: {n} sockets, {} handshakes in flight at most", c.concurrency),
        ),
        ("all connected (hello read) in".into(), format!("{connected_s:.3} s")),
        ("then all subscribed in".into(), format!("{subscribed_s:.3} s")),
        (
            "server RSS before / after".into(),
            match (rss_before, rss_after) {
                (Some(b), Some(a)) => format!("{b} KiB / {a} KiB"),
                _ => "- (give --server-pid)".into(),
            },
        ),
        (
            "server RSS per socket".into(),
            per_socket.map_or("-".into(), |k| format!("{k:.2} KiB")),
        ),
        ("sockets ended early".into(), ended.to_string()),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}

async fn resume(c: &Common, n: usize, m: usize) -> Res<(Value, Vec<(String, String)>)> {
    let (mut writer, hello) = connect(c).await?;
    let task = bench_tasks(&mut writer, 1).await?[0];
    let pb = progress(c, n as u64, "subscribe");
    let opened = open_many(c, n, true, &pb).await?;
    pb.finish_and_clear();
    let mut positions = Vec::with_capacity(n);
    for mut o in opened {
        let d = o.subscribed.take().ok_or("no subscribe reply")?;
        let epoch = d["epoch"].as_str().ok_or("no epoch")?.to_string();
        let seq = d["seq"].as_i64().ok_or("no seq")?;
        positions.push((epoch, seq));
        // A clean disconnect.
        let _ = o.ws.close(None).await;
    }

    // M writes while everyone is away (pipelined; wait for every ack).
    let nonce = nonce();
    let mut expected = HashSet::with_capacity(m);
    for i in 0..m {
        writer
            .send(Message::Text(update_frame(i as i64, task, nonce, i as u64)))
            .await
            .map_err(|e| format!("writer send: {e}"))?;
    }
    let mut got = 0;
    while got < m {
        let t = next_text(&mut writer).await?;
        let l: Light = serde_json::from_str(&t).map_err(|e| e.to_string())?;
        if l.ty == "reply" {
            got += 1;
            match (l.ok, l.seq) {
                (Some(true), Some(seq)) => {
                    expected.insert(seq);
                }
                _ => return Err(format!("a write failed: {t}")),
            }
        }
    }
    let expected = Arc::new(expected);

    // Everyone comes back at once: reconnect, resume, read until caught up.
    let m_before = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let pb = progress(c, n as u64, "resume");
    let gate = Arc::new(Semaphore::new(c.concurrency));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (epoch, since) in positions {
        let (c, pb, gate, expected) = (c.clone(), pb.clone(), gate.clone(), expected.clone());
        handles.push(tokio::spawn(async move {
            let (mut ws, connected) = {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                let (ws, _) = connect(&c).await?;
                (ws, Instant::now())
            };
            let frame = json!({"type": "subscribe", "ref": 1, "topic": "tasks", "epoch": epoch, "since": since});
            send(&mut ws, &frame).await?;
            let mut seqs: Vec<i64> = Vec::new();
            // The reply comes first; anything else before it is skipped.
            let resumed = loop {
                let t = next_text(&mut ws).await?;
                let r: ResumeReply = serde_json::from_str(&t).map_err(|e| format!("bad frame {t}: {e}"))?;
                if r.ty != "reply" || r.reference != Some(1) {
                    continue;
                }
                if r.ok != Some(true) {
                    return Err(format!("resume failed: {t}"));
                }
                let events = r.data.and_then(|d| d.events);
                let resumed = events.is_some();
                seqs.extend(events.into_iter().flatten().map(|e| e.seq));
                break resumed;
            };
            // Anything not replayed must come live (or never, if it was a snapshot).
            if resumed {
                let mut have: HashSet<i64> = seqs.iter().copied().collect();
                while !expected.iter().all(|s| have.contains(s)) {
                    let t = next_text(&mut ws).await?;
                    if let Ok(l) = serde_json::from_str::<Light>(&t) {
                        if let (true, Some(s)) = (l.ty == "event", l.seq) {
                            seqs.push(s);
                            have.insert(s);
                        }
                    }
                }
            }
            let done = Instant::now();
            pb.inc(1);
            Ok::<_, String>((connected, done, resumed, seqs, ws))
        }));
    }
    let mut tally = Tally::default();
    let mut catch_up = hist();
    let mut last_connected = t0;
    let mut last_done = t0;
    let mut snapshots = 0u64;
    let mut sockets = Vec::with_capacity(n);
    for h in handles {
        let (connected, done, resumed, seqs, ws) = h.await.map_err(|e| e.to_string())??;
        last_connected = last_connected.max(connected);
        last_done = last_done.max(done);
        catch_up.saturating_record(micros(done - t0));
        if resumed {
            tally.check(seqs, &expected);
        } else {
            snapshots += 1;
        }
        sockets.push(ws);
    }
    pb.finish_and_clear();
    let cpu = cpu.stop();
    let m_after = scrape(c).await;
    drop(sockets);
    let caught_up_s = (last_done - t0).as_secs_f64();
    let report = json!({
        "scenario": "resume",
        "ok": tally.clean() && snapshots == 0,
        "clients": n,
        "writes": m,
        "concurrency": c.concurrency,
        "caught_up_s": round3(caught_up_s),
        "all_reconnected_s": round3((last_connected - t0).as_secs_f64()),
        "per_client_caught_up_ms": pct(&catch_up),
        "expected": n * m,
        "delivered": tally.delivered,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "out_of_order": tally.out_of_order,
        "snapshot_instead_of_replay": snapshots,
        "cpu": cpu,
        "server_metrics": metrics_delta(&m_before, &m_after),
        "server": hello["server"],
    });
    let mut t = vec![
        ("scenario".into(), format!("resume: {n} clients, {m} missed writes")),
        (
            "every client caught up in".into(),
            format!("{caught_up_s:.3} s (from the first reconnect)"),
        ),
        (
            "all reconnected in".into(),
            format!("{:.3} s", (last_connected - t0).as_secs_f64()),
        ),
        (
            "per-client catch-up".into(),
            pct_row(&report["per_client_caught_up_ms"]),
        ),
        (
            "delivered / expected".into(),
            format!("{} / {}", tally.delivered, n * m),
        ),
        (
            "lost / duplicated / out of order".into(),
            format!("{} / {} / {}", tally.lost, tally.duplicated, tally.out_of_order),
        ),
        ("snapshots instead of replay".into(), snapshots.to_string()),
    ];
    cpu_rows(&report, &mut t);
    Ok((report, t))
}

// ---------------------------------------------------------------------------
// Output

/// Adds the run's context: time, label, machine, generator.
fn decorate(report: &mut Value, c: &Common) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    report["label"] = json!(c.label);
    report["at_unix"] = json!(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs());
    report["addr"] = json!(c.addr.to_string());
    report["server_pid"] = json!(c.server_pid);
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    report["machine"] = json!({
        "loadavg_at_end": loadavg,
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu_model,
        "kernel": kernel,
    });
    report["bench"] = json!(env!("CARGO_PKG_VERSION"));
}

fn print_table(report: &Value, rows: &[(String, String)]) {
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    let verdict = if report["ok"] == true {
        "ok"
    } else {
        "FAILED a correctness check"
    };
    out.push_str(&format!("\n{:w$}  {verdict}\n", "result"));
    for (k, v) in rows {
        out.push_str(&format!("{k:w$}  {v}\n"));
    }
    eprint!("{out}");
}
