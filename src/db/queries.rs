//! The SQL of taskwire: plain functions on a connection, one per question.

use std::marker::PhantomData;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::models::*;
use super::open::OpenError;
use super::schema::{activity, agents, changes, login_codes, meta, ops, tasks, tokens, web_sessions};
use crate::filter::{Assignee, Filter, KeyValue, SortKey};
use crate::model::{ChangeKind, Entity};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A query diesel keeps prepared under the type `K`. Without a fixed type id
/// diesel prints a query's SQL on every run to find it in its cache. Only for
/// queries with one SQL text: an INSERT of a struct with an `Option` field
/// leaves that column out when it is `None`.
struct CachedAs<Q, K>(Q, PhantomData<K>);

fn cached_as<K, Q>(query: Q) -> CachedAs<Q, K> {
    CachedAs(query, PhantomData)
}

impl<Q: QueryFragment<Sqlite>, K> QueryFragment<Sqlite> for CachedAs<Q, K> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }
}

impl<Q, K: 'static> QueryId for CachedAs<Q, K> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q, K> RunQueryDsl<SqliteConnection> for CachedAs<Q, K> {}

/// `UPDATE table SET changeset WHERE filter`, built from diesel's pieces.
///
/// diesel's own update builder marks every UPDATE unsafe to keep prepared,
/// because a changeset of optional fields can print different SQL each time.
/// The hot writes below set fixed columns, so their text is fixed; compiling it
/// again on each write was about a sixth of the writer thread's time.
struct UpdateWhere<F, C, W> {
    table: F,
    set: C,
    filter: W,
}

/// An [`UpdateWhere`] kept prepared under `K`.
fn prepared_update<K, T, C, W>(table: T, set: C, filter: W) -> CachedAs<UpdateWhere<T::FromClause, C::Changeset, W>, K>
where
    T: Table,
    C: AsChangeset<Target = T>,
    W: diesel::AppearsOnTable<T>,
{
    cached_as(UpdateWhere {
        table: table.from_clause(),
        set: set.as_changeset(),
        filter,
    })
}

impl<F, C, W> QueryFragment<Sqlite> for UpdateWhere<F, C, W>
where
    F: QueryFragment<Sqlite>,
    C: QueryFragment<Sqlite>,
    W: QueryFragment<Sqlite>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE ");
        self.table.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.set.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE ");
        self.filter.walk_ast(out.reborrow())
    }
}

/// A statement of fixed text with no parameters, so it can be kept prepared
/// (diesel's `sql_query` never is).
struct Fixed(&'static str);

impl QueryFragment<Sqlite> for Fixed {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

struct SavepointSql;
struct ReleaseSql;
struct RollbackToSql;

/// Opens the savepoint a call runs in. diesel's nested transactions do the
/// same but prepare their statements again on every call, which cost the
/// writer's thread several microseconds per write.
pub fn savepoint(conn: &mut SqliteConnection) -> QueryResult<()> {
    cached_as::<SavepointSql, _>(Fixed("SAVEPOINT call"))
        .execute(conn)
        .map(drop)
}

/// Keeps what the call wrote, inside the batch's transaction.
pub fn release_savepoint(conn: &mut SqliteConnection) -> QueryResult<()> {
    cached_as::<ReleaseSql, _>(Fixed("RELEASE call"))
        .execute(conn)
        .map(drop)
}

/// Undoes what the call wrote, and closes its savepoint.
pub fn roll_back_savepoint(conn: &mut SqliteConnection) -> QueryResult<()> {
    cached_as::<RollbackToSql, _>(Fixed("ROLLBACK TO call")).execute(conn)?;
    release_savepoint(conn)
}

/// Cache keys of the statements kept prepared.
struct AppendChangeSql;
struct SaveTaskSql;
struct SaveTaskWithAssigneeSql;
struct SaveAgentSql;
struct WriteHeartbeatSql;

/// Opens the database file, sets the per-connection pragmas and runs the
/// migrations. The folder of the file is created if missing.
pub fn open(path: &str) -> Result<SqliteConnection, OpenError> {
    super::sqlite_log::install();
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Folder {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let mut conn = SqliteConnection::establish(path).map_err(|source| OpenError::Connect {
        path: path.to_string(),
        source,
    })?;
    let configure = |source| OpenError::Configure {
        path: path.to_string(),
        source,
    };
    // Nothing that writes to the file before it is known to be ours:
    // `journal_mode = WAL` rewrites the header. The busy timeout only lets the
    // check wait for another process's write.
    conn.batch_execute("PRAGMA busy_timeout = 2000;").map_err(configure)?;
    refuse_unless_ours(path, &mut conn)?;
    // The sub-journal of each call's savepoint in memory: in a temporary
    // file it cost every commit file writes of its own.
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
    )
    .map_err(configure)?;
    // One transaction holding the write lock: a second process opening the same
    // new file (the command line, another server) waits and then finds the
    // migrations done, instead of running them twice.
    conn.immediate_transaction::<_, Box<dyn std::error::Error + Send + Sync>, _>(|conn| {
        conn.run_pending_migrations(MIGRATIONS).map(drop)
    })
    .map_err(|source| OpenError::Migrate {
        path: path.to_string(),
        source,
    })?;
    Ok(conn)
}

/// Refuses a file that holds someone else's tables or is not SQLite, having
/// only read it, on `conn` (just opened, nothing written).
fn refuse_unless_ours(path: &str, conn: &mut SqliteConnection) -> Result<(), OpenError> {
    let wal = format!("{path}-wal");
    let found = if std::path::Path::new(path).is_file() && std::path::Path::new(&wal).is_file() {
        // Closing the last read-write connection checkpoints a WAL into the
        // file; one left by someone else's killed program must stay as it is.
        // A read-only connection reads it without that.
        let mut read_only = SqliteConnection::establish(&read_only_uri(path)).map_err(|source| OpenError::Connect {
            path: path.to_string(),
            source,
        })?;
        read_only
            .batch_execute("PRAGMA busy_timeout = 2000;")
            .and_then(|()| found_in(&mut read_only))
    } else {
        found_in(conn)
    };
    let tables = match found {
        Ok(Found::Nothing | Found::Ours) => return Ok(()),
        Ok(Found::Foreign(tables)) => tables,
        Err(diesel::result::Error::DatabaseError(_, info)) if info.message().contains("not a database") => Vec::new(),
        Err(source) => {
            return Err(OpenError::Read {
                path: path.to_string(),
                source,
            })
        }
    };
    Err(OpenError::NotOurs {
        path: path.to_string(),
        tables,
    })
}

/// `path` as a SQLite URI that opens it read-only.
fn read_only_uri(path: &str) -> String {
    // An absolute path gets the empty authority, so `//x` is not a host.
    let mut uri = String::from(if path.starts_with('/') { "file://" } else { "file:" });
    for c in path.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// What a file holds, told before anything is written to it.
enum Found {
    /// No tables: a new or empty file, taskwire's to fill.
    Nothing,
    /// diesel's migrations table lists taskwire's first migration.
    Ours,
    /// Someone else's tables, by name in the order they were made.
    Foreign(Vec<String>),
}

/// Reads the schema, in one read transaction, which writes nothing. A
/// rollback journal left hot by a crash is still rolled back, as any
/// SQLite reader would.
fn found_in(conn: &mut SqliteConnection) -> QueryResult<Found> {
    use diesel::migration::MigrationSource;
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let first: Option<String> = MigrationSource::<Sqlite>::migrations(&MIGRATIONS)
        .map_err(diesel::result::Error::QueryBuilderError)?
        .iter()
        .map(|m| m.name().version().to_string())
        .min();
    conn.transaction(|conn| {
        let tables: Vec<String> = diesel::sql_query(
            "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
        )
        .load::<Name>(conn)?
        .into_iter()
        .map(|n| n.name)
        .collect();
        if tables.is_empty() {
            return Ok(Found::Nothing);
        }
        if tables.iter().any(|t| t == "__diesel_schema_migrations") {
            // Another program's table of that name may have other columns:
            // an error here means not ours, not a failure to read.
            let ours = diesel::sql_query("SELECT version AS name FROM __diesel_schema_migrations WHERE version = ?")
                .bind::<Text, _>(first.unwrap_or_default())
                .load::<Name>(conn)
                .is_ok_and(|rows| !rows.is_empty());
            if ours {
                return Ok(Found::Ours);
            }
        }
        Ok(Found::Foreign(tables))
    })
}

/// A number that changes whenever another connection (another process, the
/// `sqlite3` shell) commits to the file; this connection's own commits leave
/// it as it is.
pub fn data_version(conn: &mut SqliteConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        data_version: i64,
    }
    diesel::sql_query("PRAGMA data_version")
        .get_result::<Row>(conn)
        .map(|r| r.data_version)
}

/// Copies the WAL into the database file and empties it.
pub fn checkpoint(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")
}

/// The path of the main database file this connection has open.
pub fn database_file(conn: &mut SqliteConnection) -> QueryResult<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        file: String,
    }
    diesel::sql_query("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .get_result::<Row>(conn)
        .map(|r| r.file)
}

pub fn get_meta(conn: &mut SqliteConnection, key: &str) -> QueryResult<Option<String>> {
    meta::table.find(key).select(meta::value).get_result(conn).optional()
}

pub fn set_meta(conn: &mut SqliteConnection, key: &str, value: &str) -> QueryResult<()> {
    diesel::replace_into(meta::table)
        .values((meta::key.eq(key), meta::value.eq(value)))
        .execute(conn)
        .map(drop)
}

pub fn delete_meta(conn: &mut SqliteConnection, key: &str) -> QueryResult<()> {
    diesel::delete(meta::table.find(key)).execute(conn).map(drop)
}

// ---- tasks ----

pub fn find_task(conn: &mut SqliteConnection, id: i64) -> QueryResult<Option<Task>> {
    // By primary key: at most one row, so no `LIMIT ?`. SQLite re-plans a
    // statement whose LIMIT is a bound parameter on every execution.
    tasks::table
        .find(id)
        .select(Task::as_select())
        .get_result(conn)
        .optional()
}

/// Tasks by id, those a task filter matches (the same test as
/// [`Filter::event_of`]'s, in SQL); with a window, the first `limit` by its
/// order, after the cursor `after` if given.
pub fn list_tasks(
    conn: &mut SqliteConnection,
    filter: Option<&Filter>,
    after: Option<&SortKey>,
) -> QueryResult<Vec<Task>> {
    use diesel::dsl::sql;
    use diesel::sql_types::{BigInt, Bool, Text};
    let mut q = tasks::table.select(Task::as_select()).into_boxed();
    match filter.and_then(Filter::window) {
        None => q = q.order(tasks::id),
        Some(w) => {
            let (column, desc) = w.order.column();
            let dir = if desc { "DESC" } else { "ASC" };
            q = q.order(sql::<Text>(&format!("{column} {dir}, id {dir}")));
            if let Some(key) = after {
                let open = sql::<Bool>(&format!("({column}, id) {} (", if desc { "<" } else { ">" }));
                q = match &key.value {
                    KeyValue::Text(t) => q.filter(
                        open.bind::<Text, _>(t.clone())
                            .sql(", ")
                            .bind::<BigInt, _>(key.id)
                            .sql(")"),
                    ),
                    KeyValue::Int(i) => {
                        q.filter(open.bind::<BigInt, _>(*i).sql(", ").bind::<BigInt, _>(key.id).sql(")"))
                    }
                };
            }
            q = q.limit(i64::from(w.limit));
        }
    }
    if let Some(Filter::Tasks {
        status,
        assignee,
        priority_min,
        ..
    }) = filter
    {
        if !status.is_empty() {
            q = q.filter(tasks::status.eq_any(status.clone()));
        }
        match assignee {
            Some(Assignee::None) => q = q.filter(tasks::assignee_id.is_null()),
            Some(Assignee::Id(id)) => q = q.filter(tasks::assignee_id.eq(*id)),
            None => {}
        }
        if let Some(p) = priority_min {
            q = q.filter(tasks::priority.ge(*p));
        }
    }
    q.load(conn)
}

pub fn insert_task(conn: &mut SqliteConnection, new: &NewTask) -> QueryResult<Task> {
    diesel::insert_into(tasks::table)
        .values(new)
        .returning(Task::as_returning())
        .get_result(conn)
}

/// Writes every column of a task. The assignee is left out of the statement
/// unless it changed: SQLite rewrites an index whenever its column is set, even
/// to the same value, and that is one more page on every commit.
pub fn save_task(conn: &mut SqliteConnection, task: &Task, assignee_changed: bool) -> QueryResult<()> {
    let columns = (
        tasks::title.eq(&task.title),
        tasks::description.eq(&task.description),
        tasks::status.eq(&task.status),
        tasks::priority.eq(task.priority),
        tasks::progress.eq(task.progress),
        tasks::version.eq(task.version),
        tasks::updated_at.eq(&task.updated_at),
    );
    let key = tasks::id.eq(task.id);
    if assignee_changed {
        let columns = (columns, tasks::assignee_id.eq(task.assignee_id));
        prepared_update::<SaveTaskWithAssigneeSql, _, _, _>(tasks::table, columns, key).execute(conn)
    } else {
        prepared_update::<SaveTaskSql, _, _, _>(tasks::table, columns, key).execute(conn)
    }
    .map(drop)
}

pub fn delete_task(conn: &mut SqliteConnection, id: i64) -> QueryResult<()> {
    diesel::delete(tasks::table.find(id)).execute(conn).map(drop)
}

pub fn tasks_assigned_to(conn: &mut SqliteConnection, agent_id: i64) -> QueryResult<Vec<Task>> {
    tasks::table
        .filter(tasks::assignee_id.eq(agent_id))
        .select(Task::as_select())
        .order(tasks::id)
        .load(conn)
}

// ---- agents ----

pub fn find_agent(conn: &mut SqliteConnection, id: i64) -> QueryResult<Option<Agent>> {
    agents::table
        .find(id)
        .select(Agent::as_select())
        .get_result(conn)
        .optional()
}

pub fn agent_name_taken(conn: &mut SqliteConnection, name: &str, except_id: i64) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        agents::table
            .filter(agents::name.eq(name))
            .filter(agents::id.ne(except_id)),
    ))
    .get_result(conn)
}

pub fn list_agents(conn: &mut SqliteConnection) -> QueryResult<Vec<Agent>> {
    agents::table.select(Agent::as_select()).order(agents::id).load(conn)
}

pub fn insert_agent(conn: &mut SqliteConnection, new: &NewAgent) -> QueryResult<Agent> {
    diesel::insert_into(agents::table)
        .values(new)
        .returning(Agent::as_returning())
        .get_result(conn)
}

pub fn save_agent(conn: &mut SqliteConnection, agent: &Agent) -> QueryResult<()> {
    prepared_update::<SaveAgentSql, _, _, _>(
        agents::table,
        (
            agents::name.eq(&agent.name),
            agents::status.eq(&agent.status),
            agents::reported_status.eq(&agent.reported_status),
            agents::current_task_id.eq(agent.current_task_id),
            agents::last_heartbeat_at.eq(&agent.last_heartbeat_at),
            agents::meta.eq(&agent.meta),
            agents::version.eq(agent.version),
            agents::updated_at.eq(&agent.updated_at),
        ),
        agents::id.eq(agent.id),
    )
    .execute(conn)
    .map(drop)
}

pub fn delete_agent(conn: &mut SqliteConnection, id: i64) -> QueryResult<()> {
    diesel::delete(agents::table.find(id)).execute(conn).map(drop)
}

pub fn agents_on_task(conn: &mut SqliteConnection, task_id: i64) -> QueryResult<Vec<Agent>> {
    agents::table
        .filter(agents::current_task_id.eq(task_id))
        .select(Agent::as_select())
        .order(agents::id)
        .load(conn)
}

/// Writes heartbeat times kept in memory; not a change, so no version bump.
pub fn write_heartbeats(conn: &mut SqliteConnection, beats: &[(i64, String)]) -> QueryResult<()> {
    for (id, at) in beats {
        prepared_update::<WriteHeartbeatSql, _, _, _>(
            agents::table,
            agents::last_heartbeat_at.eq(at),
            agents::id.eq(id),
        )
        .execute(conn)?;
    }
    Ok(())
}

// ---- change log ----

pub fn append_change(conn: &mut SqliteConnection, row: &NewChange) -> QueryResult<()> {
    cached_as::<AppendChangeSql, _>(diesel::insert_into(changes::table).values(row))
        .execute(conn)
        .map(drop)
}

// ---- activity ----

/// Files the task changes and notes committed after `through` into their
/// tasks' activity (those of tasks deleted since are left out), and records
/// how far it got. Returns the new `through`. Done apart from the group
/// commits, many changes at a time: the index by task takes a page per task
/// written, and once per commit that was as many pages again as the commit's.
pub fn file_activity(conn: &mut SqliteConnection, through: i64) -> QueryResult<i64> {
    let upto = max_seq(conn)?.unwrap_or(0);
    if upto <= through {
        return Ok(through);
    }
    diesel::sql_query(
        "INSERT OR IGNORE INTO activity (seq, task_id, agent_id, kind, changed, prior, data, author, at)
         SELECT c.seq, c.entity_id, json_extract(c.author, '$.agent_id'), c.kind, c.changed, c.prior, c.data,
                c.author, c.at
         FROM changes c JOIN tasks t ON t.id = c.entity_id
         WHERE c.seq > ? AND c.seq <= ? AND c.entity = 'task' AND c.kind != 'deleted'
         ORDER BY c.seq",
    )
    .bind::<diesel::sql_types::BigInt, _>(through)
    .bind::<diesel::sql_types::BigInt, _>(upto)
    .execute(conn)?;
    set_meta(conn, ACTIVITY_THROUGH, &upto.to_string())?;
    Ok(upto)
}

/// The meta key of the newest change filed into the activity.
const ACTIVITY_THROUGH: &str = "activity_through";

/// The newest change filed into the activity: later ones are only in the log.
pub fn activity_through(conn: &mut SqliteConnection) -> QueryResult<i64> {
    Ok(get_meta(conn, ACTIVITY_THROUGH)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

pub fn delete_activity(conn: &mut SqliteConnection, task_id: i64) -> QueryResult<()> {
    diesel::delete(activity::table.filter(activity::task_id.eq(task_id)))
        .execute(conn)
        .map(drop)
}

/// Whose activity: one task's, or what one agent did across tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityOf {
    Task(i64),
    Agent(i64),
}

/// Activity entries with seq below `before` and at most `upto`, newest first,
/// at most `limit`.
pub fn activity(
    conn: &mut SqliteConnection,
    of: ActivityOf,
    before: i64,
    upto: i64,
    limit: i64,
) -> QueryResult<Vec<ActivityRow>> {
    let q = activity::table
        .filter(activity::seq.lt(before))
        .filter(activity::seq.le(upto))
        .select(ActivityRow::as_select())
        .order(activity::seq.desc())
        .limit(limit)
        .into_boxed();
    match of {
        ActivityOf::Task(id) => q.filter(activity::task_id.eq(id)).load(conn),
        ActivityOf::Agent(id) => q.filter(activity::agent_id.eq(id)).load(conn),
    }
}

pub fn max_seq(conn: &mut SqliteConnection) -> QueryResult<Option<i64>> {
    changes::table.select(diesel::dsl::max(changes::seq)).first(conn)
}

/// Changes with seq in (`since`, `upto`], oldest first, optionally only those of
/// one entity kind or of one entity; at most `limit`. The log has no index by
/// entity (it cost a random page per write), so a filtered read scans the seq
/// range: callers bound it.
pub fn changes_since(
    conn: &mut SqliteConnection,
    since: i64,
    upto: i64,
    filter: Option<(Entity, Option<i64>)>,
    limit: i64,
) -> QueryResult<Vec<ChangeRow>> {
    let mut q = changes::table
        .filter(changes::seq.gt(since))
        .filter(changes::seq.le(upto))
        .select(ChangeRow::as_select())
        .order(changes::seq)
        .limit(limit)
        .into_boxed();
    if let Some((entity, id)) = filter {
        q = q.filter(changes::entity.eq(entity.as_str()));
        match id {
            Some(id) => q = q.filter(changes::entity_id.eq(id)),
            // Notes are only on their task's own topic.
            None => q = q.filter(changes::kind.ne(ChangeKind::Noted.as_str())),
        }
    }
    q.load(conn)
}

/// Deletes changes beyond the newest `keep`, and those older than `before`,
/// but never the newest one (it carries the position across restarts).
/// Returns the seq of the newest change removed, if any.
pub fn prune_changes(conn: &mut SqliteConnection, keep: i64, before: &str) -> QueryResult<Option<i64>> {
    let Some(newest) = max_seq(conn)? else {
        return Ok(None);
    };
    let by_count = newest - keep.max(1);
    let by_age: Option<i64> = changes::table
        .filter(changes::at.lt(before))
        .filter(changes::seq.lt(newest))
        .select(diesel::dsl::max(changes::seq))
        .first(conn)?;
    let cut = by_count.max(by_age.unwrap_or(0));
    if cut <= 0 {
        return Ok(None);
    }
    let n = diesel::delete(changes::table.filter(changes::seq.le(cut))).execute(conn)?;
    Ok((n > 0).then_some(cut))
}

pub fn count_changes(conn: &mut SqliteConnection) -> QueryResult<i64> {
    changes::table.count().get_result(conn)
}

// ---- remembered op_ids ----

pub fn find_op(conn: &mut SqliteConnection, token_id: i64, op_id: &str) -> QueryResult<Option<OpRow>> {
    ops::table
        .find((token_id, op_id))
        .select(OpRow::as_select())
        .get_result(conn)
        .optional()
}

pub fn insert_op(conn: &mut SqliteConnection, row: &OpRow) -> QueryResult<()> {
    // Not `cached_as`: a missing `seq` leaves its column out of the SQL, so
    // this INSERT has two texts.
    diesel::insert_into(ops::table).values(row).execute(conn).map(drop)
}

pub fn prune_ops(conn: &mut SqliteConnection, before: &str) -> QueryResult<usize> {
    diesel::delete(ops::table.filter(ops::at.lt(before))).execute(conn)
}

// ---- tokens ----

pub fn insert_token(conn: &mut SqliteConnection, new: &NewToken) -> QueryResult<TokenRow> {
    diesel::insert_into(tokens::table)
        .values(new)
        .returning(TokenRow::as_returning())
        .get_result(conn)
}

pub fn list_tokens(conn: &mut SqliteConnection) -> QueryResult<Vec<TokenRow>> {
    tokens::table.select(TokenRow::as_select()).order(tokens::id).load(conn)
}

/// The token with this id, if it is not revoked.
pub fn find_live_token(conn: &mut SqliteConnection, id: i64) -> QueryResult<Option<TokenRow>> {
    tokens::table
        .find(id)
        .filter(tokens::revoked_at.is_null())
        .select(TokenRow::as_select())
        .get_result(conn)
        .optional()
}

/// Admin tokens not revoked.
pub fn count_live_admins(conn: &mut SqliteConnection) -> QueryResult<i64> {
    tokens::table
        .filter(tokens::role.eq(crate::auth::Role::Admin))
        .filter(tokens::revoked_at.is_null())
        .count()
        .get_result(conn)
}

/// Marks a token revoked; returns false if there is no such live token.
pub fn revoke_token(conn: &mut SqliteConnection, id: i64, at: &str) -> QueryResult<bool> {
    let n = diesel::update(tokens::table.find(id).filter(tokens::revoked_at.is_null()))
        .set(tokens::revoked_at.eq(at))
        .execute(conn)?;
    Ok(n > 0)
}

/// Revokes every token bound to an agent (the agent is gone).
pub fn revoke_agent_tokens(conn: &mut SqliteConnection, agent_id: i64, at: &str) -> QueryResult<Vec<i64>> {
    let ids: Vec<i64> = tokens::table
        .filter(tokens::agent_id.eq(agent_id))
        .filter(tokens::revoked_at.is_null())
        .select(tokens::id)
        .load(conn)?;
    diesel::update(tokens::table.filter(tokens::id.eq_any(&ids)))
        .set(tokens::revoked_at.eq(at))
        .execute(conn)?;
    Ok(ids)
}

// ---- browser sessions ----

pub fn insert_web_session(
    conn: &mut SqliteConnection,
    hash: &str,
    token_id: i64,
    now: &str,
    expires_at: &str,
) -> QueryResult<()> {
    diesel::insert_into(web_sessions::table)
        .values((
            web_sessions::hash.eq(hash),
            web_sessions::token_id.eq(token_id),
            web_sessions::created_at.eq(now),
            web_sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

pub fn delete_web_session(conn: &mut SqliteConnection, hash: &str) -> QueryResult<()> {
    diesel::delete(web_sessions::table.find(hash)).execute(conn).map(drop)
}

/// Sessions not yet expired whose token is live: (hash, token id, expiry).
pub fn live_web_sessions(conn: &mut SqliteConnection, now: &str) -> QueryResult<Vec<(String, i64, String)>> {
    web_sessions::table
        .inner_join(tokens::table.on(tokens::id.eq(web_sessions::token_id)))
        .filter(web_sessions::expires_at.gt(now))
        .filter(tokens::revoked_at.is_null())
        .select((web_sessions::hash, web_sessions::token_id, web_sessions::expires_at))
        .load(conn)
}

pub fn prune_web_sessions(conn: &mut SqliteConnection, now: &str) -> QueryResult<usize> {
    diesel::delete(web_sessions::table.filter(web_sessions::expires_at.le(now))).execute(conn)
}

/// Deletes the sessions of `token_id` (of every token when `None`) beyond
/// that token's newest `keep`, oldest first; returns their hashes. "Newest"
/// is by creation time, then by rowid: two sessions made in the same
/// millisecond are kept in the order they were inserted.
pub fn trim_web_sessions(conn: &mut SqliteConnection, token_id: Option<i64>, keep: i64) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Gone {
        #[diesel(sql_type = diesel::sql_types::Text)]
        hash: String,
    }
    use diesel::sql_types::{BigInt, Nullable};
    diesel::sql_query(
        "DELETE FROM web_sessions WHERE rowid IN (
             SELECT rowid FROM (
                 SELECT rowid, ROW_NUMBER() OVER (
                     PARTITION BY token_id ORDER BY created_at DESC, rowid DESC) AS n
                 FROM web_sessions WHERE ?1 IS NULL OR token_id = ?1)
             WHERE n > ?2)
         RETURNING hash",
    )
    .bind::<Nullable<BigInt>, _>(token_id)
    .bind::<BigInt, _>(keep)
    .load::<Gone>(conn)
    .map(|rows| rows.into_iter().map(|r| r.hash).collect())
}

// ---- login codes ----

pub fn insert_login_code(
    conn: &mut SqliteConnection,
    hash: &str,
    token_id: i64,
    now: &str,
    expires_at: &str,
) -> QueryResult<()> {
    diesel::insert_into(login_codes::table)
        .values((
            login_codes::hash.eq(hash),
            login_codes::token_id.eq(token_id),
            login_codes::created_at.eq(now),
            login_codes::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

pub fn find_login_code(conn: &mut SqliteConnection, hash: &str) -> QueryResult<Option<LoginCodeRow>> {
    login_codes::table
        .find(hash)
        .select(LoginCodeRow::as_select())
        .get_result(conn)
        .optional()
}

/// Marks a code used; false if it was used already.
pub fn use_login_code(conn: &mut SqliteConnection, hash: &str, at: &str) -> QueryResult<bool> {
    let n = diesel::update(login_codes::table.find(hash).filter(login_codes::used_at.is_null()))
        .set(login_codes::used_at.eq(at))
        .execute(conn)?;
    Ok(n > 0)
}

/// Deletes codes that expired before `before`, used or not.
pub fn prune_login_codes(conn: &mut SqliteConnection, before: &str) -> QueryResult<usize> {
    diesel::delete(login_codes::table.filter(login_codes::expires_at.lt(before))).execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::InstrumentationEvent;
    use std::sync::{Arc, Mutex};

    /// A database made before the change log was keyed by rowid keeps its
    /// changes through the migration, and loses the index by entity.
    #[test]
    fn the_change_log_migration_keeps_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        // The two migrations before it, then a change log as they left it.
        conn.run_next_migration(MIGRATIONS).unwrap();
        conn.run_next_migration(MIGRATIONS).unwrap();
        conn.batch_execute(
            "INSERT INTO changes (seq, entity, entity_id, kind, changed, data, at) VALUES
             (7, 'task', 1, 'created', '[\"title\"]', '{\"id\":1}', 't1'),
             (9, 'agent', 2, 'updated', '[\"status\"]', '{\"id\":2}', 't2');",
        )
        .unwrap();
        drop(conn);

        let mut conn = open(path.to_str().unwrap()).unwrap();
        let rows = changes_since(&mut conn, 0, i64::MAX, None, 10).unwrap();
        let kept: Vec<(i64, &str, i64, &str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.seq,
                    r.entity.as_str(),
                    r.entity_id,
                    r.kind.as_str(),
                    r.data.as_str(),
                    r.at.as_str(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            vec![
                (7, "task", 1, "created", "{\"id\":1}", "t1"),
                (9, "agent", 2, "updated", "{\"id\":2}", "t2")
            ]
        );
        assert_eq!(rows[0].changed, "[\"title\"]");
        let indexes: Vec<String> = diesel::dsl::sql::<diesel::sql_types::Text>(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'changes'",
        )
        .load(&mut conn)
        .unwrap();
        assert!(indexes.is_empty(), "{indexes:?}");
        // New changes go on after the old ones.
        append_change(
            &mut conn,
            &NewChange {
                seq: 10,
                entity: Entity::Task,
                entity_id: 1,
                kind: crate::model::ChangeKind::Updated,
                changed: "[]",
                data: "{}",
                at: "t3",
                author: None,
                prior: None,
            },
        )
        .unwrap();
        assert_eq!(max_seq(&mut conn).unwrap(), Some(10));
    }

    /// A database made before authored changes keeps its tasks, change log,
    /// tokens and epoch through their migration; what the log still holds of
    /// existing tasks becomes their activity, with no author.
    #[test]
    fn the_activity_migration_keeps_everything_and_fills_the_activity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        for _ in 0..4 {
            conn.run_next_migration(MIGRATIONS).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO meta (key, value) VALUES ('epoch', 'e-old');
             INSERT INTO tasks (id, title, description, status, priority, assignee_id, version, created_at, updated_at)
                 VALUES (1, 'kept', '', 'todo', 1, NULL, 2, 't1', 't2');
             INSERT INTO tokens (hash, role, name, agent_id, created_at) VALUES ('h1', 'admin', 'root', NULL, 't0');
             INSERT INTO changes (seq, entity, entity_id, kind, changed, data, at) VALUES
                 (1, 'task', 1, 'created', '[\"title\"]', '{\"id\":1,\"title\":\"k\"}', 't1'),
                 (2, 'task', 9, 'created', '[\"title\"]', '{\"id\":9}', 't1'),
                 (3, 'task', 9, 'deleted', '[]', '{\"id\":9}', 't1'),
                 (4, 'task', 1, 'updated', '[\"title\"]', '{\"id\":1,\"title\":\"kept\"}', 't2'),
                 (5, 'agent', 2, 'created', '[]', '{\"id\":2}', 't2');",
        )
        .unwrap();
        drop(conn);

        let mut conn = open(path.to_str().unwrap()).unwrap();
        assert_eq!(get_meta(&mut conn, "epoch").unwrap().as_deref(), Some("e-old"));
        assert_eq!(list_tokens(&mut conn).unwrap()[0].name, "root");
        let task = find_task(&mut conn, 1).unwrap().unwrap();
        assert_eq!((task.title.as_str(), task.version, task.progress), ("kept", 2, None));
        let log = changes_since(&mut conn, 0, i64::MAX, None, 10).unwrap();
        assert_eq!(log.len(), 5);
        assert!(log.iter().all(|c| c.author.is_none() && c.prior.is_none()));
        let entries = activity(&mut conn, ActivityOf::Task(1), i64::MAX, i64::MAX, 10).unwrap();
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 1], "newest first, only the live task's own");
        assert!(entries.iter().all(|e| e.author.is_none()));
        assert!(activity(&mut conn, ActivityOf::Task(9), i64::MAX, i64::MAX, 10)
            .unwrap()
            .is_empty());
    }

    /// A database made before login codes keeps its tokens and browser
    /// sessions through their migration, and takes codes after it.
    #[test]
    fn the_login_code_migration_keeps_tokens_and_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        for _ in 0..3 {
            conn.run_next_migration(MIGRATIONS).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO tokens (id, hash, role, name, agent_id, created_at, revoked_at) VALUES
             (1, 'h-admin', 'admin', 'admin', NULL, 't0', NULL),
             (2, 'h-gone', 'member', 'old', NULL, 't0', 't1');
             INSERT INTO web_sessions (hash, token_id, created_at, expires_at) VALUES
             ('s1', 1, 't0', '9999-01-01T00:00:00.000Z');",
        )
        .unwrap();
        drop(conn);

        let mut conn = open(path.to_str().unwrap()).unwrap();
        let tokens: Vec<(i64, String, Option<String>)> = list_tokens(&mut conn)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.hash, t.revoked_at))
            .collect();
        assert_eq!(
            tokens,
            vec![(1, "h-admin".into(), None), (2, "h-gone".into(), Some("t1".into()))]
        );
        assert_eq!(
            live_web_sessions(&mut conn, "2026-01-01").unwrap(),
            vec![("s1".into(), 1, "9999-01-01T00:00:00.000Z".into())]
        );
        assert!(find_live_token(&mut conn, 1).unwrap().is_some());
        assert!(find_live_token(&mut conn, 2).unwrap().is_none());
        insert_login_code(&mut conn, "c1", 1, "t2", "t9").unwrap();
        let code = find_login_code(&mut conn, "c1").unwrap().unwrap();
        assert_eq!((code.token_id, code.used_at), (1, None));
        assert!(use_login_code(&mut conn, "c1", "t3").unwrap());
        assert!(!use_login_code(&mut conn, "c1", "t4").unwrap(), "a code is used once");
        assert_eq!(prune_login_codes(&mut conn, "t9").unwrap(), 0);
        assert_eq!(prune_login_codes(&mut conn, "u").unwrap(), 1);
    }

    /// Each token keeps its newest sessions; ties in time go by insertion.
    #[test]
    fn trimming_sessions_keeps_each_tokens_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(dir.path().join("t.db").to_str().unwrap()).unwrap();
        for (hash, token, at) in [("a1", 1, "t1"), ("a2", 1, "t1"), ("a3", 1, "t2"), ("b1", 2, "t0")] {
            insert_web_session(&mut conn, hash, token, at, "9999").unwrap();
        }
        let mut gone = trim_web_sessions(&mut conn, Some(1), 2).unwrap();
        assert_eq!(gone, vec!["a1".to_string()]);
        gone = trim_web_sessions(&mut conn, None, 1).unwrap();
        assert_eq!(gone, vec!["a2".to_string()]);
        let mut hashes: Vec<String> = web_sessions::table.select(web_sessions::hash).load(&mut conn).unwrap();
        hashes.sort();
        assert_eq!(hashes, vec!["a3".to_string(), "b1".to_string()]);
    }

    /// The hot UPDATEs are compiled once, not on every write.
    #[test]
    fn task_updates_are_prepared_once_per_shape() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(dir.path().join("t.db").to_str().unwrap()).unwrap();
        let mut task = insert_task(
            &mut conn,
            &NewTask {
                title: "a",
                description: "",
                status: crate::model::TaskStatus::Todo,
                priority: 0,
                progress: None,
                assignee_id: None,
                version: 1,
                created_at: "t",
                updated_at: "t",
            },
        )
        .unwrap();
        let prepared = Arc::new(Mutex::new(Vec::new()));
        let seen = prepared.clone();
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::CacheQuery { sql, .. } = event {
                seen.lock().unwrap().push(sql.to_string());
            }
        });
        for v in 2..6 {
            task.version = v;
            task.title = format!("a{v}");
            save_task(&mut conn, &task, v == 5).unwrap();
        }
        let prepared = prepared.lock().unwrap().clone();
        assert_eq!(prepared.len(), 2, "{prepared:?}");
        assert!(!prepared[0].contains("assignee_id"), "{prepared:?}");
        assert!(prepared[1].contains("assignee_id"), "{prepared:?}");
        let saved = find_task(&mut conn, task.id).unwrap().unwrap();
        assert_eq!((saved.title.as_str(), saved.version), ("a5", 5));
    }
}
