//! The test harness: a real server on port 0 with a fresh database, and a small
//! WebSocket client that speaks the protocol as outside clients will.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use taskwire::Config;

/// How long any single await in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server started for one test, with its own database file.
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin: String,
    pub db_path: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), taskwire::StartError>>>,
}

/// Starts a server with the default settings.
pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

/// Starts a server after `tweak` adjusted its settings.
pub fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("data").join("taskwire.db");
    start_on(dir, db_path, tweak)
}

/// Starts a server on an existing database file.
pub fn spawn_app_on(db_path: PathBuf, tweak: impl FnOnce(&mut Config)) -> TestApp {
    start_on(tempfile::tempdir().expect("temp dir"), db_path, tweak)
}

fn start_on(dir: tempfile::TempDir, db_path: PathBuf, tweak: impl FnOnce(&mut Config)) -> TestApp {
    start_at(dir, db_path, "127.0.0.1:0".parse().unwrap(), tweak)
}

fn start_at(dir: tempfile::TempDir, db_path: PathBuf, addr: SocketAddr, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let _ = env_logger::builder().is_test(true).try_init();
    taskwire::db::sqlite_log::install();
    let admin = "tw_test_admin_token".to_string();
    let mut config = Config {
        db_path: db_path.to_string_lossy().into_owned(),
        admin_token: Some(admin.clone()),
        ..Config::default()
    };
    tweak(&mut config);
    let listener = taskwire::bind(addr).expect("bind");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(taskwire::run(listener, config, async move {
            let _ = stopped.await;
        }))
    });
    TestApp {
        addr,
        admin,
        db_path,
        dir,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// An HTTP client; requests carry the admin token unless told otherwise.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(WAIT).build().unwrap()
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http().get(self.url(path)).bearer_auth(&self.admin)
    }
    pub fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http().post(self.url(path)).bearer_auth(&self.admin).json(&body)
    }
    pub fn patch(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http().patch(self.url(path)).bearer_auth(&self.admin).json(&body)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http().delete(self.url(path)).bearer_auth(&self.admin)
    }

    /// A socket with the admin token, its hello already read.
    pub async fn ws(&self) -> Ws {
        self.ws_as(&self.admin).await
    }

    /// A socket with `token`, its hello already read.
    pub async fn ws_as(&self, token: &str) -> Ws {
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")
            .expect("connect");
        let mut ws = Ws {
            stream,
            backlog: VecDeque::new(),
            next_ref: 1,
            hello: Value::Null,
        };
        let hello = ws.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        ws.hello = hello;
        ws
    }

    /// Stops the server gracefully and waits for it.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("server ran");
        }
    }

    /// Waits for the server to stop by itself, and returns how it ended.
    pub fn wait_stopped(&mut self) -> Result<(), taskwire::StartError> {
        self.thread
            .take()
            .expect("the server was running")
            .join()
            .expect("server thread")
    }

    /// Stops the server and starts a new one on the same database file.
    /// Like `restart`, on the same port, for clients that know only the address.
    pub fn restart_same_port(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        start_at(dir, self.db_path.clone(), self.addr, tweak)
    }

    pub fn restart(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        start_on(dir, self.db_path.clone(), tweak)
    }

    /// Creates a task over REST and returns it.
    pub async fn create_task(&self, title: &str) -> Value {
        let res = self.post("/api/tasks", json!({ "title": title })).send().await.unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    /// Opens a separate SQLite connection on the file, as another process would.
    pub fn sqlite(&self) -> sqlite::Conn {
        sqlite::Conn::open(&self.db_path)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A second connection on the database file through diesel, independent of the
/// server's.
pub mod sqlite {
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    pub struct Conn(SqliteConnection);

    #[derive(QueryableByName)]
    struct One {
        #[diesel(sql_type = Text)]
        v: String,
    }
    #[derive(QueryableByName)]
    struct Num {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    impl Conn {
        pub fn open(path: &std::path::Path) -> Conn {
            taskwire::db::sqlite_log::install();
            Conn(SqliteConnection::establish(path.to_str().unwrap()).expect("open the file"))
        }
        /// One text value of a query, if a row came back.
        pub fn text(&mut self, sql: &str) -> Option<String> {
            diesel::sql_query(sql)
                .load::<One>(&mut self.0)
                .unwrap()
                .pop()
                .map(|r| r.v)
        }
        /// Runs a statement; the number of rows it changed.
        pub fn execute(&mut self, sql: &str) -> usize {
            diesel::sql_query(sql).execute(&mut self.0).unwrap()
        }
        /// One integer value of a query.
        pub fn int(&mut self, sql: &str) -> i64 {
            diesel::sql_query(sql)
                .load::<Num>(&mut self.0)
                .unwrap()
                .pop()
                .map(|r| r.n)
                .unwrap_or(0)
        }
    }
}

/// A protocol client: sends frames, matches replies by ref, keeps other frames
/// (events) in order for the test to read.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    backlog: VecDeque<Value>,
    next_ref: i64,
    pub hello: Value,
}

impl Ws {
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.to_string())).await.expect("send");
    }

    pub async fn send(&mut self, frame: &Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// The next text frame from the socket (not the backlog), as JSON.
    pub async fn recv(&mut self) -> Value {
        // One deadline for the whole wait: the server's pings must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("no frame within the wait")
                .expect("socket ended")
                .expect("socket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next frame that is not a reply: from the backlog, else the socket.
    pub async fn next_event(&mut self) -> Value {
        if let Some(v) = self.backlog.pop_front() {
            return v;
        }
        self.recv().await
    }

    /// Sends `frame` with a fresh ref and waits for its reply; frames that come
    /// meanwhile are kept for `next_event`.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        frame["ref"] = json!(r);
        self.send(&frame).await;
        self.reply_to(json!(r)).await
    }

    /// Waits for the reply with `reference`, keeping other frames.
    pub async fn reply_to(&mut self, reference: Value) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == "reply" && v["ref"] == reference {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    pub async fn subscribe(&mut self, topic: &str) -> Value {
        self.request(json!({"type": "subscribe", "topic": topic})).await
    }

    pub async fn resume(&mut self, topic: &str, epoch: &str, since: i64) -> Value {
        self.request(json!({"type": "subscribe", "topic": topic, "epoch": epoch, "since": since}))
            .await
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.request(json!({"type": "call", "method": method, "params": params}))
            .await
    }

    /// Like `call`, but panics unless the reply is ok; returns the whole reply.
    pub async fn call_ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert_eq!(r["ok"], true, "{r}");
        r
    }

    /// Waits for the socket's close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("no close within the wait")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// An event made by the test's admin token, without its `by` and `at`
/// (checked here), to compare with the rest of the frame.
pub fn authored_by_admin(ev: &Value) -> Value {
    let mut ev = ev.clone();
    let by = ev.as_object_mut().unwrap().remove("by").expect("an event has `by`");
    assert_eq!(by["kind"], "admin", "{by}");
    let at = ev.as_object_mut().unwrap().remove("at").expect("an event has `at`");
    assert!(at.as_str().is_some_and(|a| a.ends_with('Z')), "{at}");
    ev
}

// ---- helpers added for the issue 2 tests ----

impl TestApp {
    /// GET `path` as admin, asserting 200, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let res = self.get(path).send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET /api/changes?since=N` (and `topic` if given), asserting 200.
    pub async fn changes(&self, since: i64, topic: Option<&str>) -> Value {
        let mut path = format!("/api/changes?since={since}&limit=10000");
        if let Some(t) = topic {
            path.push_str(&format!("&topic={t}"));
        }
        self.get_json(&path).await
    }

    /// Creates a token of `role` as admin and returns its secret.
    pub async fn token(&self, role: &str, name: &str) -> String {
        let res = self
            .post("/api/tokens", json!({"role": role, "name": name}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token secret").to_string()
    }

    /// Creates an agent over REST and returns it (with its token).
    pub async fn create_agent(&self, name: &str) -> Value {
        let res = self.post("/api/agents", json!({ "name": name })).send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    /// The HTTP status of a WebSocket upgrade with these headers: 101 when the
    /// socket opened.
    pub async fn upgrade_status(&self, headers: &[(&str, &str)]) -> u16 {
        let mut req = self.ws_url().into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade timed out")
        {
            Ok((_, res)) => res.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
            Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
        }
    }
}

impl Ws {
    /// Waits for the replies to all of `refs`, in whatever order they come,
    /// keeping other frames for `next_event`; returns them in the order of `refs`.
    pub async fn replies_to(&mut self, refs: &[Value]) -> Vec<Value> {
        let mut got: Vec<Option<Value>> = vec![None; refs.len()];
        while got.iter().any(Option::is_none) {
            let v = self.recv().await;
            let slot = (v["type"] == "reply")
                .then(|| refs.iter().position(|r| *r == v["ref"]))
                .flatten();
            match slot {
                Some(i) => {
                    assert!(got[i].is_none(), "two replies to ref {}: {v}", refs[i]);
                    got[i] = Some(v);
                }
                None => self.backlog.push_back(v),
            }
        }
        got.into_iter().map(Option::unwrap).collect()
    }

    /// Takes the frames kept aside while waiting for replies.
    pub fn take_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// Reads frames (backlog first) until an event on `topic` with a seq of at
    /// least `seq`; returns every frame read, that one included.
    pub async fn events_until(&mut self, topic: &str, seq: i64) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let ev = self.next_event().await;
            let done = ev["topic"] == topic && ev["seq"].as_i64().is_some_and(|s| s >= seq);
            got.push(ev);
            if done {
                return got;
            }
        }
    }

    /// Sends a ping and waits for its reply, asserting it is ok.
    pub async fn ping(&mut self) {
        let r = self.request(json!({"type": "ping"})).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["data"], json!({}), "{r}");
    }
}

/// The state a client keeps for one subscription, rebuilt from the subscribe
/// reply and the events that follow, checking every rule of the contract on
/// the way.
#[derive(Debug, Clone)]
pub struct TopicState {
    pub topic: String,
    /// The position the state is at: the reply's seq, then each event's.
    pub seq: i64,
    /// The seq of the subscribe reply.
    pub start: i64,
    pub entities: std::collections::BTreeMap<i64, Value>,
    /// The events applied, in order (replayed ones included).
    pub events: Vec<Value>,
}

impl TopicState {
    /// The state of a fresh subscribe reply (with a snapshot).
    pub fn from_snapshot(reply: &Value) -> TopicState {
        assert_eq!(reply["ok"], true, "{reply}");
        let data = &reply["data"];
        let topic = data["topic"].as_str().expect("topic").to_string();
        let seq = data["seq"].as_i64().expect("seq");
        let mut entities = std::collections::BTreeMap::new();
        match &data["snapshot"] {
            Value::Array(items) => {
                let mut last = 0;
                for it in items {
                    let id = it["id"].as_i64().expect("id");
                    assert!(id > last, "snapshot of {topic} not ordered by id");
                    last = id;
                    entities.insert(id, it.clone());
                }
            }
            Value::Object(_) => {
                let it = &data["snapshot"];
                entities.insert(it["id"].as_i64().expect("id"), it.clone());
            }
            other => panic!("subscribe reply without a snapshot: {other} in {reply}"),
        }
        TopicState {
            topic,
            seq,
            start: seq,
            entities,
            events: Vec::new(),
        }
    }

    /// Applies a resumed reply's replayed events to this state.
    pub fn resume(&mut self, reply: &Value) {
        assert_eq!(reply["ok"], true, "{reply}");
        let data = &reply["data"];
        assert_eq!(data["topic"], self.topic.as_str(), "{reply}");
        assert!(data.get("snapshot").is_none(), "expected a replay: {reply}");
        let events = data["events"].as_array().expect("events").clone();
        for ev in &events {
            self.apply(ev);
        }
        let seq = data["seq"].as_i64().expect("seq");
        assert!(seq >= self.seq, "reply seq {seq} behind its events: {reply}");
        self.seq = seq;
    }

    /// Applies one event frame, asserting it belongs here, comes in order and
    /// makes sense against the state.
    pub fn apply(&mut self, ev: &Value) {
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(ev["topic"], self.topic.as_str(), "{ev}");
        let seq = ev["seq"].as_i64().unwrap_or_else(|| panic!("no seq: {ev}"));
        // A window's change may be several events (one in, one out), each
        // with the change's seq, one after the other.
        let same_change =
            self.topic.contains("limit=") && self.events.last().is_some_and(|e| e["seq"].as_i64() == Some(seq));
        assert!(
            seq > self.seq || same_change,
            "{}: event seq {seq} not after {} (duplicate or out of order): {ev}",
            self.topic,
            self.seq
        );
        self.seq = seq;
        let name = ev["event"].as_str().expect("event name");
        let data = &ev["data"];
        let id = data["id"].as_i64().expect("data.id");
        let changed: Vec<String> = ev["changed"]
            .as_array()
            .expect("changed")
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let mut changed_sorted = changed.clone();
        changed_sorted.sort();
        let kind = name.rsplit('.').next().unwrap();
        match kind {
            "created" => {
                assert!(
                    !self.entities.contains_key(&id),
                    "{}: created {id} twice: {ev}",
                    self.topic
                );
                assert_eq!(data["version"], 1, "{ev}");
                let mut all: Vec<String> = data
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "version" && *k != "updated_at")
                    .cloned()
                    .collect();
                all.sort();
                assert_eq!(changed_sorted, all, "changed of a create: {ev}");
                self.entities.insert(id, data.clone());
            }
            "updated" => {
                let before = self
                    .entities
                    .get(&id)
                    .unwrap_or_else(|| panic!("{}: update of unknown {id} (missed its create): {ev}", self.topic));
                assert_eq!(
                    data["version"].as_i64().unwrap(),
                    before["version"].as_i64().unwrap() + 1,
                    "{}: version did not grow by one (a missed change?): {ev}",
                    self.topic
                );
                let mut diff: Vec<String> = data
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, v)| *k != "version" && *k != "updated_at" && before.get(k.as_str()) != Some(v))
                    .map(|(k, _)| k.clone())
                    .collect();
                diff.sort();
                assert_eq!(changed_sorted, diff, "changed of an update: {ev}");
                self.entities.insert(id, data.clone());
            }
            "deleted" => {
                assert!(
                    self.entities.remove(&id).is_some(),
                    "{}: delete of unknown {id}: {ev}",
                    self.topic
                );
                assert_eq!(data, &json!({ "id": id }), "{ev}");
                assert!(changed.is_empty(), "{ev}");
            }
            // A filtered topic's: an entity begins or stops matching.
            "entered" => {
                assert!(
                    self.entities.insert(id, data.clone()).is_none(),
                    "{}: {id} entered twice: {ev}",
                    self.topic
                );
            }
            "left" => {
                assert!(
                    self.entities.remove(&id).is_some(),
                    "{}: {id} left but was not held: {ev}",
                    self.topic
                );
                assert_eq!(data, &json!({ "id": id }), "{ev}");
            }
            other => panic!("unknown event kind {other}: {ev}"),
        }
        self.events.push(ev.clone());
    }
}
