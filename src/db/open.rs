//! Opening the database: the file, its pragmas and migrations, its epoch and
//! the position of its last change.

use diesel::sqlite::SqliteConnection;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::queries as q;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the folder {path}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}")]
    Connect {
        path: String,
        #[source]
        source: diesel::ConnectionError,
    },
    #[error("cannot configure {path}")]
    Configure {
        path: String,
        #[source]
        source: diesel::result::Error,
    },
    #[error("cannot migrate {path}")]
    Migrate {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: diesel::result::Error,
    },
    /// The file holds someone else's tables, or is not a SQLite file at all
    /// (`tables` is then empty). Nothing in it was changed.
    #[error(
        "{path} is not a taskwire database ({}), so it was left unchanged; give a new path or a taskwire database",
        what_it_holds(tables)
    )]
    NotOurs { path: String, tables: Vec<String> },
}

/// A few of a foreign file's tables, for the refusal.
fn what_it_holds(tables: &[String]) -> String {
    const SHOWN: usize = 5;
    match tables.len() {
        0 => "it is not a SQLite database".to_string(),
        n if n <= SHOWN => format!("it has the tables {}", tables.join(", ")),
        n => format!(
            "it has the tables {} and {} more",
            tables[..SHOWN].join(", "),
            n - SHOWN
        ),
    }
}

/// What everyone may read without asking the Db actor: the epoch and the seq
/// of the last commit.
#[derive(Debug)]
pub struct Head {
    pub epoch: String,
    pub seq: AtomicI64,
}

impl Head {
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Acquire)
    }
}

/// An opened, migrated database with its epoch and position.
pub struct Opened {
    pub conn: SqliteConnection,
    pub position: Arc<Head>,
    /// Changes with seq above this are all in the log.
    pub floor: i64,
}

/// The meta key `taskwire backup` sets on a copy: the first open gives the
/// copy a new epoch. A restored copy rolls the history back, so positions a
/// client took from the live database after the backup must not resume on it.
pub const RESTORED_KEY: &str = "restored_from_backup";

/// A new random epoch.
pub fn new_epoch() -> String {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Opens the file and reads (or on a new file, fixes) its epoch.
pub fn open(path: &str) -> Result<Opened, OpenError> {
    let mut conn = q::open(path)?;
    let read = |source| OpenError::Read {
        path: path.to_string(),
        source,
    };
    // Fixed once, under the write lock, so two processes opening a new file
    // agree on it.
    let epoch = conn
        .immediate_transaction(|conn| {
            let restored = q::get_meta(conn, RESTORED_KEY)?.is_some();
            match q::get_meta(conn, "epoch")? {
                Some(e) if !restored => Ok(e),
                _ => {
                    let e = new_epoch();
                    q::set_meta(conn, "epoch", &e)?;
                    q::delete_meta(conn, RESTORED_KEY)?;
                    Ok::<_, diesel::result::Error>(e)
                }
            }
        })
        .map_err(read)?;
    let seq = q::max_seq(&mut conn).map_err(read)?.unwrap_or(0);
    let floor = q::get_meta(&mut conn, "pruned_through")
        .map_err(read)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Opened {
        conn,
        position: Arc::new(Head {
            epoch,
            seq: AtomicI64::new(seq),
        }),
        floor,
    })
}
