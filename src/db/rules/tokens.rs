//! Creating and revoking tokens and login codes: by an admin through the Db
//! actor, or by the `taskwire token` command on the file.

use diesel::sqlite::SqliteConnection;

use super::now;
use crate::auth::{self, Principal, Role};
use crate::db::models::{NewToken, TokenRow};
use crate::db::queries as q;
use crate::db::tokens::LOGIN_CODE_MINUTES;
use crate::error::ApiError;

/// A token just made: as listed, with its secret (shown this once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub row: TokenRow,
    pub token: String,
}

/// Creates a token: `role`, a display `name` and, for an agent token, its
/// agent. Returns the token with its secret, the stored hash and the
/// principal it stands for.
pub fn create(
    conn: &mut SqliteConnection,
    role: &str,
    name: &str,
    agent_id: Option<i64>,
) -> Result<(CreatedToken, String, Principal), ApiError> {
    let r = Role::parse(role).ok_or_else(|| ApiError::invalid(format!("unknown role {role:?}")))?;
    let n = name.chars().count();
    if n == 0 || n > 100 {
        return Err(ApiError::invalid("name must have 1 to 100 characters"));
    }
    match (r, agent_id) {
        (Role::Agent, None) => return Err(ApiError::invalid("an agent token needs agent_id")),
        (Role::Agent, Some(a)) if q::find_agent(conn, a)?.is_none() => {
            return Err(ApiError::invalid(format!("agent {a} does not exist")))
        }
        (Role::Admin | Role::Member, Some(_)) => return Err(ApiError::invalid("only agent tokens take agent_id")),
        _ => {}
    }
    let token = auth::generate_token();
    let hash = auth::hash_token(&token);
    let now = now();
    let row = q::insert_token(
        conn,
        &NewToken {
            hash: &hash,
            role: r,
            name,
            agent_id,
            created_at: &now,
        },
    )?;
    let principal = Principal {
        token_id: row.id,
        role: r,
        agent_id,
        name: std::sync::Arc::from(name),
    };
    Ok((CreatedToken { row, token }, hash, principal))
}

/// Revokes a token; `not_found` if there is no such live token.
pub fn revoke(conn: &mut SqliteConnection, id: i64) -> Result<(), ApiError> {
    if q::revoke_token(conn, id, &now())? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("token {id} not found")))
    }
}

/// A login code just made: shown this once, then only its hash is kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoginCode {
    pub token_id: i64,
    pub code: String,
    pub expires_at: String,
}

/// Makes a one-time login code for a live token, valid for
/// [`LOGIN_CODE_MINUTES`]; `not_found` if there is no such live token.
pub fn create_login_code(conn: &mut SqliteConnection, token_id: i64) -> Result<LoginCode, ApiError> {
    if q::find_live_token(conn, token_id)?.is_none() {
        return Err(ApiError::not_found(format!("token {token_id} not found")));
    }
    let code = auth::generate_login_code();
    let expires_at = (chrono::Utc::now() + chrono::Duration::minutes(LOGIN_CODE_MINUTES))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    q::insert_login_code(conn, &auth::hash_token(&code), token_id, &now(), &expires_at)?;
    Ok(LoginCode {
        token_id,
        code,
        expires_at,
    })
}
