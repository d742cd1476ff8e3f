//! Demo mode (`taskwire serve --demo`): an empty database gets a few dozen
//! tasks and a handful of agents, and simulated agents then work through the
//! board inside the server, so a new user sees it live at once.
//!
//! The simulation writes through the same path as every client: each change is
//! an [`execute`] of a protocol [`Call`], by the agent's own token (so the
//! timeline names it) or, for seeding and reopening, by [`Principal::system`];
//! it is committed, logged, sequenced and pushed like any other. Agents
//! heartbeat every second or few, claim the most urgent unassigned task, move
//! it through `in_progress` with progress notes, sometimes `blocked`, `review`
//! and `done`, now and then report `error`, and one of them naps past the
//! heartbeat timeout so the board shows an agent going `offline` and coming
//! back. Updates carry `if_version`, so a person editing a task at the same
//! time always wins.
//!
//! On a database that already has data, nothing is added; agents whose `meta`
//! says `"demo": true` (from an earlier demo run) are simulated again.

use actix::Addr;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::auth::{Principal, TokenCache};
use crate::db::{execute, Db, Query, Read, Reader};
use crate::error::{ApiError, ErrorCode};
use crate::protocol::{Call, Method};
use crate::state::AppState;
use std::sync::Arc;

/// The simulated agents: name and what kind of worker it plays.
const AGENTS: [(&str, &str); 5] = [
    ("builder-1", "builder"),
    ("builder-2", "builder"),
    ("reviewer", "reviewer"),
    ("docs-bot", "writer"),
    ("nightly-runner", "runner"),
];

/// The agent that naps past the heartbeat timeout now and then.
const NAPPER: &str = "nightly-runner";

/// What a simulated agent says as it works.
const NOTES: [&str; 8] = [
    "Reproduced it locally; looking at the cause.",
    "Found the cause: a missing check on the empty case.",
    "First fix in place, tests running.",
    "Tests pass on my machine; cleaning up.",
    "Waiting on the fixture data, picking it up again soon.",
    "Wrote the regression test first; it fails as expected.",
    "Split the change in two to keep the review small.",
    "Benchmarked before and after: no change in the hot path.",
];

/// Task titles for the seeded board.
const TITLES: [&str; 36] = [
    "Fix login redirect loop",
    "Add rate limit headers to REST",
    "Write the getting started guide",
    "Upgrade the SQLite bundle",
    "Paginate the changes endpoint",
    "Show agent meta on the agent page",
    "Flaky test: reconnect after restart",
    "Reduce memory per idle socket",
    "Add dark mode to the board",
    "Document the close codes",
    "Retry calls with the same op_id",
    "Audit token revocation path",
    "Benchmark group commit sizes",
    "Keyboard shortcuts for the board",
    "Export tasks as CSV",
    "Prune the change log nightly",
    "Alert when an agent goes offline",
    "Translate the board to German",
    "Compress large snapshots",
    "Add priority filter to the board",
    "Clean up stale op_ids",
    "Sign release binaries",
    "Health check for the disk",
    "Show who changed a task",
    "Track time in each status",
    "Make the create form remember priority",
    "Fuzz the frame parser",
    "Trim titles on import",
    "Tidy up the metrics names",
    "Explain conflicts in the UI",
    "Load test with 10k sockets",
    "Rotate the admin token",
    "Add a /version endpoint",
    "Check fsync on network disks",
    "Write agent SDK examples",
    "Review accessibility of forms",
];

/// Starts demo mode: seeds an empty database and runs the simulated agents.
/// Must be called inside the actix system (as `run` does).
pub fn start(app: &AppState) {
    let db = app.db.clone();
    let reader = app.reader.clone();
    let tokens = app.tokens.clone();
    let timeout = app.config.db.heartbeat_timeout;
    actix::spawn(async move {
        match simulate(db, reader, tokens, timeout).await {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::Unavailable => log::debug!("demo: stopped ({e})"),
            Err(e) => log::warn!("demo: stopped: {e}"),
        }
    });
}

/// Runs one call as the server itself.
async fn exec(db: &Addr<Db>, method: Method, params: Value) -> Result<Value, ApiError> {
    exec_as(db, Principal::system(), method, params).await
}

async fn exec_as(db: &Addr<Db>, who: Principal, method: Method, params: Value) -> Result<Value, ApiError> {
    let call = Call {
        method,
        params,
        op_id: None,
    };
    execute(db, who, call).await?.value()
}

/// Reads all tasks or all agents.
async fn items(reader: &Addr<Reader>, query: Query) -> Result<Vec<Value>, ApiError> {
    let read = Read {
        query,
        by: Principal::system(),
    };
    let answer = reader
        .send(read)
        .await
        .map_err(|_| ApiError::unavailable("the database stopped"))??;
    let v = serde_json::to_value(answer).map_err(ApiError::internal)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

fn all_tasks(reader: &Addr<Reader>) -> impl std::future::Future<Output = Result<Vec<Value>, ApiError>> + '_ {
    items(reader, Query::Tasks(None, None))
}

/// Fills an empty database; returns the demo agents' ids by name.
async fn seed(db: &Addr<Db>, reader: &Addr<Reader>, rng: &mut StdRng) -> Result<Vec<(i64, String)>, ApiError> {
    let tasks = all_tasks(reader).await?;
    let agents = items(reader, Query::Agents(None)).await?;
    if tasks.is_empty() && agents.is_empty() {
        let mut ids = Vec::new();
        for (name, kind) in AGENTS {
            let agent = exec(
                db,
                Method::AgentCreate,
                json!({
                    "name": name,
                    "status": "idle",
                    "meta": {"demo": true, "kind": kind, "host": format!("demo-{}", rng.gen_range(10..99)), "version": "0.1.0"},
                }),
            )
            .await?;
            ids.push(agent["id"].as_i64().unwrap_or_default());
        }
        for (i, title) in TITLES.iter().enumerate() {
            // A few are done already, by someone; the rest wait in `todo`.
            let mut params = Map::new();
            params.insert("title".into(), json!(title));
            params.insert("priority".into(), json!(rng.gen_range(0..4)));
            params.insert(
                "description".into(),
                json!(format!(
                    "Demo task {}. Simulated agents pick these up by priority.",
                    i + 1
                )),
            );
            if i % 6 == 5 {
                params.insert("status".into(), json!("done"));
                params.insert("assignee_id".into(), json!(ids.choose(rng)));
            }
            exec(db, Method::TaskCreate, Value::Object(params)).await?;
        }
        log::info!("demo: created {} agents and {} tasks", AGENTS.len(), TITLES.len());
    }
    let agents = items(reader, Query::Agents(None)).await?;
    Ok(agents
        .iter()
        .filter(|a| a["meta"]["demo"] == json!(true))
        .filter_map(|a| Some((a["id"].as_i64()?, a["name"].as_str()?.to_string())))
        .collect())
}

/// One simulated agent's private state.
struct Sim {
    id: i64,
    name: String,
    /// The agent's own token, as its calls are made.
    who: Principal,
    next_at: Instant,
    /// Ticks of `error` left to report.
    error_left: u32,
    /// While set, the agent sends nothing (it naps past the timeout).
    napping_until: Option<Instant>,
    next_nap: Instant,
}

async fn simulate(
    db: Addr<Db>,
    reader: Addr<Reader>,
    tokens: Arc<TokenCache>,
    heartbeat_timeout: Duration,
) -> Result<(), ApiError> {
    let mut rng = StdRng::from_entropy();
    let agents = seed(&db, &reader, &mut rng).await?;
    if agents.is_empty() {
        log::info!("demo: the database has data but no demo agents; nothing to simulate");
        return Ok(());
    }
    let now = Instant::now();
    let mut sims: Vec<Sim> = agents
        .into_iter()
        .filter_map(|(id, name)| Some((id, name, tokens.agent_principal(id)?)))
        .map(|(id, name, who)| Sim {
            id,
            name,
            who,
            next_at: now + Duration::from_millis(rng.gen_range(200..1500)),
            error_left: 0,
            napping_until: None,
            next_nap: now + Duration::from_secs(rng.gen_range(90..180)),
        })
        .collect();
    let nap = heartbeat_timeout + Duration::from_secs(10);
    let mut tick = actix_web::rt::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        if !sims.iter().any(|s| s.next_at <= now) {
            continue;
        }
        let tasks = all_tasks(&reader).await?;
        let live = items(&reader, Query::Agents(None)).await?;
        let live: HashMap<i64, Value> = live.into_iter().filter_map(|a| Some((a["id"].as_i64()?, a))).collect();
        // An agent someone deleted is simulated no more.
        sims.retain(|s| live.contains_key(&s.id));
        if sims.is_empty() {
            log::info!("demo: every demo agent was deleted; the simulation ends");
            return Ok(());
        }
        // Tasks taken or moved in this round, so two agents do not reach for
        // the same one from the same read.
        let mut claimed = HashSet::new();
        for sim in sims.iter_mut() {
            if sim.next_at > now {
                continue;
            }
            sim.next_at = now + Duration::from_millis(rng.gen_range(900..3200));
            if let Some(until) = sim.napping_until {
                if until > now {
                    continue;
                }
                sim.napping_until = None;
            }
            if sim.name == NAPPER && sim.next_nap <= now {
                sim.napping_until = Some(now + nap);
                sim.next_nap = now + nap + Duration::from_secs(rng.gen_range(120..240));
                continue;
            }
            match step(&db, &mut rng, sim, &tasks, &mut claimed).await {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::Unavailable => return Err(e),
                // A person changed the task first, or deleted it: try again next time.
                Err(e) => log::debug!("demo: {}: {e}", sim.name),
            }
        }
    }
}

/// One action of one agent, then its heartbeat.
async fn step(
    db: &Addr<Db>,
    rng: &mut StdRng,
    sim: &mut Sim,
    tasks: &[Value],
    claimed: &mut HashSet<i64>,
) -> Result<(), ApiError> {
    let id = sim.id;
    let who = sim.who.clone();
    let mine = tasks
        .iter()
        .filter(|t| t["assignee_id"] == json!(id))
        .filter(|t| matches!(t["status"].as_str(), Some("in_progress" | "blocked" | "review")))
        .min_by_key(|t| t["id"].as_i64());
    let mut current: Option<i64> = None;
    if sim.error_left > 0 {
        sim.error_left -= 1;
        current = mine.and_then(|t| t["id"].as_i64());
        return beat(db, &who, "error", current).await;
    }
    if rng.gen_bool(0.015) {
        sim.error_left = rng.gen_range(2..5);
    }
    match mine {
        Some(task) => {
            let tid = task["id"].as_i64().unwrap_or_default();
            let next = match task["status"].as_str() {
                Some("in_progress") => {
                    let r: f64 = rng.gen();
                    if r < 0.07 {
                        Some("blocked")
                    } else if r < 0.40 {
                        Some("review")
                    } else {
                        None
                    }
                }
                Some("blocked") => rng.gen_bool(0.35).then_some("in_progress"),
                Some("review") => {
                    let r: f64 = rng.gen();
                    if r < 0.10 {
                        Some("in_progress")
                    } else if r < 0.50 {
                        Some("done")
                    } else {
                        None
                    }
                }
                _ => None,
            };
            current = Some(tid);
            if let Some(status) = next {
                let mut patch = json!({ "status": status });
                if status == "done" {
                    patch["progress"] = json!(100);
                }
                update(db, &who, task, patch).await?;
                if status == "done" {
                    current = None;
                }
            } else if task["status"] == "in_progress" && rng.gen_bool(0.5) {
                // Report progress, and now and then say something with it.
                let progress = (task["progress"].as_i64().unwrap_or(0) + rng.gen_range(5..25)).min(95);
                let mut params = json!({"id": tid, "progress": progress});
                let method = if rng.gen_bool(0.4) {
                    params["text"] = json!(NOTES.choose(rng).copied().unwrap_or("Working on it."));
                    Method::TaskNote
                } else {
                    params = json!({"id": tid, "if_version": task["version"], "patch": {"progress": progress}});
                    Method::TaskUpdate
                };
                exec_as(db, who.clone(), method, params).await?;
            }
        }
        None => {
            let mut open: Vec<&Value> = tasks
                .iter()
                .filter(|t| t["status"] == "todo" && t["assignee_id"].is_null())
                .filter(|t| t["id"].as_i64().is_some_and(|id| !claimed.contains(&id)))
                .collect();
            open.sort_by_key(|t| (-t["priority"].as_i64().unwrap_or(0), t["id"].as_i64()));
            let todo_left = open.len();
            if let Some(task) = open.first() {
                if rng.gen_bool(0.7) {
                    claimed.extend(task["id"].as_i64());
                    exec_as(db, who.clone(), Method::TaskClaim, json!({"id": task["id"]})).await?;
                    current = task["id"].as_i64();
                }
            }
            // Keep the board moving: reopen finished work when little is left.
            if todo_left < 4 && rng.gen_bool(0.5) {
                let done: Vec<&Value> = tasks
                    .iter()
                    .filter(|t| t["status"] == "done")
                    .filter(|t| t["id"].as_i64().is_some_and(|id| !claimed.contains(&id)))
                    .collect();
                if let Some(task) = done.choose(rng) {
                    claimed.extend(task["id"].as_i64());
                    let patch = json!({"status": "todo", "assignee_id": null, "progress": null});
                    update(db, &Principal::system(), task, patch).await?;
                }
            }
        }
    }
    let status = if current.is_some() { "busy" } else { "idle" };
    beat(db, &who, status, current).await
}

/// Updates a task against the version the agent saw.
async fn update(db: &Addr<Db>, who: &Principal, task: &Value, patch: Value) -> Result<(), ApiError> {
    exec_as(
        db,
        who.clone(),
        Method::TaskUpdate,
        json!({"id": task["id"], "if_version": task["version"], "patch": patch}),
    )
    .await
    .map(|_| ())
}

async fn beat(db: &Addr<Db>, who: &Principal, status: &str, current: Option<i64>) -> Result<(), ApiError> {
    let id = who.agent_id;
    exec_as(
        db,
        who.clone(),
        Method::AgentHeartbeat,
        json!({"id": id, "status": status, "current_task_id": current}),
    )
    .await
    .map(|_| ())
}
