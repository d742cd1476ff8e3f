//! `readflood`: one writer's ack latency, first alone, then while one member
//! token floods the readers: HTTP loops of a change-log query that scans a
//! whole window of the log to find nothing, and sockets that resume `tasks`
//! from the start of the log and unsubscribe, again and again. Reads are the
//! server's readers' work, writes the writer's: the goal is a flood
//! ack p99 within twice the idle one, measured in the same run.

use crate::cli::{Common, Via};
use crate::client::{connect, next_text, Light, Ws};
use crate::flood::{http_loop, resubscribe_loop, Counts};
use crate::metrics::{metrics_delta, scrape};
use crate::pace::Pace;
use crate::process::CpuMeter;
use crate::progress::progress;
use crate::report::{pct_row, Rows};
use crate::rest::Rest;
use crate::seed::seed_tasks;
use crate::stats::{hist, micros, pct, round3};
use crate::tasks::{bench_tasks, nonce, update_frame};
use crate::Res;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The attack's change-log query: a task that does not exist, so each page
/// looks through a whole window of the log and answers nothing.
const CHANGES_PATH: &str = "/api/changes?since=0&topic=task:999999&limit=10000";

/// How long the flooders run before the writer starts measuring, so the
/// flood phase measures a flood under way, not its first connects.
const WARMUP: Duration = Duration::from_millis(500);

/// The loops of each kind the flood runs, and each kind's requests per
/// second in all (none: each loop sends as soon as it is answered).
pub struct Flooders {
    pub http: usize,
    pub ws: usize,
    pub http_rate: Option<f64>,
    pub ws_rate: Option<f64>,
}

/// The pace of loop `k` of `loops` that share `rate`: each its share, their
/// first requests spread over one gap.
fn share(rate: Option<f64>, loops: usize, k: usize) -> Pace {
    let each = rate.map(|r| r / loops as f64);
    let offset = each.map_or(Duration::ZERO, |e| Duration::from_secs_f64(k as f64 / loops as f64 / e));
    Pace::new(each, offset)
}

/// The measured writer: an admin's REST client or socket, one call at a time.
enum Writer {
    Rest(Rest),
    Socket(Box<Ws>),
}

impl Writer {
    /// Writes a new description on `task`; the ack's latency, or why it failed.
    async fn write(&mut self, task: i64, nonce: u64, i: u64) -> Result<Duration, String> {
        let t = Instant::now();
        match self {
            Writer::Rest(rest) => {
                let body = json!({"description": format!("{nonce:x}-{i}")});
                let (status, text) = rest
                    .send(Method::PATCH, &format!("/api/tasks/{task}"), Some(&body))
                    .await?;
                if status == 200 {
                    Ok(t.elapsed())
                } else {
                    Err(format!("{status} {text}"))
                }
            }
            Writer::Socket(ws) => {
                let frame = update_frame(i as i64, task, nonce, i);
                ws.send(Message::Text(frame)).await.map_err(|e| format!("send: {e}"))?;
                loop {
                    let text = next_text(ws).await?;
                    let l: Light = serde_json::from_str(&text).map_err(|e| format!("bad frame {text}: {e}"))?;
                    if l.ty == "reply" && l.reference == Some(i as i64) {
                        return match (l.ok, l.seq) {
                            (Some(true), Some(_)) => Ok(t.elapsed()),
                            _ => Err(text),
                        };
                    }
                }
            }
        }
    }
}

/// One phase of the writer: its acks and failures.
struct Phase {
    acks: Histogram<u64>,
    failed: u64,
    first_failure: Option<String>,
}

impl Phase {
    fn json(&self, cpu: Value, metrics: Value) -> Value {
        json!({
            "acked": self.acks.len(),
            "failed_calls": self.failed,
            "ack_latency_ms": pct(&self.acks),
            "cpu": cpu,
            "server_metrics": metrics,
        })
    }
}

/// Writes at `rate` for `dur`, one call at a time, so the writer never goes
/// over its rate (nor, through REST, over its token's request limit).
async fn probe(c: &Common, w: &mut Writer, task: i64, nonce: u64, i: &mut u64, rate: f64, dur: Duration) -> Phase {
    let mut pace = Pace::new(Some(rate), Duration::ZERO);
    let start = Instant::now();
    let end = start + dur;
    let pb = progress(c, dur.as_secs().max(1), "seconds");
    let mut p = Phase {
        acks: hist(),
        failed: 0,
        first_failure: None,
    };
    loop {
        pace.wait().await;
        if Instant::now() >= end {
            break;
        }
        match w.write(task, nonce, *i).await {
            Ok(d) => p.acks.saturating_record(micros(d)),
            Err(e) => {
                p.failed += 1;
                p.first_failure.get_or_insert(e);
            }
        }
        *i += 1;
        pb.set_position(start.elapsed().as_secs());
    }
    pb.finish_and_clear();
    p
}

pub async fn run(c: &Common, n: usize, dur: Duration, rate: f64, via: Via, f: Flooders) -> Res<(Value, Rows)> {
    let (mut ctl, hello) = connect(c).await?;
    let task = bench_tasks(&mut ctl, 1).await?[0];
    let pb = progress(c, 0, "seed");
    let t_seed = Instant::now();
    let (had, created) = seed_tasks(&mut ctl, n, &pb).await?;
    let seed_s = t_seed.elapsed().as_secs_f64();
    pb.finish_and_clear();
    // A socket nobody reads would miss the server's pings.
    drop(ctl);
    let admin = Rest::new(c, &c.token)?;
    let flood_token = admin.create_token("member", "flood").await?;
    let mut writer = match via {
        Via::Rest => Writer::Rest(admin.clone()),
        Via::Socket => Writer::Socket(Box::new(connect(c).await?.0)),
    };
    let nonce = nonce();
    let mut i = 0u64;

    let m0 = scrape(c).await;
    let cpu = CpuMeter::start(c);
    let idle = probe(c, &mut writer, task, nonce, &mut i, rate, dur).await;
    let idle_cpu = cpu.stop();
    let m1 = scrape(c).await;

    let cpu = CpuMeter::start(c);
    let flood_c = Common {
        token: flood_token.clone(),
        ..c.clone()
    };
    let flood_rest = Rest::new(c, &flood_token)?;
    let t0 = Instant::now();
    let end = t0 + WARMUP + dur;
    let http: Vec<_> = (0..f.http)
        .map(|k| {
            let pace = share(f.http_rate, f.http, k);
            tokio::spawn(http_loop(flood_rest.clone(), CHANGES_PATH.into(), end, pace))
        })
        .collect();
    let ws: Vec<_> = (0..f.ws)
        .map(|k| tokio::spawn(resubscribe_loop(flood_c.clone(), end, share(f.ws_rate, f.ws, k))))
        .collect();
    tokio::time::sleep(WARMUP).await;
    let flood = probe(c, &mut writer, task, nonce, &mut i, rate, dur).await;
    let mut http_n = Counts::default();
    for h in http {
        http_n.add(h.await.map_err(|e| e.to_string())?);
    }
    let mut ws_n = Counts::default();
    for h in ws {
        ws_n.add(h.await.map_err(|e| e.to_string())?);
    }
    let flood_s = t0.elapsed().as_secs_f64();
    let flood_cpu = cpu.stop();
    let m2 = scrape(c).await;

    let p99 = |p: &Phase| (!p.acks.is_empty()).then(|| p.acks.value_at_quantile(0.99));
    let ratio = match (p99(&idle), p99(&flood)) {
        (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
        _ => None,
    };
    let within = ratio.map(|r| r <= 2.0);
    let failed = idle.failed + flood.failed;
    let ok = failed == 0 && !idle.acks.is_empty() && !flood.acks.is_empty() && http_n.adds_up() && ws_n.adds_up();
    let ms = |p: &Phase, q: f64| (!p.acks.is_empty()).then(|| round3(p.acks.value_at_quantile(q) as f64 / 1000.0));
    let report = json!({
        "scenario": "readflood",
        "ok": ok,
        "tasks": n,
        "tasks_before": had,
        "tasks_created": created,
        "seed_s": round3(seed_s),
        "seconds": dur.as_secs_f64(),
        "write_rate": rate,
        "via": via.as_str(),
        "idle_ack_p50_ms": ms(&idle, 0.5),
        "idle_ack_p99_ms": ms(&idle, 0.99),
        "flood_ack_p50_ms": ms(&flood, 0.5),
        "flood_ack_p99_ms": ms(&flood, 0.99),
        "ack_p99_ratio": ratio.map(round3),
        "ack_p99_within_2x": within,
        "failed_calls": failed,
        "first_failure": idle.first_failure.clone().or(flood.first_failure.clone()),
        "idle": idle.json(idle_cpu, metrics_delta(&m0, &m1)),
        "flood": flood.json(flood_cpu, metrics_delta(&m1, &m2)),
        "http_rate": f.http_rate,
        "ws_rate": f.ws_rate,
        "http_flood": http_n.json(f.http, flood_s),
        "ws_flood": ws_n.json(f.ws, flood_s),
        "server": hello["server"],
    });
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    let paced = |r: Option<f64>| r.map_or("as fast as answered".into(), |r| format!("{r}/s in all"));
    let mut t: Rows = vec![
        (
            "scenario".into(),
            format!(
                "readflood: {n} tasks; one writer via {} at {rate}/s, {:.1} s idle, then {:.1} s beside the flooders",
                via.as_str(),
                dur.as_secs_f64(),
                dur.as_secs_f64(),
            ),
        ),
        (
            "flooders (one member token)".into(),
            format!(
                "{} HTTP loops, {}; {} sockets, {}",
                f.http,
                paced(f.http_rate),
                f.ws,
                paced(f.ws_rate)
            ),
        ),
        (
            "tasks (had / created)".into(),
            format!("{had} / {created} in {seed_s:.1} s"),
        ),
        ("ack latency, idle".into(), pct_row(&report["idle"]["ack_latency_ms"])),
        ("ack latency, flood".into(), pct_row(&report["flood"]["ack_latency_ms"])),
        (
            "flood p99 / idle p99".into(),
            format!(
                "{} (within 2×: {})",
                ratio.map_or("-".into(), |r| format!("{r:.2}×")),
                yes(within)
            ),
        ),
        (
            "writes acked, idle / flood".into(),
            format!("{} / {} ({failed} failed)", idle.acks.len(), flood.acks.len()),
        ),
    ];
    let flooders = [
        ("HTTP change-log pages", " (200)", " (429)", &http_n),
        ("socket resumes", "", " (rate_limited)", &ws_n),
    ];
    for (what, ok_is, refused_is, v) in flooders {
        t.push((
            format!("{what}/s"),
            format!(
                "{:.0}; {} ok{ok_is}, {} refused{refused_is}, {} other, {} unanswered, {} dropped",
                v.requests as f64 / flood_s,
                v.ok,
                v.refused,
                v.other,
                v.unanswered,
                v.dropped
            ),
        ));
    }
    for phase in ["idle", "flood"] {
        let cpu = &report[phase]["cpu"];
        t.push((
            format!("CPU seconds, {phase} (server / bench / wall)"),
            format!("{} / {} / {}", cpu["server_cpu_s"], cpu["bench_cpu_s"], cpu["wall_s"]),
        ));
    }
    Ok((report, t))
}
