//! Bad input. Property tests feed arbitrary bytes, strings, JSON values and
//! near-valid frames to the frame parser, and arbitrary params to the call
//! handlers on a real database: nothing panics, a readable `ref` is always
//! kept, the parser only ever says `bad_request`, and no call ends `internal`.
//! A live test then sends thousands of random and malformed frames on one
//! socket: every frame with a readable ref gets exactly one reply with that
//! ref, every other frame one error frame, the server stays up, and a client
//! subscribed meanwhile gets every event.

use crate::shared::by_id;
use crate::{child, common};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use taskwire::auth::{Principal, Role};
use taskwire::error::ErrorCode;
use taskwire::protocol::{parse_frame, Call, Method, Request};
use tokio_tungstenite::tungstenite::Message;

const MAX_REF: u64 = 1 << 53;

/// The ref a frame's reply must carry, by the contract alone: a string, or an
/// integer (no fraction, no exponent) within ±2^53.
fn readable_ref(frame: &Value) -> Option<Value> {
    match frame.as_object()?.get("ref")? {
        s @ Value::String(_) => Some(s.clone()),
        Value::Number(n) => {
            let ok = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u <= MAX_REF,
                (None, Some(i)) => i.unsigned_abs() <= MAX_REF,
                _ => false,
            };
            ok.then(|| Value::Number(n.clone()))
        }
        _ => None,
    }
}

// ---- strategies ----

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (-3i64..8).prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Refs, readable or not.
fn arb_ref() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (-(MAX_REF as i64)..=MAX_REF as i64).prop_map(|i| json!(i)),
        2 => ".{0,12}".prop_map(Value::String),
        1 => (MAX_REF + 1..u64::MAX).prop_map(|u| json!(u)),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        1 => arb_json(),
    ]
}

const KEYS: [&str; 14] = [
    "id",
    "patch",
    "if_version",
    "title",
    "description",
    "status",
    "priority",
    "assignee_id",
    "name",
    "meta",
    "current_task_id",
    "token",
    "since",
    "x",
];

/// Values that hit the rules of the entities.
fn arb_field() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0i64..6).prop_map(|i| json!(i)),
        1 => any::<i64>().prop_map(|i| json!(i)),
        2 => prop::sample::select(vec![
            "todo", "in_progress", "blocked", "review", "done", "idle", "busy", "error",
            "offline", "", " ", "\u{0}", "日本語",
        ])
        .prop_map(|s| json!(s)),
        2 => ".{0,40}".prop_map(Value::String),
        1 => (190usize..210).prop_map(|n| json!("t".repeat(n))),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        1 => arb_json(),
    ]
}

/// An object of params: mostly known keys with plausible or wrong values.
fn arb_params() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        6 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_string),
        1 => ".{0,8}",
    ];
    let patch = prop::collection::btree_map(key.clone(), arb_field(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    (
        prop::collection::btree_map(key, arb_field(), 0..5),
        prop::option::weighted(0.5, patch),
    )
        .prop_map(|(m, patch)| {
            let mut o: Map<String, Value> = m.into_iter().collect();
            if let Some(p) = patch {
                o.insert("patch".into(), p);
            }
            Value::Object(o)
        })
}

const METHODS: [&str; 7] = [
    "task.create",
    "task.update",
    "task.delete",
    "agent.create",
    "agent.update",
    "agent.delete",
    "agent.heartbeat",
];

fn arb_method() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(METHODS.to_vec()).prop_map(|m| json!(m)),
        1 => ".{0,14}".prop_map(Value::String),
        1 => arb_json(),
    ]
}

fn arb_topic() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => prop::sample::select(vec!["tasks", "agents"]).prop_map(|t| json!(t)),
        2 => "(task|agent):[0-9]{1,3}".prop_map(Value::String),
        1 => "(task|agent|tasks|x):(0[0-9]*|-[0-9]+|[0-9]{19,22}|[0-9]+x)?".prop_map(Value::String),
        1 => ".{0,12}".prop_map(Value::String),
        1 => arb_json(),
    ]
}

/// Calls that mostly pass the parser and reach the rules: they commit, or
/// fail with `invalid`, `not_found` or `conflict`.
fn arb_plausible_call() -> impl Strategy<Value = Value> {
    let title = prop_oneof![
        4 => ".{1,30}".prop_map(Value::String),
        1 => Just(json!("  ")),
        1 => "x{199,202}".prop_map(Value::String),
    ];
    let status = prop::sample::select(vec![
        "todo",
        "in_progress",
        "blocked",
        "review",
        "done",
        "idle",
        "busy",
        "nope",
    ]);
    let call = |method: &str, params: Value| json!({"type": "call", "method": method, "params": params});
    prop_oneof![
        (title.clone(), status.clone(), -1i64..5)
            .prop_map(move |(t, s, p)| { call("task.create", json!({"title": t, "status": s, "priority": p})) }),
        (1i64..400, title, status.clone(), prop::option::of(1i64..4)).prop_map(move |(id, t, s, v)| {
            let mut params = json!({"id": id, "patch": {"title": t, "status": s}});
            if let Some(v) = v {
                params["if_version"] = json!(v);
            }
            call("task.update", params)
        }),
        (1i64..400, prop::option::of(1i64..3))
            .prop_map(move |(id, v)| { call("task.delete", json!({"id": id, "if_version": v})) }),
        ("[a-z]{1,5}", status.clone()).prop_map(move |(n, s)| call("agent.create", json!({"name": n, "status": s}))),
        (1i64..30, status, prop::option::of(1i64..400)).prop_map(move |(id, s, t)| {
            call("agent.heartbeat", json!({"id": id, "status": s, "current_task_id": t}))
        }),
    ]
}

/// A frame that is nearly right: a known or unknown type, a ref, and the
/// fields of some frame type, each possibly wrong, plus stray keys.
fn arb_frame() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        6 => prop::sample::select(vec!["subscribe", "unsubscribe", "call", "ping"]).prop_map(|t| json!(t)),
        1 => ".{0,10}".prop_map(Value::String),
        1 => arb_json(),
    ];
    let since = prop_oneof![
        any::<u32>().prop_map(|u| json!(u)),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        arb_json(),
    ];
    let epoch = prop_oneof![".{0,16}".prop_map(Value::String), arb_json()];
    let op_id = prop_oneof![
        ".{0,12}".prop_map(Value::String),
        "x{95,105}".prop_map(Value::String),
        arb_json()
    ];
    (
        prop::option::weighted(0.95, kind),
        prop::option::weighted(0.9, arb_ref()),
        prop::option::of(arb_topic()),
        prop::option::of(arb_method()),
        prop::option::of(prop_oneof![4 => arb_params(), 1 => arb_json()]),
        prop::option::weighted(0.2, epoch),
        prop::option::weighted(0.2, since),
        prop::option::weighted(0.2, op_id),
        prop::option::weighted(0.1, (".{0,6}", arb_json())),
    )
        .prop_map(|(kind, r, topic, method, params, epoch, since, op_id, extra)| {
            let mut o = Map::new();
            for (k, v) in [
                ("type", kind),
                ("ref", r),
                ("topic", topic),
                ("method", method),
                ("params", params),
                ("epoch", epoch),
                ("since", since),
                ("op_id", op_id),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        })
}

/// Checks one parse of `text` against the contract.
fn check_parse(text: &str) {
    let frame: Option<Value> = serde_json::from_str(text).ok();
    let frame = frame.as_ref();
    let want = frame.and_then(readable_ref);
    match parse_frame(text) {
        Ok((r, request)) => {
            assert_eq!(Some(&r), want.as_ref(), "ref of {text}");
            let frame = frame.expect("only JSON parses");
            match request {
                Request::Subscribe { topic, .. } | Request::Unsubscribe { topic } => {
                    assert_eq!(frame["topic"], topic.to_string(), "topic of {text}")
                }
                Request::Call(call) => {
                    assert_eq!(frame["type"], "call");
                    assert_eq!(frame["method"], call.method.as_str(), "method of {text}");
                    assert_eq!(frame["params"], call.params, "params of {text}");
                }
                Request::Ping => assert_eq!(frame["type"], "ping"),
            }
        }
        Err((r, e)) => {
            assert_eq!(r, want, "ref of rejected {text}");
            // A frame of the right shape can still break a rule: an op_id's
            // length.
            let bad_op_id = frame
                .and_then(|f| f["op_id"].as_str())
                .is_some_and(|o| o.is_empty() || o.chars().count() > 100);
            let code = if bad_op_id {
                ErrorCode::Invalid
            } else {
                ErrorCode::BadRequest
            };
            if e.code != code {
                assert_eq!(e.code, ErrorCode::BadRequest, "{text}: {e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_frame_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parse_frame_takes_any_json_like_text(text in r#"[\[\]{}":,0-9a-z. \-+eE\\]{0,120}"#) {
        check_parse(&text);
    }

    #[test]
    fn parse_frame_takes_any_json(value in arb_json()) {
        check_parse(&value.to_string());
    }

    #[test]
    fn parse_frame_keeps_the_ref_of_near_valid_frames(frame in arb_frame()) {
        check_parse(&frame.to_string());
    }
}

// ---- the call handlers on a real database ----

struct HandlerDb {
    _dir: tempfile::TempDir,
    conn: diesel::SqliteConnection,
    seq: i64,
    live: taskwire::db::liveness::Liveness,
    tasks: taskwire::db::row_cache::TaskRows,
}

thread_local! {
    static HANDLER_DB: RefCell<Option<HandlerDb>> = const { RefCell::new(None) };
}

fn arb_call() -> impl Strategy<Value = (Call, Principal)> {
    (
        prop::sample::select(METHODS.to_vec()),
        arb_params(),
        prop::option::weighted(0.3, "[a-c]{1,2}"),
        prop_oneof![
            3 => Just(Role::Admin),
            1 => Just(Role::Member),
            1 => Just(Role::Agent),
        ],
        1i64..4,
    )
        .prop_map(|(method, params, op_id, role, agent)| {
            let call = Call {
                method: Method::parse(method).unwrap(),
                params,
                op_id,
            };
            let who = Principal {
                token_id: 1,
                role,
                agent_id: (role == Role::Agent).then_some(agent),
                name: "fuzz".into(),
            };
            (call, who)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary params for every method, as each role: an answer is either a
    /// commit or an error of the contract, never `internal`, and the change
    /// log stays gap-free.
    #[test]
    fn call_handlers_take_any_params((call, who) in arb_call()) {
        HANDLER_DB.with(|cell| {
            let mut cell = cell.borrow_mut();
            let db = cell.get_or_insert_with(|| {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("h.db");
                let opened = taskwire::db::open(path.to_str().unwrap()).expect("open");
                let mut conn = opened.conn;
                taskwire::db::ensure_admin_token(&mut conn, Some("fuzz")).unwrap();
                HandlerDb { _dir: dir, conn, seq: 0, live: Default::default(), tasks: Default::default() }
            });
            let mut seq = db.seq;
            let live = &mut db.live;
            let tasks = &mut db.tasks;
            let result = db.conn.immediate_transaction::<_, taskwire::error::ApiError, _>(|conn| {
                let mut ctx = taskwire::db::rules::WriteCtx::new(&mut seq, live, tasks);
                taskwire::db::rules::run(conn, &mut ctx, |conn, ctx| taskwire::db::rules::execute(conn, ctx, &who, &call))
            });
            db.live.keep();
            match result {
                Ok(out) => {
                    if let Some(s) = out.seq {
                        assert!(s > db.seq && s <= seq, "seq {s} of {call:?}");
                    }
                    assert_eq!(seq - db.seq, out.changes.len() as i64, "{call:?}");
                    db.seq = seq;
                }
                Err(e) => assert_ne!(e.code, ErrorCode::Internal, "{call:?} as {who:?}: {e}"),
            }
            // The rows the writer keeps are the rows on disk.
            for task in db.tasks.iter() {
                let on_disk = taskwire::db::queries::find_task(&mut db.conn, task.id).unwrap();
                assert_eq!(on_disk.as_ref(), Some(task), "after {call:?}");
            }
        });
    }
}

// ---- a live socket ----

const FRAMES: usize = 4000;

/// Codes the contract allows a reply to carry.
const CODES: [&str; 11] = [
    "bad_request",
    "invalid",
    "not_found",
    "conflict",
    "unauthorized",
    "forbidden",
    "too_large",
    "rate_limited",
    "gone",
    "unavailable",
    "internal",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_random_frames_are_all_answered_and_hurt_no_one() {
    let app = common::spawn_app();
    let started = Instant::now();

    // Someone minding their business: subscribed to tasks, with a writer.
    let mut watcher = child::Client::connect(app.addr, &app.admin).await.unwrap();
    let r = watcher.subscribe("tasks").await.unwrap();
    let start = r["data"]["seq"].as_i64().unwrap();
    let writer = {
        let (http, url, admin) = (app.http(), app.url("/api/tasks"), app.admin.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let res = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({ "title": format!("steady {i}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
            }
        })
    };

    // The frames, generated deterministically.
    let mut runner = TestRunner::deterministic();
    let mut frames = Vec::with_capacity(FRAMES);
    let mut owed = HashMap::new();
    let mut owed_errors = 0usize;
    let kinds = prop_oneof![
        3 => arb_frame().prop_map(|f| (0u8, f)),
        2 => (arb_method(), arb_params()).prop_map(|(m, p)| (1u8, json!({"type": "call", "method": m, "params": p}))),
        1 => arb_json().prop_map(|v| (2u8, v)),
        1 => ".{0,80}".prop_map(|s| (3u8, Value::String(s))),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| (4u8, json!(b))),
        3 => arb_plausible_call().prop_map(|c| (1u8, c)),
    ];
    for i in 0..FRAMES {
        let (kind, mut v) = kinds.new_tree(&mut runner).unwrap().current();
        let msg = match kind {
            // Readable refs are made unique so each reply can be matched.
            0..=2 => {
                if readable_ref(&v).is_some() || (kind == 1 && i % 5 != 0) {
                    v["ref"] = if i % 2 == 0 { json!(i) } else { json!(format!("r{i}")) };
                }
                Message::Text(v.to_string())
            }
            3 => Message::Text(v.as_str().unwrap().to_string()),
            _ => Message::Binary(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u8)
                    .collect(),
            ),
        };
        let parsed: Option<Value> = match &msg {
            Message::Text(t) => serde_json::from_str(t).ok(),
            _ => None,
        };
        match parsed.as_ref().and_then(readable_ref) {
            Some(r) => {
                let key = r.to_string();
                assert!(owed.insert(key, r).is_none(), "refs are unique");
            }
            None => owed_errors += 1,
        }
        frames.push(msg);
    }
    let owed_replies = owed.len();

    let fuzzer = child::Client::connect(app.addr, &app.admin).await.unwrap();
    let (mut sink, mut stream) = fuzzer.stream.split();
    let sender = tokio::spawn(async move {
        for f in frames {
            sink.send(f).await.expect("the server took the frame");
        }
        sink
    });
    let mut replies = 0;
    let mut errors = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    while replies < owed_replies || errors < owed_errors {
        let msg = tokio::time::timeout(child::WAIT, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("answers stopped at {replies}/{owed_replies} replies, {errors}/{owed_errors} errors")
            })
            .expect("the fuzzed socket stays open")
            .expect("no socket error");
        let v: Value = match msg {
            Message::Text(t) => serde_json::from_str(&t).expect("JSON from the server"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("the fuzzed socket got {other:?}"),
        };
        match v["type"].as_str() {
            Some("reply") => {
                let key = v["ref"].to_string();
                match owed.remove(&key) {
                    Some(r) => assert_eq!(v["ref"], r),
                    None => panic!("a reply with a ref never sent, or twice: {v}"),
                }
                replies += 1;
                if v["ok"] == false {
                    let code = v["error"]["code"].as_str().expect("error code");
                    assert!(CODES.contains(&code), "unknown code: {v}");
                    *codes.entry(code.to_string()).or_default() += 1;
                } else {
                    *codes.entry("ok".into()).or_default() += 1;
                }
            }
            Some("error") => {
                assert_eq!(v["error"]["code"], "bad_request", "{v}");
                errors += 1;
            }
            Some("event") => {}
            _ => panic!("unexpected frame {v}"),
        }
    }
    assert_eq!(replies, owed_replies);
    assert_eq!(errors, owed_errors);
    assert!(owed.is_empty());
    let mut sink = sender.await.unwrap();

    // Still up, and the fuzzed socket still works.
    sink.send(Message::Text(json!({"type": "ping", "ref": "last"}).to_string()))
        .await
        .unwrap();
    loop {
        let msg = tokio::time::timeout(child::WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "reply" {
                assert_eq!(v["ref"], "last", "{v}");
                assert_eq!(v["ok"], true, "{v}");
                break;
            }
        }
    }
    let health = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // The watcher got every task change, in order, none twice.
    writer.await.unwrap();
    let log = app.changes(start, Some("tasks")).await;
    let want: Vec<i64> = log["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"))
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(want.len() >= 200, "the writer's 200 tasks are in the log");
    let mut got = Vec::new();
    let mut state: BTreeMap<i64, Value> = BTreeMap::new();
    while got.last() != want.last() {
        let ev = watcher.next_event().await.expect("the watcher's events");
        let id = ev["data"]["id"].as_i64().unwrap();
        match ev["event"].as_str().unwrap() {
            "task.created" => assert!(state.insert(id, ev["data"].clone()).is_none()),
            "task.updated" => {
                let before = state.insert(id, ev["data"].clone()).expect("known task");
                assert_eq!(
                    ev["data"]["version"].as_i64(),
                    before["version"].as_i64().map(|v| v + 1)
                );
            }
            "task.deleted" => assert!(state.remove(&id).is_some()),
            other => panic!("{other}"),
        }
        got.push(ev["seq"].as_i64().unwrap());
    }
    assert_eq!(got, want, "the watcher's events");
    let all = by_id(&app.get_json("/api/tasks").await["items"]);
    assert_eq!(state, all, "the watcher's state");
    eprintln!(
        "{FRAMES} frames: {owed_replies} replies ({codes:?}), {owed_errors} error frames; watcher got {} task events; {:?}",
        got.len(),
        started.elapsed()
    );
}

// ---- malformed WebSocket frames on a raw TCP socket ----

/// A WebSocket client that writes frames byte by byte as the test says.
struct Raw {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// One frame: FIN, RSV bits, opcode, mask (clients must mask) and payload.
fn raw_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=65535 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn text(fin: bool, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, 0, 1, MASK, payload)
}

/// What a raw socket saw next.
#[derive(Debug, PartialEq)]
enum Seen {
    Text(Value),
    Close(Option<u16>),
    Ping,
    Pong,
    /// The connection ended without a close frame.
    Eof,
}

impl Raw {
    async fn open(addr: std::net::SocketAddr, token: &str) -> Raw {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(child::WAIT, tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "no upgrade answer");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut raw = Raw {
            tcp,
            buf: buf.split_off(head_end),
        };
        match raw.next().await {
            Seen::Text(hello) => assert_eq!(hello["type"], "hello"),
            other => panic!("no hello: {other:?}"),
        }
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        // The server may already have closed: what it said is read next.
        let _ = self.tcp.write_all(bytes).await;
    }

    async fn fill(&mut self, n: usize) -> bool {
        use tokio::io::AsyncReadExt;
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(child::WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("the server said nothing within the wait")
            {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// The next server frame (server frames are unmasked and unfragmented).
    async fn next(&mut self) -> Seen {
        if !self.fill(2).await {
            return Seen::Eof;
        }
        let (op, len7) = (self.buf[0] & 0x0f, (self.buf[1] & 0x7f) as usize);
        let (len, at) = match len7 {
            126 => {
                if !self.fill(4).await {
                    return Seen::Eof;
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                if !self.fill(10).await {
                    return Seen::Eof;
                }
                (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
            }
            n => (n, 2),
        };
        if !self.fill(at + len).await {
            return Seen::Eof;
        }
        let payload: Vec<u8> = self.buf.drain(..at + len).skip(at).collect();
        match op {
            1 => Seen::Text(serde_json::from_slice(&payload).expect("server text is JSON")),
            8 => Seen::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            9 => Seen::Ping,
            10 => Seen::Pong,
            other => panic!("server sent opcode {other}"),
        }
    }

    /// Frames until a text frame or the end.
    async fn next_text_or_end(&mut self) -> Seen {
        loop {
            match self.next().await {
                Seen::Ping | Seen::Pong => continue,
                other => return other,
            }
        }
    }
}

#[tokio::test]
async fn broken_frames_close_with_the_contract_codes() {
    let app = common::spawn_app();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a text message that is not UTF-8",
            text(true, &[0xff, 0xfe, 0x80]),
            1007,
        ),
        (
            "fragments that together are not UTF-8",
            [text(false, &[0xc3]), raw_frame(true, 0, 0, MASK, b"(")].concat(),
            1007,
        ),
        ("an unmasked frame", raw_frame(true, 0, 1, None, b"{}"), 1002),
        ("a reserved bit set", raw_frame(true, 0b100, 1, MASK, b"{}"), 1002),
        (
            "a continuation with nothing to continue",
            raw_frame(true, 0, 0, MASK, b"x"),
            1002,
        ),
        (
            "a new message inside a fragmented one",
            [text(false, b"{"), text(true, b"}")].concat(),
            1002,
        ),
        ("a fragmented ping", raw_frame(false, 0, 9, MASK, b""), 1002),
        ("a ping over 125 bytes", raw_frame(true, 0, 9, MASK, &[b'p'; 126]), 1002),
        ("an unknown opcode", raw_frame(true, 0, 3, MASK, b""), 1002),
        ("a message over the limit", text(true, &vec![b' '; 65_537]), 1009),
        (
            "fragments over the limit together",
            [
                text(false, &vec![b' '; 40_000]),
                raw_frame(true, 0, 0, MASK, &vec![b' '; 40_000]),
            ]
            .concat(),
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut raw = Raw::open(app.addr, &app.admin).await;
        raw.send(&bytes).await;
        assert_eq!(raw.next_text_or_end().await, Seen::Close(Some(code)), "{what}");
    }

    // What the rules allow goes on working on one connection.
    let mut raw = Raw::open(app.addr, &app.admin).await;
    // A character split between two fragments, and a ping between them.
    let frame = r#"{"type":"ping","ref":"é"}"#.as_bytes();
    let cut = frame.iter().position(|b| *b == 0xc3).unwrap() + 1;
    raw.send(&text(false, &frame[..cut])).await;
    raw.send(&raw_frame(true, 0, 9, MASK, b"hi")).await;
    raw.send(&raw_frame(true, 0, 0, MASK, &frame[cut..])).await;
    let mut seen = [raw.next().await, raw.next().await];
    seen.sort_by_key(|s| matches!(s, Seen::Text(_)));
    assert_eq!(seen[0], Seen::Pong, "a ping inside a fragmented message is answered");
    assert_eq!(
        seen[1],
        Seen::Text(json!({"type": "reply", "ref": "é", "ok": true, "data": {}}))
    );
    // A binary message is an error frame, and the connection goes on.
    raw.send(&raw_frame(true, 0, 2, MASK, b"{\"type\":\"ping\",\"ref\":1}"))
        .await;
    match raw.next_text_or_end().await {
        Seen::Text(v) => {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["error"]["code"], "bad_request", "{v}");
        }
        other => panic!("binary message: {other:?}"),
    }
    raw.send(&text(true, br#"{"type":"ping","ref":2}"#)).await;
    assert_eq!(
        raw.next_text_or_end().await,
        Seen::Text(json!({"type": "reply", "ref": 2, "ok": true, "data": {}}))
    );
    // A client's close frame is answered with a close frame.
    raw.send(&raw_frame(true, 0, 8, MASK, &1000u16.to_be_bytes())).await;
    assert_eq!(raw.next_text_or_end().await, Seen::Close(Some(1000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_bytes_after_the_upgrade_never_hurt_the_server() {
    let app = common::spawn_app();
    let mut watcher = app.ws().await;
    let start = watcher.subscribe("tasks").await["data"]["seq"].as_i64().unwrap();

    let mut runner = TestRunner::deterministic();
    let junk = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..120),
        // A plausible header, then junk.
        (0u8..16, any::<u8>(), prop::collection::vec(any::<u8>(), 0..60)).prop_map(|(op, len, rest)| [
            vec![0x80 | op, len],
            rest
        ]
        .concat()),
    ];
    let mut tasks = Vec::new();
    for i in 0..120 {
        let bytes = junk.new_tree(&mut runner).unwrap().current();
        let (addr, admin) = (app.addr, app.admin.clone());
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::open(addr, &admin).await;
            raw.send(&bytes).await;
            raw.send(&text(true, json!({"type": "ping", "ref": i}).to_string().as_bytes()))
                .await;
            // The junk may announce a payload still to come: then silence
            // is right, so only wait a little.
            let seen = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                loop {
                    match raw.next_text_or_end().await {
                        Seen::Text(v) if v["type"] == "error" => continue,
                        Seen::Text(v) if v["type"] == "reply" && v["ref"] == i => return "replied".to_string(),
                        Seen::Close(Some(c)) if [1002, 1007, 1009].contains(&c) => return format!("closed {c}"),
                        Seen::Eof => return "dropped".to_string(),
                        other => panic!("after {bytes:?}: {other:?}"),
                    }
                }
            })
            .await;
            seen.unwrap_or_else(|_| "waiting for more bytes".to_string())
        }));
        // The watcher's world goes on meanwhile.
        if i % 10 == 0 {
            app.create_task(&format!("during {i}")).await;
        }
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        *outcomes.entry(t.await.unwrap()).or_default() += 1;
    }
    let health = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for k in 0..12 {
        let ev = watcher.next_event().await;
        assert_eq!(ev["seq"], start + k + 1, "{ev}");
        assert_eq!(ev["event"], "task.created");
    }
    let r = watcher.request(json!({"type": "ping"})).await;
    assert_eq!(r["ok"], true, "{r}");
    eprintln!("120 sockets of junk: {outcomes:?}");
}
