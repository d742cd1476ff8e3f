//! Token, login-code and browser-session administration through the Db actor,
//! and the token cache it keeps current: tokens and sessions it creates or
//! revokes itself go into the cache at once; those another process (the
//! `taskwire token` command) creates or revokes in the file are noticed by a
//! watch on the file's `data_version`, within half a second. Login codes are
//! not cached: each is read from the file when it is used.

use actix::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel::QueryResult;
use serde::Serialize;

use super::models::{NewToken, TokenRow};
use super::queries as q;
use super::rules::{self, now, tokens::CreatedToken, tokens::LoginCode};
use super::writer::Db;
use crate::auth::{self, authorize, Action, Principal, Role, TokenCache};
use crate::error::ApiError;

/// How long a browser session lasts.
pub const WEB_SESSION_DAYS: i64 = 30;

/// Live browser sessions one token may hold; opening one more ends the
/// oldest. A person logs in from a few browsers; without a cap a script
/// calling `/login` in a loop filled the file with month-long sessions.
pub const WEB_SESSIONS_PER_TOKEN: i64 = 20;

/// How long a login code can be exchanged for a session.
pub const LOGIN_CODE_MINUTES: i64 = 10;

/// Where a person whose login link failed gets a new one.
const NEW_LINK: &str = "An admin prints a new one with `taskwire token login-link NAME`";

/// Creates a token (admins only); answers it with its secret.
#[derive(Message)]
#[rtype(result = "Result<CreatedToken, ApiError>")]
pub struct CreateToken {
    pub by: Principal,
    pub role: String,
    pub name: String,
    pub agent_id: Option<i64>,
}

/// Every token, without secrets (admins only).
#[derive(Message)]
#[rtype(result = "Result<Vec<TokenRow>, ApiError>")]
pub struct ListTokens {
    pub by: Principal,
}

/// Revokes a token (admins only); its sockets close with 1008.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct RevokeToken {
    pub by: Principal,
    pub id: i64,
}

/// Opens a browser session acting as `by`.
#[derive(Message)]
#[rtype(result = "Result<WebSession, ApiError>")]
pub struct Login {
    pub by: Principal,
}

/// A browser session just opened: the cookie's secret and its lifetime.
#[derive(Debug, Serialize)]
pub struct WebSession {
    pub secret: String,
    pub max_age_secs: i64,
}

/// Exchanges a one-time login code for a browser session of its token. The
/// code is used up by this, whether or not the browser keeps the cookie.
#[derive(Message)]
#[rtype(result = "Result<WebSession, ApiError>")]
pub struct RedeemLoginCode {
    pub code: String,
}

/// Makes a one-time login code for a token (admins only).
#[derive(Message)]
#[rtype(result = "Result<LoginCode, ApiError>")]
pub struct CreateLoginCode {
    pub by: Principal,
    pub token_id: i64,
}

/// Ends the browser session whose cookie holds `secret`.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Logout {
    pub secret: String,
}

/// On a database without a live admin token, creates one: `given` if set,
/// else a new random one. Nobody could administer such a database otherwise.
/// For a random one, returns a login code for it, so the server can print a
/// login link: the token's secret itself is never shown (it would outlive
/// the link in a browser's history); `taskwire token create` makes tokens
/// for scripts.
pub fn ensure_admin_token(conn: &mut SqliteConnection, given: Option<&str>) -> Result<Option<LoginCode>, ApiError> {
    if q::count_live_admins(conn)? > 0 {
        return Ok(None);
    }
    let (token, generated) = match given {
        Some(t) if !t.is_empty() => (t.to_string(), false),
        _ => (auth::generate_token(), true),
    };
    conn.immediate_transaction(|conn| {
        let row = q::insert_token(
            conn,
            &NewToken {
                hash: &auth::hash_token(&token),
                role: Role::Admin,
                name: "admin",
                agent_id: None,
                created_at: &now(),
            },
        )?;
        if generated {
            rules::tokens::create_login_code(conn, row.id).map(Some)
        } else {
            Ok(None)
        }
    })
}

/// Ends the oldest browser sessions of every token holding more than
/// [`WEB_SESSIONS_PER_TOKEN`] (a file from before the cap may); run at start,
/// before the cache is loaded. Returns how many ended.
pub fn trim_web_sessions(conn: &mut SqliteConnection) -> QueryResult<usize> {
    conn.immediate_transaction(|conn| q::trim_web_sessions(conn, None, WEB_SESSIONS_PER_TOKEN))
        .map(|gone| gone.len())
}

/// A session written to the file, not yet in the cache.
struct NewSession {
    secret: String,
    hash: String,
    token_id: i64,
    expires_at: String,
    /// Older sessions of the token it pushed over the cap, now deleted.
    ended: Vec<String>,
}

/// Writes a browser session for `token_id` and ends that token's oldest
/// sessions beyond the cap.
fn open_session(conn: &mut SqliteConnection, token_id: i64) -> QueryResult<NewSession> {
    let secret = auth::generate_token();
    let hash = auth::hash_token(&secret);
    let expires_at = (chrono::Utc::now() + chrono::Duration::days(WEB_SESSION_DAYS))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    q::insert_web_session(conn, &hash, token_id, &now(), &expires_at)?;
    let ended = q::trim_web_sessions(conn, Some(token_id), WEB_SESSIONS_PER_TOKEN)?;
    Ok(NewSession {
        secret,
        hash,
        token_id,
        expires_at,
        ended,
    })
}

/// Fills the cache with every live token and browser session of the file,
/// replacing what it held. Returns the tokens it held that are no longer live.
pub fn load_tokens(conn: &mut SqliteConnection, cache: &TokenCache) -> QueryResult<Vec<i64>> {
    let tokens = q::list_tokens(conn)?
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| {
            let p = Principal {
                token_id: t.id,
                role: t.role,
                agent_id: t.agent_id,
                name: std::sync::Arc::from(t.name.as_str()),
            };
            (t.hash, p)
        })
        .collect();
    let sessions = q::live_web_sessions(conn, &now())?;
    Ok(cache.replace_all(tokens, sessions))
}

/// The file's `data_version` when the token cache was last loaded: it changes
/// when another connection commits.
pub struct RevocationWatch {
    pub(super) data_version: i64,
}

impl RevocationWatch {
    pub fn start(conn: &mut SqliteConnection) -> QueryResult<RevocationWatch> {
        Ok(RevocationWatch {
            data_version: q::data_version(conn)?,
        })
    }
}

impl Db {
    /// Reloads the token cache when another process wrote to the file, and
    /// closes the sockets of tokens it revoked.
    pub(super) fn watch_tokens(&mut self) {
        let Ok(version) = q::data_version(&mut self.conn) else {
            return;
        };
        if version == self.revocations.data_version {
            return;
        }
        match load_tokens(&mut self.conn, &self.tokens) {
            Ok(gone) => {
                self.revocations.data_version = version;
                self.forget_tokens(gone);
            }
            Err(e) => log::warn!("reading tokens failed; trying again: {e}"),
        }
    }

    /// Drops revoked tokens from the cache and closes their sockets (1008).
    pub(super) fn forget_tokens(&mut self, token_ids: Vec<i64>) {
        if token_ids.is_empty() {
            return;
        }
        for id in &token_ids {
            self.tokens.remove_token(*id);
        }
        self.hub.close_tokens(token_ids, 1008, "token revoked");
    }
}

impl Handler<CreateToken> for Db {
    type Result = Result<CreatedToken, ApiError>;
    fn handle(&mut self, msg: CreateToken, _: &mut Context<Self>) -> Self::Result {
        authorize(&msg.by, Action::ManageTokens)?;
        let (created, hash, principal) = self
            .conn
            .immediate_transaction(|conn| rules::tokens::create(conn, &msg.role, &msg.name, msg.agent_id))?;
        self.tokens.insert(hash, principal);
        Ok(created)
    }
}

impl Handler<ListTokens> for Db {
    type Result = Result<Vec<TokenRow>, ApiError>;
    fn handle(&mut self, msg: ListTokens, _: &mut Context<Self>) -> Self::Result {
        authorize(&msg.by, Action::ManageTokens)?;
        Ok(q::list_tokens(&mut self.conn)?)
    }
}

impl Handler<RevokeToken> for Db {
    type Result = Result<(), ApiError>;
    fn handle(&mut self, msg: RevokeToken, _: &mut Context<Self>) -> Self::Result {
        authorize(&msg.by, Action::ManageTokens)?;
        self.conn
            .immediate_transaction(|conn| rules::tokens::revoke(conn, msg.id))?;
        self.forget_tokens(vec![msg.id]);
        Ok(())
    }
}

impl Db {
    /// Puts a session just committed into the cache, and takes out the ones it
    /// ended.
    fn cache_session(&self, s: NewSession) -> WebSession {
        for hash in &s.ended {
            self.tokens.remove_session(hash);
        }
        self.tokens.insert_session(s.hash, s.token_id, s.expires_at);
        WebSession {
            secret: s.secret,
            max_age_secs: WEB_SESSION_DAYS * 24 * 3600,
        }
    }
}

impl Handler<Login> for Db {
    type Result = Result<WebSession, ApiError>;
    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let opened = self
            .conn
            .immediate_transaction(|conn| open_session(conn, msg.by.token_id))?;
        Ok(self.cache_session(opened))
    }
}

impl Handler<RedeemLoginCode> for Db {
    type Result = Result<WebSession, ApiError>;
    fn handle(&mut self, msg: RedeemLoginCode, _: &mut Context<Self>) -> Self::Result {
        let hash = auth::hash_token(&msg.code);
        let opened = self.conn.immediate_transaction(|conn| {
            let now = now();
            // Each refusal says why, so a person who did not use the link
            // themselves learns that someone else did.
            let row = q::find_login_code(conn, &hash)?
                .ok_or_else(|| ApiError::unauthorized(format!("this login link is not valid. {NEW_LINK}")))?;
            if row.used_at.is_some() {
                return Err(ApiError::unauthorized(format!(
                    "this login link was already used: a link logs in once. {NEW_LINK}"
                )));
            }
            if row.expires_at <= now {
                return Err(ApiError::unauthorized(format!(
                    "this login link has expired: a link lasts {LOGIN_CODE_MINUTES} minutes. {NEW_LINK}"
                )));
            }
            if q::find_live_token(conn, row.token_id)?.is_none() {
                return Err(ApiError::unauthorized("the token of this login link was revoked"));
            }
            if !q::use_login_code(conn, &hash, &now)? {
                return Err(ApiError::unauthorized("this login link was already used"));
            }
            Ok(open_session(conn, row.token_id)?)
        })?;
        Ok(self.cache_session(opened))
    }
}

impl Handler<CreateLoginCode> for Db {
    type Result = Result<LoginCode, ApiError>;
    fn handle(&mut self, msg: CreateLoginCode, _: &mut Context<Self>) -> Self::Result {
        authorize(&msg.by, Action::ManageTokens)?;
        self.conn
            .immediate_transaction(|conn| rules::tokens::create_login_code(conn, msg.token_id))
    }
}

impl Handler<Logout> for Db {
    type Result = Result<(), ApiError>;
    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        let hash = auth::hash_token(&msg.secret);
        self.conn
            .immediate_transaction(|conn| q::delete_web_session(conn, &hash))?;
        self.tokens.remove_session(&hash);
        Ok(())
    }
}
