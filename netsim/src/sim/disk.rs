//! A node's simulated disk.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use store::wal::Record;

/// A node's simulated disk: the newest snapshot, one log segment after it that survives
/// crashes up to what was synced (plus, after a crash, a random part of what was not, as a real
/// disk may keep), and the catch-up marker.
///
/// A snapshot is written whole and durable at once, as the agent's temp file, fsync and rename
/// make it; the log it covers goes with it.
#[derive(Debug, Clone)]
pub(super) struct Disk {
    /// The store directory exists (a node's first start creates it; a wipe removes it).
    pub(super) exists: bool,
    snapshot: Vec<Record>,
    bytes: Vec<u8>,
    synced_len: usize,
    pub(super) written_lsn: u64,
    pub(super) synced_lsn: u64,
    sync_pending: bool,
    /// Bumped by every snapshot: an fsync begun before it speaks for a log that is gone.
    epoch: u32,
    /// The catch-up marker file.
    pub(super) marker: bool,
    /// Snapshots written so far.
    pub(super) snapshots: u64,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            exists: false,
            snapshot: Vec::new(),
            bytes: store::wal::file_header().to_vec(),
            synced_len: store::wal::FILE_HEADER_LEN,
            written_lsn: 0,
            synced_lsn: 0,
            sync_pending: false,
            epoch: 0,
            marker: false,
            snapshots: 0,
        }
    }
}

/// What a start read back from a disk.
pub(super) struct ReadBack {
    /// The snapshot's records, then the good log records after it.
    pub(super) records: Vec<Record>,
    /// A torn tail was cut off the log.
    pub(super) torn: bool,
}

impl Disk {
    /// Reads the disk back as the agent does at start: the snapshot, then the log after it, a
    /// torn tail truncated. Any other damage is a bug of the simulator or the log format.
    pub(super) fn read_back(&mut self, node: usize) -> ReadBack {
        let d = store::wal::decode_file(&self.bytes).expect("the sim writes headers");
        let mut torn = false;
        if let Some(damage) = &d.damage {
            assert!(
                matches!(damage, store::wal::Damage::Torn { .. }),
                "node {node}: the simulated log is corrupt: {damage:?}"
            );
            self.bytes.truncate(d.good_len);
            torn = true;
        }
        let mut records = self.snapshot.clone();
        records.extend(d.records);
        let last = records.iter().map(|r| r.lsn).max().unwrap_or(0);
        self.exists = true;
        self.synced_len = self.bytes.len();
        self.sync_pending = false;
        self.written_lsn = last;
        self.synced_lsn = last;
        ReadBack { records, torn }
    }

    /// Appends records to the log (written, not yet synced).
    pub(super) fn append(&mut self, records: &[Record]) {
        for rec in records {
            self.written_lsn = rec.lsn;
            store::wal::encode(rec, &mut self.bytes);
        }
    }

    /// Writes a snapshot covering every record through `through`; the log it covers goes.
    pub(super) fn write_snapshot(&mut self, through: u64, records: Vec<Record>) {
        self.snapshot = records;
        self.bytes = store::wal::file_header().to_vec();
        self.synced_len = self.bytes.len();
        self.written_lsn = self.written_lsn.max(through);
        self.synced_lsn = self.synced_lsn.max(through);
        self.epoch += 1;
        self.snapshots += 1;
    }

    /// Starts an fsync of what is written and unsynced, unless one is running (group commit:
    /// one fsync covers everything written before it starts); returns what it will cover.
    pub(super) fn start_sync(&mut self) -> Option<Sync> {
        if self.written_lsn <= self.synced_lsn || self.sync_pending {
            return None;
        }
        self.sync_pending = true;
        Some(Sync {
            epoch: self.epoch,
            len: self.bytes.len(),
            lsn: self.written_lsn,
        })
    }

    /// An fsync returned.
    pub(super) fn synced(&mut self, sync: Sync) {
        if self.epoch == sync.epoch {
            self.synced_len = self.synced_len.max(sync.len);
        }
        self.synced_lsn = self.synced_lsn.max(sync.lsn);
        self.sync_pending = false;
    }

    /// The machine crashed: what was written but not synced may be on the disk, in part, or not
    /// at all.
    pub(super) fn crash(&mut self, rng: &mut Xoshiro256PlusPlus) {
        let unsynced = self.bytes.len() - self.synced_len;
        if unsynced > 0 {
            let keep = if rng.random_range(0..2) == 0 {
                0
            } else {
                rng.random_range(0..=unsynced)
            };
            self.bytes.truncate(self.synced_len + keep);
        }
    }
}

/// An fsync in progress: it covers the log up to `len` bytes and record `lsn`, in disk epoch
/// `epoch` (see [`Disk::epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sync {
    pub(super) epoch: u32,
    pub(super) len: usize,
    pub(super) lsn: u64,
}
