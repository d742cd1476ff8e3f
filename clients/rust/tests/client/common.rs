//! A real taskwire server in-process (restartable on the same port), REST
//! helpers, and a TCP proxy between client and server that can refuse
//! connections, cut them, or swallow the server's replies.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// How long any single await in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
pub const ADMIN: &str = "tw_client_test_admin";

pub struct Server {
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    _dir: tempfile::TempDir,
    tweak: fn(&mut taskwire::Config),
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), taskwire::StartError>>>,
}

pub fn start() -> Server {
    start_with(|_| {})
}

/// A server on port 0 after `tweak` adjusted its settings.
pub fn start_with(tweak: fn(&mut taskwire::Config)) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("taskwire.db");
    let mut s = Server {
        addr: "127.0.0.1:0".parse().unwrap(),
        db_path,
        _dir: dir,
        tweak,
        stop: None,
        thread: None,
    };
    s.run();
    s
}

impl Server {
    fn run(&mut self) {
        taskwire::db::sqlite_log::install();
        let mut config = taskwire::Config {
            db_path: self.db_path.to_string_lossy().into_owned(),
            admin_token: Some(ADMIN.into()),
            ..taskwire::Config::default()
        };
        (self.tweak)(&mut config);
        let listener = taskwire::bind(self.addr).expect("bind");
        self.addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.thread = Some(std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(taskwire::run(listener, config, async move {
                let _ = stopped.await;
            }))
        }));
    }

    /// Stops gracefully (sockets close 1001) and waits for it.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("server ran");
        }
    }

    /// Starts again on the same database and port.
    pub fn start_again(&mut self) {
        self.run();
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(WAIT).build().unwrap()
    }

    /// A REST request as admin; the answer's JSON (Null for no body).
    pub async fn rest(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://{}{}", self.addr, path);
        let mut req = self.http().request(method.parse().unwrap(), url).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("REST request");
        assert!(res.status().is_success(), "{method} {path}: {}", res.status());
        res.json().await.unwrap_or(Value::Null)
    }

    pub async fn create_task(&self, title: &str) -> Value {
        self.rest("POST", "/api/tasks", Some(json!({ "title": title }))).await
    }

    pub async fn tasks(&self) -> Vec<Value> {
        self.rest("GET", "/api/tasks", None).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// An agent and its token: (agent id, token id, secret).
    pub async fn agent(&self, name: &str) -> (i64, i64, String) {
        let agent = self.rest("POST", "/api/agents", Some(json!({ "name": name }))).await;
        let token = self
            .rest(
                "POST",
                "/api/tokens",
                Some(json!({"role": "agent", "name": format!("{name}-key"), "agent_id": agent["id"]})),
            )
            .await;
        (
            agent["id"].as_i64().unwrap(),
            token["id"].as_i64().unwrap(),
            token["token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn member(&self, name: &str) -> (i64, String) {
        let token = self
            .rest("POST", "/api/tokens", Some(json!({"role": "member", "name": name})))
            .await;
        (
            token["id"].as_i64().unwrap(),
            token["token"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of a server, for faults the server cannot be asked
/// to make: `down` refuses new connections, `hold` swallows what the server
/// sends, `cut` drops every open connection.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (cut, _) = broadcast::channel(4);
        let p = Proxy {
            addr: listener.local_addr().unwrap(),
            down: Arc::default(),
            hold: Arc::default(),
            cut,
        };
        let me = p.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if me.down.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection end
                }
                let me = me.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut cut = me.cut.subscribe();
                    tokio::select! {
                        _ = pipe(client, server, me.hold.clone()) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        p
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn set_hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Drops every open connection (no close frame: a lost network).
    pub fn cut(&self) {
        let _ = self.cut.send(());
    }
}

async fn pipe(client: TcpStream, server: TcpStream, hold: Arc<AtomicBool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16384];
        while let Ok(n @ 1..) = cr.read(&mut buf).await {
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16384];
        while let Ok(n @ 1..) = sr.read(&mut buf).await {
            if hold.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Waits for `f` to hold, checking every 20 ms, for at most WAIT.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
