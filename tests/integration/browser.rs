//! Browser tests: the pages in headless Chromium, driven through chromedriver
//! with fantoccini, against a real server started by the test.
//!
//! They need Debian's `chromium` and `chromium-driver`, so they are ignored by
//! default; run them with `cargo test --test browser -- --ignored`. They share
//! one lock, so at most one test drives browsers at a time (two cores).
//!
//! Waits poll a DOM condition (a JavaScript expression) until it holds; no test
//! sleeps for a fixed time to let something happen.

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A change made anywhere must show in the other pages within this.
const BLINK: Duration = Duration::from_secs(1);

/// At most one test drives browsers at a time.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- chromedriver and browsers ----

/// A chromedriver process on a free port; its sessions are ended and the
/// process killed when it is dropped, even if the test failed.
struct Driver {
    child: Child,
    port: u16,
    sessions: Mutex<Vec<String>>,
}

impl Driver {
    fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: apt-get install -y chromium chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            port,
            sessions: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        while http_raw(port, "GET", "/status").is_none_or(|r| !r.starts_with("HTTP/1.1 200")) {
            assert!(started.elapsed() < WAIT, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    /// A fresh headless Chromium with its own profile, `width` x `height`.
    async fn browser(&self, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({"binary": CHROMIUM, "args": args}));
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session");
        let session = client.session_id().await.unwrap().expect("session id");
        self.sessions.lock().unwrap().push(session.clone());
        // Size the window so the page itself (the viewport) is width x height.
        client.set_window_size(width, height).await.unwrap();
        let inner = client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .unwrap();
        let (iw, ih) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
        if (iw, ih) != (width, height) {
            client
                .set_window_size(width + width.saturating_sub(iw), height + height.saturating_sub(ih))
                .await
                .unwrap();
        }
        Browser {
            client,
            session,
            driver_port: self.port,
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for s in self.sessions.lock().unwrap().drain(..) {
            let _ = http_raw(self.port, "DELETE", &format!("/session/{s}"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 request to chromedriver, for use where no runtime is
/// at hand (startup and drop). Returns the start of the response.
fn http_raw(port: u16, method: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // The status line is all any caller reads; chromedriver may keep the
    // connection open, so read what came rather than to the end.
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

struct Browser {
    client: Client,
    session: String,
    driver_port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens a browser session on the server as a person does: the admin
    /// token typed into the login form, which posts it and sets the cookie.
    async fn login(&self, app: &TestApp) {
        self.goto(app, "/login").await;
        self.type_into("#token", &app.admin).await;
        self.find("button[type=submit]").await.click().await.unwrap();
        self.wait_for_path("/", "the login redirects to the board").await;
    }

    /// Waits until the page's path is `path`: a form's post and redirect
    /// finish after the click returns.
    async fn wait_for_path(&self, path: &str, what: &str) {
        let started = Instant::now();
        loop {
            let url = self.client.current_url().await.unwrap();
            if url.path() == path {
                return;
            }
            assert!(started.elapsed() < WAIT, "{what}: still at {url}");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    async fn goto(&self, app: &TestApp, path: &str) {
        self.client.goto(&app.url(path)).await.expect("navigate");
    }

    /// Runs `expr` in the page and returns its JSON value.
    async fn js(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("script {expr}: {e}"))
    }

    /// Polls until `expr` is truthy in the page; returns how long it took.
    async fn wait_for(&self, what: &str, expr: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let v = self.js(&format!("!!({expr})")).await;
            if v == json!(true) {
                return started.elapsed();
            }
            if started.elapsed() > within {
                let state = self.js("document.querySelector('#conn')?.dataset.state").await;
                panic!("timed out after {within:?} waiting for {what} (connection {state}): {expr}");
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// Waits for the connection indicator to say live and the page to render.
    async fn wait_live(&self) {
        self.wait_for(
            "the page to be live",
            "document.querySelector('#conn').dataset.state === 'live' && !document.querySelector('[aria-busy=true]')",
            WAIT,
        )
        .await;
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Replaces the text of an input with `text` by typing, as a person would.
    async fn type_into(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// The browser's console messages so far (chromedriver's log endpoint).
    async fn console(&self) -> Vec<Value> {
        let res = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/session/{}/se/log",
                self.driver_port, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("chromedriver log");
        let body: Value = res.json().await.unwrap();
        body["value"].as_array().cloned().unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

// ---- a server on a chosen address ----

/// A server on `addr` (port 0 for any) over an existing database file, stopped
/// gracefully on drop. For restarting on the same address as a `TestApp`.
struct Server {
    addr: SocketAddr,
    admin: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), taskwire::StartError>>>,
}

impl Server {
    fn start(addr: SocketAddr, db_path: &Path, admin: &str) -> Server {
        let config = Config {
            db_path: db_path.to_string_lossy().into_owned(),
            admin_token: Some(admin.to_string()),
            ..Config::default()
        };
        let listener = taskwire::bind(addr).expect("bind the address again");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(taskwire::run(listener, config, async move {
                let _ = stopped.await;
            }))
        });
        Server {
            addr,
            admin: admin.to_string(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("server ran");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- helpers ----

/// A JavaScript expression: the board card of task `id`.
fn card(id: i64) -> String {
    format!("document.querySelector('.card[data-task-id=\"{id}\"]')")
}

/// A JavaScript expression: true when a card titled `title` is on the board.
fn card_titled(title: &str) -> String {
    format!(
        "[...document.querySelectorAll('.card .card-title')].some(a => a.textContent === {})",
        json!(title)
    )
}

async fn rest(req: reqwest::RequestBuilder) -> Value {
    let res = req.send().await.expect("REST request");
    let status = res.status();
    let body: Value = if status == 204 {
        Value::Null
    } else {
        res.json().await.expect("JSON body")
    };
    assert!(status.is_success(), "REST {status}: {body}");
    body
}

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().expect("an id")
}

// ---- the tests ----

/// Two browsers on the board and one on a task page: a REST write, a socket
/// call and an edit in a page each show in the others within a second.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn changes_show_in_every_page_within_a_second() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let task = app.create_task("Watch me").await;
    let tid = id_of(&task);
    let agent = rest(app.post("/api/agents", json!({"name": "builder-1"}))).await;
    let aid = id_of(&agent);

    let driver = Driver::start();
    let one = driver.browser(1280, 800).await;
    let two = driver.browser(1280, 800).await;
    let page = driver.browser(1280, 800).await;
    for b in [&one, &two, &page] {
        b.login(&app).await;
    }
    page.goto(&app, &format!("/tasks/{tid}")).await;
    for b in [&one, &two, &page] {
        b.wait_live().await;
    }
    let boards = [&one, &two];

    // A REST write: a new task appears on both boards.
    let created = rest(app.post("/api/tasks", json!({"title": "Made over REST", "priority": 2}))).await;
    for b in boards {
        let took = b
            .wait_for("the REST-created card", &card_titled("Made over REST"), BLINK)
            .await;
        eprintln!("REST create seen after {took:?}");
    }
    assert!(
        one.js(&format!("{}.closest('.column').dataset.status", card(id_of(&created))))
            .await
            == "todo"
    );

    // A REST edit of the watched task: boards and its page.
    rest(app.patch(&format!("/api/tasks/{tid}"), json!({"title": "Renamed over REST"}))).await;
    for b in boards {
        b.wait_for("the renamed card", &card_titled("Renamed over REST"), BLINK)
            .await;
    }
    page.wait_for(
        "the task page title",
        "document.querySelector('#task-title').textContent === 'Renamed over REST'",
        BLINK,
    )
    .await;

    // A socket call: status change moves the card and shows on the task page;
    // a heartbeat shows in the agents panel.
    let mut ws = app.ws().await;
    ws.call_ok(
        "task.update",
        json!({"id": tid, "patch": {"status": "review", "assignee_id": aid}}),
    )
    .await;
    for b in boards {
        b.wait_for(
            "the card in the review column",
            &format!("{}?.closest('.column')?.dataset.status === 'review'", card(tid)),
            BLINK,
        )
        .await;
        b.wait_for(
            "the card's assignee",
            &format!(
                "{}.querySelector('.assignee').textContent.includes('builder-1')",
                card(tid)
            ),
            BLINK,
        )
        .await;
    }
    page.wait_for(
        "the task page status",
        "document.querySelector('#v-status').textContent === 'Review'",
        BLINK,
    )
    .await;
    ws.call_ok(
        "agent.heartbeat",
        json!({"id": aid, "status": "busy", "current_task_id": tid}),
    )
    .await;
    let agent_li = format!("document.querySelector('.agent[data-agent-id=\"{aid}\"]')");
    for b in boards {
        b.wait_for(
            "the busy agent",
            &format!(
                "{agent_li}.querySelector('.agent-status').classList.contains('status-busy') && \
                 {agent_li}.querySelector('.agent-status .label').textContent === 'busy' && \
                 {agent_li}.querySelector('.agent-task a').getAttribute('href') === '/tasks/{tid}' && \
                 /last heartbeat (just now|\\d+ s ago)/.test({agent_li}.querySelector('time').textContent)"
            ),
            BLINK,
        )
        .await;
    }

    // An edit in a page: a task created from board one, by keyboard, shows on board two.
    one.type_into("#new-title", "Made in page one\u{e007}").await;
    let started = Instant::now();
    two.wait_for("the page-created card", &card_titled("Made in page one"), BLINK)
        .await;
    eprintln!("page create seen after {:?}", started.elapsed());
    one.wait_for(
        "the created message",
        "document.querySelector('#create-msg').textContent.startsWith('Created')",
        WAIT,
    )
    .await;

    // An edit on the task page shows on both boards.
    page.type_into("#f-title", "Edited on its page").await;
    page.find("#f-status").await.select_by_value("done").await.unwrap();
    page.find("#save").await.click().await.unwrap();
    let started = Instant::now();
    for b in boards {
        b.wait_for(
            "the page edit on the board",
            &format!(
                "{c}?.querySelector('.card-title').textContent === 'Edited on its page' && \
                 {c}.closest('.column').dataset.status === 'done'",
                c = card(tid)
            ),
            BLINK,
        )
        .await;
    }
    eprintln!("task page edit seen after {:?}", started.elapsed());
    page.wait_for(
        "the saved message",
        "document.querySelector('#edit-msg').textContent.startsWith('Saved')",
        WAIT,
    )
    .await;
    let stored = rest(app.get(&format!("/api/tasks/{tid}"))).await;
    assert_eq!(stored["title"], "Edited on its page");
    assert_eq!(stored["status"], "done");
}

/// Stopping the server and starting it again on the same file: every page
/// shows reconnecting, then catches up, with the changes made while it was
/// down, and no reload.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn pages_reconnect_and_catch_up_after_a_restart() {
    let _one = BROWSERS.lock().await;
    let mut app = spawn_app();
    let task = app.create_task("Before the restart").await;
    let tid = id_of(&task);
    let agent = rest(app.post("/api/agents", json!({"name": "runner"}))).await;
    let aid = id_of(&agent);

    let driver = Driver::start();
    let board = driver.browser(1280, 800).await;
    let task_page = driver.browser(1280, 800).await;
    let agent_page = driver.browser(1280, 800).await;
    for b in [&board, &task_page, &agent_page] {
        b.login(&app).await;
    }
    task_page.goto(&app, &format!("/tasks/{tid}")).await;
    agent_page.goto(&app, &format!("/agents/{aid}")).await;
    let pages = [&board, &task_page, &agent_page];
    for b in pages {
        b.wait_live().await;
        // A marker that a reload would wipe, and a record of the states shown.
        b.js("(window.__marker = 'kept', window.__states = [], \
              window.taskwire.on('state', s => window.__states.push(s.state)), true)")
            .await;
    }

    let addr = app.addr;
    let db_path = app.db_path.clone();
    app.stop();
    for b in pages {
        b.wait_for(
            "the reconnecting indicator",
            "document.querySelector('#conn').dataset.state === 'reconnecting' && \
             /^Reconnecting( in \\d+ s|…)$/.test(document.querySelector('#conn .conn-text').textContent)",
            WAIT,
        )
        .await;
    }

    board.screenshot("reconnecting.png").await;

    // While the pages' server is down, changes land in the same file through a
    // server the pages cannot reach.
    let (made, task_seq) = {
        let mut other = Server::start("127.0.0.1:0".parse().unwrap(), &db_path, &app.admin);
        let http = reqwest::Client::new();
        let made = rest(
            http.post(other.url("/api/tasks"))
                .bearer_auth(&other.admin)
                .json(&json!({"title": "Made while down"})),
        )
        .await;
        let res = http
            .patch(other.url(&format!("/api/tasks/{tid}")))
            .bearer_auth(&other.admin)
            .json(&json!({"title": "Changed while down", "assignee_id": aid, "status": "in_progress"}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        let seq: i64 = res.headers()["taskwire-seq"].to_str().unwrap().parse().unwrap();
        let res = http
            .patch(other.url(&format!("/api/agents/{aid}")))
            .bearer_auth(&other.admin)
            .json(&json!({"meta": {"note": "patched while down"}}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        other.stop();
        (made, seq)
    };
    for b in pages {
        assert_eq!(
            b.js("document.querySelector('#conn').dataset.state").await,
            "reconnecting",
            "the pages cannot have caught up yet"
        );
    }

    let _again = Server::start(addr, &db_path, &app.admin);
    // The backoff may have grown to several seconds while the server was down.
    let reconnect = Duration::from_secs(40);
    board
        .wait_for(
            "the board to catch up",
            &format!(
                "{} && {}?.querySelector('.card-title').textContent === 'Changed while down' && \
                 {}.closest('.column').dataset.status === 'in_progress'",
                card_titled("Made while down"),
                card(tid),
                card(tid)
            ),
            reconnect,
        )
        .await;
    task_page
        .wait_for(
            "the task page to catch up",
            "document.querySelector('#task-title').textContent === 'Changed while down' && \
             document.querySelector('#f-title').value === 'Changed while down'",
            reconnect,
        )
        .await;
    agent_page
        .wait_for(
            "the agent page to catch up",
            &format!(
                "document.querySelector('#assigned li[data-task-id=\"{tid}\"]') && \
                 document.querySelector('#agent-meta').textContent.includes('patched while down')"
            ),
            reconnect,
        )
        .await;
    for b in pages {
        b.wait_live().await;
        assert_eq!(b.js("window.__marker").await, "kept", "the page was not reloaded");
        let states = b.js("window.__states").await;
        let states: Vec<&str> = states.as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let pos = |s: &str| states.iter().position(|x| *x == s);
        let (r, c, l) = (pos("reconnecting"), pos("catching_up"), pos("live"));
        assert!(
            r.is_some() && c.is_some() && l.is_some() && r < c && c < l,
            "reconnecting, then catching up, then live: {states:?}"
        );
        // The indicator shows the newest change the page saw, made while down.
        let seen = b
            .js("Number(document.querySelector('#conn .conn-last').dataset.seq)")
            .await;
        assert!(
            seen.as_i64().unwrap() >= task_seq,
            "last change seen {seen}, want >= {task_seq}"
        );
    }
    assert!(id_of(&made) > tid);
}

/// A conflicting edit is shown as a conflict, and the other person's change
/// is kept.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn a_conflicting_edit_is_shown_and_theirs_is_kept() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let task = app.create_task("Shared task").await;
    let tid = id_of(&task);

    let driver = Driver::start();
    let me = driver.browser(1280, 800).await;
    let them = driver.browser(1280, 800).await;
    for b in [&me, &them] {
        b.login(&app).await;
        b.goto(&app, &format!("/tasks/{tid}")).await;
        b.wait_live().await;
        b.wait_for(
            "the edit form",
            "!document.querySelector('#edit-fieldset').disabled && document.querySelector('#f-title').value === 'Shared task'",
            WAIT,
        )
        .await;
    }

    // Both start editing version 1; they save first.
    me.type_into("#f-title", "My title").await;
    them.type_into("#f-title", "Their title").await;
    them.find("#f-priority").await.select_by_value("3").await.unwrap();
    them.find("#save").await.click().await.unwrap();
    them.wait_for(
        "their save",
        "document.querySelector('#edit-msg').textContent === 'Saved as version 2.'",
        WAIT,
    )
    .await;
    // My page shows their version beside my unsaved edit, and warns.
    me.wait_for(
        "their change on my page",
        "document.querySelector('#task-title').textContent === 'Their title' && \
         document.querySelector('#f-title').value === 'My title' && \
         !document.querySelector('#edit-note').hidden",
        BLINK,
    )
    .await;

    me.find("#save").await.click().await.unwrap();
    me.wait_for(
        "the conflict",
        "!document.querySelector('#conflict').hidden && \
         document.querySelector('#conflict-text').textContent.includes('version 1') && \
         document.querySelector('#conflict-text').textContent.includes('version 2') && \
         document.querySelector('#conflict-mine').textContent.includes('My title')",
        WAIT,
    )
    .await;
    // Their version is what the page shows and what the form now holds.
    me.wait_for(
        "their version in the form",
        "document.querySelector('#f-title').value === 'Their title' && \
         document.querySelector('#f-priority').value === '3' && \
         document.querySelector('#task-title').textContent === 'Their title' && \
         document.querySelector('#v-version').textContent === '2'",
        WAIT,
    )
    .await;
    me.screenshot("conflict.png").await;
    let stored = rest(app.get(&format!("/api/tasks/{tid}"))).await;
    assert_eq!(stored["title"], "Their title");
    assert_eq!(stored["priority"], 3);
    assert_eq!(stored["version"], 2);
    them.wait_for(
        "nothing changed on their page",
        "document.querySelector('#task-title').textContent === 'Their title'",
        WAIT,
    )
    .await;

    // Editing again on top of their version works.
    me.find("#conflict-reapply").await.click().await.unwrap();
    me.wait_for(
        "my edit back in the form",
        "document.querySelector('#f-title').value === 'My title' && document.querySelector('#conflict').hidden",
        WAIT,
    )
    .await;
    me.find("#save").await.click().await.unwrap();
    them.wait_for(
        "my later save on their page",
        "document.querySelector('#task-title').textContent === 'My title' && \
         document.querySelector('#v-priority').textContent === 'P3 urgent'",
        BLINK,
    )
    .await;

    // A deleted task says so.
    rest(app.delete(&format!("/api/tasks/{tid}"))).await;
    for b in [&me, &them] {
        b.wait_for(
            "the deleted notice",
            "!document.querySelector('#notice').hidden && \
             document.querySelector('#notice').textContent.includes('deleted') && \
             document.querySelector('#edit-fieldset').disabled",
            BLINK,
        )
        .await;
    }
}

/// A login link in a real browser: the button logs in (the browser's POST
/// carries an Origin the server accepts), the same link a second time is
/// refused with the reason, and a form on another origin cannot log in.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn a_login_link_logs_a_browser_in_once() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let made = rest(
        app.http()
            .post(app.url("/api/tokens/1/login-code"))
            .bearer_auth(&app.admin),
    )
    .await;
    let link = made["url"].as_str().expect("a link").to_string();
    let path = link
        .strip_prefix(&format!("http://{}", app.addr))
        .expect("a link to this server");

    let driver = Driver::start();
    let b = driver.browser(1280, 800).await;
    b.goto(&app, path).await;
    b.find("button[type=submit]").await.click().await.unwrap();
    b.wait_for_path("/", "the link's button leads to the board").await;
    b.wait_live().await;

    // The link from history: the page shows, the button is refused.
    let other = driver.browser(1280, 800).await;
    other.goto(&app, path).await;
    other.find("button[type=submit]").await.click().await.unwrap();
    other
        .wait_for(
            "the refusal",
            "document.querySelector('[role=alert]')?.textContent.includes('already used')",
            WAIT,
        )
        .await;
    other.goto(&app, "/").await;
    other
        .wait_for(
            "the login link of a browser without a session",
            "!document.querySelector('#conn .conn-login').hidden",
            WAIT,
        )
        .await;

    // A page elsewhere posting the admin token: refused, no session.
    let forged = format!(
        "data:text/html,<form method=post action=\"{}\"><input name=token value=\"{}\"></form>",
        app.url("/login"),
        app.admin
    );
    other.client.goto(&forged).await.expect("a page of another origin");
    other.js("(document.forms[0].submit(), true)").await;
    other
        .wait_for(
            "the refusal of a cross-site login",
            "document.querySelector('[role=alert]')?.textContent.includes('posted from a page of this server')",
            WAIT,
        )
        .await;
    other.goto(&app, "/").await;
    other
        .wait_for(
            "still no session",
            "!document.querySelector('#conn .conn-login').hidden",
            WAIT,
        )
        .await;
}

/// The pages load everything from their own origin, with no inline script or
/// style, and log no console error.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn pages_use_only_their_origin_and_log_no_errors() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let task = app.create_task("Origin check").await;
    let agent = rest(app.post("/api/agents", json!({"name": "checker"}))).await;
    let origin = format!("http://{}", app.addr);

    let driver = Driver::start();
    let b = driver.browser(1280, 800).await;
    b.login(&app).await;
    for path in [
        "/".to_string(),
        format!("/tasks/{}", id_of(&task)),
        format!("/agents/{}", id_of(&agent)),
    ] {
        b.goto(&app, &path).await;
        b.wait_live().await;
        if path == "/" {
            b.type_into("#new-title", "Typed in the check\u{e007}").await;
            b.wait_for("the new card", &card_titled("Typed in the check"), WAIT)
                .await;
        }
        let urls = b
            .js("performance.getEntries().filter(e => 'initiatorType' in e || e.entryType === 'navigation').map(e => e.name)")
            .await;
        let urls: Vec<String> = urls
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u.as_str().map(String::from))
            .collect();
        assert!(urls.len() >= 5, "{path}: the page, its CSS and modules: {urls:?}");
        for u in &urls {
            assert!(u.starts_with(&origin), "{path} loaded {u} from another origin");
        }
        let inline = b
            .js("document.querySelectorAll('script:not([src]), style, [style]').length")
            .await;
        assert_eq!(inline, 0, "{path} has inline script or style");
        let unlabelled = b
            .js("[...document.querySelectorAll('input, select, textarea')].filter(e => !e.labels || e.labels.length === 0).length")
            .await;
        assert_eq!(unlabelled, 0, "{path} has a form control without a label");
        let logs = b.console().await;
        let bad: Vec<&Value> = logs
            .iter()
            .filter(|l| matches!(l["level"].as_str(), Some("SEVERE" | "WARNING")))
            .collect();
        assert!(bad.is_empty(), "{path}: console errors {bad:#?}");
        // The log channel itself works: an error written now is seen.
        b.js("(console.error('probe from the test'), true)").await;
        let probe = b.console().await;
        assert!(
            probe
                .iter()
                .any(|l| l["level"] == "SEVERE"
                    && l["message"].as_str().is_some_and(|m| m.contains("probe from the test"))),
            "chromedriver returned no console log: {probe:?}"
        );
    }

    // A browser without a session cannot open the socket: the page keeps
    // trying and offers the login page.
    let stranger = driver.browser(1280, 800).await;
    stranger.goto(&app, "/").await;
    stranger
        .wait_for(
            "the login link",
            "document.querySelector('#conn').dataset.state === 'connecting' && \
             !document.querySelector('#conn .conn-login').hidden",
            WAIT,
        )
        .await;
    assert_eq!(stranger.js("document.querySelectorAll('.card').length").await, 0);
}

/// Screenshots of the board, a task page and an agent page, at 1280x800 and at
/// phone width, for docs/screenshots/ and the README.
#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn screenshots_of_the_pages() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let agents = [
        ("builder-1", "busy"),
        ("builder-2", "idle"),
        ("reviewer", "busy"),
        ("docs-bot", "error"),
    ];
    let mut agent_ids = Vec::new();
    for (name, _) in agents {
        let a = rest(app.post(
            "/api/agents",
            json!({"name": name, "meta": {"kind": name.split('-').next(), "host": "demo-42", "version": "0.1.0"}}),
        ))
        .await;
        agent_ids.push(id_of(&a));
    }
    let tasks = [
        ("Fix login redirect loop", "in_progress", 3, Some(0)),
        ("Add rate limit headers to REST", "todo", 2, None),
        ("Write the getting started guide", "review", 1, Some(2)),
        ("Upgrade the SQLite bundle", "done", 1, Some(1)),
        ("Paginate the changes endpoint", "todo", 1, None),
        ("Show agent meta on the agent page", "blocked", 2, Some(3)),
        ("Reduce memory per idle socket", "todo", 0, None),
        ("Document the close codes", "done", 0, Some(2)),
        ("Retry calls with the same op_id", "in_progress", 2, Some(2)),
        ("Benchmark group commit sizes", "todo", 3, None),
        ("Keyboard shortcuts for the board", "review", 0, Some(1)),
        ("Prune the change log nightly", "done", 1, Some(0)),
        ("Alert when an agent goes offline", "todo", 1, None),
    ];
    let mut first = 0;
    for (title, status, priority, who) in tasks {
        let t = rest(app.post(
            "/api/tasks",
            json!({
                "title": title, "status": status, "priority": priority,
                "assignee_id": who.map(|i: usize| agent_ids[i]),
                "description": "Clients reconnect on their own. This task makes sure the page says what it is doing while it does.",
            }),
        ))
        .await;
        if first == 0 {
            first = id_of(&t);
        }
    }
    for (i, (_, status)) in agents.iter().enumerate() {
        let current = match i {
            0 => json!(first),
            2 => json!(first + 8),
            _ => Value::Null,
        };
        rest(app.post(
            &format!("/api/agents/{}/heartbeat", agent_ids[i]),
            json!({"status": status, "current_task_id": current}),
        ))
        .await;
    }

    let driver = Driver::start();
    let b = driver.browser(1280, 800).await;
    b.login(&app).await;
    b.wait_live().await;
    b.wait_for("the board", &card_titled("Alert when an agent goes offline"), WAIT)
        .await;
    b.screenshot("overview.png").await;

    b.goto(&app, &format!("/tasks/{first}")).await;
    b.wait_live().await;
    b.type_into("#f-title", "Fix login redirect loop on Safari").await;
    b.wait_for(
        "the dirty form",
        "document.querySelector('#edit-form').classList.contains('dirty')",
        WAIT,
    )
    .await;
    b.screenshot("task.png").await;

    b.goto(&app, &format!("/agents/{}", agent_ids[0])).await;
    b.wait_live().await;
    b.wait_for(
        "the assigned tasks",
        "document.querySelectorAll('#assigned li[data-task-id]').length === 2",
        WAIT,
    )
    .await;
    b.screenshot("agent.png").await;

    let phone = driver.browser(390, 844).await;
    phone.login(&app).await;
    phone.wait_live().await;
    let width = phone.js("document.documentElement.clientWidth").await;
    assert!(width.as_i64().unwrap() <= 400, "phone width: {width}");
    let overflow = phone
        .js("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        .await;
    assert_eq!(overflow, false, "no sideways scrolling at phone width");
    phone.screenshot("overview-phone.png").await;
    phone.goto(&app, &format!("/tasks/{first}")).await;
    phone.wait_live().await;
    let overflow = phone
        .js("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        .await;
    assert_eq!(overflow, false, "no sideways scrolling at phone width");
    phone.screenshot("task-phone.png").await;

    // The board of a demo server, with its simulated agents at work.
    let demo = spawn_app_with(|c| c.demo = true);
    b.login(&demo).await;
    b.wait_live().await;
    b.wait_for(
        "the demo agents at work",
        "document.querySelectorAll('.card').length >= 30 && \
         document.querySelectorAll('.agent[data-status=busy]').length >= 3 && \
         document.querySelectorAll('.column[data-status=in_progress] .card').length >= 2 && \
         document.querySelector('#conn .conn-last').dataset.seq",
        Duration::from_secs(30),
    )
    .await;
    b.screenshot("demo.png").await;
}

/// The client library in the browser, with a socket wrapper that loses what
/// the test says: a call whose reply was lost is re-sent with its op_id and
/// committed once; a call made while disconnected is sent after the
/// reconnect; a socket that stops answering is noticed by the pings; topics
/// resume from their position, and resync when the server sends a snapshot.
const CLIENT_SCENARIOS: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const { Client, backoffDelay } = await import('/static/js/client.js');
  const out = {};
  const wait = (pred, ms = 10000) => new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      if (pred()) resolve();
      else if (Date.now() - t0 > ms) reject(new Error('timed out: ' + pred));
      else setTimeout(tick, 10);
    };
    tick();
  });
  out.backoff = [0, 1, 2, 5, 6, 20].map((a) => [
    backoffDelay(a, 500, 30000, () => 0),
    backoffDelay(a, 500, 30000, () => 0.999999),
  ]);

  const url = (location.protocol === 'https:' ? 'wss' : 'ws') + '://' + location.host + '/ws';
  const sent = [];
  let dropNextCommit = false;
  let current = null;
  class Flaky {
    constructor(u) {
      const ws = new WebSocket(u);
      this.ws = ws;
      this.blackhole = false;
      current = this;
      ws.onmessage = (e) => {
        if (this.blackhole) return;
        const f = JSON.parse(e.data);
        if (dropNextCommit && f.type === 'reply' && typeof f.seq === 'number') {
          dropNextCommit = false;
          ws.close();
          return;
        }
        if (this.onmessage) this.onmessage(e);
      };
      ws.onclose = (e) => this.onclose && this.onclose(e);
      ws.onerror = (e) => this.onerror && this.onerror(e);
    }
    send(d) { sent.push(JSON.parse(d)); this.ws.send(d); }
    close(c) { this.ws.close(c); }
  }
  const states = [];
  const client = new Client({
    url,
    createSocket: (u) => new Flaky(u),
    backoffBaseMs: 50,
    pingIntervalMs: 300,
    pingTimeoutMs: 600,
  });
  client.on('state', (s) => states.push(s.state));
  const events = [];
  client.subscribe('tasks', {
    snapshot() {},
    event(ev, info) { events.push([ev.event, ev.seq, info.replayed]); },
  });
  client.connect();
  await wait(() => client.state.state === 'live');

  // A reply lost with its socket.
  dropNextCommit = true;
  const r1 = await client.call('task.create', { title: 'Exactly once' });
  const calls = sent.filter((f) => f.type === 'call');
  out.lost = {
    id: r1.data.id,
    seq: r1.seq,
    sends: calls.length,
    opIds: new Set(calls.map((c) => c.op_id)).size,
  };
  await wait(() => client.state.state === 'live');

  // A call made while disconnected.
  const queued = new Promise((resolve, reject) => {
    const off = client.on('state', (s) => {
      if (s.state === 'reconnecting' && s.retryAt) {
        off();
        client.call('task.create', { title: 'Queued while down' }).then(resolve, reject);
      }
    });
  });
  current.close();
  const r2 = await queued;
  out.queued = {
    id: r2.data.id,
    sends: sent.filter((f) => f.type === 'call' && f.params.title === 'Queued while down').length,
  };

  // A socket that stops answering.
  await wait(() => client.state.state === 'live');
  const before = states.length;
  current.blackhole = true;
  const t0 = Date.now();
  await wait(() => client.state.lastClose && client.state.lastClose.reason === 'ping timeout'
    && client.state.state === 'live');
  out.dead = { ms: Date.now() - t0, states: states.slice(before) };

  // Resume from a position, then a resync from a position of another database.
  const topic = 'task:' + r1.data.id;
  const first = await new Promise((resolve) => {
    const sub = client.subscribe(topic, { snapshot(t, info) { resolve({ sub, info }); } });
  });
  const pos = first.sub.position();
  await client.unsubscribe(topic);
  await client.call('task.update', { id: r1.data.id, patch: { status: 'done' } });
  out.resumed = await new Promise((resolve) => {
    const got = [];
    client.subscribe(topic, {
      snapshot() { resolve({ snapshot: true }); },
      event(ev, info) { got.push([ev.event, info.replayed]); },
      resumed(info) { resolve({ got, replayed: info.replayed }); },
    }, pos);
  });
  await client.unsubscribe(topic);
  out.resync = await new Promise((resolve) => {
    client.subscribe(topic, {
      snapshot(t, info) { resolve({ resync: info.resync, status: t.status }); },
      resumed() { resolve({ resumed: true }); },
    }, { epoch: 'another-database', since: 1 });
  });

  // Errors reject with their code.
  try {
    await client.call('task.update', { id: r1.data.id, if_version: 1, patch: { title: 'x' } });
    out.conflict = null;
  } catch (e) {
    out.conflict = e.code;
  }
  out.notFound = await new Promise((resolve) => client.subscribe('task:999999', { error: (e) => resolve(e.code) }));
  const seqs = events.map((e) => e[1]);
  out.eventsInOrderOnce = seqs.every((s, i) => i === 0 || s > seqs[i - 1]);
  out.events = events;
  client.close();
  return out;
})().then(done, (e) => done({ error: String((e && e.stack) || e) }));
"#;

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn the_client_resends_once_resumes_and_notices_dead_sockets() {
    let _one = BROWSERS.lock().await;
    let app = spawn_app();
    let driver = Driver::start();
    let b = driver.browser(1280, 800).await;
    b.login(&app).await;
    b.wait_live().await;
    let out = b
        .client
        .execute_async(CLIENT_SCENARIOS, vec![])
        .await
        .expect("the scenarios ran");
    eprintln!("{out:#}");
    assert!(out["error"].is_null(), "{}", out["error"]);

    let backoff: Vec<(i64, i64)> = out["backoff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()))
        .collect();
    assert_eq!(
        backoff.iter().map(|p| p.0).collect::<Vec<_>>(),
        [0; 6],
        "full jitter starts at 0"
    );
    let highs: Vec<i64> = backoff.iter().map(|p| p.1).collect();
    assert_eq!(highs, [499, 999, 1999, 15999, 29999, 29999], "doubling, capped at 30 s");

    assert_eq!(out["lost"]["sends"], 2, "re-sent after the reconnect");
    assert_eq!(out["lost"]["opIds"], 1, "with the same op_id");
    assert_eq!(
        out["queued"]["sends"], 1,
        "a call made while down is sent once, after the hello"
    );
    let tasks = rest(app.get("/api/tasks")).await;
    let titled = |t: &str| {
        tasks["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["title"] == t)
            .count()
    };
    assert_eq!(titled("Exactly once"), 1, "the lost reply's call committed once");
    assert_eq!(titled("Queued while down"), 1);

    let dead: Vec<&str> = out["dead"]["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(dead.first(), Some(&"reconnecting"), "{dead:?}");
    assert_eq!(dead.last(), Some(&"live"), "{dead:?}");
    assert!(
        out["dead"]["ms"].as_i64().unwrap() < 5000,
        "the dead socket was noticed in time"
    );

    assert_eq!(out["resumed"]["got"], json!([["task.updated", true]]), "replayed once");
    assert_eq!(out["resumed"]["replayed"], 1);
    assert_eq!(out["resync"], json!({"resync": true, "status": "done"}));
    assert_eq!(out["conflict"], "conflict");
    assert_eq!(out["notFound"], "not_found");
    assert_eq!(out["eventsInOrderOnce"], true, "{}", out["events"]);
}

/// Demo mode needs no browser, so this test runs in every `cargo test`: an
/// empty database gets tasks and agents, the agents heartbeat and move tasks
/// through the same write path as clients, by their own tokens (so the
/// timeline names them), and a restart on the same file adds
/// nothing but keeps the agents working.
#[tokio::test]
async fn demo_mode_fills_the_board_and_moves_it() {
    let app = spawn_app_with(|c| c.demo = true);
    let started = Instant::now();
    let (tasks, agents) = loop {
        let tasks = rest(app.get("/api/tasks")).await;
        let agents = rest(app.get("/api/agents")).await;
        let n = tasks["items"].as_array().unwrap().len();
        let busy = agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["status"] == "busy" && a["last_heartbeat_at"].is_string())
            .count();
        if n >= 30 && busy >= 2 {
            break (tasks, agents);
        }
        assert!(started.elapsed() < WAIT, "demo data: {n} tasks, {busy} busy agents");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let agents = agents["items"].as_array().unwrap();
    assert!((3..=8).contains(&agents.len()), "a handful of agents");
    assert!(agents.iter().all(|a| a["meta"]["demo"] == true));
    let in_progress = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "in_progress" && t["assignee_id"].is_i64())
        .count();
    assert!(in_progress >= 1, "agents took tasks");

    // Changes keep coming, as events like any other client's.
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("tasks").await["ok"], true);
    assert_eq!(ws.subscribe("agents").await["ok"], true);
    let (mut moved, mut beats) = (0, 0);
    while moved < 2 || beats < 3 {
        let ev = ws.next_event().await;
        match ev["event"].as_str() {
            Some("task.updated") if ev["by"]["kind"] == "agent" => moved += 1,
            Some("agent.heartbeat") => beats += 1,
            _ => {}
        }
    }
    drop(ws);

    let count = tasks["items"].as_array().unwrap().len();
    let app = app.restart(|c| c.demo = true);
    let mut ws = app.ws().await;
    assert_eq!(ws.subscribe("agents").await["ok"], true);
    loop {
        if ws.next_event().await["event"] == "agent.heartbeat" {
            break;
        }
    }
    let after = rest(app.get("/api/tasks")).await;
    assert_eq!(
        after["items"].as_array().unwrap().len(),
        count,
        "a restart adds no demo data"
    );
    let agents_after = rest(app.get("/api/agents")).await;
    assert_eq!(agents_after["items"].as_array().unwrap().len(), agents.len());
}

mod activity;
mod live_queries;
