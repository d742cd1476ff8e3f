//! The disk's durable-write ceiling, and its floor at a run's pace.

use crate::cli::Common;
use crate::report::Rows;
use crate::stats::{hist, micros, round3};
use crate::Res;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fsync ceiling: time a 4 KiB overwrite plus `fdatasync` of a file beside
/// the database, as a commit in WAL mode with `synchronous=FULL` does.
pub struct Fsync {
    dir: PathBuf,
    pub hist: Histogram<u64>,
    /// The idle time before each sync, when paced like a run's writes.
    gap: Option<Duration>,
}

impl Fsync {
    pub fn p50_us(&self) -> f64 {
        self.hist.value_at_quantile(0.5).max(1) as f64
    }
    /// Durable writes per second with one fdatasync each.
    pub fn ceiling(&self) -> f64 {
        1e6 / self.p50_us()
    }
    pub fn json(&self) -> Value {
        let mut v = json!({
            "dir": self.dir.display().to_string(),
            "samples": self.hist.len(),
            "p50_us": self.hist.value_at_quantile(0.5),
            "p99_us": self.hist.value_at_quantile(0.99),
            "max_us": self.hist.max(),
        });
        match self.gap {
            Some(gap) => v["gap_ms"] = json!(round3(gap.as_secs_f64() * 1e3)),
            None => v["ceiling_writes_per_s"] = json!(self.ceiling().round()),
        }
        v
    }
}

/// The fsync figures, or why there are none.
pub fn fsync_json(f: &Res<Fsync>) -> Value {
    match f {
        Ok(f) => f.json(),
        Err(e) => json!({ "error": e }),
    }
}

pub fn fsync_ceiling(c: &Common, dur: Duration) -> Res<Fsync> {
    let dir = c
        .db_dir
        .clone()
        .ok_or("give --db-dir (the database's folder) to measure the fsync ceiling")?;
    measure_fsync(&dir, dur, 50, None).map_err(|e| format!("fsync in {}: {e}", dir.display()))
}

/// The fsync floor under a paced run: the same sync, each after `gap` of idle
/// time, as the writes of a `fanout` run come. On a virtual disk a sync after
/// an idle gap can take twice as long as back to back, and every event of
/// such a run waits for one. As many syncs as fit in 2 s, at most 200; a pace
/// slower than 5 in 2 s is not measured.
pub fn fsync_paced(c: &Common, gap: Duration) -> Res<Fsync> {
    const BUDGET: Duration = Duration::from_secs(2);
    let samples = (BUDGET.as_secs_f64() / gap.as_secs_f64()).min(200.0) as u64;
    if samples < 5 {
        return Err(format!(
            "a pace of one write per {gap:?} is too slow to time in {BUDGET:?}"
        ));
    }
    let dir = c
        .db_dir
        .clone()
        .ok_or("give --db-dir (the database's folder) to measure the fsync floor")?;
    measure_fsync(&dir, Duration::ZERO, samples, Some(gap)).map_err(|e| format!("fsync in {}: {e}", dir.display()))
}

/// Times a 4 KiB overwrite plus `fdatasync`, for at least `dur` and `samples`
/// syncs after 5 unrecorded ones, back to back or with `gap` of sleep before
/// each recorded one (the pace being what is measured).
fn measure_fsync(dir: &Path, dur: Duration, samples: u64, gap: Option<Duration>) -> std::io::Result<Fsync> {
    let path = dir.join(format!(".taskwire-bench-fsync-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let mut page = vec![0x5au8; 4096];
    f.write_all_at(&page, 0)?;
    f.sync_all()?;
    let mut h = hist();
    let start = Instant::now();
    let mut i = 0u64;
    let result = loop {
        // The first 5 syncs are not recorded.
        if (start.elapsed() >= dur && i >= samples + 5) || i >= 100_000 {
            break Ok(());
        }
        page[0] = i as u8;
        if let Some(gap) = gap.filter(|_| i >= 5) {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        if let Err(e) = f.write_all_at(&page, 0).and_then(|_| f.sync_data()) {
            break Err(e);
        }
        if i >= 5 {
            h.saturating_record(micros(t.elapsed()));
        }
        i += 1;
    };
    drop(f);
    let _ = std::fs::remove_file(&path);
    result.map(|_| Fsync {
        dir: dir.to_path_buf(),
        hist: h,
        gap,
    })
}

pub fn fsync_rows(f: &Fsync, t: &mut Rows) {
    t.push((
        "fsync (4 KiB overwrite + fdatasync)".into(),
        format!(
            "p50 {} µs / p99 {} µs / max {} µs ({} samples)",
            f.hist.value_at_quantile(0.5),
            f.hist.value_at_quantile(0.99),
            f.hist.max(),
            f.hist.len()
        ),
    ));
    t.push((
        "fsync ceiling (1 / p50)".into(),
        format!("{:.0} durable writes/s", f.ceiling()),
    ));
}
