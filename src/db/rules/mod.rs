//! The rules of the entities: validation, authorization, versions, the change
//! records and idempotency. Runs inside the Db actor's transaction.
//!
//! Each call runs in its own savepoint ([`run`]): a call that fails at any
//! point, after any number of writes, leaves nothing behind, in the file or in
//! the writer's memory, and the rest of its batch commits.

pub mod agents;
pub mod notes;
pub mod tasks;
pub mod tokens;

use diesel::sqlite::SqliteConnection;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::liveness::Liveness;
use super::models::*;
use super::queries as q;
use super::row_cache::TaskRows;
use super::windows::{WindowEvents, Windows};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::model::{ChangeKind, Entity};
use crate::protocol::{empty_object, from_ref, Call, Change, Method};

/// The current time as the wire shows it: RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What one write needs besides the connection.
pub struct WriteCtx<'a> {
    /// The last seq handed out; each recorded change takes the next one.
    pub seq: &'a mut i64,
    /// Heartbeat times not yet on disk; reads overlay them.
    pub live: &'a mut Liveness,
    pub tasks: &'a mut TaskRows,
    pub now: String,
    /// The author of the call being run, as `by` shows it.
    pub by: Arc<RawValue>,
    /// Whose `by` that is (token id and name): the next call of the same
    /// token reuses it instead of serializing it again.
    pub by_of: Option<(i64, Arc<str>)>,
    /// Test-only: see [`super::DbConfig::fail_op_id`].
    pub fail_op_id: Option<&'a str>,
    /// The window topics held, computed at each change.
    pub windows: Option<&'a mut Windows>,
}

impl<'a> WriteCtx<'a> {
    pub fn new(seq: &'a mut i64, live: &'a mut Liveness, tasks: &'a mut TaskRows) -> Self {
        WriteCtx {
            seq,
            live,
            tasks,
            now: now(),
            by: system_author(),
            by_of: None,
            fail_op_id: None,
            windows: None,
        }
    }

    /// Makes the next changes authored by `who`.
    pub fn act_as(&mut self, who: &Principal) {
        if self
            .by_of
            .as_ref()
            .is_some_and(|(id, name)| *id == who.token_id && *name == who.name)
        {
            return;
        }
        self.by_of = Some((who.token_id, who.name.clone()));
        self.by = if who.is_system() {
            system_author()
        } else {
            crate::protocol::raw(&who.author())
        };
    }
}

/// `{"kind":"system"}`, the author of the server's own changes: one shared copy.
fn system_author() -> Arc<RawValue> {
    static SYSTEM: std::sync::LazyLock<Arc<RawValue>> =
        std::sync::LazyLock::new(|| crate::protocol::raw(&Principal::system().author()));
    SYSTEM.clone()
}

/// What a committed call produced.
#[derive(Debug)]
pub struct Outcome {
    /// The reply's `data`, serialized (for a write of one entity, the same
    /// text as its change's).
    pub data: Arc<RawValue>,
    /// The seq of the call's last change, if it made any.
    pub seq: Option<i64>,
    pub changes: Vec<Change>,
    /// A heartbeat to push: (agent id, time).
    pub heartbeat: Option<(i64, String)>,
    /// An agent that was created: its liveness clock starts now.
    pub new_agent: Option<i64>,
    /// A token that was created: (hash, principal), for the token cache.
    pub new_token: Option<(String, Principal)>,
    /// Tokens revoked by this call; their sockets are closed.
    pub revoked_tokens: Vec<i64>,
    /// The events of its changes on window topics.
    pub windows: Vec<WindowEvents>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            data: empty_object(),
            seq: None,
            changes: Vec::new(),
            heartbeat: None,
            new_agent: None,
            new_token: None,
            revoked_tokens: Vec::new(),
            windows: Vec::new(),
        }
    }
}

impl WriteCtx<'_> {
    /// Appends a change to the log with the next seq, authored by the call's
    /// principal. `before` holds an update's previous values of the `changed`
    /// fields. (The writer files a task's changes into its activity a moment
    /// later: [`super::queries::file_activity`].)
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        conn: &mut SqliteConnection,
        out: &mut Outcome,
        (entity, entity_id): (Entity, i64),
        kind: ChangeKind,
        changed: Vec<String>,
        data: Arc<RawValue>,
        before: Option<Arc<RawValue>>,
    ) -> Result<(), ApiError> {
        *self.seq += 1;
        let changed_text = serde_json::to_string(&changed).map_err(ApiError::internal)?;
        let row = NewChange {
            seq: *self.seq,
            entity,
            entity_id,
            kind,
            changed: &changed_text,
            data: data.get(),
            at: &self.now,
            author: Some(self.by.get()),
            prior: before.as_deref().map(RawValue::get),
        };
        q::append_change(conn, &row)?;
        out.seq = Some(*self.seq);
        let change = Change {
            seq: *self.seq,
            entity,
            entity_id,
            kind,
            changed,
            data,
            by: Some(self.by.clone()),
            before,
            at: Arc::from(self.now.as_str()),
        };
        // Windows ask the file as this change left it: now, not later.
        if let Some(windows) = self.windows.as_deref_mut().filter(|w| !w.is_empty()) {
            out.windows.extend(windows.apply(conn, &change)?);
        }
        out.changes.push(change);
        Ok(())
    }
}

impl WriteCtx<'_> {
    /// Records that an entity is gone: a `deleted` change whose data is its
    /// id, and whose `before` is the whole entity.
    fn record_deleted(
        &mut self,
        conn: &mut SqliteConnection,
        out: &mut Outcome,
        (entity, id): (Entity, i64),
        before: Arc<RawValue>,
    ) -> Result<(), ApiError> {
        let data = crate::protocol::raw(&json!({ "id": id }));
        self.record(conn, out, (entity, id), ChangeKind::Deleted, vec![], data, Some(before))
    }
}

/// Runs one job of a batch in its own savepoint. On failure the savepoint is
/// rolled back, and so is what the job changed in memory: the seq, the
/// heartbeat times and the cached rows.
pub fn run(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    job: impl FnOnce(&mut SqliteConnection, &mut WriteCtx) -> Result<Outcome, ApiError>,
) -> Result<Outcome, ApiError> {
    let seq = *ctx.seq;
    let mark = ctx.live.mark();
    ctx.tasks.begin_call();
    q::savepoint(conn)?;
    let result = job(conn, ctx);
    match &result {
        Ok(_) => {
            q::release_savepoint(conn)?;
            if let Some(w) = ctx.windows.as_deref_mut() {
                w.keep_call();
            }
        }
        Err(_) => {
            q::roll_back_savepoint(conn)?;
            *ctx.seq = seq;
            ctx.live.roll_back(mark);
            ctx.tasks.roll_back_call();
            if let Some(w) = ctx.windows.as_deref_mut() {
                w.roll_back_call(conn)?;
            }
        }
    }
    result
}

/// The fingerprint of a call, to tell a repeated op_id from a reused one.
fn fingerprint(call: &Call) -> String {
    // serde_json's maps are ordered by key, so equal params print equally.
    let text = format!("{}\n{}", call.method.as_str(), call.params);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Runs one call: the idempotency check, then the method. Run it through
/// [`run`], which makes it all or nothing.
pub fn execute(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    principal: &Principal,
    call: &Call,
) -> Result<Outcome, ApiError> {
    ctx.act_as(principal);
    let Some(op_id) = &call.op_id else {
        return dispatch(conn, ctx, principal, call);
    };
    let fp = fingerprint(call);
    if let Some(row) = q::find_op(conn, principal.token_id, op_id)? {
        if row.fingerprint != fp {
            return Err(ApiError::conflict(format!(
                "op_id {op_id:?} was already used for another call"
            )));
        }
        let data = RawValue::from_string(row.reply).map_err(ApiError::internal)?;
        return Ok(Outcome {
            data: Arc::from(data),
            seq: row.seq,
            ..Outcome::default()
        });
    }
    let out = dispatch(conn, ctx, principal, call)?;
    if ctx.fail_op_id == Some(op_id.as_str()) {
        return Err(ApiError::invalid("failed on purpose after its writes (test hook)"));
    }
    let stored = if call.method == Method::AgentCreate {
        // The secret is shown once and never stored in clear.
        let mut reply: Value = serde_json::from_str(out.data.get()).map_err(ApiError::internal)?;
        if let Some(obj) = reply.as_object_mut() {
            obj.remove("token");
        }
        reply.to_string()
    } else {
        out.data.get().to_string()
    };
    q::insert_op(
        conn,
        &OpRow {
            token_id: principal.token_id,
            op_id: op_id.clone(),
            fingerprint: fp,
            reply: stored,
            seq: out.seq,
            at: ctx.now.clone(),
        },
    )?;
    Ok(out)
}

fn dispatch(
    conn: &mut SqliteConnection,
    ctx: &mut WriteCtx,
    principal: &Principal,
    call: &Call,
) -> Result<Outcome, ApiError> {
    let params = &call.params;
    match call.method {
        Method::TaskCreate => tasks::create(conn, ctx, principal, from_ref(params)?),
        Method::TaskUpdate => tasks::update(conn, ctx, principal, from_ref(params)?),
        Method::TaskDelete => tasks::delete(conn, ctx, principal, from_ref(params)?),
        Method::AgentCreate => agents::create(conn, ctx, principal, from_ref(params)?),
        Method::AgentUpdate => agents::update(conn, ctx, principal, from_ref(params)?),
        Method::AgentDelete => agents::delete(conn, ctx, principal, from_ref(params)?),
        Method::AgentHeartbeat => agents::heartbeat(conn, ctx, principal, from_ref(params)?),
        Method::TaskNote => notes::note(conn, ctx, principal, from_ref(params)?),
        Method::TaskClaim => tasks::claim(conn, ctx, principal, from_ref(params)?),
    }
}

// ---- shared checks ----

fn check_id(id: i64) -> Result<i64, ApiError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(ApiError::bad_request("`id` must be a positive integer"))
    }
}

fn check_version(entity: Entity, id: i64, current: i64, expected: Option<i64>) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != current => Err(ApiError::stale(entity.as_str(), id, current, v)),
        _ => Ok(()),
    }
}

/// The keys of `after` whose values differ from `before`, but `version` and
/// `updated_at`, which every change sets.
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return vec![];
    };
    a.iter()
        .filter(|(k, v)| k.as_str() != "version" && k.as_str() != "updated_at" && b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn all_fields(data: &Value) -> Vec<String> {
    changed_fields(&json!({}), data)
}

/// The values of the `changed` fields in an entity's JSON before a change.
fn before_values(before: &Value, changed: &[String]) -> Arc<RawValue> {
    let values: serde_json::Map<String, Value> = changed
        .iter()
        .map(|f| (f.clone(), before.get(f).cloned().unwrap_or(Value::Null)))
        .collect();
    crate::protocol::raw(&Value::Object(values))
}

/// A change-log row as the change it records.
pub fn change_of_row(row: ChangeRow) -> Result<Change, ApiError> {
    Ok(Change {
        seq: row.seq,
        entity: row.entity,
        entity_id: row.entity_id,
        kind: row.kind,
        changed: serde_json::from_str(&row.changed).map_err(ApiError::internal)?,
        data: Arc::from(RawValue::from_string(row.data).map_err(ApiError::internal)?),
        by: row.author.map(raw_text).transpose()?,
        before: row.prior.map(raw_text).transpose()?,
        at: Arc::from(row.at),
    })
}

/// Stored JSON text as it goes out again.
pub fn raw_text(text: String) -> Result<Arc<RawValue>, ApiError> {
    Ok(Arc::from(RawValue::from_string(text).map_err(ApiError::internal)?))
}
