//! Creating and revoking tokens: by an admin through the Db actor, or by the
//! `taskwire token` command on the file.

use diesel::sqlite::SqliteConnection;

use super::now;
use crate::auth::{self, Principal, Role};
use crate::db::models::{NewToken, TokenRow};
use crate::db::queries as q;
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
