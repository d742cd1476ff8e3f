//! Token and browser-session administration through the Db actor, and the
//! token cache it keeps current: tokens and sessions it creates or revokes
//! itself go into the cache at once; those another process (the `taskwire
//! token` command) creates or revokes in the file are noticed by a watch on
//! the file's `data_version`, within half a second.

use actix::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel::QueryResult;
use serde::Serialize;

use super::models::{NewToken, TokenRow};
use super::queries as q;
use super::rules::{self, now, tokens::CreatedToken};
use super::writer::Db;
use crate::auth::{self, authorize, Action, Principal, Role, TokenCache};
use crate::error::ApiError;

/// How long a browser session lasts.
pub const WEB_SESSION_DAYS: i64 = 30;

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

/// Ends the browser session whose cookie holds `secret`.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Logout {
    pub secret: String,
}

/// On a database without a live admin token, creates one: `given` if set,
/// else a new random one, which is returned so it can be shown once. Nobody
/// could administer such a database otherwise.
pub fn ensure_admin_token(conn: &mut SqliteConnection, given: Option<&str>) -> QueryResult<Option<String>> {
    if q::count_live_admins(conn)? > 0 {
        return Ok(None);
    }
    let (token, generated) = match given {
        Some(t) if !t.is_empty() => (t.to_string(), false),
        _ => (auth::generate_token(), true),
    };
    q::insert_token(
        conn,
        &NewToken {
            hash: &auth::hash_token(&token),
            role: Role::Admin,
            name: "admin",
            agent_id: None,
            created_at: &now(),
        },
    )?;
    Ok(generated.then_some(token))
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

impl Handler<Login> for Db {
    type Result = Result<WebSession, ApiError>;
    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let secret = auth::generate_token();
        let hash = auth::hash_token(&secret);
        let expires = (chrono::Utc::now() + chrono::Duration::days(WEB_SESSION_DAYS))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.conn
            .immediate_transaction(|conn| q::insert_web_session(conn, &hash, msg.by.token_id, &now(), &expires))?;
        self.tokens.insert_session(hash, msg.by.token_id, expires);
        Ok(WebSession {
            secret,
            max_age_secs: WEB_SESSION_DAYS * 24 * 3600,
        })
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
