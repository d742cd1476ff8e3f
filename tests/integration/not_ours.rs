//! A file that is not a taskwire database, given as `--db`, is refused and left
//! byte for byte as it was: no tables, no token, not even WAL mode. Through the
//! library (`taskwire::db::open`) and through the real binary (`serve`, and the
//! commands on the file).

use crate::admin_cli::{refused, taskwire};
use crate::child::WAIT;
use diesel::connection::SimpleConnection;
use diesel::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use taskwire::db::OpenError;

/// Writes a SQLite file with `sql` through a connection of its own, closed
/// before the test goes on (closing a WAL file removes its `-wal`/`-shm`).
fn sqlite_file(path: &Path, sql: &str) {
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute(sql).unwrap();
}

const USERS: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
     INSERT INTO users (name) VALUES ('ada'), ('grace');
     CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id));
     CREATE INDEX orders_user ON orders(user_id);";

/// Everything a refusal must leave as it was: the bytes, the modification
/// time and what else is in the folder (no `-wal`, `-shm` or `-journal`).
#[derive(PartialEq)]
struct Seen {
    bytes: Vec<u8>,
    modified: SystemTime,
    folder: Vec<String>,
    wal: Option<Vec<u8>>,
}

/// Lengths and hashes rather than every byte.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = |b: &[u8]| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(b, &mut h);
            format!("{} bytes, hash {:016x}", b.len(), std::hash::Hasher::finish(&h))
        };
        f.debug_struct("Seen")
            .field("bytes", &digest(&self.bytes))
            .field("header[18..20]", &(self.bytes.get(18), self.bytes.get(19)))
            .field("modified", &self.modified)
            .field("folder", &self.folder)
            .field("wal", &self.wal.as_deref().map(digest))
            .finish()
    }
}

fn look(path: &Path) -> Seen {
    let mut folder: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folder.sort();
    Seen {
        bytes: std::fs::read(path).unwrap(),
        modified: std::fs::metadata(path).unwrap().modified().unwrap(),
        folder,
        wal: std::fs::read(with_suffix(path, "-wal")).ok(),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Sets the file's modification time far in the past, so that any write,
/// however soon, shows, and returns what it looks like.
fn look_after_aging(path: &Path) -> Seen {
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    look(path)
}

/// The header's write and read versions: 1 for rollback, 2 for WAL.
fn journal_bytes(seen: &Seen) -> [u8; 2] {
    [seen.bytes[18], seen.bytes[19]]
}

/// `taskwire::db::open`, which must refuse; the tables it names.
fn open_refused(path: &Path) -> (Vec<String>, String) {
    match taskwire::db::open(path.to_str().unwrap()) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(e @ OpenError::NotOurs { .. }) => {
            let message = e.to_string();
            let OpenError::NotOurs { path: named, tables } = e else {
                unreachable!()
            };
            assert_eq!(named, path.to_str().unwrap());
            (tables, message)
        }
        Err(e) => panic!("refused for another reason: {e:?}"),
    }
}

#[test]
fn a_file_with_other_tables_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql, header, expected) in [
        ("rollback.db", USERS.to_string(), [1, 1], vec!["users", "orders"]),
        (
            "wal.db",
            format!("PRAGMA journal_mode = WAL; {USERS}"),
            [2, 2],
            vec!["users", "orders"],
        ),
        // Another diesel application's file: the migrations table alone does
        // not make a file ours, taskwire's own migration in it does.
        (
            "other_diesel.db",
            "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
             INSERT INTO __diesel_schema_migrations (version) VALUES ('20200101000000');
             CREATE TABLE posts (id INTEGER PRIMARY KEY);"
                .to_string(),
            [1, 1],
            vec!["__diesel_schema_migrations", "posts"],
        ),
        // A `meta` table of someone else's.
        (
            "meta.db",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('epoch', 'x');".to_string(),
            [1, 1],
            vec!["meta"],
        ),
    ] {
        let path = dir.path().join(name);
        sqlite_file(&path, &sql);
        let before = look_after_aging(&path);
        assert_eq!(journal_bytes(&before), header, "{name}");

        let (tables, message) = open_refused(&path);
        assert_eq!(tables, expected, "{name}");
        assert!(message.contains("is not a taskwire database"), "{message}");
        assert!(message.contains(expected[0]), "{message}");

        let after = look(&path);
        assert_eq!(journal_bytes(&after), header, "{name}: the journal mode changed");
        assert!(before == after, "{name} changed: {before:?} -> {after:?}");
    }
}

/// A WAL file whose program was killed leaves its last commits in the `-wal`.
/// Closing the last read-write connection would checkpoint them into the file
/// and remove the `-wal`, so the check must not do that.
#[test]
fn a_file_with_the_wal_of_a_killed_program_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let mut conn = diesel::SqliteConnection::establish(live.to_str().unwrap()).unwrap();
    conn.batch_execute(&format!("PRAGMA journal_mode = WAL; {USERS}"))
        .unwrap();
    // A copy taken while the connection is open is the state a kill leaves:
    // the tables are in the WAL only. Copied, because a file still open in
    // this process would not be checkpointed when the check closes it.
    // A name with the characters a SQLite URI gives a meaning to.
    let killed = dir.path().join("killed? #1 at 100%.db");
    for suffix in ["", "-wal", "-shm"] {
        std::fs::copy(with_suffix(&live, suffix), with_suffix(&killed, suffix)).unwrap();
    }
    drop(conn);
    let before = look_after_aging(&killed);
    assert!(before.wal.as_ref().is_some_and(|w| !w.is_empty()));

    let (tables, _) = open_refused(&killed);
    assert_eq!(tables, ["users", "orders"]);
    let after = look(&killed);
    assert!(before == after, "the file or its WAL changed: {before:?} -> {after:?}");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("notes.txt", b"remember the milk\n".repeat(1000)),
        ("short.bin", vec![0u8, 1, 2, 3]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let before = look_after_aging(&path);
        let (tables, message) = open_refused(&path);
        assert!(tables.is_empty(), "{tables:?}");
        assert!(message.contains("not a SQLite database"), "{message}");
        assert!(before == look(&path), "{name} changed");
    }
}

#[test]
fn an_empty_file_or_a_sqlite_file_without_tables_becomes_a_taskwire_database() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    File::create(&empty).unwrap();
    let bare = dir.path().join("bare.db");
    sqlite_file(&bare, "PRAGMA user_version = 7;");
    for path in [empty, bare, dir.path().join("new.db")] {
        let epoch = taskwire::db::open(path.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .position
            .epoch
            .clone();
        // Now it is ours: it opens again, with the same epoch.
        let again = taskwire::db::open(path.to_str().unwrap()).unwrap();
        assert_eq!(again.position.epoch, epoch);
    }
}

/// A taskwire file with its WAL beside it (a server runs on it, or was
/// killed) is read through a read-only URI; the name must survive that.
#[test]
fn a_taskwire_file_with_its_wal_opens_again_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("what? #1 at 100%.db");
    let path = path.to_str().unwrap();
    let first = taskwire::db::open(path).unwrap();
    assert!(Path::new(&format!("{path}-wal")).exists());
    let again = taskwire::db::open(path).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(again.position.epoch, first.position.epoch);
}

/// `taskwire serve --db PATH`, which must exit with an error; its stderr.
fn serve_refused(db: &Path) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("TASKWIRE_ADMIN_TOKEN", "tw_not_ours_admin")
        .env_remove("DATABASE_URL")
        .env_remove("TASKWIRE_BIND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the taskwire binary");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(WAIT) else {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("the server kept running on a file that is not ours");
    };
    let out = out.expect("wait for the server");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the server exited 0: {stderr}");
    stderr
}

#[test]
fn the_server_and_the_file_commands_refuse_a_file_that_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite_file(&db, USERS);
    let before = look_after_aging(&db);

    let err = serve_refused(&db);
    assert!(
        err.contains("is not a taskwire database") && err.contains("users, orders"),
        "{err}"
    );
    assert!(!err.contains("admin token"), "{err}");
    let copy = dir.path().join("copy.db");
    for args in [
        &["token", "list"][..],
        &["token", "create", "--role", "member", "--name", "x"],
        &["token", "revoke", "1"],
        &["backup", copy.to_str().unwrap()],
    ] {
        let err = refused(&taskwire(&db, args));
        assert!(err.contains("is not a taskwire database"), "{args:?}: {err}");
    }
    assert!(!copy.exists(), "backup wrote a copy");
    let after = look(&db);
    assert_eq!(journal_bytes(&after), [1, 1], "the file was put in WAL mode");
    assert!(before == after, "the file changed: {before:?} -> {after:?}");
}
