//! SQLite's error log, installed once per process: every error SQLite logs
//! goes to `log`, and failed syncs are counted. SQLite answers every I/O
//! error of a commit with the same message ("disk I/O error"), and diesel
//! shows only the message; the log carries the extended code, which tells a
//! failed write (the commit did not happen) from a failed sync (nobody knows
//! whether it did).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static SYNC_FAILURES: AtomicU64 = AtomicU64::new(0);
static LOGGED: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

extern "C" fn on_log(_: *mut c_void, code: c_int, message: *const c_char) {
    LOGGED.fetch_add(1, Ordering::Relaxed);
    if code == libsqlite3_sys::SQLITE_IOERR_FSYNC || code == libsqlite3_sys::SQLITE_IOERR_DIR_FSYNC {
        SYNC_FAILURES.fetch_add(1, Ordering::SeqCst);
    }
    let text = if message.is_null() {
        std::borrow::Cow::Borrowed("")
    } else {
        // SAFETY: SQLite passes a NUL-terminated string valid for the call.
        unsafe { CStr::from_ptr(message) }.to_string_lossy()
    };
    // Notices (schema changes, recovered WAL frames) are not errors.
    match code & 0xff {
        libsqlite3_sys::SQLITE_NOTICE | libsqlite3_sys::SQLITE_WARNING => log::debug!("sqlite ({code}): {text}"),
        _ => log::warn!("sqlite ({code}): {text}"),
    }
}

/// Installs the log before SQLite's first use in this process; later calls
/// do nothing. Opening the database does it; a process that opens a
/// connection some other way first (a test harness) gets no log, and no
/// failed sync is noticed then.
pub fn install() {
    INSTALL.call_once(|| {
        type Callback = extern "C" fn(*mut c_void, c_int, *const c_char);
        // SAFETY: SQLITE_CONFIG_LOG takes a callback and its argument; it is
        // called before any connection is opened (else SQLite refuses it
        // with SQLITE_MISUSE and changes nothing).
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_LOG,
                on_log as Callback,
                std::ptr::null_mut::<c_void>(),
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            log::warn!(
                "SQLite's error log could not be installed ({rc}); a failed sync is then taken for any I/O error"
            );
        }
    });
}

/// How many syncs failed in this process so far.
pub fn sync_failures() -> u64 {
    SYNC_FAILURES.load(Ordering::SeqCst)
}

/// How many errors SQLite logged in this process so far.
pub fn logged() -> u64 {
    LOGGED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::Connection;

    #[test]
    fn sqlite_errors_reach_the_log() {
        install();
        let before = logged();
        let failed = diesel::SqliteConnection::establish("/nonexistent-folder/for/sure.db");
        assert!(failed.is_err());
        assert!(logged() > before, "SQLite logged nothing for a file it cannot open");
    }
}
