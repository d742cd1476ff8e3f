//! Security (issue 4): roles on every route and socket method, agent tokens,
//! revocation, browser login with Origin checks, limits, page headers and logs.
//!
//! The access table lives in `docs/security.md` and is parsed here, so the
//! document and the server cannot drift apart. See that page for what each test
//! proves.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

const DOC: &str = include_str!("../../docs/security.md");
const REST_SRC: &str = include_str!("../../src/rest.rs");
const PROTOCOL_SRC: &str = include_str!("../../src/protocol.rs");

/// How long a revoked token's sockets may stay open.
const REVOKE_WITHIN: Duration = Duration::from_secs(1);

static UNIQUE: AtomicU64 = AtomicU64::new(1);

fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

/// A token that was never issued, in the issued tokens' format.
fn forged_token() -> String {
    taskwire::auth::generate_token()
}

// ---------------------------------------------------------------------------
// A server to talk to (in-process TestApp or a child process) and its clients.
// ---------------------------------------------------------------------------

/// Where a server listens and how to reach it as admin.
struct Target {
    addr: SocketAddr,
    admin: String,
    db: PathBuf,
    http: reqwest::Client,
}

fn target(app: &TestApp) -> Target {
    Target::new(app.addr, &app.admin, &app.db_path)
}

/// A REST answer.
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

impl Target {
    fn new(addr: SocketAddr, admin: &str, db: &Path) -> Target {
        Target {
            addr,
            admin: admin.to_string(),
            db: db.to_path_buf(),
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server's own origin, as a page it served would send.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A request with a bearer token (if any), extra headers and a JSON body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, headers, body }
    }

    async fn rest(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        self.send(method, path, token, &[], body).await
    }

    /// A request as admin that must answer `status`; returns the body.
    async fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let r = self.rest(method, path, Some(&self.admin), body).await;
        assert_eq!(r.status, status, "{method} {path} as admin: {}", r.body);
        r.body
    }

    /// A new task (assigned to `assignee`); its id.
    async fn new_task(&self, assignee: Option<i64>) -> i64 {
        let t = self
            .admin_ok(
                "POST",
                "/api/tasks",
                Some(&json!({"title": format!("task {}", unique()), "assignee_id": assignee})),
                201,
            )
            .await;
        t["id"].as_i64().unwrap()
    }

    /// A new agent: its id and its token.
    async fn new_agent(&self) -> (i64, String) {
        let a = self
            .admin_ok(
                "POST",
                "/api/agents",
                Some(&json!({"name": format!("agent {}", unique())})),
                201,
            )
            .await;
        (a["id"].as_i64().unwrap(), a["token"].as_str().unwrap().to_string())
    }

    /// A new token of `role`: its id and secret.
    async fn new_token(&self, role: &str) -> (i64, String) {
        let t = self
            .admin_ok(
                "POST",
                "/api/tokens",
                Some(&json!({"role": role, "name": format!("{role} {}", unique())})),
                201,
            )
            .await;
        (t["id"].as_i64().unwrap(), t["token"].as_str().unwrap().to_string())
    }

    /// The log position, read without touching anything.
    async fn head_seq(&self) -> i64 {
        // A filter that matches nothing keeps the answer small.
        let b = self.admin_ok("GET", "/api/tasks?status=blocked", None, 200).await;
        b["seq"].as_i64().unwrap()
    }

    async fn agent(&self, id: i64) -> Value {
        self.admin_ok("GET", &format!("/api/agents/{id}"), None, 200).await
    }

    async fn task(&self, id: i64) -> Value {
        self.admin_ok("GET", &format!("/api/tasks/{id}"), None, 200).await
    }

    /// `POST /login` with a form (`token` or `code`) and these extra headers.
    async fn login_post(&self, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        self.form_post("/login", fields, headers).await
    }

    /// A POST of an `application/x-www-form-urlencoded` form with these extra
    /// headers; a body that is not JSON is kept as text.
    async fn form_post(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let mut req = self.http.post(self.url(path)).form(fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Resp { status, headers, body }
    }

    /// A login as the server's own login form posts it, asserting the 303
    /// and the cookie's attributes; the session cookie's value.
    async fn login(&self, token: &str) -> String {
        let r = self
            .login_post(&[("token", token)], &[("Origin", &self.origin())])
            .await;
        session_cookie(&r, token)
    }

    /// Exchanges a login code, from a page of the server's own origin; the
    /// session cookie's value.
    async fn login_with_code(&self, code: &str) -> String {
        let r = self.login_post(&[("code", code)], &[("Origin", &self.origin())]).await;
        session_cookie(&r, code)
    }

    /// A new login code for token `id`, made over REST: (code, link).
    async fn login_code(&self, id: i64) -> (String, String) {
        let made = self
            .admin_ok("POST", &format!("/api/tokens/{id}/login-code"), None, 201)
            .await;
        assert_eq!(made["token_id"], id, "{made}");
        let code = made["code"].as_str().expect("code").to_string();
        let url = made["url"].as_str().expect("url").to_string();
        assert_eq!(url, format!("{}/login?code={code}", self.origin()));
        (code, url)
    }

    /// A WebSocket upgrade with these headers: the open socket (hello read), or
    /// the HTTP status and JSON body of the refusal.
    async fn upgrade(&self, headers: &[(&str, &str)]) -> Result<Sock, (u16, Value)> {
        let mut req = format!("ws://{}/ws", self.addr).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade timed out");
        match connected {
            Ok((stream, res)) => {
                assert_eq!(res.status().as_u16(), 101);
                let mut s = Sock {
                    stream,
                    next_ref: 1,
                    events: Vec::new(),
                    hello: Value::Null,
                };
                let hello = s.recv().await.expect("hello");
                assert_eq!(hello["type"], "hello", "{hello}");
                s.hello = hello;
                Ok(s)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let body = res
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err((res.status().as_u16(), body))
            }
            Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
        }
    }

    /// An open socket with a bearer token.
    async fn ws(&self, token: &str) -> Sock {
        match self.upgrade(&[("Authorization", &format!("Bearer {token}"))]).await {
            Ok(s) => s,
            Err((status, body)) => panic!("bearer upgrade refused: {status} {body}"),
        }
    }

    /// The status of an upgrade with these headers (101: opened, then dropped).
    async fn upgrade_status(&self, headers: &[(&str, &str)]) -> u16 {
        match self.upgrade(headers).await {
            Ok(_) => 101,
            Err((status, _)) => status,
        }
    }

    /// An upgrade with the session cookie and this Origin (if any).
    async fn cookie_upgrade(&self, cookie: &str, origin: Option<&str>) -> Result<Sock, (u16, Value)> {
        let cookie = format!("taskwire_session={cookie}");
        let mut headers = vec![("Cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        self.upgrade(&headers).await
    }

    /// Waits until a REST read with `token` answers `status`: the running
    /// server notices a token created or revoked by the command line within
    /// its watch's half second. Two seconds leave room for a busy machine.
    async fn until_status(&self, token: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = self.rest("GET", "/api/tasks", Some(token), None).await;
            if r.status == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server still answers {} instead of {status} after 2 s",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `taskwire token ARGS --db <this server's file>`, run to its end.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_taskwire"))
            .arg("token")
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .env("RUST_LOG", "debug")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .output()
            .expect("run the taskwire binary")
    }
}

/// The session cookie of a login answer, asserting the 303 to `/` and the
/// cookie's attributes (no `Secure` over plain HTTP); `secret` is what was
/// posted, which the cookie must not hold.
fn session_cookie(r: &Resp, secret: &str) -> String {
    assert_eq!(r.status, 303, "login: {}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/"));
    let cookie = r.header("set-cookie").expect("login sets a cookie");
    let attrs: Vec<String> = cookie.split(';').map(|a| a.trim().to_ascii_lowercase()).collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "not HttpOnly: {cookie}");
    assert!(
        attrs.iter().any(|a| a == "samesite=strict"),
        "not SameSite=Strict: {cookie}"
    );
    assert!(attrs.iter().any(|a| a == "path=/"), "not Path=/: {cookie}");
    assert!(!attrs.iter().any(|a| a == "secure"), "Secure over plain HTTP: {cookie}");
    let max_age = attrs.iter().find_map(|a| a.strip_prefix("max-age="));
    assert!(
        max_age.and_then(|m| m.parse::<u64>().ok()).is_some_and(|m| m > 0),
        "no lifetime: {cookie}"
    );
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("taskwire_session=")
        .unwrap_or_else(|| panic!("not the session cookie: {cookie}"))
        .to_string();
    assert!(value.len() >= 32, "a short session secret: {cookie}");
    assert!(!value.contains(secret), "the cookie holds what was posted: {cookie}");
    value
}

/// A protocol client for the security tests: keeps events aside, tells a closed
/// socket from a reply.
struct Sock {
    stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_ref: i64,
    /// Frames that were not the awaited reply, in order.
    events: Vec<Value>,
    hello: Value,
}

impl Sock {
    /// The next text frame, or None once the socket closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("no frame within the wait")?;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("server sent JSON")),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(other) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends `frame` with a fresh ref and returns its reply (or
    /// `{"closed": true}` if the socket closed first).
    async fn request(&mut self, mut frame: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        frame["ref"] = json!(r);
        if self.stream.send(Message::Text(frame.to_string())).await.is_err() {
            return json!({"closed": true});
        }
        loop {
            let Some(v) = self.recv().await else {
                return json!({"closed": true});
            };
            if v["type"] == "reply" && v["ref"] == r {
                return v;
            }
            self.events.push(v);
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.request(json!({"type": "call", "method": method, "params": params}))
            .await
    }

    /// The error code of a reply that must be an error.
    async fn call_err(&mut self, method: &str, params: Value) -> String {
        let r = self.call(method, params).await;
        assert_eq!(r["ok"], false, "{method} should be refused: {r}");
        r["error"]["code"].as_str().expect("error code").to_string()
    }

    async fn call_ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert_eq!(r["ok"], true, "{method}: {r}");
        r
    }

    async fn ping(&mut self) {
        let r = self.request(json!({"type": "ping"})).await;
        assert_eq!(r["ok"], true, "ping: {r}");
    }

    /// Waits at most `within` for the server to close the socket; the close
    /// code, or a panic naming what came instead.
    async fn closed_within(&mut self, within: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("the socket was not closed within {within:?}"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code),
                Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("socket error instead of a close frame: {e}"),
                Ok(None) => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Closes from the client side and waits for the server's answer.
    async fn close(mut self) {
        let _ = self.stream.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.stream.next()).await {}
    }
}

/// Polls `f` until it is true, or panics after `within`. Only for what cannot
/// be awaited (a slot freed after a socket's end, a bucket refilling).
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. The access table.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admin,
    Member,
    AgentOwn,
    AgentOther,
    Nobody,
}

const COLUMNS: [(Who, &str); 5] = [
    (Who::Admin, "admin"),
    (Who::Member, "member"),
    (Who::AgentOwn, "agent-own"),
    (Who::AgentOther, "agent-other"),
    (Who::Nobody, "no token"),
];

/// One cell: an HTTP status and/or an error code; neither is a socket `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    status: Option<u16>,
    code: Option<String>,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.status, &self.code) {
            (None, None) => write!(f, "ok"),
            (Some(s), None) => write!(f, "{s}"),
            (None, Some(c)) => write!(f, "{c}"),
            (Some(s), Some(c)) => write!(f, "{s} {c}"),
        }
    }
}

fn parse_expect(cell: &str) -> Expect {
    let mut words = cell.split_whitespace();
    let first = words
        .next()
        .unwrap_or_else(|| panic!("an empty cell in the access table"));
    let e = match first.parse::<u16>() {
        Ok(s) => Expect {
            status: Some(s),
            code: words.next().map(String::from),
        },
        Err(_) if first == "ok" => Expect {
            status: None,
            code: None,
        },
        Err(_) => Expect {
            status: None,
            code: Some(first.to_string()),
        },
    };
    assert!(words.next().is_none(), "cannot read the cell {cell:?}");
    e
}

struct Row {
    /// `METHOD /path` for REST, the frame type or call method for the socket.
    request: String,
    /// The body or params template; empty for none.
    body: String,
    cells: Vec<(Who, Expect)>,
}

fn split_cells(line: &str) -> Vec<String> {
    let inner = line.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|'));
    let inner = inner.unwrap_or_else(|| panic!("not a table row: {line}"));
    inner
        .split('|')
        .map(|c| c.trim().trim_matches('`').to_string())
        .collect()
}

/// The table after `<!-- access-table:NAME -->` in docs/security.md.
fn access_table(name: &str) -> Vec<Row> {
    let marker = format!("<!-- access-table:{name} -->");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/security.md has no {marker}"));
    let mut lines = DOC[start + marker.len()..]
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty());
    let header = split_cells(lines.next().expect("a table header"));
    let names: Vec<&str> = COLUMNS.iter().map(|(_, n)| *n).collect();
    assert_eq!(header.len(), 2 + COLUMNS.len(), "header of {name}: {header:?}");
    assert_eq!(&header[2..], &names[..], "the role columns of {name}");
    assert!(lines.next().is_some_and(|l| l.starts_with("| ---")), "no separator");
    let rows: Vec<Row> = lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let c = split_cells(l);
            assert_eq!(c.len(), header.len(), "wrong number of cells: {l}");
            Row {
                request: c[0].clone(),
                body: c[1].clone(),
                cells: COLUMNS
                    .iter()
                    .zip(&c[2..])
                    .map(|((who, _), cell)| (*who, parse_expect(cell)))
                    .collect(),
            }
        })
        .collect();
    assert!(rows.len() >= 5, "the {name} table is nearly empty");
    rows
}

/// Every route `rest::routes` registers, as (METHOD, path pattern).
fn server_routes() -> Vec<(String, String)> {
    let mut prefix = String::new();
    let mut out = Vec::new();
    for line in REST_SRC.lines() {
        if let Some(rest) = line.split("web::scope(\"").nth(1) {
            prefix = rest.split('"').next().unwrap().to_string();
        }
        if let Some(rest) = line.split(".route(\"").nth(1) {
            let path = rest.split('"').next().unwrap();
            let method = rest
                .split("web::")
                .nth(1)
                .and_then(|m| m.split('(').next())
                .unwrap_or_else(|| panic!("cannot read the method of: {line}"))
                .to_ascii_uppercase();
            out.push((method, format!("{prefix}{path}")));
        }
    }
    assert!(
        out.len() >= 20,
        "could read only {} routes from src/rest.rs; has routes() changed shape?",
        out.len()
    );
    out
}

/// Every call method `protocol::Method::parse` knows, plus the other frames.
fn socket_frames() -> Vec<String> {
    let mut out: Vec<String> = PROTOCOL_SRC
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"') && l.contains("=> Method::"))
        .map(|l| l.split('"').nth(1).unwrap().to_string())
        .collect();
    assert!(out.len() >= 7, "could not read the methods from src/protocol.rs");
    out.extend(["subscribe", "unsubscribe", "ping"].map(String::from));
    out.sort();
    out
}

/// True if the concrete `path` (placeholders allowed, query ignored) is one the
/// route `pattern` serves.
fn route_matches(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap();
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let q: Vec<&str> = path.trim_matches('/').split('/').collect();
    for (i, seg) in p.iter().enumerate() {
        if seg.starts_with('{') && seg.contains(":.*") {
            return q.len() > i && !q[i].is_empty();
        }
        let Some(actual) = q.get(i) else { return false };
        if seg.starts_with('{') {
            if actual.is_empty() {
                return false;
            }
        } else if seg != actual {
            return false;
        }
    }
    p.len() == q.len()
}

/// The entities and tokens the walk acts with: agent A (whose token is the
/// agent columns' token) and agent B (the "other" agent).
struct Fixture {
    t: Target,
    member: String,
    agent_a: i64,
    agent_b: i64,
    token_a: String,
}

impl Fixture {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Admin => Some(&self.t.admin),
            Who::Member => Some(&self.member),
            Who::AgentOwn | Who::AgentOther => Some(&self.token_a),
            Who::Nobody => None,
        }
    }

    /// Fills the placeholders of a template for one column.
    async fn fill(&self, template: &str, who: Who) -> String {
        let mut s = template.to_string();
        if s.contains("{task}") {
            let assignee = match who {
                Who::AgentOwn => Some(self.agent_a),
                Who::AgentOther => Some(self.agent_b),
                _ => None,
            };
            let id = self.t.new_task(assignee).await;
            s = s.replace("{task}", &id.to_string());
        }
        if s.contains("{agent}") {
            let id = match who {
                Who::AgentOwn => self.agent_a,
                Who::AgentOther => self.agent_b,
                _ => self.t.new_agent().await.0,
            };
            s = s.replace("{agent}", &id.to_string());
        }
        if s.contains("{token}") {
            let (id, _) = self.t.new_token("member").await;
            s = s.replace("{token}", &id.to_string());
        }
        if s.contains("{n}") {
            s = s.replace("{n}", &unique().to_string());
        }
        if s.contains("{secret}") {
            s = s.replace("{secret}", self.token(who).unwrap_or(""));
        }
        s
    }
}

fn who_name(who: Who) -> &'static str {
    COLUMNS.iter().find(|(w, _)| *w == who).unwrap().1
}

/// Runs one REST cell; the answer as a cell reads.
async fn rest_cell(t: &Target, method: &str, path: &str, token: Option<&str>, body: &str) -> Expect {
    if path == "/ws" {
        let auth = token.map(|tk| format!("Bearer {tk}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        return match t.upgrade(&headers).await {
            Ok(s) => {
                s.close().await;
                Expect {
                    status: Some(101),
                    code: None,
                }
            }
            Err((status, b)) => Expect {
                status: Some(status),
                code: b["error"]["code"].as_str().map(String::from),
            },
        };
    }
    if !body.is_empty() && !body.starts_with('{') {
        // A form, posted as a page of the server's own origin would post it.
        assert_eq!(method, "POST", "a form body on {method} {path}");
        let fields: Vec<(&str, &str)> = body
            .split('&')
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect();
        let r = t.form_post(path, &fields, &[("Origin", &t.origin())]).await;
        return Expect {
            status: Some(r.status),
            code: r.code().map(String::from),
        };
    }
    let body: Option<Value> = (!body.is_empty()).then(|| serde_json::from_str(body).expect("a JSON body"));
    let r = t.rest(method, path, token, body.as_ref()).await;
    Expect {
        status: Some(r.status),
        code: r.code().map(String::from),
    }
}

/// Compares an answer with a cell: the status must match, and the code too
/// when the cell names one.
fn matches(expect: &Expect, got: &Expect) -> bool {
    expect.status == got.status && (expect.code.is_none() || expect.code == got.code)
}

#[tokio::test(flavor = "multi_thread")]
async fn access_table_holds_against_a_live_server() {
    let rest_rows = access_table("rest");
    let socket_rows = access_table("socket");

    // The tables cover the server, and name nothing it does not have.
    let routes = server_routes();
    let mut missing = Vec::new();
    for (method, pattern) in &routes {
        let covered = rest_rows.iter().any(|r| {
            let (m, p) = r.request.split_once(' ').unwrap();
            m == method && route_matches(pattern, p)
        });
        if !covered {
            missing.push(format!("{method} {pattern}"));
        }
    }
    assert!(missing.is_empty(), "routes missing from docs/security.md: {missing:?}");
    for r in &rest_rows {
        let (m, p) = r.request.split_once(' ').expect("METHOD /path");
        let fallback = r.cells.iter().all(|(_, e)| e.status == Some(404));
        let known = routes
            .iter()
            .any(|(method, pattern)| method == m && route_matches(pattern, p));
        assert!(
            known || fallback,
            "docs/security.md names {} which the server does not route",
            r.request
        );
    }
    let mut documented: Vec<String> = socket_rows.iter().map(|r| r.request.clone()).collect();
    documented.sort();
    assert_eq!(documented, socket_frames(), "socket frames in docs/security.md");

    let app = spawn_app();
    let t = target(&app);
    let (_, member) = t.new_token("member").await;
    let (agent_a, token_a) = t.new_agent().await;
    let (agent_b, _) = t.new_agent().await;
    let fx = Fixture {
        t,
        member,
        agent_a,
        agent_b,
        token_a,
    };
    let t = &fx.t;
    let mut failures = Vec::new();
    let mut checked = 0;

    for row in &rest_rows {
        for (who, expect) in &row.cells {
            let filled = fx.fill(&format!("{}\n{}", row.request, row.body), *who).await;
            let (line, body) = filled.split_once('\n').unwrap();
            let (method, path) = line.split_once(' ').unwrap();
            let before = t.head_seq().await;
            let got = rest_cell(t, method, path, fx.token(*who), body).await;
            checked += 1;
            if !matches(expect, &got) {
                failures.push(format!("{line} as {}: expected {expect}, got {got}", who_name(*who)));
            }
            let refused = got.status.is_some_and(|s| s >= 400);
            if refused && method != "GET" && t.head_seq().await != before {
                failures.push(format!("{line} as {}: refused but committed a change", who_name(*who)));
            }
            if *who == Who::Nobody && expect.status == Some(401) {
                // A forged token is no better than none.
                let forged = forged_token();
                let got = rest_cell(t, method, path, Some(&forged), body).await;
                checked += 1;
                if got.status != Some(401) {
                    failures.push(format!("{line} with a forged token: expected 401, got {got}"));
                }
            }
        }
    }

    let mut admin = t.ws(&t.admin).await;
    let mut member = t.ws(&fx.member).await;
    let mut agent = t.ws(&fx.token_a).await;
    assert_eq!(member.hello["role"], "member");
    assert_eq!(agent.hello["role"], "agent");
    for row in &socket_rows {
        for (who, expect) in &row.cells {
            if *who == Who::Nobody {
                // No credentials: the upgrade itself is refused.
                for token in [None, Some(forged_token())] {
                    let auth = token.map(|tk| format!("Bearer {tk}"));
                    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
                    let got = match t.upgrade(&headers).await {
                        Ok(_) => Expect {
                            status: Some(101),
                            code: None,
                        },
                        Err((s, b)) => Expect {
                            status: Some(s),
                            code: b["error"]["code"].as_str().map(String::from),
                        },
                    };
                    checked += 1;
                    if !matches(expect, &got) {
                        failures.push(format!(
                            "socket {} {}: expected {expect}, got {got}",
                            row.request,
                            if auth.is_some() {
                                "with a forged token"
                            } else {
                                "with no token"
                            }
                        ));
                    }
                }
                continue;
            }
            let params = fx.fill(&row.body, *who).await;
            let params: Value = if params.is_empty() {
                json!({})
            } else {
                serde_json::from_str(&params).expect("JSON params")
            };
            let frame = match row.request.as_str() {
                "subscribe" | "unsubscribe" | "ping" => {
                    let mut f = params.clone();
                    f["type"] = json!(row.request);
                    f
                }
                method => json!({"type": "call", "method": method, "params": params}),
            };
            let sock = match who {
                Who::Admin => &mut admin,
                Who::Member => &mut member,
                _ => &mut agent,
            };
            let before = t.head_seq().await;
            let reply = sock.request(frame.clone()).await;
            checked += 1;
            let got = if reply["ok"] == true {
                Expect {
                    status: None,
                    code: None,
                }
            } else {
                Expect {
                    status: None,
                    code: Some(
                        reply["error"]["code"]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| reply.to_string()),
                    ),
                }
            };
            if !matches(expect, &got) {
                failures.push(format!(
                    "socket {frame} as {}: expected {expect}, got {got}",
                    who_name(*who)
                ));
            }
            if reply["ok"] != true && t.head_seq().await != before {
                failures.push(format!("socket {frame} as {}: refused but committed", who_name(*who)));
            }
        }
    }
    let cells = (rest_rows.len() + socket_rows.len()) * COLUMNS.len();
    assert!(checked >= cells, "walked {checked} of {cells} cells");
    assert!(
        failures.is_empty(),
        "{} of {checked} checks disagree with docs/security.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 2. An agent token acts only for its own agent and its own tasks.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn agent_cannot_act_for_another_agent_or_task() {
    let app = spawn_app();
    let t = target(&app);
    let (a, token_a) = t.new_agent().await;
    let (b, _) = t.new_agent().await;
    let task_b = t.new_task(Some(b)).await;
    let task_free = t.new_task(None).await;
    let task_a = t.new_task(Some(a)).await;
    let tok = Some(token_a.as_str());
    let b_before = t.agent(b).await;
    let task_b_before = t.task(task_b).await;
    let task_free_before = t.task(task_free).await;
    let seq_before = t.head_seq().await;

    // REST, acting for agent B.
    let r = t
        .rest("POST", &format!("/api/agents/{b}/heartbeat"), tok, Some(&json!({})))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("forbidden")),
        "heartbeat for B: {}",
        r.body
    );
    let r = t
        .rest(
            "PATCH",
            &format!("/api/agents/{b}"),
            tok,
            Some(&json!({"status": "error"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, Some("forbidden")), "update B: {}", r.body);
    let r = t.rest("DELETE", &format!("/api/agents/{b}"), tok, None).await;
    assert_eq!(r.status, 403, "delete B: {}", r.body);
    // A body id does not redirect a heartbeat to another agent.
    let r = t
        .rest(
            "POST",
            &format!("/api/agents/{a}/heartbeat"),
            tok,
            Some(&json!({"id": b})),
        )
        .await;
    assert!(
        r.status == 204 || r.status == 400,
        "heartbeat with a body id: {}",
        r.status
    );
    // REST, on tasks not assigned to A.
    for (task, what) in [(task_b, "B's task"), (task_free, "an unassigned task")] {
        let path = format!("/api/tasks/{task}");
        let r = t.rest("PATCH", &path, tok, Some(&json!({"status": "done"}))).await;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("forbidden")),
            "update {what}: {}",
            r.body
        );
        let r = t.rest("PATCH", &path, tok, Some(&json!({"assignee_id": a}))).await;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("forbidden")),
            "take {what}: {}",
            r.body
        );
        let r = t.rest("DELETE", &path, tok, None).await;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("forbidden")),
            "delete {what}: {}",
            r.body
        );
    }
    // Another token's Idempotency-Key does not hand over its stored reply.
    let key = format!("op-{}", unique());
    let r = t
        .send(
            "PATCH",
            &format!("/api/tasks/{task_b}"),
            Some(&t.admin),
            &[("Idempotency-Key", &key)],
            Some(&json!({"priority": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seq_mid = t.head_seq().await;
    let r = t
        .send(
            "PATCH",
            &format!("/api/tasks/{task_b}"),
            tok,
            &[("Idempotency-Key", &key)],
            Some(&json!({"priority": 2})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("forbidden")),
        "replayed key: {}",
        r.body
    );
    assert_eq!(t.head_seq().await, seq_mid);

    // The socket, the same.
    let mut ws = t.ws(&token_a).await;
    assert_eq!(ws.call_err("agent.heartbeat", json!({"id": b})).await, "forbidden");
    assert_eq!(
        ws.call_err("agent.heartbeat", json!({"id": b, "status": "busy"})).await,
        "forbidden"
    );
    assert_eq!(
        ws.call_err("agent.update", json!({"id": b, "patch": {"name": "stolen"}}))
            .await,
        "forbidden"
    );
    assert_eq!(ws.call_err("agent.delete", json!({"id": b})).await, "forbidden");
    assert_eq!(ws.call_err("agent.delete", json!({"id": a})).await, "forbidden");
    assert_eq!(
        ws.call_err("agent.create", json!({"name": "spawned"})).await,
        "forbidden"
    );
    for task in [task_b, task_free] {
        assert_eq!(
            ws.call_err("task.update", json!({"id": task, "patch": {"status": "done"}}))
                .await,
            "forbidden"
        );
        assert_eq!(
            ws.call_err("task.update", json!({"id": task, "patch": {"assignee_id": a}}))
                .await,
            "forbidden"
        );
        assert_eq!(ws.call_err("task.delete", json!({"id": task})).await, "forbidden");
    }
    assert_eq!(ws.call_err("task.delete", json!({"id": task_a})).await, "forbidden");
    assert_eq!(ws.call_err("task.create", json!({"title": "mine"})).await, "forbidden");
    // Another token's op_id on the socket, too.
    let op = format!("op-{}", unique());
    let mut admin = t.ws(&t.admin).await;
    let params = json!({"id": task_b, "patch": {"priority": 3}});
    let first = admin
        .request(json!({"type": "call", "method": "task.update", "params": params, "op_id": op}))
        .await;
    assert_eq!(first["ok"], true, "{first}");
    let seq_mid = t.head_seq().await;
    let replay = ws
        .request(json!({"type": "call", "method": "task.update", "params": params, "op_id": op}))
        .await;
    assert_eq!(
        replay["ok"], false,
        "another token's op_id returned its reply: {replay}"
    );
    assert_eq!(replay["error"]["code"], "forbidden", "{replay}");
    assert_eq!(t.head_seq().await, seq_mid);

    // Nothing of B or of the tasks A may not touch changed (but through admin).
    let b_after = t.agent(b).await;
    assert_eq!(b_after, b_before, "agent B changed");
    assert!(b_after["last_heartbeat_at"].is_null(), "B got a heartbeat: {b_after}");
    assert_eq!(t.task(task_free).await, task_free_before, "the unassigned task changed");
    let tb = t.task(task_b).await;
    assert_eq!(tb["assignee_id"], b, "{tb}");
    assert_eq!(tb["title"], task_b_before["title"], "{tb}");
    assert_eq!(tb["version"], task_b_before["version"].as_i64().unwrap() + 2, "{tb}");
    assert_eq!(tb["status"], "todo", "{tb}");
    assert_eq!(tb["priority"], 3, "only admin's two updates: {tb}");

    // What A may do works, which shows the refusals above are about ownership.
    ws.call_ok("agent.heartbeat", json!({"id": a})).await;
    assert!(!t.agent(a).await["last_heartbeat_at"].is_null());
    ws.call_ok("agent.update", json!({"id": a, "patch": {"status": "busy"}}))
        .await;
    ws.call_ok("task.update", json!({"id": task_a, "patch": {"status": "in_progress"}}))
        .await;
    let r = t
        .rest(
            "PATCH",
            &format!("/api/tasks/{task_a}"),
            tok,
            Some(&json!({"status": "review"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Ownership is judged on the task as stored: A may hand its task to B, and
    // then it is no longer A's to update.
    ws.call_ok("task.update", json!({"id": task_a, "patch": {"assignee_id": b}}))
        .await;
    assert_eq!(
        ws.call_err("task.update", json!({"id": task_a, "patch": {"assignee_id": a}}))
            .await,
        "forbidden"
    );
    assert_eq!(t.task(task_a).await["assignee_id"], b);
    assert!(t.head_seq().await > seq_before);
}

// ---------------------------------------------------------------------------
// 3. Revocation.
// ---------------------------------------------------------------------------

/// Waits for each socket's close within `REVOKE_WITHIN` of `since`, asserting 1008.
async fn assert_closed_1008(socks: &mut [Sock], since: Instant, what: &str) {
    for (i, s) in socks.iter_mut().enumerate() {
        let left = REVOKE_WITHIN.saturating_sub(since.elapsed());
        let code = s.closed_within(left).await;
        assert_eq!(code, 1008, "{what}: socket {i} closed with {code}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_over_rest_closes_sockets_and_refuses_the_token() {
    let app = spawn_app();
    let t = target(&app);
    let (id, doomed) = t.new_token("member").await;
    let (_, other) = t.new_token("member").await;
    let cookie = t.login(&doomed).await;
    let mut doomed_socks = vec![t.ws(&doomed).await, t.ws(&doomed).await];
    let origin = t.origin();
    doomed_socks.push(t.cookie_upgrade(&cookie, Some(&origin)).await.expect("cookie socket"));
    for s in &mut doomed_socks {
        s.ping().await;
    }
    let mut other_sock = t.ws(&other).await;
    let mut admin_sock = t.ws(&t.admin).await;

    let r = t
        .rest("DELETE", &format!("/api/tokens/{id}"), Some(&t.admin), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let revoked_at = Instant::now();
    // Refused at once.
    let r = t.rest("GET", "/api/tasks", Some(&doomed), None).await;
    assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
    assert_closed_1008(&mut doomed_socks, revoked_at, "REST revocation").await;

    // Every door is shut to it.
    let r = t.rest("GET", "/api/tasks", Some(&doomed), None).await;
    assert_eq!(r.status, 401);
    let r = t
        .rest("POST", "/api/tasks", Some(&doomed), Some(&json!({"title": "x"})))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        t.upgrade_status(&[("Authorization", &format!("Bearer {doomed}"))])
            .await,
        401
    );
    let refused = t.cookie_upgrade(&cookie, Some(&origin)).await.err();
    assert_eq!(refused.map(|e| e.0), Some(401), "the revoked token's cookie session");
    let r = t.login_post(&[("token", &doomed)], &[("Origin", &origin)]).await;
    assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    let r = t
        .rest("DELETE", &format!("/api/tokens/{id}"), Some(&t.admin), None)
        .await;
    assert_eq!(r.status, 404, "revoking twice: {}", r.body);
    let listed = t.admin_ok("GET", "/api/tokens", None, 200).await;
    let row = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .expect("the revoked token is listed")
        .clone();
    assert!(!row["revoked_at"].is_null(), "{row}");

    // The others go on.
    other_sock.ping().await;
    admin_sock.ping().await;
    let r = t.rest("GET", "/api/tasks", Some(&other), None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_by_command_line_on_the_running_server() {
    let app = spawn_app();
    let t = target(&app);
    // Tokens made over REST, in the server's cache. (The first request also
    // waits for the server to have opened and migrated the file.)
    let (rest_id, rest_token) = t.new_token("member").await;
    let (_, other) = t.new_token("member").await;
    // A token made by the command line while the server runs works within
    // half a second.
    let out = t.cli(&["create", "--role", "member", "--name", "from-cli"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).expect("token create prints JSON");
    let cli_id = created["id"].as_i64().unwrap();
    let cli_token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["role"], "member");
    t.until_status(&cli_token, 200).await;

    let mut cli_socks = vec![t.ws(&cli_token).await, t.ws(&cli_token).await];
    let mut rest_socks = vec![t.ws(&rest_token).await];
    let mut other_sock = t.ws(&other).await;
    for s in cli_socks.iter_mut().chain(rest_socks.iter_mut()) {
        s.ping().await;
    }
    let list = t.cli(&["list"]);
    assert!(list.status.success());
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("from-cli"), "{listed}");
    for secret in [&cli_token, &rest_token, &other, &t.admin] {
        assert!(!listed.contains(secret.as_str()), "token list shows a secret");
    }

    for (id, token, socks) in [
        (cli_id, &cli_token, &mut cli_socks),
        (rest_id, &rest_token, &mut rest_socks),
    ] {
        let out = t.cli(&["revoke", &id.to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let revoked_at = Instant::now();
        assert_closed_1008(socks, revoked_at, "command-line revocation").await;
        let r = t.rest("GET", "/api/tasks", Some(token), None).await;
        assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
        assert_eq!(
            t.upgrade_status(&[("Authorization", &format!("Bearer {token}"))]).await,
            401
        );
        other_sock.ping().await;
    }
    let out = t.cli(&["revoke", &cli_id.to_string()]);
    assert!(!out.status.success(), "revoking twice succeeded");
    let r = t.rest("GET", "/api/tasks", Some(&other), None).await;
    assert_eq!(r.status, 200);
}

/// A token revoked by `taskwire token revoke` is refused within half a
/// second (the server answers from memory and watches the file), and a
/// refusal that comes first does not keep its sockets from being closed.
#[tokio::test(flavor = "multi_thread")]
async fn command_line_revocation_is_refused_within_a_second() {
    let app = spawn_app();
    let t = target(&app);
    let (id, token) = t.new_token("member").await;
    let (_, other) = t.new_token("member").await;
    let cookie = t.login(&token).await;
    let mut socks = vec![
        t.ws(&token).await,
        t.cookie_upgrade(&cookie, Some(&t.origin()))
            .await
            .expect("cookie socket"),
    ];
    let mut other_sock = t.ws(&other).await;
    for s in &mut socks {
        s.ping().await;
    }
    let out = t.cli(&["revoke", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked_at = Instant::now();
    t.until_status(&token, 401).await;
    assert_closed_1008(
        &mut socks,
        revoked_at,
        "command-line revocation seen first by a request",
    )
    .await;
    other_sock.ping().await;
}

/// The same for a browser session: its cookie is refused once the server
/// noticed the revocation.
#[tokio::test(flavor = "multi_thread")]
async fn command_line_revocation_ends_cookie_sessions() {
    let app = spawn_app();
    let t = target(&app);
    let (id, token) = t.new_token("member").await;
    let cookie = t.login(&token).await;
    let origin = t.origin();
    t.cookie_upgrade(&cookie, Some(&origin))
        .await
        .expect("cookie socket")
        .ping()
        .await;
    let out = t.cli(&["revoke", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    t.until_status(&token, 401).await;
    match t.cookie_upgrade(&cookie, Some(&origin)).await {
        Ok(_) => panic!("the revoked token's cookie opened a socket after `taskwire token revoke`"),
        Err((status, body)) => assert_eq!(status, 401, "{body}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_agent_revokes_its_token() {
    let app = spawn_app();
    let t = target(&app);
    let (a, token_a) = t.new_agent().await;
    let (_, token_b) = t.new_agent().await;
    let mut sock_a = t.ws(&token_a).await;
    let mut sock_b = t.ws(&token_b).await;
    sock_a.ping().await;
    let r = t
        .rest("DELETE", &format!("/api/agents/{a}"), Some(&t.admin), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let at = Instant::now();
    let r = t.rest("GET", "/api/agents", Some(&token_a), None).await;
    assert_eq!(r.status, 401, "a deleted agent's token: {}", r.body);
    assert_closed_1008(std::slice::from_mut(&mut sock_a), at, "agent deleted").await;
    sock_b.ping().await;
}

// ---------------------------------------------------------------------------
// 4. Browser login and Origin checks.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cookie_login_and_origin_checks() {
    let allowed = "https://dashboard.example";
    let app = spawn_app_with(|c| c.allowed_origins = vec![allowed.to_string()]);
    let t = target(&app);
    let (_, member) = t.new_token("member").await;
    let cookie = t.login(&member).await;
    let own = t.origin();

    // From a page of the server's own origin: the socket opens as that token.
    let mut s = t.cookie_upgrade(&cookie, Some(&own)).await.expect("own origin");
    assert_eq!(s.hello["role"], "member", "{}", s.hello);
    s.ping().await;
    let created = s.call_ok("task.create", json!({"title": "from the browser"})).await;
    assert!(created["data"]["id"].as_i64().is_some());

    // An origin from the allow-list.
    let mut s2 = t.cookie_upgrade(&cookie, Some(allowed)).await.expect("allowed origin");
    s2.ping().await;

    // Cross-site: refused before the socket opens.
    for origin in [
        "http://evil.example",
        "https://dashboard.example.evil.example",
        "http://localhost:1",
        "null",
        &format!("https://{}", t.addr),
        &format!("{own}.evil.example"),
    ] {
        match t.cookie_upgrade(&cookie, Some(origin)).await {
            Ok(_) => panic!("the cookie opened a socket from {origin}"),
            Err((status, body)) => {
                assert_eq!(status, 403, "from {origin}: {body}");
                assert_eq!(body["error"]["code"], "forbidden", "from {origin}: {body}");
            }
        }
    }
    // The cookie is checked even beside a valid bearer token: a page cannot
    // add one to slip past the Origin check.
    let c = format!("taskwire_session={cookie}");
    let auth = format!("Bearer {member}");
    let refused = t
        .upgrade(&[
            ("Cookie", &c),
            ("Authorization", &auth),
            ("Origin", "http://evil.example"),
        ])
        .await
        .err()
        .expect("cookie and bearer from another origin opened");
    assert_eq!(refused.0, 403, "{}", refused.1);
    // No Origin at all, with the cookie: refused too.
    let refused = t.cookie_upgrade(&cookie, None).await.err().expect("no Origin opened");
    assert_eq!(refused.0, 403, "{}", refused.1);

    // Missing or forged cookies.
    let missing = t
        .upgrade(&[("Origin", own.as_str())])
        .await
        .err()
        .expect("no cookie opened");
    assert_eq!(missing.0, 401, "{}", missing.1);
    for forged in [forged_token(), "x".to_string(), member.clone(), format!("{cookie}0")] {
        let r = t.cookie_upgrade(&forged, Some(&own)).await.err();
        assert_eq!(r.map(|e| e.0), Some(401), "forged cookie {forged:?}");
    }

    // Logins that fail set no cookie.
    for bad in [forged_token(), String::new()] {
        let r = t.login_post(&[("token", &bad)], &[("Origin", &own)]).await;
        assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
        assert!(r.header("set-cookie").is_none(), "a failed login set a cookie");
    }

    // REST takes no cookie (no cross-site request can act with it).
    let c = format!("taskwire_session={cookie}");
    let r = t
        .send("GET", "/api/tasks", None, &[("Cookie", &c), ("Origin", &own)], None)
        .await;
    assert_eq!(r.status, 401, "REST accepted the cookie: {}", r.body);
    let r = t
        .send(
            "POST",
            "/api/tasks",
            None,
            &[("Cookie", &c), ("Origin", &own)],
            Some(&json!({"title": "csrf"})),
        )
        .await;
    assert_eq!(r.status, 401, "REST accepted the cookie: {}", r.body);

    // Logout ends that session only.
    let other_cookie = t.login(&member).await;
    assert_ne!(other_cookie, cookie, "two logins share a session");
    let r = t.send("GET", "/logout", None, &[("Cookie", &c)], None).await;
    assert_eq!(r.status, 303);
    let cleared = r.header("set-cookie").expect("logout clears the cookie");
    assert!(cleared.starts_with("taskwire_session=;"), "{cleared}");
    let r = t.cookie_upgrade(&cookie, Some(&own)).await.err();
    assert_eq!(r.map(|e| e.0), Some(401), "the cookie still works after logout");
    let mut s3 = t
        .cookie_upgrade(&other_cookie, Some(&own))
        .await
        .expect("the other session");
    s3.ping().await;
    // POST /logout too.
    let c2 = format!("taskwire_session={other_cookie}");
    let r = t.send("POST", "/logout", None, &[("Cookie", &c2)], None).await;
    assert_eq!(r.status, 303);
    let r = t.cookie_upgrade(&other_cookie, Some(&own)).await.err();
    assert_eq!(r.map(|e| e.0), Some(401), "the cookie still works after POST /logout");
    // Bearer clients need no Origin.
    t.ws(&member).await.ping().await;
}

// ---------------------------------------------------------------------------
// 4b. Login links, login CSRF, the session cap and the Secure cookie.
// ---------------------------------------------------------------------------

/// The text of an HTML answer (the body `form_post` kept as a string).
fn text(r: &Resp) -> &str {
    r.body.as_str().unwrap_or_default()
}

/// A link's code logs in once: opening the link (as often as a prefetch or a
/// history entry may) logs nobody in; the POST does, once. Used, expired,
/// unknown and revoked-token codes are refused 401 and set no cookie.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_link_logs_in_once() {
    let app = spawn_app();
    let t = target(&app);
    let own = t.origin();
    let (member_id, _) = t.new_token("member").await;
    let (code, link) = t.login_code(member_id).await;

    // Opening the link shows a button that posts the code; it sets nothing.
    for _ in 0..2 {
        let res = t.http.get(&link).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("set-cookie").is_none(), "opening the link logged in");
        assert_eq!(
            res.headers().get("referrer-policy").map(|v| v.to_str().unwrap()),
            Some("same-origin"),
            "under no-referrer a browser would post the form with Origin: null"
        );
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        let html = res.text().await.unwrap();
        assert!(html.contains(r#"<form action="/login" method="post">"#), "{html}");
        assert!(
            html.contains(&format!(r#"<input type="hidden" name="code" value="{code}">"#)),
            "{html}"
        );
    }

    // The POST logs in as the code's token.
    let cookie = t.login_with_code(&code).await;
    let mut s = t.cookie_upgrade(&cookie, Some(&own)).await.expect("the code's session");
    assert_eq!(s.hello["role"], "member", "{}", s.hello);
    s.ping().await;

    // Once only: as JSON for a script, as the form with the reason for a browser.
    let r = t.login_post(&[("code", &code)], &[("Origin", &own)]).await;
    assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("already used"),
        "{}",
        r.body
    );
    assert!(r.header("set-cookie").is_none());
    let r = t
        .login_post(
            &[("code", &code)],
            &[("Origin", &own), ("Accept", "text/html,*/*;q=0.8")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(text(&r).contains("This login link was already used"), "{}", text(&r));
    assert!(
        text(&r).contains(r#"name="token""#),
        "the page offers the token form: {}",
        text(&r)
    );
    assert!(r.header("set-cookie").is_none());

    // Expired: the row's lifetime ended (10 minutes in real life).
    let (expired, _) = t.login_code(member_id).await;
    let hash = taskwire::auth::hash_token(&expired);
    let n = app.sqlite().execute(&format!(
        "UPDATE login_codes SET expires_at = '2000-01-01T00:00:00.000Z' WHERE hash = '{hash}'"
    ));
    assert_eq!(n, 1);
    let r = t.login_post(&[("code", &expired)], &[("Origin", &own)]).await;
    assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("expired"),
        "{}",
        r.body
    );
    assert!(r.header("set-cookie").is_none());
    assert_eq!(
        app.sqlite().int(&format!(
            "SELECT COUNT(*) AS n FROM login_codes WHERE hash = '{hash}' AND used_at IS NULL"
        )),
        1,
        "a refused code is not used up"
    );

    // Unknown, malformed, empty: refused, nothing set.
    let unknown = format!("twl_{}", "0".repeat(64));
    for bad in [unknown.as_str(), "x", "", &code[..code.len() - 1], &forged_token()] {
        let r = t.login_post(&[("code", bad)], &[("Origin", &own)]).await;
        assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{bad:?}: {}", r.body);
        assert!(r.header("set-cookie").is_none());
    }
    let res = t.http.get(t.url("/login?code=<script>")).send().await.unwrap();
    assert_eq!(res.status(), 400);

    // A code whose token was revoked before it was used.
    let (doomed_id, _) = t.new_token("member").await;
    let (doomed_code, _) = t.login_code(doomed_id).await;
    t.admin_ok("DELETE", &format!("/api/tokens/{doomed_id}"), None, 204)
        .await;
    let r = t.login_post(&[("code", &doomed_code)], &[("Origin", &own)]).await;
    assert_eq!((r.status, r.code()), (401, Some("unauthorized")), "{}", r.body);
    // And no code for a revoked or unknown token.
    for id in [doomed_id, 999_999] {
        let r = t
            .rest("POST", &format!("/api/tokens/{id}/login-code"), Some(&t.admin), None)
            .await;
        assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.body);
    }

    // The file holds the code's hash, never the code.
    let stored = app.sqlite().int(&format!(
        "SELECT COUNT(*) AS n FROM login_codes WHERE hash = '{}'",
        taskwire::auth::hash_token(&code)
    ));
    assert_eq!(stored, 1);
    assert_eq!(
        app.sqlite()
            .int(&format!("SELECT COUNT(*) AS n FROM login_codes WHERE hash = '{code}'")),
        0
    );

    // `taskwire token login-link` on the file: the running server takes it.
    let out = t.cli(&["login-link", &member_id.to_string(), "--url", &own]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let printed = printed.trim();
    let cli_code = printed
        .strip_prefix(&format!("{own}/login?code="))
        .unwrap_or_else(|| panic!("not a login link: {printed}"));
    let cookie = t.login_with_code(cli_code).await;
    let s = t
        .cookie_upgrade(&cookie, Some(&own))
        .await
        .expect("the CLI code's session");
    assert_eq!(s.hello["role"], "member");
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(told.contains(&format!("token {member_id}")), "{told}");
    assert!(!told.contains(cli_code), "the code on stderr: {told}");
}

/// A token in the address no longer logs in: `GET /login?token=` is 400 and
/// sets nothing; the form posts instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_get_with_a_token_does_not_log_in() {
    let app = spawn_app();
    let t = target(&app);
    let r = t.rest("GET", &format!("/login?token={}", t.admin), None, None).await;
    assert_eq!((r.status, r.code()), (400, Some("bad_request")), "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    let res = t
        .http
        .get(t.url(&format!("/login?token={}", t.admin)))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("set-cookie").is_none());
    let html = res.text().await.unwrap();
    assert!(html.contains("does not log in"), "{html}");
    assert!(!html.contains(&t.admin), "the page repeats the token: {html}");
    // The form posts, and the token never goes into a URL.
    let html = t.http.get(t.url("/login")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(r#"<form action="/login" method="post">"#), "{html}");
    assert!(html.contains(r#"name="token" type="password""#), "{html}");
    // What a login POST takes: a form with one field, token or code.
    let origin = t.origin();
    let r = t
        .send(
            "POST",
            "/login",
            None,
            &[("Origin", &origin)],
            Some(&json!({"token": t.admin})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("bad_request")),
        "JSON is not a form: {}",
        r.body
    );
    for fields in [
        vec![("token", t.admin.as_str()), ("code", "x")],
        vec![("token", t.admin.as_str()), ("token", t.admin.as_str())],
        vec![("password", t.admin.as_str())],
        vec![],
    ] {
        let r = t.login_post(&fields, &[("Origin", &origin)]).await;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("bad_request")),
            "{fields:?}: {}",
            r.body
        );
        assert!(r.header("set-cookie").is_none());
    }
}

/// Login CSRF: a login POST must come from a page of the server's own origin
/// or an `--allowed-origin`, by `Origin`, or by `Referer` when there is no
/// `Origin`. Anything else is 403, sets nothing and uses no code up.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_from_another_origin_is_refused() {
    let allowed = "https://dashboard.example";
    let app = spawn_app_with(|c| c.allowed_origins = vec![allowed.to_string()]);
    let t = target(&app);
    let own = t.origin();
    let (member_id, member) = t.new_token("member").await;
    let (code, _) = t.login_code(member_id).await;
    let evil_referer = "http://evil.example/login".to_string();
    let own_https = format!("https://{}", t.addr);
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", &own_https)],
        vec![("Origin", "http://evil.example"), ("Referer", &own)],
        vec![("Referer", &evil_referer)],
        vec![("Referer", "/login")],
        vec![],
    ];
    for headers in &refused {
        for fields in [[("token", member.as_str())], [("code", code.as_str())]] {
            let r = t.login_post(&fields, headers).await;
            assert_eq!(
                (r.status, r.code()),
                (403, Some("forbidden")),
                "{headers:?}: {}",
                r.body
            );
            assert!(r.header("set-cookie").is_none(), "{headers:?} set a cookie");
        }
    }
    // A browser is shown the reason.
    let r = t
        .login_post(
            &[("token", &member)],
            &[("Origin", "http://evil.example"), ("Accept", "text/html")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(text(&r).contains("posted from a page of this server"), "{}", text(&r));
    // None of that used the code up.
    let cookie = t.login_with_code(&code).await;
    t.cookie_upgrade(&cookie, Some(&own))
        .await
        .expect("the code still worked");
    // Allowed: the own origin, an --allowed-origin, or a Referer of the own
    // origin when the browser sent no Origin.
    let own_page = format!("{own}/login");
    for headers in [
        vec![("Origin", own.as_str())],
        vec![("Origin", allowed)],
        vec![("Referer", own_page.as_str())],
    ] {
        let r = t.login_post(&[("token", &member)], &headers).await;
        session_cookie(&r, &member);
    }
}

/// A token holds at most 20 browser sessions: the 21st login ends the
/// oldest, whose cookie stops working at once; other tokens keep theirs.
/// Sessions over the cap in a file from before it end at start.
#[tokio::test(flavor = "multi_thread")]
async fn the_21st_session_ends_the_oldest() {
    let app = spawn_app();
    let t = target(&app);
    let own = t.origin();
    let (member_id, member) = t.new_token("member").await;
    let (other_id, other) = t.new_token("member").await;
    let other_cookie = t.login(&other).await;
    let mut cookies = Vec::new();
    for _ in 0..20 {
        cookies.push(t.login(&member).await);
    }
    let count = |id: i64| format!("SELECT COUNT(*) AS n FROM web_sessions WHERE token_id = {id}");
    assert_eq!(app.sqlite().int(&count(member_id)), 20);
    t.cookie_upgrade(&cookies[0], Some(&own))
        .await
        .expect("the first of 20");

    cookies.push(t.login(&member).await);
    assert_eq!(app.sqlite().int(&count(member_id)), 20, "the cap");
    let r = t.cookie_upgrade(&cookies[0], Some(&own)).await.err();
    assert_eq!(r.map(|e| e.0), Some(401), "the oldest session still works");
    for c in &cookies[1..] {
        t.cookie_upgrade(c, Some(&own)).await.expect("a newer session");
    }
    // A login code counts the same.
    let (code, _) = t.login_code(member_id).await;
    cookies.push(t.login_with_code(&code).await);
    assert_eq!(app.sqlite().int(&count(member_id)), 20);
    let r = t.cookie_upgrade(&cookies[1], Some(&own)).await.err();
    assert_eq!(r.map(|e| e.0), Some(401), "the second oldest after one more login");
    t.cookie_upgrade(&other_cookie, Some(&own))
        .await
        .expect("another token's session");
    assert_eq!(app.sqlite().int(&count(other_id)), 1);

    // A file with more (written before the cap): trimmed at start, oldest first.
    let secrets: Vec<String> = (0..25)
        .map(|i| format!("tw_old_session_{i:02}_{}", "x".repeat(20)))
        .collect();
    let mut conn = app.sqlite();
    for (i, secret) in secrets.iter().enumerate() {
        conn.execute(&format!(
            "INSERT INTO web_sessions (hash, token_id, created_at, expires_at) \
             VALUES ('{}', {other_id}, '2026-01-01T00:00:{i:02}.000Z', '9999-01-01T00:00:00.000Z')",
            taskwire::auth::hash_token(secret)
        ));
    }
    drop(conn);
    let app = app.restart(|_| {});
    let t = target(&app);
    let own = t.origin();
    // The newest are the login made above and the last 19 inserted. (The
    // first answer also means the server has started, and trimmed.)
    t.cookie_upgrade(&other_cookie, Some(&own)).await.expect("the newest");
    t.cookie_upgrade(&secrets[24], Some(&own))
        .await
        .expect("a newer inserted");
    t.cookie_upgrade(&secrets[6], Some(&own))
        .await
        .expect("the oldest kept");
    let r = t.cookie_upgrade(&secrets[5], Some(&own)).await.err();
    assert_eq!(r.map(|e| e.0), Some(401), "a session over the cap survived the start");
    assert_eq!(app.sqlite().int(&count(other_id)), 20);
}

/// The cookie is `Secure` only when the browser came over HTTPS: as a
/// `--trusted-proxy` says; forwarding headers from anyone else are ignored.
#[tokio::test(flavor = "multi_thread")]
async fn the_cookie_is_secure_over_https_only() {
    fn secure(r: &Resp) -> bool {
        assert_eq!(r.status, 303, "{}", r.body);
        let cookie = r.header("set-cookie").expect("a cookie");
        cookie.split(';').any(|a| a.trim().eq_ignore_ascii_case("secure"))
    }
    // No trusted proxy: X-Forwarded-Proto changes nothing.
    let app = spawn_app();
    let t = target(&app);
    let own = t.origin();
    let own_https = format!("https://{}", t.addr);
    let (_, member) = t.new_token("member").await;
    let r = t
        .login_post(
            &[("token", &member)],
            &[("Origin", &own), ("X-Forwarded-Proto", "https")],
        )
        .await;
    assert!(!secure(&r), "a client's X-Forwarded-Proto made the cookie Secure");
    let r = t
        .login_post(
            &[("token", &member)],
            &[("Origin", &own_https), ("X-Forwarded-Proto", "https")],
        )
        .await;
    assert_eq!(
        r.status, 403,
        "a client's X-Forwarded-Proto changed the own origin: {}",
        r.body
    );
    drop(app);

    // The test client is the trusted proxy.
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    let t = target(&app);
    let own = t.origin();
    let own_https = format!("https://{}", t.addr);
    let (_, member) = t.new_token("member").await;
    for proxy in [
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=192.0.2.1;proto=https"),
        ("X-Forwarded-Proto", "http, https"),
    ] {
        let r = t
            .login_post(&[("token", &member)], &[("Origin", &own_https), proxy])
            .await;
        assert!(secure(&r), "{proxy:?}: no Secure");
        // Over HTTPS the own origin is https://; a cookie socket from it opens.
        let cookie = session_cookie_value(&r);
        let c = format!("taskwire_session={cookie}");
        let opened = t.upgrade(&[("Cookie", &c), ("Origin", &own_https), proxy]).await;
        assert!(opened.is_ok(), "{proxy:?}: {:?}", opened.err());
    }
    // Plain HTTP through the proxy: not Secure, and the own origin is http://.
    for proxy in [
        vec![],
        vec![("X-Forwarded-Proto", "http")],
        vec![("X-Forwarded-Proto", "https, http")],
    ] {
        let mut headers = vec![("Origin", own.as_str())];
        headers.extend(proxy.iter().copied());
        let r = t.login_post(&[("token", &member)], &headers).await;
        assert!(!secure(&r), "{proxy:?}: Secure over plain HTTP");
    }
    // Logging out over HTTPS clears the Secure cookie with a Secure removal.
    let r = t
        .send("POST", "/logout", None, &[("X-Forwarded-Proto", "https")], None)
        .await;
    assert_eq!(r.status, 303);
    let cleared = r.header("set-cookie").unwrap();
    assert!(cleared.to_ascii_lowercase().contains("secure"), "{cleared}");
}

/// The value of the session cookie an answer sets.
fn session_cookie_value(r: &Resp) -> String {
    let cookie = r.header("set-cookie").expect("a cookie");
    cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("taskwire_session=")
        .expect("the session cookie")
        .to_string()
}

// ---------------------------------------------------------------------------
// 5. Limits.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn frame_rate_limit_answers_rate_limited_and_spares_other_sockets() {
    let app = spawn_app_with(|c| c.rate_limit = 5);
    let t = target(&app);
    let (_, member) = t.new_token("member").await;
    let mut flooded = t.ws(&member).await;
    let mut same_token = t.ws(&member).await;
    let mut other_token = t.ws(&t.admin).await;

    // 20 creates at once: the bucket holds 5.
    let n = 20;
    for i in 0..n {
        let frame = json!({"type": "call", "ref": 1000 + i, "method": "task.create",
            "params": {"title": format!("flood {i}")}});
        flooded.stream.feed(Message::Text(frame.to_string())).await.unwrap();
    }
    flooded.stream.flush().await.unwrap();
    let (mut ok, mut limited) = (0, 0);
    let mut refs = Vec::new();
    while refs.len() < n as usize {
        let v = flooded.recv().await.expect("the flooded socket stays open");
        if v["type"] != "reply" {
            continue;
        }
        refs.push(v["ref"].as_i64().unwrap());
        if v["ok"] == true {
            ok += 1;
        } else {
            assert_eq!(v["error"]["code"], "rate_limited", "{v}");
            limited += 1;
        }
    }
    refs.sort();
    assert_eq!(refs, (1000..1000 + n).collect::<Vec<_>>(), "every frame answered once");
    assert!(limited > 0, "20 frames at a rate of 5 met no limit");
    assert!(ok >= 5 && ok < n, "{ok} of {n} ran");
    // The refused frames did nothing.
    let tasks = t.admin_ok("GET", "/api/tasks", None, 200).await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), ok as usize);

    // Other sockets, of the same token or another, are unaffected.
    same_token.ping().await;
    same_token.call_ok("task.create", json!({"title": "unaffected"})).await;
    other_token.ping().await;

    // The bucket refills (nothing to await: poll, with a deadline).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = flooded.request(json!({"type": "ping"})).await;
        if r["ok"] == true {
            break;
        }
        assert_eq!(r["error"]["code"], "rate_limited", "{r}");
        assert!(Instant::now() < deadline, "the flooded socket is not served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow: needs over 10 s of continuous abuse"]
async fn persistent_frame_abuse_closes_1008() {
    let app = spawn_app_with(|c| c.rate_limit = 10);
    let t = target(&app);
    let mut abuser = t.ws(&t.admin).await;
    let mut bystander = t.ws(&t.admin).await;
    let start = Instant::now();
    let mut i = 0u64;
    // Ten times the limit, for up to 15 s.
    let code = loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not closed after 15 s of abuse"
        );
        i += 1;
        let frame = json!({"type": "ping", "ref": i}).to_string();
        if abuser.stream.send(Message::Text(frame)).await.is_err() {
            break None;
        }
        match tokio::time::timeout(Duration::from_millis(10), abuser.stream.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(None) | Ok(Some(Err(_))) => break None,
            _ => {}
        }
    };
    assert_eq!(code, Some(1008), "after {:?}", start.elapsed());
    assert!(
        start.elapsed() >= Duration::from_secs(10),
        "closed after {:?}",
        start.elapsed()
    );
    bystander.ping().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_limit_answers_invalid_and_joins_nothing() {
    let app = spawn_app_with(|c| c.max_subscriptions = 2);
    let t = target(&app);
    let task = t.new_task(None).await;
    let mut s = t.ws(&t.admin).await;
    let topic = format!("task:{task}");
    assert_eq!(
        s.request(json!({"type": "subscribe", "topic": "tasks"})).await["ok"],
        true
    );
    assert_eq!(
        s.request(json!({"type": "subscribe", "topic": "agents"})).await["ok"],
        true
    );
    // Repeating a held topic is no new subscription.
    assert_eq!(
        s.request(json!({"type": "subscribe", "topic": "tasks"})).await["ok"],
        true
    );
    let third = s.request(json!({"type": "subscribe", "topic": topic})).await;
    assert_eq!(third["ok"], false, "{third}");
    assert_eq!(third["error"]["code"], "invalid", "{third}");

    // It joined nothing: a change of that task comes on `tasks` only.
    let mut other = t.ws(&t.admin).await;
    other
        .call_ok("task.update", json!({"id": task, "patch": {"status": "done"}}))
        .await;
    let seq = loop {
        let ev = match s.events.is_empty() {
            true => s.recv().await.expect("open"),
            false => s.events.remove(0),
        };
        assert_ne!(ev["topic"], topic.as_str(), "an event of the refused topic: {ev}");
        if ev["topic"] == "tasks" && ev["event"] == "task.updated" {
            break ev["seq"].as_i64().unwrap();
        }
    };
    // Both topics' events are queued together; a ping's reply comes after them.
    s.events.clear();
    s.ping().await;
    assert!(
        s.events.iter().all(|e| e["topic"] != topic.as_str()),
        "an event of the refused topic: {:?}",
        s.events
    );
    // Another connection has its own limit: it takes two topics, the refused one too.
    for topic in ["agents", &format!("task:{task}")] {
        assert_eq!(
            other.request(json!({"type": "subscribe", "topic": topic})).await["ok"],
            true
        );
    }

    // Freeing a slot lets it in, and then its events come.
    assert_eq!(
        s.request(json!({"type": "unsubscribe", "topic": "agents"})).await["ok"],
        true
    );
    let joined = s.request(json!({"type": "subscribe", "topic": topic})).await;
    assert_eq!(joined["ok"], true, "{joined}");
    s.events.clear();
    other
        .call_ok("task.update", json!({"id": task, "patch": {"status": "review"}}))
        .await;
    loop {
        let ev = s.recv().await.expect("open");
        if ev["topic"] == topic.as_str() {
            assert!(ev["seq"].as_i64().unwrap() > seq);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_limits_per_token_and_total_answer_503() {
    // Per token.
    let app = spawn_app_with(|c| c.max_sockets_per_token = 1);
    let t = target(&app);
    let (_, m1) = t.new_token("member").await;
    let (_, m2) = t.new_token("member").await;
    let (_, agent_token) = t.new_agent().await;
    let mut first = t.ws(&m1).await;
    let second = t.upgrade(&[("Authorization", &format!("Bearer {m1}"))]).await;
    let (status, body) = second.err().expect("a second socket of the token opened");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // The cookie counts against the same token.
    let cookie = t.login(&m1).await;
    let third = t.cookie_upgrade(&cookie, Some(&t.origin())).await.err();
    assert_eq!(third.map(|e| e.0), Some(503));
    // Other tokens, agents and admin (counted only toward the total) go on.
    let mut other = t.ws(&m2).await;
    let mut agent = t.ws(&agent_token).await;
    let mut a1 = t.ws(&t.admin).await;
    let mut a2 = t.ws(&t.admin).await;
    for s in [&mut first, &mut other, &mut agent, &mut a1, &mut a2] {
        s.ping().await;
    }
    // Closing frees the slot.
    first.close().await;
    let auth = format!("Bearer {m1}");
    eventually("the token's slot comes back", WAIT, || async {
        t.upgrade_status(&[("Authorization", &auth)]).await == 101
    })
    .await;
    drop(app);

    // In total.
    let app = spawn_app_with(|c| c.max_sockets = 2);
    let t = target(&app);
    let (_, m) = t.new_token("member").await;
    let s1 = t.ws(&t.admin).await;
    let mut s2 = t.ws(&m).await;
    for headers in [
        vec![("Authorization", format!("Bearer {}", t.admin))],
        vec![("Authorization", format!("Bearer {m}"))],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = t.upgrade(&h).await.err().expect("a socket over the total");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    s2.ping().await;
    let r = t.rest("GET", "/api/tasks", Some(&m), None).await;
    assert_eq!(r.status, 200, "REST is not limited by sockets");
    s1.close().await;
    let auth = format!("Bearer {m}");
    eventually("a total slot comes back", WAIT, || async {
        t.upgrade_status(&[("Authorization", &auth)]).await == 101
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|c| c.rest_rate_limit = 5);
    let t = target(&app);
    let (_, m1) = t.new_token("member").await;
    let (_, m2) = t.new_token("member").await;
    // 15 writes at once with one token: the bucket holds 5.
    let sends = (0..15).map(|i| {
        let t = &t;
        let m1 = &m1;
        async move {
            t.rest(
                "POST",
                "/api/tasks",
                Some(m1),
                Some(&json!({"title": format!("burst {i}")})),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut created = 0;
    let mut limited = 0;
    for r in &answers {
        match r.status {
            201 => created += 1,
            429 => {
                limited += 1;
                assert_eq!(r.code(), Some("rate_limited"), "{}", r.body);
                let after = r.header("retry-after").expect("Retry-After");
                assert!(after.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After: {after}");
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert!(limited > 0, "15 requests at 5 per second met no limit");
    assert!((5..15).contains(&created), "{created} created");
    // Another token is unaffected, and sees that refused writes did nothing.
    let r = t.rest("GET", "/api/tasks", Some(&m2), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), created);
    // A bad token is refused as such, not counted as the limited one.
    let r = t.rest("GET", "/api/tasks", Some(&forged_token()), None).await;
    assert_eq!(r.status, 401);
    // The bucket refills.
    eventually("the limited token is served again", Duration::from_secs(3), || async {
        t.rest("GET", "/api/tasks", Some(&m1), None).await.status == 200
    })
    .await;
}

// ---------------------------------------------------------------------------
// Pages.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_csp_and_nosniff() {
    let app = spawn_app();
    let t = target(&app);
    let task = t.new_task(None).await;
    let (agent, _) = t.new_agent().await;
    let pages = [
        "/".to_string(),
        format!("/tasks/{task}"),
        format!("/agents/{agent}"),
        "/login".to_string(),
        format!("/login?code=twl_{}", "0".repeat(64)),
    ];
    let assets = ["/static/js/client.js", "/static/css/app.css", "/static/favicon.svg"];
    let errors = ["/static/no-such-file.js", "/no-such-page"];
    for path in pages.iter().map(String::as_str).chain(assets).chain(errors) {
        let res = t.http.get(t.url(path)).send().await.unwrap();
        let status = res.status().as_u16();
        let h = res.headers().clone();
        let text = res.text().await.unwrap();
        if errors.contains(&path) {
            assert_eq!(status, 404, "{path}");
        } else {
            assert_eq!(status, 200, "{path}");
        }
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"))
            .to_str()
            .unwrap();
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        assert!(directives.contains(&"script-src 'self'"), "{path}: {csp}");
        assert!(directives.contains(&"frame-ancestors 'none'"), "{path}: {csp}");
        assert!(directives.contains(&"default-src 'self'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            h.get("x-frame-options").map(|v| v.to_str().unwrap()),
            Some("DENY"),
            "{path}"
        );
        let ct = h.get("content-type").map(|v| v.to_str().unwrap()).unwrap_or("");
        if path.ends_with(".js") && status == 200 {
            assert!(ct.contains("javascript"), "{path}: {ct}");
        }
        if pages.iter().any(|p| p == path) {
            assert!(ct.starts_with("text/html"), "{path}: {ct}");
            // The policy allows no inline script: the pages must not need one.
            for tag in text.split("<script").skip(1) {
                let head = tag.split('>').next().unwrap();
                assert!(
                    head.contains("src=\"/static/"),
                    "{path}: an inline script: <script{head}>"
                );
            }
            let lower = text.to_ascii_lowercase();
            for handler in [" onclick=", " onload=", " onerror=", " onsubmit=", "javascript:"] {
                assert!(!lower.contains(handler), "{path}: inline handler {handler}");
            }
        }
    }
    // At least the board loads its script.
    let board = t.http.get(t.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(board.contains("<script"), "the board has no script at all");
}

// ---------------------------------------------------------------------------
// 6. No token in logs (the real binary) or in the database files.
// ---------------------------------------------------------------------------

/// The binary as a child process, its stdout and stderr collected.
struct Child {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

impl Child {
    /// Starts the binary on `db`; with no `admin`, a new database gets a
    /// random admin token and a printed login link.
    fn start(db: &Path, admin: Option<&str>) -> (Child, SocketAddr) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskwire"));
        match admin {
            Some(a) => cmd.env("TASKWIRE_ADMIN_TOKEN", a),
            None => cmd.env_remove("TASKWIRE_ADMIN_TOKEN"),
        };
        let mut child = cmd
            .args(["serve", "--bind", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "debug")
            .env_remove("DATABASE_URL")
            .env_remove("TASKWIRE_BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the taskwire binary");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), out.clone()),
            collect(child.stderr.take().unwrap(), err.clone()),
        ];
        let mut c = Child {
            child,
            out,
            err,
            readers,
        };
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let log = c.err.lock().unwrap().clone();
            if let Some(rest) = log.split("listening on http://").nth(1) {
                if let Some(addr) = rest.split_whitespace().next() {
                    break addr.parse().expect("listen address");
                }
            }
            if Instant::now() > deadline {
                let _ = c.child.kill();
                panic!("the server did not start: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (c, addr)
    }

    /// Stops the server with SIGTERM and returns everything it printed.
    fn stop(mut self) -> (String, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.out.lock().unwrap().clone();
        let err = self.err.lock().unwrap().clone();
        (out, err)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_in_logs_or_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("taskwire.db");
    let admin = format!("tw_{}", "5eed".repeat(16));
    let (server, addr) = Child::start(&db, Some(&admin));
    let t = Target::new(addr, &admin, &db);
    let mut secrets: Vec<(String, String)> = vec![("admin".into(), admin.clone())];

    // Browser login, and a cookie socket.
    let cookie = t.login(&admin).await;
    secrets.push(("session cookie".into(), cookie.clone()));
    let mut browser = t
        .cookie_upgrade(&cookie, Some(&t.origin()))
        .await
        .expect("cookie socket");
    browser.ping().await;
    // Tokens over REST and the command line.
    let (member_id, member) = t.new_token("member").await;
    secrets.push(("member".into(), member.clone()));
    // Login links, over REST and the command line, and their sessions.
    let (code, _) = t.login_code(member_id).await;
    secrets.push(("login code".into(), code.clone()));
    let code_cookie = t.login_with_code(&code).await;
    secrets.push(("login code's session".into(), code_cookie));
    let out = t.cli(&["login-link", &member_id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8(out.stdout).unwrap();
    let cli_code = link
        .trim()
        .split("code=")
        .nth(1)
        .expect("a code in the link")
        .to_string();
    secrets.push(("command-line login code".into(), cli_code.clone()));
    let link_stderr = String::from_utf8_lossy(&out.stderr).to_string();
    secrets.push(("command-line code's session".into(), t.login_with_code(&cli_code).await));
    assert_eq!(
        t.login_post(&[("code", &cli_code)], &[("Origin", &t.origin())])
            .await
            .status,
        401
    );
    let out = t.cli(&["create", "--role", "member", "--name", "cli"]);
    assert!(out.status.success());
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (cli_id, cli_token) = (cli["id"].as_i64().unwrap(), cli["token"].as_str().unwrap().to_string());
    t.until_status(&cli_token, 200).await;
    secrets.push(("command-line token".into(), cli_token.clone()));
    let cli_stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // Agents, with their tokens, over REST and the socket.
    let (agent_id, agent_token) = t.new_agent().await;
    secrets.push(("REST agent".into(), agent_token.clone()));
    let mut member_sock = t.ws(&member).await;
    member_sock.call_ok("task.create", json!({"title": "logged?"})).await;
    let mut admin_sock = t.ws(&admin).await;
    let created = admin_sock
        .request(json!({"type": "call", "method": "agent.create", "op_id": "create-1",
            "params": {"name": "socket agent"}}))
        .await;
    assert_eq!(created["ok"], true, "{created}");
    let socket_agent_token = created["data"]["token"].as_str().unwrap().to_string();
    secrets.push(("socket agent".into(), socket_agent_token.clone()));
    let mut agent_sock = t.ws(&socket_agent_token).await;
    agent_sock
        .call_ok(
            "agent.heartbeat",
            json!({"id": created["data"]["id"], "status": "busy"}),
        )
        .await;
    let cli_sock = t.ws(&cli_token).await;
    // Bad tokens everywhere.
    for i in 0..3 {
        let bad = forged_token();
        secrets.push((format!("forged {i}"), bad.clone()));
        assert_eq!(t.rest("GET", "/api/tasks", Some(&bad), None).await.status, 401);
        assert_eq!(
            t.login_post(&[("token", &bad)], &[("Origin", &t.origin())])
                .await
                .status,
            401
        );
        assert_eq!(
            t.upgrade_status(&[("Authorization", &format!("Bearer {bad}"))]).await,
            401
        );
        let r = t.cookie_upgrade(&bad, Some(&t.origin())).await.err();
        assert_eq!(r.map(|e| e.0), Some(401));
        let r = t.cookie_upgrade(&cookie, Some("http://evil.example")).await.err();
        assert_eq!(r.map(|e| e.0), Some(403));
    }
    let r = t
        .send(
            "GET",
            "/api/tasks",
            None,
            &[("Authorization", &format!("Basic {admin}"))],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    // Forbidden attempts with real tokens.
    let r = t
        .rest(
            "POST",
            "/api/tokens",
            Some(&agent_token),
            Some(&json!({"role": "admin", "name": "x"})),
        )
        .await;
    assert_eq!(r.status, 403);
    // Revocation: REST, command line, and an agent's deletion.
    let r = t
        .rest("DELETE", &format!("/api/tokens/{member_id}"), Some(&admin), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(member_sock.closed_within(WAIT).await, 1008);
    let out = t.cli(&["revoke", &cli_id.to_string()]);
    assert!(out.status.success());
    let mut cli_sock = cli_sock;
    assert_eq!(cli_sock.closed_within(WAIT).await, 1008);
    let r = t
        .rest("DELETE", &format!("/api/agents/{agent_id}"), Some(&admin), None)
        .await;
    assert_eq!(r.status, 204);
    for tk in [&member, &cli_token, &agent_token] {
        assert_eq!(t.rest("GET", "/api/tasks", Some(tk), None).await.status, 401);
    }
    // Logout.
    let c = format!("taskwire_session={cookie}");
    assert_eq!(
        t.send("GET", "/logout", None, &[("Cookie", &c)], None).await.status,
        303
    );
    let r = t.cookie_upgrade(&cookie, Some(&t.origin())).await.err();
    assert_eq!(r.map(|e| e.0), Some(401));
    browser.ping().await;
    drop((browser, admin_sock, agent_sock));

    let (stdout, stderr) = server.stop();
    assert!(stderr.contains("listening on"), "the log was not captured: {stderr}");
    assert!(
        stderr.contains("DEBUG"),
        "RUST_LOG=debug printed no debug line: {stderr}"
    );
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        // The whole secret, or a long enough piece of its random part.
        let random = secret.strip_prefix("tw_").unwrap_or(secret);
        let piece = &random[..random.len().min(24)];
        let hash = taskwire::auth::hash_token(secret);
        for (stream, text) in [
            ("stdout", &stdout),
            ("stderr", &stderr),
            ("token CLI stderr", &cli_stderr),
            ("login-link CLI stderr", &link_stderr),
        ] {
            for line in text.lines() {
                if line.contains(secret.as_str()) || line.contains(piece) || line.contains(&hash) {
                    leaks.push(format!("{what} in {stream}: {line}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in the logs:\n{}", leaks.join("\n"));

    // The database files hold hashes, never secrets.
    let mut files = 0;
    for entry in std::fs::read_dir(db.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for (what, secret) in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{what} in clear in {}", path.display());
        }
    }
    assert!(files >= 1);
    let bytes = std::fs::read(&db).unwrap();
    let admin_hash = taskwire::auth::hash_token(&admin);
    let wal = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
    let has = |b: &[u8]| b.windows(admin_hash.len()).any(|w| w == admin_hash.as_bytes());
    assert!(
        has(&bytes) || has(&wal),
        "the admin token's hash is not stored: is the check blind?"
    );
}

/// The first start of a new database prints a login link with a one-time
/// code, not the token: it logs in once, as admin; a second start prints none.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_start_prints_a_one_time_login_link() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("taskwire.db");
    let (server, addr) = Child::start(&db, None);
    let line = server
        .err
        .lock()
        .unwrap()
        .lines()
        .find(|l| l.contains("Log in at"))
        .map(String::from)
        .expect("the login link is printed before the server listens");
    let link = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no link in {line}"));
    let code = link
        .strip_prefix(&format!("http://{addr}/login?code="))
        .unwrap_or_else(|| panic!("not a code link on this server: {line}"));
    assert!(code.starts_with("twl_") && code.len() == 68, "{line}");
    assert!(!line.contains("token="), "a token in the printed URL: {line}");

    let t = Target::new(addr, "", &db);
    let page = t.http.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("set-cookie").is_none());
    let cookie = t.login_with_code(code).await;
    let s = t
        .cookie_upgrade(&cookie, Some(&t.origin()))
        .await
        .expect("the printed link's session");
    assert_eq!(s.hello["role"], "admin", "{}", s.hello);
    let again = t.login_post(&[("code", code)], &[("Origin", &t.origin())]).await;
    assert_eq!(
        (again.status, again.code()),
        (401, Some("unauthorized")),
        "{}",
        again.body
    );
    drop(s);
    let (_, first_err) = server.stop();

    let (server, _) = Child::start(&db, None);
    let (_, second_err) = server.stop();
    assert!(second_err.contains("listening on"), "{second_err}");
    assert!(
        !second_err.contains("Log in at"),
        "a second start printed a link: {second_err}"
    );
    // Nothing but that one line ever showed the code.
    assert_eq!(first_err.matches(code).count(), 1, "{first_err}");
}

/// The activity routes, and only they, take the session cookie, and only from
/// a page of the server's own origin (`Sec-Fetch-Site: same-origin`, which a
/// browser sets and a page cannot): the pages page back through activity, and
/// the overview through older done tasks (the task list).
#[tokio::test]
async fn activity_routes_take_the_cookie_from_the_same_origin_only() {
    let app = spawn_app();
    let t = target(&app);
    let (_, member) = t.new_token("member").await;
    let cookie = t.login(&member).await;
    let c = format!("taskwire_session={cookie}");
    let task = t
        .admin_ok("POST", "/api/tasks", Some(&json!({"title": "read me"})), 201)
        .await;
    let tid = task["id"].as_i64().unwrap();
    let agent = t
        .admin_ok("POST", "/api/agents", Some(&json!({"name": "a-1"})), 201)
        .await;
    let aid = agent["id"].as_i64().unwrap();

    for path in [
        format!("/api/tasks/{tid}/activity"),
        format!("/api/agents/{aid}/activity"),
        "/api/tasks?limit=50&order=-updated_at&status=done".to_string(),
    ] {
        let r = t
            .send(
                "GET",
                &path,
                None,
                &[("Cookie", &c), ("Sec-Fetch-Site", "same-origin")],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body["items"].is_array(), "{path}: {}", r.body);
        for site in [None, Some("same-site"), Some("cross-site"), Some("none")] {
            let mut headers = vec![("Cookie", c.as_str())];
            if let Some(s) = site {
                headers.push(("Sec-Fetch-Site", s));
            }
            let r = t.send("GET", &path, None, &headers, None).await;
            assert_eq!(r.status, 401, "{path} with Sec-Fetch-Site {site:?}: {}", r.body);
        }
        let r = t
            .send(
                "GET",
                &path,
                None,
                &[("Cookie", &format!("{c}0")), ("Sec-Fetch-Site", "same-origin")],
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{path} with a forged cookie: {}", r.body);
    }
    // Every other route still refuses it.
    for path in ["/api/agents", &format!("/api/tasks/{tid}"), "/api/me", "/api/changes"] {
        let r = t
            .send(
                "GET",
                path,
                None,
                &[("Cookie", &c), ("Sec-Fetch-Site", "same-origin")],
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{path} accepted the cookie: {}", r.body);
    }
}
