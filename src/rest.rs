//! REST routes, the auth extractor, `/healthz`, `/metrics` and the socket
//! upgrade. Every write goes through the Db actor as the same `Call` a socket
//! sends, so it commits and publishes the same way.

use actix_web::dev::Payload;
use actix_web::http::header::{self, ContentType, HeaderMap};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::future::{ready, Ready};

use crate::auth::Principal;
use crate::db::{
    self, Committed, CreateToken, Db, ListTokens, Login, Logout, Query, Read, ReadChanges, Reader, RevokeToken,
};
use crate::error::ApiError;
use crate::model::TaskStatus;
use crate::protocol::{check_op_id, Call, Method, Topic};
use crate::state::AppState;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::bad_request(e.to_string()).into()))
        .route("/", web::get().to(index_page))
        .route("/tasks/{id}", web::get().to(task_page))
        .route("/agents/{id}", web::get().to(agent_page))
        .route("/static/{path:.*}", web::get().to(static_file))
        .route("/login", web::get().to(login))
        .route("/logout", web::get().to(logout))
        .route("/logout", web::post().to(logout))
        .route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/ws", web::get().to(upgrade))
        .service(
            web::scope("/api")
                .wrap(actix_web::middleware::from_fn(reject_stray_query))
                .route("/tasks", web::get().to(list_tasks))
                .route("/tasks", web::post().to(create_task))
                .route("/tasks/{id}", web::get().to(get_task))
                .route("/tasks/{id}", web::patch().to(update_task))
                .route("/tasks/{id}", web::delete().to(delete_task))
                .route("/agents", web::get().to(list_agents))
                .route("/agents", web::post().to(create_agent))
                .route("/agents/{id}", web::get().to(get_agent))
                .route("/agents/{id}", web::patch().to(update_agent))
                .route("/agents/{id}", web::delete().to(delete_agent))
                .route("/agents/{id}/heartbeat", web::post().to(heartbeat))
                .route("/changes", web::get().to(changes))
                .route("/tokens", web::post().to(create_token))
                .route("/tokens", web::get().to(list_tokens))
                .route("/tokens/{id}", web::delete().to(revoke_token)),
        )
        .default_service(web::to(not_found));
}

type Res = Result<HttpResponse, ApiError>;

/// The name of the browser session cookie.
pub const SESSION_COOKIE: &str = "taskwire_session";

/// The Content-Security-Policy of every response: only the server's own
/// scripts, styles and connections; no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The static pages and the browser client, embedded in the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "static/"]
struct Assets;

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Principal, ApiError>>;

    /// REST callers authenticate with a bearer token, and each token has its
    /// own request budget.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let app = req.app_data::<web::Data<AppState>>().expect("app state is registered");
        ready(bearer(app, req.headers()).and_then(|p| app.rest_limits.check(&p).map(|()| p)))
    }
}

/// The principal of a request's bearer token.
fn bearer(app: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
    app.tokens
        .verify(token)
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
}

/// The principal of a socket upgrade: a bearer token, or the session cookie
/// from a page of an allowed origin (anything else could be cross-site
/// WebSocket hijacking).
fn socket_principal(app: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let cookie = req.cookie(SESSION_COOKIE);
    if cookie.is_some() {
        // Whatever else it carries, an upgrade with the cookie must come from a
        // page of an allowed origin.
        let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let scheme = if req.app_config().secure() { "https" } else { "http" };
        // The Host header the browser connected with, not forwarding headers a
        // client could set.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let own = format!("{scheme}://{host}");
        let allowed = origin.is_some_and(|o| o == own || app.config.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(ApiError::forbidden("this origin may not use the session cookie"));
        }
    }
    if req.headers().contains_key(header::AUTHORIZATION) {
        return bearer(app, req.headers());
    }
    let cookie =
        cookie.ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>, or log in at /login"))?;
    app.tokens
        .verify_session(cookie.value())
        .ok_or_else(|| ApiError::unauthorized("the session has ended; log in again"))
}

/// Only the two list routes take query parameters; anywhere else one is an
/// unknown field.
async fn reject_stray_query(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let takes_query =
        req.method() == actix_web::http::Method::GET && matches!(req.path(), "/api/tasks" | "/api/changes");
    if !takes_query && !req.query_string().is_empty() {
        return Err(ApiError::bad_request("this route takes no query parameters").into());
    }
    next.call(req).await
}

async fn not_found() -> Res {
    Err(ApiError::not_found("no such route"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn metrics(app: web::Data<AppState>, _who: Principal) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(app.metrics.render())
}

async fn upgrade(req: HttpRequest, payload: web::Payload, app: web::Data<AppState>) -> Res {
    let who = socket_principal(&app, &req)?;
    app.sockets.acquire(&who)?;
    match crate::session::start(&req, payload, app.get_ref().clone(), who.clone()) {
        Ok(res) => Ok(res),
        Err(e) => {
            app.sockets.release(&who);
            Err(ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))
        }
    }
}

// ---- pages and login ----

fn asset(path: &str) -> Res {
    let file = Assets::get(path).ok_or_else(|| ApiError::not_found("no such file"))?;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    Ok(HttpResponse::Ok()
        .content_type(mime.as_ref())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(file.data.into_owned()))
}

async fn index_page() -> Res {
    asset("index.html")
}

async fn task_page(id: web::Path<String>) -> Res {
    path_id(&id)?;
    asset("task.html")
}

async fn agent_page(id: web::Path<String>) -> Res {
    path_id(&id)?;
    asset("agent.html")
}

async fn static_file(path: web::Path<String>) -> Res {
    asset(&path)
}

/// `/login?token=...` opens a browser session and redirects to `/`; without a
/// token it shows a form that asks for one.
async fn login(app: web::Data<AppState>, query: web::Query<HashMap<String, String>>) -> Res {
    let Some(token) = query.get("token") else {
        return Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(LOGIN_FORM));
    };
    let who = app
        .tokens
        .verify(token)
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    let session = ask(&app, Login { by: who }).await?;
    let cookie = actix_web::cookie::Cookie::build(SESSION_COOKIE, session.secret)
        .path("/")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(session.max_age_secs))
        .finish();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .cookie(cookie)
        .finish())
}

const LOGIN_FORM: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskwire: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>taskwire</h1>
<form action="/login" method="get"><label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Log in</button></form></main></body></html>"#;

/// Ends the browser session and forgets the cookie.
async fn logout(app: web::Data<AppState>, req: HttpRequest) -> Res {
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        ask(
            &app,
            Logout {
                secret: cookie.value().to_string(),
            },
        )
        .await?;
    }
    let mut gone = actix_web::cookie::Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .cookie(gone)
        .finish())
}

// ---- helpers ----

/// Reads a JSON object body of at most the configured size. An empty body is
/// an empty object when `empty_ok`.
async fn body(app: &AppState, mut payload: web::Payload, empty_ok: bool) -> Result<Map<String, Value>, ApiError> {
    let limit = app.config.max_frame_bytes;
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(format!("the body is over {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&buf) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("not JSON: {e}"))),
    }
}

fn path_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{s:?} is not an id")))
}

/// The version an `If-Match` header asks for: `"3"`, `W/"3"` or `3`; `*` asks
/// for none.
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| ApiError::bad_request("bad If-Match"))?.trim();
    if s == "*" {
        return Ok(None);
    }
    // Quotes come in a pair or not at all, and a weak tag is always quoted:
    // `"3`, `3"` and `W/3` are malformed, not version 3.
    fn quoted(t: &str) -> Option<&str> {
        t.strip_prefix('"')?.strip_suffix('"')
    }
    let tag = match s.strip_prefix("W/") {
        Some(weak) => quoted(weak),
        None if s.starts_with('"') => quoted(s),
        None => Some(s),
    };
    tag.and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("If-Match must be a version, like \"3\""))
}

fn op_id(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| ApiError::bad_request("bad Idempotency-Key"))?;
    check_op_id(s.to_string()).map(Some)
}

async fn execute(
    app: &AppState,
    req: &HttpRequest,
    who: Principal,
    method: Method,
    params: Value,
) -> Result<Committed, ApiError> {
    let call = Call {
        method,
        params,
        op_id: op_id(req)?,
    };
    db::execute(&app.db, who, call).await
}

/// Sends a message to the Db actor and waits for its answer.
async fn ask<M, T>(app: &AppState, msg: M) -> Result<T, ApiError>
where
    M: actix::Message<Result = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
    Db: actix::Handler<M>,
{
    app.db
        .send(msg)
        .await
        .map_err(|_| ApiError::unavailable("the database is not running"))?
}

/// Sends a read to the readers and waits for its answer.
async fn read<M, T>(app: &AppState, msg: M) -> Result<T, ApiError>
where
    M: actix::Message<Result = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
    Reader: actix::Handler<M>,
{
    app.reader
        .send(msg)
        .await
        .map_err(|_| ApiError::unavailable("the database is not running"))?
}

/// A response with `Taskwire-Seq` when the write committed a change.
fn written(mut res: HttpResponseBuilder, seq: Option<i64>) -> HttpResponseBuilder {
    if let Some(seq) = seq {
        res.insert_header(("Taskwire-Seq", seq.to_string()));
    }
    res
}

fn etag(version: impl std::fmt::Display) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{version}\""))
}

// ---- tasks and agents ----

#[derive(Clone, Copy)]
enum Kind {
    Task,
    Agent,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Task => "tasks",
            Kind::Agent => "agents",
        }
    }
}

async fn create(app: &AppState, req: &HttpRequest, who: Principal, payload: web::Payload, kind: Kind) -> Res {
    let params = body(app, payload, false).await?;
    let method = match kind {
        Kind::Task => Method::TaskCreate,
        Kind::Agent => Method::AgentCreate,
    };
    let c = execute(app, req, who, method, Value::Object(params)).await?;
    let data = c.value()?;
    let location = format!("/api/{}/{}", kind.path(), data["id"]);
    Ok(written(HttpResponse::Created(), c.seq)
        .insert_header((header::LOCATION, location))
        .insert_header(etag(&data["version"]))
        .json(data))
}

async fn get_one(app: &AppState, who: Principal, id: &str, kind: Kind) -> Res {
    let id = path_id(id)?;
    let query = match kind {
        Kind::Task => Query::Task(id),
        Kind::Agent => Query::Agent(id),
    };
    let entity = read(app, Read { query, by: who }).await?;
    let mut res = HttpResponse::Ok();
    if let Some(version) = entity.version() {
        res.insert_header(etag(version));
    }
    Ok(res.json(entity))
}

async fn update(app: &AppState, req: &HttpRequest, who: Principal, id: &str, payload: web::Payload, kind: Kind) -> Res {
    let id = path_id(id)?;
    let if_version = if_match(req)?;
    let patch = body(app, payload, false).await?;
    let method = match kind {
        Kind::Task => Method::TaskUpdate,
        Kind::Agent => Method::AgentUpdate,
    };
    let mut params = json!({"id": id, "patch": patch});
    if let Some(v) = if_version {
        params["if_version"] = json!(v);
    }
    let c = execute(app, req, who, method, params).await?;
    let data = c.value()?;
    Ok(written(HttpResponse::Ok(), c.seq)
        .insert_header(etag(&data["version"]))
        .json(data))
}

async fn delete(app: &AppState, req: &HttpRequest, who: Principal, id: &str, kind: Kind) -> Res {
    let id = path_id(id)?;
    let mut params = json!({ "id": id });
    if let Some(v) = if_match(req)? {
        params["if_version"] = json!(v);
    }
    let method = match kind {
        Kind::Task => Method::TaskDelete,
        Kind::Agent => Method::AgentDelete,
    };
    let c = execute(app, req, who, method, params).await?;
    Ok(written(HttpResponse::NoContent(), c.seq).finish())
}

async fn list_tasks(app: web::Data<AppState>, who: Principal, query: web::Query<HashMap<String, String>>) -> Res {
    let mut status = None;
    let mut assignee_id = None;
    for (k, v) in query.into_inner() {
        match k.as_str() {
            "status" => {
                status = Some(TaskStatus::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(format!("unknown status {v:?}; one of {}", TaskStatus::spellings()))
                })?)
            }
            "assignee_id" => assignee_id = Some(path_id(&v)?),
            other => return Err(ApiError::bad_request(format!("unknown filter {other:?}"))),
        }
    }
    let query = Query::Tasks { status, assignee_id };
    Ok(HttpResponse::Ok().json(read(&app, Read { query, by: who }).await?))
}

async fn list_agents(app: web::Data<AppState>, who: Principal) -> Res {
    let query = Query::Agents;
    Ok(HttpResponse::Ok().json(read(&app, Read { query, by: who }).await?))
}

async fn create_task(app: web::Data<AppState>, req: HttpRequest, who: Principal, payload: web::Payload) -> Res {
    create(&app, &req, who, payload, Kind::Task).await
}

async fn create_agent(app: web::Data<AppState>, req: HttpRequest, who: Principal, payload: web::Payload) -> Res {
    create(&app, &req, who, payload, Kind::Agent).await
}

async fn get_task(app: web::Data<AppState>, who: Principal, id: web::Path<String>) -> Res {
    get_one(&app, who, &id, Kind::Task).await
}

async fn get_agent(app: web::Data<AppState>, who: Principal, id: web::Path<String>) -> Res {
    get_one(&app, who, &id, Kind::Agent).await
}

async fn update_task(
    app: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    payload: web::Payload,
) -> Res {
    update(&app, &req, who, &id, payload, Kind::Task).await
}

async fn update_agent(
    app: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    payload: web::Payload,
) -> Res {
    update(&app, &req, who, &id, payload, Kind::Agent).await
}

async fn delete_task(app: web::Data<AppState>, req: HttpRequest, who: Principal, id: web::Path<String>) -> Res {
    delete(&app, &req, who, &id, Kind::Task).await
}

async fn delete_agent(app: web::Data<AppState>, req: HttpRequest, who: Principal, id: web::Path<String>) -> Res {
    delete(&app, &req, who, &id, Kind::Agent).await
}

async fn heartbeat(
    app: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    payload: web::Payload,
) -> Res {
    let id = path_id(&id)?;
    let mut params = body(&app, payload, true).await?;
    params.insert("id".into(), json!(id));
    let c = execute(&app, &req, who, Method::AgentHeartbeat, Value::Object(params)).await?;
    Ok(written(HttpResponse::NoContent(), c.seq).finish())
}

async fn changes(app: web::Data<AppState>, who: Principal, query: web::Query<HashMap<String, String>>) -> Res {
    let mut since = 0;
    let mut topic = None;
    let mut limit = 1000;
    for (k, v) in query.into_inner() {
        match k.as_str() {
            "since" => {
                since = v
                    .parse()
                    .ok()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| ApiError::bad_request("since must be a seq"))?
            }
            "topic" => topic = Some(Topic::parse(&v)?),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=10_000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("limit must be 1 to 10000"))?
            }
            other => return Err(ApiError::bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    let page = read(
        &app,
        ReadChanges {
            since,
            topic,
            limit,
            by: who,
        },
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(String::from(Box::<str>::from(page))))
}

// ---- tokens ----

async fn create_token(app: web::Data<AppState>, who: Principal, payload: web::Payload) -> Res {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewToken {
        #[serde(default, deserialize_with = "crate::protocol::present")]
        role: Option<String>,
        #[serde(default, deserialize_with = "crate::protocol::present")]
        name: Option<String>,
        agent_id: Option<i64>,
    }
    crate::auth::authorize(&who, crate::auth::Action::ManageTokens)?;
    let b: NewToken = crate::protocol::from_value(Value::Object(body(&app, payload, false).await?))?;
    let role = b.role.ok_or_else(|| ApiError::invalid("role is required"))?;
    let name = b.name.ok_or_else(|| ApiError::invalid("name is required"))?;
    let created = ask(
        &app,
        CreateToken {
            by: who,
            role,
            name,
            agent_id: b.agent_id,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(created))
}

async fn list_tokens(app: web::Data<AppState>, who: Principal) -> Res {
    let items = ask(&app, ListTokens { by: who }).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn revoke_token(app: web::Data<AppState>, who: Principal, id: web::Path<String>) -> Res {
    let id = path_id(&id)?;
    ask(&app, RevokeToken { by: who, id }).await?;
    Ok(HttpResponse::NoContent().finish())
}
