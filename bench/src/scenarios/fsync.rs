//! `fsync`: only the disk's durable-write ceiling, no server needed.

use crate::cli::Common;
use crate::fsync::{fsync_ceiling, fsync_rows};
use crate::report::Rows;
use crate::Res;
use serde_json::{json, Value};
use std::time::Duration;

pub fn run(c: &Common, dur: Duration) -> Res<(Value, Rows)> {
    let f = fsync_ceiling(c, dur)?;
    let mut table = vec![];
    fsync_rows(&f, &mut table);
    Ok((json!({"scenario": "fsync", "ok": true, "fsync": f.json()}), table))
}
