//! REST routes, the auth extractor, `/healthz`, `/metrics` and the socket
//! upgrade. Every write goes through the Db actor as the same `Call` a socket
//! sends, so it commits and publishes the same way.

use actix_web::dev::Payload;
use actix_web::http::header::{self, ContentType, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::future::{ready, Ready};

use crate::auth::{self, Principal};
use crate::db::queries::ActivityOf;
use crate::db::{
    self, Committed, CreateLoginCode, CreateToken, ListTokens, Login, Logout, Query, Read, ReadChanges,
    RedeemLoginCode, RevokeToken,
};
use crate::error::ApiError;
use crate::filter::{Filter, SortKey};
use crate::model::Entity;
use crate::protocol::{check_op_id, Call, Method, Topic, MAX_HISTORY};
use crate::state::AppState;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::bad_request(e.to_string()).into()))
        .route("/", web::get().to(index_page))
        .route("/tasks/{id}", web::get().to(task_page))
        .route("/agents/{id}", web::get().to(agent_page))
        .route("/static/{path:.*}", web::get().to(static_file))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
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
                .route("/tasks/{id}/notes", web::post().to(note_task))
                .route("/tasks/{id}/claim", web::post().to(claim_task))
                .route("/tasks/{id}/activity", web::get().to(task_activity))
                .route("/agents/{id}/activity", web::get().to(agent_activity))
                .route("/me", web::get().to(me))
                .route("/agents", web::get().to(list_agents))
                .route("/agents", web::post().to(create_agent))
                .route("/agents/{id}", web::get().to(get_agent))
                .route("/agents/{id}", web::patch().to(update_agent))
                .route("/agents/{id}", web::delete().to(delete_agent))
                .route("/agents/{id}/heartbeat", web::post().to(heartbeat))
                .route("/changes", web::get().to(changes))
                .route("/tokens", web::post().to(create_token))
                .route("/tokens", web::get().to(list_tokens))
                .route("/tokens/{id}", web::delete().to(revoke_token))
                .route("/tokens/{id}/login-code", web::post().to(create_login_code)),
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

/// The reader of an activity route or the task list: a bearer token, or the
/// session cookie of a page of this same origin (`Sec-Fetch-Site: same-origin`),
/// so the pages can page back through activity and older done tasks. Only these read-only GETs take
/// the cookie: a cross-site request cannot send it (`SameSite=Strict`) nor read
/// the answer (no CORS).
struct PageReader(Principal);

impl FromRequest for PageReader {
    type Error = ApiError;
    type Future = Ready<Result<PageReader, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let app = req.app_data::<web::Data<AppState>>().expect("app state is registered");
        let same_origin = req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin");
        let who = match req.cookie(SESSION_COOKIE) {
            Some(c) if same_origin && !req.headers().contains_key(header::AUTHORIZATION) => app
                .tokens
                .verify_session(c.value())
                .ok_or_else(|| ApiError::unauthorized("the session has ended; log in again")),
            _ => bearer(app, req.headers()),
        };
        ready(who.and_then(|p| app.rest_limits.check(&p).map(|()| PageReader(p))))
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
        if !origin.is_some_and(|o| origin_allowed(app, req, o)) {
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

/// True if `origin` is the server's own or one of `--allowed-origin`: the
/// one rule for who may use the session cookie and who may log in.
fn origin_allowed(app: &AppState, req: &HttpRequest, origin: &str) -> bool {
    origin == own_origin(app, req) || app.config.allowed_origins.iter().any(|a| a == origin)
}

/// The server's origin as the browser sees it: the scheme it used and the
/// Host header it connected with (not `X-Forwarded-Host`, which a client
/// could set).
fn own_origin(app: &AppState, req: &HttpRequest) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    format!("{}://{host}", request_scheme(app, req))
}

/// `https` if the browser's connection was HTTPS: the server's own TLS, or a
/// `--trusted-proxy` saying so. Not `connection_info().scheme()`: that
/// believes forwarding headers from anyone.
fn request_scheme(app: &AppState, req: &HttpRequest) -> &'static str {
    if req.app_config().secure() {
        return "https";
    }
    let from_proxy = req
        .peer_addr()
        .is_some_and(|p| app.config.trusted_proxies.contains(&p.ip().to_canonical()));
    if from_proxy && forwarded_proto(req.headers()).is_some_and(|p| p.eq_ignore_ascii_case("https")) {
        "https"
    } else {
        "http"
    }
}

/// The scheme a proxy reports: `proto=` of the last `Forwarded` element (the
/// one the nearest proxy added), else the last `X-Forwarded-Proto` value.
fn forwarded_proto(headers: &HeaderMap) -> Option<String> {
    let last = |name| {
        headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .map(str::trim)
    };
    let from_forwarded = last(header::FORWARDED).and_then(|element| {
        element.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("proto")
                .then(|| v.trim().trim_matches('"').to_string())
        })
    });
    from_forwarded.or_else(|| last(header::HeaderName::from_static("x-forwarded-proto")).map(String::from))
}

/// Only the list and activity routes take query parameters; anywhere else one
/// is an unknown field.
async fn reject_stray_query(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let takes_query = req.method() == actix_web::http::Method::GET
        && (matches!(req.path(), "/api/tasks" | "/api/agents" | "/api/changes") || req.path().ends_with("/activity"));
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
    app.metrics.queued_bytes.set(app.queues.total() as i64);
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

/// `GET /login` shows the form for a token; `/login?code=...` (a login
/// link) shows a button that posts the code. Neither logs in: a GET can be
/// prefetched, previewed or replayed from history, and a code is used once.
/// `/login?token=...` no longer logs in either (the token would stay in the
/// history): 400, with the form.
async fn login_page(req: HttpRequest, query: web::Query<HashMap<String, String>>) -> HttpResponse {
    if query.contains_key("token") {
        let e = ApiError::bad_request(
            "a token in the address does not log in (it would stay in the browser's history); \
             type it in the form, or open a login link",
        );
        return login_refused(&req, e);
    }
    match query.get("code") {
        Some(code) if auth::is_login_code(code) => page(StatusCode::OK, code_form(code)),
        Some(_) => login_refused(
            &req,
            ApiError::bad_request("this login link is not valid; copy all of it"),
        ),
        None => page(StatusCode::OK, token_form(None)),
    }
}

/// `POST /login` with the form field `token` or `code` opens a browser
/// session: 303 to `/` with the session cookie. Only a page of an allowed
/// origin may post it (login CSRF: another site must not log a browser in
/// as someone else).
async fn login(app: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    match open_session(&app, &req, payload).await {
        Ok(session) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .cookie(session_cookie(&app, &req, session.secret, session.max_age_secs))
            .finish(),
        Err(e) => login_refused(&req, e),
    }
}

async fn open_session(app: &AppState, req: &HttpRequest, payload: web::Payload) -> Result<db::WebSession, ApiError> {
    login_origin_allowed(app, req)?;
    let form = login_form(req, payload).await?;
    match form {
        LoginForm::Token(token) => {
            let who = app
                .tokens
                .verify(&token)
                .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
            // Logins spend the token's REST budget: a loop cannot churn sessions
            // faster than it could make requests.
            app.rest_limits.check(&who)?;
            ask(&app.db, Login { by: who }).await
        }
        LoginForm::Code(code) if auth::is_login_code(&code) => ask(&app.db, RedeemLoginCode { code }).await,
        LoginForm::Code(_) => Err(ApiError::unauthorized("this login link is not valid; copy all of it")),
    }
}

/// A login must name its page: `Origin`, or `Referer` when a browser sends
/// no `Origin`, of the server itself or an `--allowed-origin`. Neither (or
/// `Origin: null`) is refused: every browser that posts a form sends one.
fn login_origin_allowed(app: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let origin = match header(header::ORIGIN) {
        Some(o) => Some(o),
        None => header(header::REFERER).and_then(origin_of),
    };
    if origin.is_some_and(|o| origin_allowed(app, req, o)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "a login must be posted from a page of this server (its Origin or Referer is missing or not allowed)",
        ))
    }
}

/// The origin (`scheme://host[:port]`) of an absolute URL.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let host_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (!scheme.is_empty() && host_len > 0).then(|| &url[..scheme.len() + 3 + host_len])
}

/// What a login form posts.
enum LoginForm {
    Token(String),
    Code(String),
}

/// Reads the login form: `application/x-www-form-urlencoded` with exactly
/// one field, `token` or `code`.
async fn login_form(req: &HttpRequest, mut payload: web::Payload) -> Result<LoginForm, ApiError> {
    const LIMIT: usize = 4096;
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(ApiError::bad_request(
            "send the login as a form (application/x-www-form-urlencoded) with a field token or code",
        ));
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > LIMIT {
            return Err(ApiError::too_large(format!("a login form is at most {LIMIT} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&buf).map_err(|e| ApiError::bad_request(format!("not a form: {e}")))?;
    match fields.as_slice() {
        [(k, v)] if k == "token" && !v.is_empty() => Ok(LoginForm::Token(v.clone())),
        [(k, v)] if k == "code" && !v.is_empty() => Ok(LoginForm::Code(v.clone())),
        [(k, _)] if k == "token" || k == "code" => Err(ApiError::unauthorized(format!("the {k} is empty"))),
        _ => Err(ApiError::bad_request("the login form takes one field: token or code")),
    }
}

/// The session cookie: `Secure` when the browser came over HTTPS (then it
/// is never sent back over plain HTTP).
fn session_cookie(
    app: &AppState,
    req: &HttpRequest,
    secret: String,
    max_age_secs: i64,
) -> actix_web::cookie::Cookie<'static> {
    actix_web::cookie::Cookie::build(SESSION_COOKIE, secret)
        .path("/")
        .http_only(true)
        .secure(request_scheme(app, req) == "https")
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

/// A refused login: for a browser (it accepts HTML) the form again with the
/// reason; for anything else the error as JSON, like every other route.
fn login_refused(req: &HttpRequest, e: ApiError) -> HttpResponse {
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if browser {
        let mut res = page(e.status_code(), token_form(Some(&e.message)));
        if e.code == crate::error::ErrorCode::RateLimited {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    } else {
        e.error_response()
    }
}

/// A login page. `Referrer-Policy: same-origin` instead of the global
/// `no-referrer`: under `no-referrer` a browser posts the form with
/// `Origin: null`, which the login CSRF check must refuse. `no-store`: the
/// code page holds a code.
fn page(status: StatusCode, html: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

/// The form asking for a token, with a notice above it (an error, escaped).
fn token_form(notice: Option<&str>) -> String {
    // The API's messages start in lower case; on a page, a sentence.
    let sentence = |n: &str| {
        let mut c = n.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    let notice = notice
        .map(|n| {
            format!(
                "<p class=\"form-msg error\" role=\"alert\">{}</p>\n",
                escape(&sentence(n))
            )
        })
        .unwrap_or_default();
    format!(
        r#"{LOGIN_HEAD}{notice}<form action="/login" method="post">
<div class="field"><label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="off" required></div>
<button class="primary" type="submit">Log in</button></form></main></body></html>"#
    )
}

/// The page of a login link: one button posts the code.
fn code_form(code: &str) -> String {
    format!(
        r#"{LOGIN_HEAD}<p>This link logs this browser in. It works once.</p>
<form action="/login" method="post"><input type="hidden" name="code" value="{}">
<button class="primary" type="submit">Log in</button></form></main></body></html>"#,
        escape(code)
    )
}

const LOGIN_HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskwire · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/css/app.css"></head>
<body><main class="login panel"><h1>taskwire</h1>
"#;

/// Text for HTML, attribute values included.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Ends the browser session and forgets the cookie.
async fn logout(app: web::Data<AppState>, req: HttpRequest) -> Res {
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        ask(
            &app.db,
            Logout {
                secret: cookie.value().to_string(),
            },
        )
        .await?;
    }
    let mut gone = actix_web::cookie::Cookie::build(SESSION_COOKIE, "")
        .path("/")
        .secure(request_scheme(&app, &req) == "https")
        .finish();
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
    // A REST write spends the token's calls like a socket's call.
    app.call_limits.check(&who)?;
    db::execute(&app.db, who, call).await
}

/// Sends a message to the Db actor (writes, token admin) or to the readers,
/// and waits for its answer.
async fn ask<A, M, T>(to: &actix::Addr<A>, msg: M) -> Result<T, ApiError>
where
    A: actix::Actor + actix::Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: actix::Message<Result = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
{
    to.send(msg)
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
    let entity = ask(&app.reader, Read { query, by: who }).await?;
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

/// A list's filter from its query string: the fields of a filtered topic,
/// in any order.
fn list_filter(entity: Entity, query: &[(String, String)]) -> Result<Option<Filter>, ApiError> {
    Filter::from_pairs(entity, query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

async fn list_tasks(
    app: web::Data<AppState>,
    PageReader(who): PageReader,
    query: web::Query<Vec<(String, String)>>,
) -> Res {
    let mut pairs = query.into_inner();
    let after = pairs.iter().position(|(k, _)| k == "after").map(|i| pairs.remove(i).1);
    let filter = list_filter(Entity::Task, &pairs)?;
    let after = match (after, filter.as_ref().and_then(Filter::window)) {
        (Some(a), Some(w)) => Some(SortKey::parse_cursor(w.order, &a)?),
        (Some(_), None) => return Err(ApiError::bad_request("`after` pages a list with `limit` and `order`")),
        (None, _) => None,
    };
    let query = Query::Tasks(filter, after);
    Ok(HttpResponse::Ok().json(ask(&app.reader, Read { query, by: who }).await?))
}

async fn list_agents(app: web::Data<AppState>, who: Principal, query: web::Query<Vec<(String, String)>>) -> Res {
    let query = Query::Agents(list_filter(Entity::Agent, &query)?);
    Ok(HttpResponse::Ok().json(ask(&app.reader, Read { query, by: who }).await?))
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
    let c = call_on(&app, &req, who, &id, payload, true, Method::AgentHeartbeat).await?;
    Ok(written(HttpResponse::NoContent(), c.seq).finish())
}

/// Runs `method` with the body's params and the `id` of the path (a body
/// that names `id` itself is overridden).
async fn call_on(
    app: &AppState,
    req: &HttpRequest,
    who: Principal,
    id: &str,
    payload: web::Payload,
    empty_ok: bool,
    method: Method,
) -> Result<Committed, ApiError> {
    let id = path_id(id)?;
    let mut params = body(app, payload, empty_ok).await?;
    params.insert("id".into(), json!(id));
    execute(app, req, who, method, Value::Object(params)).await
}

async fn note_task(
    app: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    payload: web::Payload,
) -> Res {
    let c = call_on(&app, &req, who, &id, payload, false, Method::TaskNote).await?;
    Ok(written(HttpResponse::Created(), c.seq).json(c.value()?))
}

async fn claim_task(
    app: web::Data<AppState>,
    req: HttpRequest,
    who: Principal,
    id: web::Path<String>,
    payload: web::Payload,
) -> Res {
    // A claim's body is empty or `{}`; anything in it but the id is refused
    // by the call's own params (`bad_request`, unknown field).
    let c = call_on(&app, &req, who, &id, payload, true, Method::TaskClaim).await?;
    let data = c.value()?;
    Ok(written(HttpResponse::Ok(), c.seq)
        .insert_header(etag(&data["version"]))
        .json(data))
}

async fn activity(app: &AppState, who: Principal, of: ActivityOf, query: HashMap<String, String>) -> Res {
    let mut before = i64::MAX;
    let mut limit = 50;
    for (k, v) in query {
        match k.as_str() {
            "before" => {
                before = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| ApiError::bad_request("before must be a seq"))?
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_HISTORY as i64).contains(l))
                    .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_HISTORY}")))?
            }
            other => return Err(ApiError::bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    let query = Query::Activity { of, before, limit };
    Ok(HttpResponse::Ok().json(ask(&app.reader, Read { query, by: who }).await?))
}

async fn task_activity(
    app: web::Data<AppState>,
    PageReader(who): PageReader,
    id: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Res {
    let of = ActivityOf::Task(path_id(&id)?);
    activity(&app, who, of, query.into_inner()).await
}

async fn agent_activity(
    app: web::Data<AppState>,
    PageReader(who): PageReader,
    id: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Res {
    let of = ActivityOf::Agent(path_id(&id)?);
    activity(&app, who, of, query.into_inner()).await
}

/// Who the request's token is: what `hello` tells a socket.
async fn me(who: Principal) -> Res {
    Ok(HttpResponse::Ok().json(who.me()))
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
            "topic" => {
                let t = Topic::parse(&v)?;
                if t.is_window() {
                    return Err(ApiError::bad_request(
                        "a window topic has no change log; page it with GET /api/tasks",
                    ));
                }
                topic = Some(t)
            }
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
    let page = ask(
        &app.reader,
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
        &app.db,
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
    let items = ask(&app.db, ListTokens { by: who }).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// A one-time login link for a token, to hand to whoever should use it in a
/// browser. The link points at the origin this request came to.
async fn create_login_code(app: web::Data<AppState>, req: HttpRequest, who: Principal, id: web::Path<String>) -> Res {
    let token_id = path_id(&id)?;
    let made = ask(&app.db, CreateLoginCode { by: who, token_id }).await?;
    let url = auth::login_link(&own_origin(&app, &req), &made.code);
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"token_id": made.token_id, "code": made.code, "url": url, "expires_at": made.expires_at})))
}

async fn revoke_token(app: web::Data<AppState>, who: Principal, id: web::Path<String>) -> Res {
    let id = path_id(&id)?;
    ask(&app.db, RevokeToken { by: who, id }).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_nearest_proxys_scheme_counts() {
        let proto = |pairs: &[(&str, &str)]| forwarded_proto(&headers(pairs));
        assert_eq!(proto(&[]), None);
        assert_eq!(proto(&[("x-forwarded-proto", "https")]).as_deref(), Some("https"));
        // A client's own value comes first; the proxy appends the real one.
        assert_eq!(proto(&[("x-forwarded-proto", "https, http")]).as_deref(), Some("http"));
        assert_eq!(
            proto(&[
                ("forwarded", "for=1.2.3.4;proto=http"),
                ("forwarded", "for=5.6.7.8;Proto=\"https\"")
            ])
            .as_deref(),
            Some("https")
        );
        // Forwarded wins over X-Forwarded-Proto.
        assert_eq!(
            proto(&[("forwarded", "proto=http"), ("x-forwarded-proto", "https")]).as_deref(),
            Some("http")
        );
        // The last element names no proto: X-Forwarded-Proto is asked.
        assert_eq!(
            proto(&[("forwarded", "for=1.2.3.4"), ("x-forwarded-proto", "https")]).as_deref(),
            Some("https")
        );
    }

    #[test]
    fn a_referers_origin() {
        assert_eq!(
            origin_of("http://a.example:8080/login?code=x"),
            Some("http://a.example:8080")
        );
        assert_eq!(origin_of("https://a.example"), Some("https://a.example"));
        assert_eq!(origin_of("https://a.example?x#y"), Some("https://a.example"));
        assert_eq!(origin_of("/login"), None);
        assert_eq!(origin_of("https:///x"), None);
        assert_eq!(origin_of("://a.example"), None);
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = token_form(Some("bad <b>"));
        assert!(page.contains("Bad &lt;b&gt;"), "{page}");
        assert!(!code_form("\"><script>").contains("<script>"));
    }
}
