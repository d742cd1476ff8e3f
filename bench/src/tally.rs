//! The correctness check: each subscriber's events against the acked seqs.

use std::collections::HashSet;

/// Checks one subscriber's events against the acked seqs: how many expected
/// ones arrived, and how many were lost, twice, out of order or unexpected.
#[derive(Default)]
pub struct Tally {
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
}

impl Tally {
    pub fn check(&mut self, seqs: impl IntoIterator<Item = i64>, expected: &HashSet<i64>) {
        let mut seen = HashSet::with_capacity(expected.len());
        let mut last = i64::MIN;
        for seq in seqs {
            if !seen.insert(seq) {
                self.duplicated += 1;
                continue;
            }
            if seq < last {
                self.out_of_order += 1;
            }
            last = last.max(seq);
            if expected.contains(&seq) {
                self.delivered += 1;
            } else {
                self.unexpected += 1;
            }
        }
        let got = seen.iter().filter(|s| expected.contains(s)).count();
        self.lost += (expected.len() - got) as u64;
    }

    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}
