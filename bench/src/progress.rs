//! The progress bar on stderr, hidden with `--quiet`.

use crate::cli::Common;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn progress(c: &Common, len: u64, msg: &'static str) -> ProgressBar {
    if c.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(5));
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .expect("progress template"),
    );
    pb.set_message(msg);
    pb
}
