//! `taskwire token ...`: token administration on the database file, for when
//! no admin token is at hand. A running server sees the changes within a second.

use serde_json::Value;

use crate::db::{self, logic, queries};
use crate::error::ApiError;

fn open(path: &str) -> Result<diesel::SqliteConnection, String> {
    Ok(db::open(path)?.conn)
}

fn fail(e: ApiError) -> String {
    e.message
}

/// Creates a token; the result holds its secret, shown this once.
pub fn create_token(path: &str, role: &str, name: &str, agent_id: Option<i64>) -> Result<Value, String> {
    let mut conn = open(path)?;
    let (created, _, _) = conn
        .immediate_transaction(|conn| logic::create_token(conn, role, name, agent_id))
        .map_err(fail)?;
    Ok(created)
}

/// Every token, without secrets.
pub fn list_tokens(path: &str) -> Result<Vec<Value>, String> {
    let mut conn = open(path)?;
    let rows = queries::list_tokens(&mut conn).map_err(|e| e.to_string())?;
    Ok(rows.iter().map(db::models::TokenRow::to_json).collect())
}

/// Revokes a token.
pub fn revoke_token(path: &str, id: i64) -> Result<(), String> {
    let mut conn = open(path)?;
    conn.immediate_transaction(|conn| logic::revoke_token(conn, id))
        .map_err(fail)
}
