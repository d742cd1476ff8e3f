//! Which files the writer has open: the database and its WAL, by device and
//! inode. A file deleted or replaced under a running server (an operator's
//! mistake, a cleanup script) would take every write acknowledged into it
//! with it, so the writer checks, on a timer and before it acknowledges a
//! batch, that the files at the paths are still the ones it writes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Id {
    dev: u64,
    ino: u64,
}

fn id(path: &Path) -> std::io::Result<Id> {
    let m = std::fs::metadata(path)?;
    Ok(Id {
        dev: m.dev(),
        ino: m.ino(),
    })
}

pub struct Files {
    db: (PathBuf, Id),
    /// The WAL once it exists (SQLite creates it on the first write).
    wal: (PathBuf, Option<Id>),
}

impl Files {
    /// The files at `path` now; call it once the database is open in WAL mode.
    pub fn open(path: &str) -> std::io::Result<Files> {
        let db = PathBuf::from(path);
        let wal = PathBuf::from(format!("{path}-wal"));
        Ok(Files {
            db: (db.clone(), id(&db)?),
            wal: (wal.clone(), id(&wal).ok()),
        })
    }

    /// Says what is wrong if a file at its path is no longer the one open.
    pub fn check(&mut self) -> Result<(), String> {
        let (path, open) = &self.db;
        match id(path) {
            Ok(now) if now == *open => {}
            Ok(_) => return Err(format!("{} was replaced by another file", path.display())),
            Err(e) => return Err(format!("{} is gone ({e})", path.display())),
        }
        let (path, open) = &mut self.wal;
        match (id(path), open.as_ref()) {
            (Ok(now), Some(open)) if now == *open => Ok(()),
            (Ok(_), Some(_)) => Err(format!("{} was replaced by another file", path.display())),
            (Err(e), Some(_)) => Err(format!("{} is gone ({e})", path.display())),
            (Ok(now), None) => {
                *open = Some(now);
                Ok(())
            }
            (Err(_), None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        std::fs::write(&db, b"x").unwrap();
        let path = db.to_str().unwrap();
        let mut files = Files::open(path).unwrap();
        assert_eq!(files.check(), Ok(()));
        std::fs::write(format!("{path}-wal"), b"w").unwrap();
        assert_eq!(
            files.check(),
            Ok(()),
            "a WAL created after the open is taken as the one"
        );
        std::fs::remove_file(format!("{path}-wal")).unwrap();
        assert!(files.check().unwrap_err().contains("-wal is gone"));
        let mut files = Files::open(path).unwrap();
        // Held open, as SQLite holds it, so its inode is not reused.
        let _open = std::fs::File::open(&db).unwrap();
        std::fs::remove_file(&db).unwrap();
        std::fs::write(&db, b"y").unwrap();
        assert!(files.check().unwrap_err().contains("replaced"));
    }
}
