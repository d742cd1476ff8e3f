//! Task rows as this writer last saved them by an update.
//!
//! The Db actor is the only writer of tasks in this process, so the next
//! update of the same task need not read its row back: that read was about a
//! fifth of the writer thread's instructions per update. A row is taken out
//! while a call works on it and put back only once saved. Rows a call put
//! back are dropped again if the call fails (its savepoint is rolled back);
//! all are dropped when a batch fails, and when another connection (the
//! `sqlite3` shell, another process) committed to the file since the last
//! batch.

use std::collections::HashMap;

use super::models::Task;

#[derive(Default)]
pub struct TaskRows {
    rows: HashMap<i64, Task>,
    /// About what the rows hold; past [`TaskRows::MAX_BYTES`] they are dropped
    /// (and read again).
    bytes: usize,
    /// The file's `data_version` the rows are from.
    data_version: Option<i64>,
    /// Rows put back by the call being run.
    touched: Vec<i64>,
}

impl TaskRows {
    const MAX_BYTES: usize = 16 << 20;

    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
        self.touched.clear();
    }

    /// Called at the start of each batch, inside its transaction: the rows
    /// are dropped if another connection wrote to the file since.
    pub fn follow(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.clear();
            self.data_version = Some(data_version);
        }
    }

    /// A call begins.
    pub fn begin_call(&mut self) {
        self.touched.clear();
    }

    /// The call failed and its writes were rolled back: the rows it saved are
    /// not what the file holds.
    pub fn roll_back_call(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            self.take(id);
        }
    }

    /// The rows held, to check them against the database.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.rows.values()
    }

    fn size(task: &Task) -> usize {
        std::mem::size_of::<Task>()
            + task.title.len()
            + task.description.len()
            + task.created_at.len()
            + task.updated_at.len()
    }

    pub fn take(&mut self, id: i64) -> Option<Task> {
        let task = self.rows.remove(&id)?;
        self.bytes -= Self::size(&task);
        Some(task)
    }

    pub fn put(&mut self, task: Task) {
        let size = Self::size(&task);
        if self.bytes + size > Self::MAX_BYTES {
            self.clear();
        }
        self.bytes += size;
        self.touched.push(task.id);
        if let Some(old) = self.rows.insert(task.id, task) {
            self.bytes -= Self::size(&old);
        }
    }
}
