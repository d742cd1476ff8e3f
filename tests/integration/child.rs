//! The real binary as a child process, for the tests that kill, signal or starve
//! it, and a small protocol client that reports a lost connection instead of
//! panicking, since those tests cause lost connections on purpose.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The admin token every child server is started with.
pub const ADMIN: &str = "tw_child_admin_token";

/// How long one await may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A `taskwire serve` child process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub db: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary on `db` (port chosen by the OS) with `extra` flags.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        Server::spawn(Command::new(env!("CARGO_BIN_EXE_taskwire")), db, extra)
    }

    /// Starts the binary with `extra` flags and `env` set in its environment
    /// (for example jemalloc's options).
    pub fn start_with_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskwire"));
        cmd.envs(env.iter().copied());
        Server::spawn(cmd, db, extra)
    }

    /// Starts the binary through `sh -c`, so `shell_prefix` (for example
    /// `trap '' XFSZ;`) runs before it is exec'd.
    pub fn start_via_shell(db: &Path, extra: &[&str], shell_prefix: &str) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{shell_prefix} exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_taskwire"));
        Server::spawn(cmd, db, extra)
    }

    fn spawn(mut cmd: Command, db: &Path, extra: &[&str]) -> Server {
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .env("TASKWIRE_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "info")
            .env_remove("TASKWIRE_BIND")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the taskwire binary");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().expect("listen address in the log"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not log its address; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            addr,
            db: db.to_path_buf(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// Waits up to `limit` for the process to exit; `None` if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn proc_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    /// An HTTP client.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(WAIT).build().unwrap()
    }

    /// GET `path` as admin, asserting 200, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let res = self
            .http()
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status();
        let body: Value = res.json().await.expect("JSON body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A value of `/metrics` (the first sample whose line starts with `name `).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http()
            .get(self.url("/metrics"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        metric_value(&text, name)
    }

    /// Polls metric `name` until `ok` holds for its value, or panics after
    /// `within`; returns the value. Only for what cannot be awaited (a socket
    /// ended by the server, a close the client cannot read).
    pub async fn wait_metric(&self, name: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name).await;
            if ok(v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{name} was still {v} after {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A socket with the admin token, its hello read.
    pub async fn ws(&self) -> Client {
        Client::connect(self.addr, ADMIN)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A socket of `token` with a receive buffer of a few KB, its hello read, for
/// a client that will stop reading: what the server sends soon fills the
/// kernel's buffers.
pub async fn tiny_socket(addr: SocketAddr, token: &str) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let tcp = TcpStream::from_std(socket.into()).unwrap();
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (stream, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
        .await
        .expect("upgrade");
    Client::handshaken(stream).await.expect("hello")
}

/// A field of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The value of metric `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// How a socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A close frame, with its code if it had one.
    Closed(Option<u16>),
    /// The connection ended or failed without a close frame.
    Lost(String),
}

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client for a server that may vanish.
pub struct Client {
    pub stream: WsStream,
    pub hello: Value,
    backlog: VecDeque<Value>,
    next_ref: i64,
}

impl Client {
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Client, String> {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Client::handshaken(stream).await
    }

    /// Reads the hello of a socket that just opened.
    pub async fn handshaken(stream: WsStream) -> Result<Client, String> {
        let mut c = Client {
            stream,
            hello: Value::Null,
            backlog: VecDeque::new(),
            next_ref: 1,
        };
        let hello = c.recv().await.map_err(|e| format!("no hello: {e:?}"))?;
        if hello["type"] != "hello" {
            return Err(format!("first frame is not a hello: {hello}"));
        }
        c.hello = hello;
        Ok(c)
    }

    pub fn epoch(&self) -> String {
        self.hello["epoch"].as_str().expect("hello epoch").to_string()
    }

    pub async fn send(&mut self, frame: &Value) -> Result<(), End> {
        self.stream
            .send(Message::Text(frame.to_string()))
            .await
            .map_err(|e| End::Lost(e.to_string()))
    }

    /// The next text frame from the socket (not the backlog). Panics if none
    /// comes within [`WAIT`].
    pub async fn recv(&mut self) -> Result<Value, End> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("no frame within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("server sent JSON")),
                Some(Ok(Message::Close(f))) => return Err(End::Closed(f.map(|f| f.code.into()))),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(End::Lost(e.to_string())),
                None => return Err(End::Lost("stream ended".into())),
            }
        }
    }

    /// The next frame that is not a reply: the backlog first.
    pub async fn next_event(&mut self) -> Result<Value, End> {
        match self.backlog.pop_front() {
            Some(v) => Ok(v),
            None => self.recv().await,
        }
    }

    /// Sends `frame` with a fresh ref and waits for its reply, keeping other
    /// frames for `next_event`.
    pub async fn request(&mut self, mut frame: Value) -> Result<Value, End> {
        let r = self.next_ref;
        self.next_ref += 1;
        frame["ref"] = json!(r);
        self.send(&frame).await?;
        loop {
            let v = self.recv().await?;
            if v["type"] == "reply" && v["ref"] == r {
                return Ok(v);
            }
            self.backlog.push_back(v);
        }
    }

    pub async fn subscribe(&mut self, topic: &str) -> Result<Value, End> {
        self.request(json!({"type": "subscribe", "topic": topic})).await
    }

    pub async fn resume(&mut self, topic: &str, epoch: &str, since: i64) -> Result<Value, End> {
        self.request(json!({"type": "subscribe", "topic": topic, "epoch": epoch, "since": since}))
            .await
    }

    pub async fn call(&mut self, method: &str, params: Value, op_id: Option<&str>) -> Result<Value, End> {
        let mut frame = json!({"type": "call", "method": method, "params": params});
        if let Some(op) = op_id {
            frame["op_id"] = json!(op);
        }
        self.request(frame).await
    }

    /// Reads until the socket ends; returns how it ended and the text frames
    /// read on the way.
    pub async fn read_to_end(&mut self) -> (End, Vec<Value>) {
        let mut frames: Vec<Value> = self.backlog.drain(..).collect();
        loop {
            match self.recv().await {
                Ok(v) => frames.push(v),
                Err(end) => return (end, frames),
            }
        }
    }
}
