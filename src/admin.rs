//! `taskwire token ...` and `taskwire backup`: administration on the database
//! file, for when no admin token is at hand. A running server sees token
//! changes within a second, and login codes when they are used.

use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use std::path::Path;

use crate::db::models::TokenRow;
use crate::db::rules::tokens::{self, CreatedToken, LoginCode};
use crate::db::{self, queries, OpenError};
use crate::error::ApiError;

/// Why an administration command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no database at {0}; start the server once to create it (it prints the admin login)")]
    NoDatabase(String),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{}", .0.message)]
    Refused(#[from] ApiError),
    #[error("no live token named {0:?}")]
    NoSuchName(String),
    #[error("{count} live tokens are named {name:?}; name one by id")]
    AmbiguousName { name: String, count: usize },
    #[error("cannot write the backup to {path}")]
    Backup {
        path: String,
        #[source]
        source: diesel::result::Error,
    },
    #[error("{0} already exists; choose a new path")]
    Exists(String),
}

/// Opens an existing database: the token commands never create one, since a
/// database made by them would hold no admin token to log in with.
fn open_existing(path: &str) -> Result<SqliteConnection, AdminError> {
    if !Path::new(path).is_file() {
        return Err(AdminError::NoDatabase(path.to_string()));
    }
    Ok(db::open(path)?.conn)
}

/// Creates a token; the result holds its secret, shown this once.
pub fn create_token(path: &str, role: &str, name: &str, agent_id: Option<i64>) -> Result<CreatedToken, AdminError> {
    let mut conn = open_existing(path)?;
    let (created, _, _) = conn.immediate_transaction(|conn| tokens::create(conn, role, name, agent_id))?;
    Ok(created)
}

/// Every token, without secrets.
pub fn list_tokens(path: &str) -> Result<Vec<TokenRow>, AdminError> {
    let mut conn = open_existing(path)?;
    Ok(queries::list_tokens(&mut conn).map_err(ApiError::from)?)
}

/// Revokes a token given by id or by name (a name must match one live
/// token). Returns the id revoked.
pub fn revoke_token(path: &str, id_or_name: &str) -> Result<i64, AdminError> {
    let mut conn = open_existing(path)?;
    let id = token_id(&mut conn, id_or_name)?;
    conn.immediate_transaction(|conn| tokens::revoke(conn, id))?;
    Ok(id)
}

/// Makes a one-time login code for a live token given by id or by name. A
/// running server finds it in the file when the browser posts it.
pub fn login_code(path: &str, id_or_name: &str) -> Result<(TokenRow, LoginCode), AdminError> {
    let mut conn = open_existing(path)?;
    let id = token_id(&mut conn, id_or_name)?;
    let code = conn.immediate_transaction(|conn| tokens::create_login_code(conn, id))?;
    let row = queries::find_live_token(&mut conn, id)
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found(format!("token {id} not found")))?;
    Ok((row, code))
}

/// The id of a token given by id, or by the name of exactly one live token.
fn token_id(conn: &mut SqliteConnection, id_or_name: &str) -> Result<i64, AdminError> {
    if let Ok(id) = id_or_name.parse::<i64>() {
        return Ok(id);
    }
    let live: Vec<TokenRow> = queries::list_tokens(conn)
        .map_err(ApiError::from)?
        .into_iter()
        .filter(|t| t.name == id_or_name && t.revoked_at.is_none())
        .collect();
    match live.as_slice() {
        [one] => Ok(one.id),
        [] => Err(AdminError::NoSuchName(id_or_name.to_string())),
        many => Err(AdminError::AmbiguousName {
            name: id_or_name.to_string(),
            count: many.len(),
        }),
    }
}

/// Tokens as a table for a terminal: id, role, name, agent, created, revoked.
pub fn token_table(rows: &[TokenRow]) -> String {
    let mut lines = vec![[
        "ID".to_string(),
        "ROLE".into(),
        "NAME".into(),
        "AGENT".into(),
        "CREATED".into(),
        "REVOKED".into(),
    ]];
    for t in rows {
        lines.push([
            t.id.to_string(),
            t.role.to_string(),
            t.name.clone(),
            t.agent_id.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            t.created_at.clone(),
            t.revoked_at.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes a consistent copy of the live database at `path` to `to`, without
/// stopping a running server's writes. The copy is marked so that, on its
/// first start, it takes a new epoch: a client that saw changes made after
/// the backup then takes a fresh snapshot instead of a wrong resume.
pub fn backup(path: &str, to: &str) -> Result<(), AdminError> {
    if Path::new(to).exists() {
        return Err(AdminError::Exists(to.to_string()));
    }
    let mut conn = open_existing(path)?;
    let failed = |source| AdminError::Backup {
        path: to.to_string(),
        source,
    };
    // VACUUM INTO reads one snapshot of the file (a WAL reader: writers go
    // on) and writes it as a new, compact database.
    let quoted = to.replace('\'', "''");
    conn.batch_execute(&format!("VACUUM INTO '{quoted}'")).map_err(failed)?;
    let mut copy = db::open(to)?.conn;
    queries::set_meta(&mut copy, db::open::RESTORED_KEY, "1").map_err(failed)?;
    Ok(())
}
