//! The write-ahead log as the core sees it: records handed to the driver, how far the driver
//! says they are written and synced, and what waits for them (an acknowledgement goes out only
//! once the log holds everything issued before it, under the store's fsync policy).

use crate::config::Fsync;
use crate::core::StoreCore;
use crate::entry::{Entry, Version};
use crate::fault::Fault;
use crate::limits::{check_key, check_store_name};
use crate::msg::StoreMsg;
use crate::request::{OpId, Reply};
use crate::wal::Record;
use membership::NodeId;
use std::collections::VecDeque;
use std::time::Duration;

/// Something that may only happen once the log holds everything issued so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    /// Acknowledge a replica write to its coordinator.
    Ack { to: NodeId, op: OpId },
    /// Count this node's own copy in a write's store phase or a read's write-back.
    OwnCopy { op: OpId },
    /// Answer a local write.
    Reply { op: OpId, version: Version },
    /// End a catch-up: everything it brought is on disk.
    CaughtUp,
}

/// The write-ahead log as the core sees it: records handed out, and how far the driver says
/// they are written and synced.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    pub(crate) next_lsn: u64,
    pub(crate) out: VecDeque<Record>,
    pub(crate) written: u64,
    pub(crate) synced: u64,
    /// Waiting for the log: (lsn needed, whether it must be synced, what then).
    pub(crate) held: VecDeque<(u64, bool, Held)>,
    /// Why the log cannot be written, while it cannot.
    pub(crate) failed: Option<String>,
}

impl StoreCore {
    /// The next change to append to the write-ahead log (only with `durable`).
    pub fn poll_log(&mut self) -> Option<Record> {
        self.log.out.pop_front()
    }

    /// The driver wrote the log through `written` and synced it through `synced`:
    /// acknowledgements waiting on those records go out.
    pub fn persisted(&mut self, now: Duration, wall_ms: u64, written: u64, synced: u64) {
        self.advance(now, wall_ms);
        self.log.written = self.log.written.max(written);
        self.log.synced = self.log.synced.max(synced);
        let (w, s) = (self.log.written, self.log.synced);
        let mut ready = Vec::new();
        self.log.held.retain(|(lsn, sync, what)| {
            let done = if *sync { s >= *lsn } else { w >= *lsn };
            if done {
                ready.push(what.clone());
            }
            !done
        });
        for what in ready {
            self.release(what);
        }
    }

    /// The log cannot be written (`Some(why)`) or can again (`None`). While it cannot, writes
    /// coordinated here fail with a storage error and this replica acknowledges nothing.
    pub fn set_log_failure(&mut self, why: Option<String>) {
        self.log.failed = why;
    }

    /// Why the log cannot be written, if it cannot.
    pub fn log_failure(&self) -> Option<&str> {
        self.log.failed.as_deref()
    }

    /// Rebuilds the replica from records read back from the log at start.
    pub fn restore(&mut self, records: impl IntoIterator<Item = Record>) {
        for r in records {
            self.hlc.observe(r.entry.version.ts);
            self.log.next_lsn = self.log.next_lsn.max(r.lsn + 1);
            if check_store_name(&r.store).is_ok() && check_key(&r.key).is_ok() {
                self.replica.apply(&r.store, &r.key, r.entry);
            }
        }
        self.log.written = self.log.next_lsn - 1;
        self.log.synced = self.log.next_lsn - 1;
    }

    /// Everything the replica holds, as log records, and the sequence number they cover: every
    /// change handed to the log up to it is reflected here, so a snapshot plus the records after
    /// it rebuild the replica.
    pub fn snapshot(&self) -> (u64, Vec<Record>) {
        let through = self.log.next_lsn - 1;
        let mut out = Vec::new();
        let lossy = self.faults.contains(&Fault::SnapshotDropsKeys);
        for name in self.replica.store_names() {
            if let Some(m) = self.replica.store(name) {
                let kept = m.iter().enumerate().filter(|(i, _)| !lossy || i % 8 != 7);
                for (_, (k, e)) in kept {
                    out.push(Record {
                        lsn: through,
                        store: name.clone(),
                        key: k.to_string(),
                        entry: e.to_entry(),
                    });
                }
            }
        }
        (through, out)
    }

    /// Hands a record of another core to the log (the coordination core's acceptor state rides
    /// the store's log under a store name clients cannot use); returns its sequence number, or
    /// `None` without a log. Recovery skips such records ([`StoreCore::restore`] takes only valid
    /// store names); the node routes them.
    pub fn log_record(&mut self, store: &str, key: &str, entry: Entry) -> Option<u64> {
        if !self.cfg.durable {
            return None;
        }
        let lsn = self.log.next_lsn;
        self.log.next_lsn += 1;
        self.log.out.push_back(Record {
            lsn,
            store: store.to_string(),
            key: key.to_string(),
            entry,
        });
        Some(lsn)
    }

    /// The last sequence number known to be on stable storage.
    pub fn log_synced(&self) -> u64 {
        self.log.synced
    }

    /// Number of entries held over all stores (tombstones included).
    pub fn entries(&self) -> usize {
        self.replica
            .store_names()
            .filter_map(|n| self.replica.store(n))
            .map(|m| m.len())
            .sum()
    }

    /// Applies `entry` and, with a log, hands the change to it; true when the replica changed.
    pub(crate) fn apply_logged(&mut self, store: &str, key: &str, entry: Entry) -> bool {
        self.apply_logged_owned(store, key.to_string(), entry)
    }

    /// [`apply_logged`](Self::apply_logged) with the key handed over: the log record keeps it
    /// instead of a copy (one allocation less per entry a catching-up node applies).
    pub(crate) fn apply_logged_owned(&mut self, store: &str, key: String, entry: Entry) -> bool {
        if !self.replica.apply_ref(store, &key, &entry) {
            return false;
        }
        if self.cfg.durable {
            let lsn = self.log.next_lsn;
            self.log.next_lsn += 1;
            self.log.out.push_back(Record {
                lsn,
                store: store.to_string(),
                key,
                entry,
            });
        }
        true
    }

    /// Does `what` once everything the log was handed so far is durable under `store`'s fsync
    /// policy (at once without a log). An acknowledgement may be for an entry that was already
    /// held, so it waits for the last record issued, whatever it was.
    pub(crate) fn after_durable(&mut self, store: &str, what: Held) {
        let sync = self
            .cfg
            .stores
            .get(store)
            .is_none_or(|s| s.fsync == Fsync::Always);
        self.hold_until(sync, what);
    }

    /// Does `what` once everything issued to the log so far is written (and, with `sync`, synced).
    pub(crate) fn hold_until(&mut self, sync: bool, what: Held) {
        if !self.cfg.durable || self.faults.contains(&Fault::AckBeforeDurable) {
            self.release(what);
            return;
        }
        let lsn = self.log.next_lsn - 1;
        let done = if sync {
            self.log.synced >= lsn
        } else {
            self.log.written >= lsn
        };
        if done && self.log.failed.is_none() {
            self.release(what);
        } else {
            self.log.held.push_back((lsn, sync, what));
        }
    }

    pub(crate) fn release(&mut self, what: Held) {
        match what {
            Held::Ack { to, op } => self.outbox.push_back((to, StoreMsg::WriteAck { op })),
            Held::Reply { op, version } => {
                self.replies.push_back((op, Ok(Reply::Written { version })))
            }
            Held::OwnCopy { op } => self.count_copy(op, self.me),
            Held::CaughtUp => self.catch_up = None,
        }
    }
}
