//! When to write a snapshot of the replica and drop the log it covers.

/// Bounds the disk: once the log since the last snapshot holds twice the live entries, and at
/// least `min_records`, the replica is written as a snapshot and the segments go.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    min_records: usize,
    since: usize,
}

impl SnapshotPolicy {
    /// A policy that never snapshots below `min_records` records.
    pub fn new(min_records: usize) -> Self {
        SnapshotPolicy {
            min_records,
            since: 0,
        }
    }

    /// `appended` records went to the log; the replica holds `live` entries. True when a snapshot
    /// is due now (the count starts again).
    pub fn appended(&mut self, appended: usize, live: usize) -> bool {
        self.since += appended;
        if self.since >= self.min_records.max(2 * live) {
            self.since = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_when_the_log_doubles_the_live_entries_and_not_before_the_minimum() {
        let mut p = SnapshotPolicy::new(10);
        assert!(!p.appended(9, 1), "below the minimum");
        assert!(p.appended(1, 1));
        assert!(!p.appended(39, 20), "39 < 2 x 20");
        assert!(p.appended(1, 20));
    }
}
