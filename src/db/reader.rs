//! The readers: a few read-only connections on their own threads, so reads
//! (REST lists, change-log pages, snapshots, resume scans) never wait in the
//! writer's mailbox nor hold its thread. SQLite's WAL lets them read while
//! the writer commits; each read runs in one read transaction.

use actix::prelude::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};

use super::open::OpenError;
use super::reads::{self, Read, ReadAnswer, ReadChanges};
use super::resume::{self, Subscribe, Subscribed};
use super::shared::Shared;
use super::DbConfig;
use crate::error::ApiError;
use crate::limits::ReadBudget;

pub struct Reader {
    conn: SqliteConnection,
    shared: Arc<Shared>,
    config: DbConfig,
    budget: Arc<ReadBudget>,
}

impl Actor for Reader {
    type Context = SyncContext<Self>;
}

/// Opens a read-only connection on the file.
fn connect(path: &str) -> Result<SqliteConnection, OpenError> {
    let mut conn = SqliteConnection::establish(path).map_err(|source| OpenError::Connect {
        path: path.to_string(),
        source,
    })?;
    conn.batch_execute("PRAGMA busy_timeout = 2000; PRAGMA query_only = ON;")
        .map_err(|source| OpenError::Configure {
            path: path.to_string(),
            source,
        })?;
    Ok(conn)
}

/// Starts `n` readers on the (already opened and migrated) file.
pub fn start(
    path: &str,
    n: usize,
    shared: Arc<Shared>,
    config: DbConfig,
    budget: Arc<ReadBudget>,
) -> Result<Addr<Reader>, OpenError> {
    // Opened here, so a bad file is an error at start; a reader restarted
    // after a panic opens its own.
    let conns = Mutex::new((0..n).map(|_| connect(path)).collect::<Result<Vec<_>, _>>()?);
    let path = path.to_string();
    Ok(SyncArbiter::start(n, move || Reader {
        conn: conns
            .lock()
            .expect("reader connections poisoned")
            .pop()
            .unwrap_or_else(|| connect(&path).expect("reopening a reader's connection")),
        shared: shared.clone(),
        config: config.clone(),
        budget: budget.clone(),
    }))
}

impl Handler<Read> for Reader {
    type Result = Result<ReadAnswer, ApiError>;
    fn handle(&mut self, msg: Read, _: &mut SyncContext<Self>) -> Self::Result {
        self.budget.check(&msg.by)?;
        let answer = reads::read(&mut self.conn, &self.shared, msg.query)?;
        self.budget.charge(&msg.by, answer.rows());
        Ok(answer)
    }
}

impl Handler<ReadChanges> for Reader {
    type Result = Result<Box<RawValue>, ApiError>;
    fn handle(&mut self, msg: ReadChanges, _: &mut SyncContext<Self>) -> Self::Result {
        self.budget.check(&msg.by)?;
        let (page, scanned) = reads::changes(&mut self.conn, &self.shared, &self.config, &msg)?;
        self.budget.charge(&msg.by, scanned);
        Ok(page)
    }
}

impl Handler<Subscribe> for Reader {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut SyncContext<Self>) {
        let result = self.budget.check(&msg.principal).and_then(|()| {
            let (data, seq, rows) = resume::reply(
                &mut self.conn,
                &self.shared,
                &self.config,
                &msg.topic,
                msg.resume.as_ref(),
                msg.history,
            )?;
            self.budget.charge(&msg.principal, rows);
            Ok((data, seq))
        });
        msg.reply_to.do_send(Subscribed {
            reference: msg.reference,
            topic: msg.topic,
            generation: msg.generation,
            result,
            presence: msg.presence,
            window: None,
        });
    }
}
