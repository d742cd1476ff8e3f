//! Crash safety: the real binary is SIGKILLed three times while writers and
//! subscribers are busy, and restarted on the same file each time. After every
//! restart:
//! - every acknowledged write is there with its version and content, and a
//!   write that was in flight is there at most once;
//! - the epoch is the same;
//! - each subscriber resuming from its own (epoch, seq) is replayed exactly the
//!   changes it missed (gap-free, in order, none twice), so the state it built
//!   equals the server's;
//! - a writer that lost its connection before the reply retries with the same
//!   `op_id` and gets the one commit, never a second one.

use crate::child::*;
use crate::shared::by_id;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Writers over the socket and over REST; each owns one task.
const WS_WRITERS: usize = 6;
const REST_WRITERS: usize = 2;
/// Acknowledged writes after which each of the three kills comes.
const KILL_AFTER: [usize; 3] = [150, 600, 300];
/// The lagging subscriber leaves after this many events of a round, so it has
/// many changes to be replayed after the restart.
const LAG_AFTER: usize = 40;

#[derive(Debug, Clone)]
enum Op {
    Create { op_id: String },
    Update { op_id: String, id: i64, from: i64 },
}

impl Op {
    fn op_id(&self) -> &str {
        match self {
            Op::Create { op_id } | Op::Update { op_id, .. } => op_id,
        }
    }
    /// The version the task has once this op committed.
    fn version_after(&self) -> i64 {
        match self {
            Op::Create { .. } => 1,
            Op::Update { from, .. } => from + 1,
        }
    }
}

/// What one writer knows: only what the server acknowledged.
#[derive(Debug, Clone)]
struct Writer {
    n: usize,
    rest: bool,
    task: Option<i64>,
    /// The last acknowledged version of its task.
    version: i64,
    /// The seq of its last acknowledged change.
    last_seq: i64,
    ops: u64,
    /// The op sent whose reply has not come (yet).
    inflight: Option<Op>,
    acks: usize,
}

impl Writer {
    fn next_op(&mut self) -> Op {
        self.ops += 1;
        let op_id = format!("w{}-{}", self.n, self.ops);
        match self.task {
            None => Op::Create { op_id },
            Some(id) => Op::Update {
                op_id,
                id,
                from: self.version,
            },
        }
    }

    /// Records the acknowledgement of `op`, checking it is the one commit.
    fn acked(&mut self, op: &Op, task: &Value, seq: Option<i64>) {
        let version = task["version"].as_i64().expect("version");
        assert_eq!(
            version,
            op.version_after(),
            "writer {}: op {} acknowledged at the wrong version: {task}",
            self.n,
            op.op_id()
        );
        assert_eq!(
            task["description"],
            format!("n={}", version - 1),
            "writer {}: content does not match its version: {task}",
            self.n
        );
        let seq = seq.unwrap_or_else(|| panic!("an acknowledged change carries a seq: {task}"));
        assert!(
            seq > self.last_seq,
            "writer {}: seq {seq} not after {}",
            self.n,
            self.last_seq
        );
        if let Op::Update { id, .. } = op {
            assert_eq!(task["id"], *id);
        }
        self.task = Some(task["id"].as_i64().expect("id"));
        self.version = version;
        self.last_seq = seq;
        self.inflight = None;
        self.acks += 1;
    }
}

enum Conn {
    Ws(Box<Client>),
    Rest(reqwest::Client, SocketAddr),
}

async fn connect(rest: bool, addr: SocketAddr) -> Option<Conn> {
    if rest {
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        Some(Conn::Rest(http, addr))
    } else {
        Client::connect(addr, ADMIN).await.ok().map(|c| Conn::Ws(Box::new(c)))
    }
}

/// Runs `op`; `Err` when the connection failed (the op's fate is unknown).
/// A refused op fails the test.
async fn run_op(conn: &mut Conn, op: &Op) -> Result<(Value, Option<i64>), String> {
    match conn {
        Conn::Ws(c) => {
            let (method, params) = match op {
                Op::Create { .. } => (
                    "task.create",
                    json!({"title": format!("task of {}", op.op_id()), "description": "n=0"}),
                ),
                Op::Update { id, from, .. } => (
                    "task.update",
                    json!({"id": id, "if_version": from, "patch": {"description": format!("n={from}")}}),
                ),
            };
            let reply = c
                .call(method, params, Some(op.op_id()))
                .await
                .map_err(|e| format!("{e:?}"))?;
            assert_eq!(reply["ok"], true, "op {} refused: {reply}", op.op_id());
            Ok((reply["data"].clone(), reply["seq"].as_i64()))
        }
        Conn::Rest(http, addr) => {
            let req = match op {
                Op::Create { .. } => http
                    .post(format!("http://{addr}/api/tasks"))
                    .json(&json!({"title": format!("task of {}", op.op_id()), "description": "n=0"})),
                Op::Update { id, from, .. } => http
                    .patch(format!("http://{addr}/api/tasks/{id}"))
                    .header("If-Match", format!("\"{from}\""))
                    .json(&json!({"description": format!("n={from}")})),
            };
            let res = req
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", op.op_id())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            let seq = res
                .headers()
                .get("Taskwire-Seq")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body: Value = res.json().await.map_err(|e| e.to_string())?;
            assert!(
                status == 200 || status == 201,
                "op {} refused with {status}: {body}",
                op.op_id()
            );
            Ok((body, seq))
        }
    }
}

/// Writes until the connection fails; counts acknowledgements in `acks`.
async fn write_until_lost(
    mut w: Writer,
    addr: SocketAddr,
    acks: Arc<AtomicUsize>,
    tick: Arc<watch::Sender<usize>>,
) -> Writer {
    let Some(mut conn) = connect(w.rest, addr).await else {
        return w;
    };
    loop {
        let op = match w.inflight.clone() {
            Some(op) => op,
            None => w.next_op(),
        };
        w.inflight = Some(op.clone());
        match run_op(&mut conn, &op).await {
            Ok((task, seq)) => {
                w.acked(&op, &task, seq);
                let n = acks.fetch_add(1, Ordering::SeqCst) + 1;
                tick.send_replace(n);
            }
            Err(_) => return w,
        }
    }
}

/// What one subscriber has built from its snapshot and events.
#[derive(Debug)]
struct Sub {
    name: &'static str,
    topic: String,
    epoch: String,
    /// The seq of the last event applied (or of the subscribe reply).
    last: i64,
    tasks: BTreeMap<i64, Value>,
    /// Leaves after this many events of a round.
    leave_after: Option<usize>,
    replayed: Vec<usize>,
}

impl Sub {
    fn fresh(name: &'static str, reply: &Value, leave_after: Option<usize>) -> Sub {
        assert_eq!(reply["ok"], true, "{reply}");
        let data = &reply["data"];
        let mut tasks = BTreeMap::new();
        match &data["snapshot"] {
            Value::Array(items) => {
                for t in items {
                    tasks.insert(t["id"].as_i64().unwrap(), t.clone());
                }
            }
            t @ Value::Object(_) => {
                tasks.insert(t["id"].as_i64().unwrap(), t.clone());
            }
            other => panic!("{name}: no snapshot in {other}"),
        }
        Sub {
            name,
            topic: data["topic"].as_str().unwrap().to_string(),
            epoch: data["epoch"].as_str().unwrap().to_string(),
            last: data["seq"].as_i64().unwrap(),
            tasks,
            leave_after,
            replayed: Vec::new(),
        }
    }

    /// Only task changes exist in this database, so on `tasks` every seq
    /// follows the last one; on `task:N` the task's version does.
    fn apply(&mut self, ev: &Value) {
        assert_eq!(ev["type"], "event", "{}: {ev}", self.name);
        assert_eq!(ev["topic"], self.topic.as_str(), "{}: {ev}", self.name);
        let seq = ev["seq"].as_i64().expect("event seq");
        if self.topic == "tasks" {
            assert_eq!(
                seq,
                self.last + 1,
                "{}: after seq {} came {seq} (a change missed or twice)",
                self.name,
                self.last
            );
        } else {
            assert!(seq > self.last, "{}: seq {seq} after {}", self.name, self.last);
        }
        self.last = seq;
        let data = &ev["data"];
        let id = data["id"].as_i64().unwrap();
        let version = data["version"].as_i64().unwrap();
        match ev["event"].as_str().unwrap() {
            "task.created" => {
                assert_eq!(version, 1, "{}: {ev}", self.name);
                assert!(self.tasks.insert(id, data.clone()).is_none(), "{}: {ev}", self.name);
            }
            "task.updated" => {
                let before = self.tasks.get(&id).expect("update of a known task");
                assert_eq!(
                    version,
                    before["version"].as_i64().unwrap() + 1,
                    "{}: a version skipped or repeated: {ev}",
                    self.name
                );
                self.tasks.insert(id, data.clone());
            }
            other => panic!("{}: unexpected {other}: {ev}", self.name),
        }
    }
}

/// Applies live events until the connection is lost (or the subscriber
/// leaves on purpose).
async fn listen(mut s: Sub, mut c: Client) -> Sub {
    let mut n = 0;
    while let Ok(ev) = c.next_event().await {
        s.apply(&ev);
        n += 1;
        if s.leave_after.is_some_and(|k| n >= k) {
            break;
        }
    }
    s
}

/// Applies live events until the subscriber's position reaches `seq`.
async fn catch_up(s: &mut Sub, c: &mut Client, seq: i64) {
    while s.last < seq {
        let ev = c.next_event().await.expect("live events after the restart");
        s.apply(&ev);
    }
}

/// The tasks of a REST read, by id, and its position.
async fn rest_tasks(server: &Server, epoch: &str) -> (BTreeMap<i64, Value>, i64) {
    let body = server.get_json("/api/tasks").await;
    assert_eq!(body["epoch"], epoch, "the epoch changed: {body}");
    (by_id(&body["items"]), body["seq"].as_i64().unwrap())
}

/// After a restart: every acknowledged write is there; an op in flight at the
/// kill is there at most once.
fn check_acknowledged(writers: &[Writer], tasks: &BTreeMap<i64, Value>) -> usize {
    let mut landed = 0;
    for w in writers {
        let id = w.task.expect("every writer has its task");
        let t = tasks
            .get(&id)
            .unwrap_or_else(|| panic!("writer {}'s task {id} is gone", w.n));
        let v = t["version"].as_i64().unwrap();
        let ceiling = w.version + i64::from(w.inflight.is_some());
        assert!(
            v >= w.version && v <= ceiling,
            "writer {}: task {id} is at version {v}; acknowledged {}, in flight {:?}",
            w.n,
            w.version,
            w.inflight
        );
        assert_eq!(t["description"], format!("n={}", v - 1), "{t}");
        if v > w.version {
            landed += 1;
        }
    }
    landed
}

/// Resumes a subscriber on a new connection and checks the replay.
async fn resume(server: &Server, s: &mut Sub) -> Client {
    let mut c = server.ws().await;
    let reply = c.resume(&s.topic, &s.epoch, s.last).await.expect("resume reply");
    assert_eq!(reply["ok"], true, "{}: {reply}", s.name);
    let data = &reply["data"];
    assert_eq!(data["epoch"], s.epoch.as_str(), "{}: {reply}", s.name);
    let events = data["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: resuming at seq {} should replay, got {reply}", s.name, s.last));
    for ev in events {
        s.apply(ev);
    }
    let head = data["seq"].as_i64().unwrap();
    if s.topic == "tasks" {
        assert_eq!(s.last, head, "{}: the replay stops short of the reply's seq", s.name);
    }
    assert!(s.last <= head);
    s.last = head;
    s.replayed.push(events.len());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_change_is_lost_across_three_kills() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let mut server = Server::start(&db, &[]);
    let epoch = server.ws().await.epoch();

    // Each writer creates its task; subscribers join fresh.
    let mut writers: Vec<Writer> = (0..WS_WRITERS + REST_WRITERS)
        .map(|n| Writer {
            n,
            rest: n >= WS_WRITERS,
            task: None,
            version: 0,
            last_seq: 0,
            ops: 0,
            inflight: None,
            acks: 0,
        })
        .collect();
    for w in &mut writers {
        let mut conn = connect(w.rest, server.addr).await.expect("connect");
        let op = w.next_op();
        let (task, seq) = run_op(&mut conn, &op).await.expect("create");
        w.acked(&op, &task, seq);
    }
    let first_rest = writers[WS_WRITERS].task.unwrap();
    let specs: [(&'static str, String, Option<usize>); 5] = [
        ("all-1", "tasks".into(), None),
        ("all-2", "tasks".into(), None),
        ("one-ws", format!("task:{}", writers[0].task.unwrap()), None),
        ("one-rest", format!("task:{first_rest}"), None),
        ("lagger", "tasks".into(), Some(LAG_AFTER)),
    ];
    let mut subs = Vec::new();
    for (name, topic, leave) in specs {
        let mut c = server.ws().await;
        let reply = c.subscribe(&topic).await.expect("subscribe");
        subs.push((Sub::fresh(name, &reply, leave), c));
    }

    let mut report = Vec::new();
    for (round, kill_after) in KILL_AFTER.iter().enumerate() {
        // Writers and subscribers run; the kill comes mid-stream.
        let acks = Arc::new(AtomicUsize::new(0));
        let (tick, mut ticks) = watch::channel(0usize);
        let tick = Arc::new(tick);
        let writer_tasks: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(write_until_lost(w, server.addr, acks.clone(), tick.clone())))
            .collect();
        let sub_tasks: Vec<_> = subs.drain(..).map(|(s, c)| tokio::spawn(listen(s, c))).collect();
        tokio::time::timeout(WAIT, ticks.wait_for(|n| n >= kill_after))
            .await
            .expect("writers made no progress")
            .unwrap();
        server.kill();
        let killed_at = acks.load(Ordering::SeqCst);
        for t in writer_tasks {
            writers.push(t.await.expect("writer"));
        }
        let mut dead = Vec::new();
        for t in sub_tasks {
            dead.push(t.await.expect("subscriber"));
        }
        let inflight = writers.iter().filter(|w| w.inflight.is_some()).count();

        // Restart on the same file.
        server = Server::start(&db, &[]);
        let probe = server.ws().await;
        assert_eq!(probe.epoch(), epoch, "the epoch changed across a crash");
        let head = probe.hello["seq"].as_i64().unwrap();
        let max_acked = writers.iter().map(|w| w.last_seq).max().unwrap();
        let max_seen = dead.iter().map(|s| s.last).max().unwrap();
        assert!(
            head >= max_acked && head >= max_seen,
            "seq {head} after the restart, but {max_acked} was acknowledged and {max_seen} pushed"
        );
        let (tasks, rest_seq) = rest_tasks(&server, &epoch).await;
        assert_eq!(rest_seq, head);
        let landed = check_acknowledged(&writers, &tasks);

        // Every subscriber resumes and is replayed exactly what it missed.
        for mut s in dead {
            let c = resume(&server, &mut s).await;
            if s.topic == "tasks" {
                assert_eq!(s.tasks, tasks, "{}: state differs after the replay", s.name);
            } else {
                let id: i64 = s.topic["task:".len()..].parse().unwrap();
                assert_eq!(s.tasks.get(&id), tasks.get(&id), "{}", s.name);
            }
            subs.push((s, c));
        }

        // A writer whose reply was lost retries with the same op_id: one commit.
        for w in &mut writers {
            if let Some(op) = w.inflight.clone() {
                let mut conn = connect(w.rest, server.addr).await.expect("connect");
                let (task, seq) = run_op(&mut conn, &op).await.expect("retry");
                w.acked(&op, &task, seq);
            }
        }
        let lagger = subs.iter().find(|(s, _)| s.name == "lagger").unwrap();
        report.push(format!(
            "kill {}: {killed_at} acks (after {kill_after}), {inflight} in flight of which {landed} had committed, head seq {head}, lagger replayed {}",
            round + 1,
            lagger.0.replayed.last().unwrap()
        ));
    }

    // After the last restart the retried writes reach the live subscribers,
    // and every state still equals the server's.
    let (tasks, head) = rest_tasks(&server, &epoch).await;
    let total_acks: usize = writers.iter().map(|w| w.acks).sum();
    for (s, c) in &mut subs {
        let target = if s.topic == "tasks" {
            head
        } else {
            let id: i64 = s.topic["task:".len()..].parse().unwrap();
            writers.iter().find(|w| w.task == Some(id)).unwrap().last_seq
        };
        catch_up(s, c, target).await;
        if s.topic == "tasks" {
            assert_eq!(s.tasks, tasks, "{}", s.name);
        }
    }
    for w in &writers {
        let t = &tasks[&w.task.unwrap()];
        assert_eq!(t["version"].as_i64().unwrap(), w.version, "{t}");
    }
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!(
        "{total_acks} acknowledged writes, all present; {} s in all",
        started.elapsed().as_secs_f64()
    );
    server.kill();
}
