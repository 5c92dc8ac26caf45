//! The coordination core's acceptor state rides the store's write-ahead log: each state is a
//! record under a store name clients cannot use, so it shares the log's group commit, snapshots
//! and recovery, and the drivers need nothing of their own for it. An acceptor answers only once
//! the record of its state is synced.

use coord::{AcceptorState, CoordCore};
use std::collections::VecDeque;
use store::wal::Record;
use store::{Entry, StoreCore, Version};
use tracing::warn;

/// The store name of acceptor-state records (`#` is not allowed in a client's store name).
pub const LOG_NAME: &str = "#strong";

/// An acceptor state as a log entry.
fn encode(state: &AcceptorState) -> Entry {
    Entry {
        version: Version::ZERO,
        value: Some(postcard::to_stdvec(state).expect("encoding a state cannot fail")),
        expires_at: None,
    }
}

/// Feeds the acceptor-state records among `records` to `coord`; false when one did not decode
/// (its checksum held, so the format is at fault: the acceptor then rebuilds from its peers).
pub(crate) fn restore(coord: &mut CoordCore, records: &[Record]) -> bool {
    let mut whole = true;
    for r in records.iter().filter(|r| r.store == LOG_NAME) {
        match r
            .entry
            .value
            .as_deref()
            .map(postcard::from_bytes::<AcceptorState>)
        {
            Some(Ok(state)) => coord.restore(r.key.clone(), state),
            _ => {
                warn!(key = %r.key, lsn = r.lsn, "an acceptor-state record does not decode; rebuilding from peers");
                whole = false;
            }
        }
    }
    whole
}

/// Every acceptor state as snapshot records covering `through`.
pub(crate) fn snapshot(coord: &CoordCore, through: u64) -> impl Iterator<Item = Record> + '_ {
    coord.states().map(move |(k, s)| Record {
        lsn: through,
        store: LOG_NAME.to_string(),
        key: k.clone(),
        entry: encode(s),
    })
}

/// Which coordination sequence number each log record carries, until the log has synced it.
#[derive(Debug, Default)]
pub(crate) struct StrongLog {
    pending: VecDeque<(u64, u64)>,
}

impl StrongLog {
    /// Moves the states the coordination core wants durable into the store's log (or, without
    /// a log, tells it at once).
    pub(crate) fn issue(&mut self, store: &mut StoreCore, coord: &mut CoordCore) {
        while let Some((seq, key, state)) = coord.poll_persist() {
            match store.log_record(LOG_NAME, &key, encode(&state)) {
                Some(lsn) => self.pending.push_back((lsn, seq)),
                None => coord.persisted(seq),
            }
        }
    }

    /// Tells the coordination core which of its states the log has synced.
    pub(crate) fn release(&mut self, store: &StoreCore, coord: &mut CoordCore) {
        let synced = store.log_synced();
        let mut last = None;
        while let Some((lsn, seq)) = self.pending.front().copied() {
            if lsn > synced {
                break;
            }
            self.pending.pop_front();
            last = Some(seq);
        }
        if let Some(seq) = last {
            coord.persisted(seq);
        }
    }
}
