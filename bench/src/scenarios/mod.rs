//! One module per scenario; each `run` returns the JSON report and its table.

pub mod conns;
pub mod fanout;
pub mod filtered;
pub mod fsync;
pub mod history;
pub mod readflood;
pub mod resume;
pub mod tokenflood;
pub mod writes;
