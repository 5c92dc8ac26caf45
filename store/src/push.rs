//! Pushes of whole buckets, composed one batch per step.
//!
//! Answering a wiped node's digest pushes up to `sync_push_budget_bytes` (16 MiB) of entries.
//! Composed all at once, in one step of the core, the part took the pushing node's driver about
//! 110 ms at 1M keys while the node that asked sat idle, then the whole part travelled while the
//! pusher sat idle: the debug log of `cargo bench -p chorus-agent --bench store -- --converge-keys
//! 1000000` showed 112 ms of composing, 239 ms of sending and applying and 11 ms of barrier per
//! part, one after another. Composed a batch per step instead, the first batch leaves at once and
//! the next is composed while the earlier ones are sealed, sent and applied; and between two
//! batches the node handles everything else it was given (client writes are not held up behind a
//! 16 MiB push).
//!
//! The queue keeps the order a single composition had: a round's [`StoreMsg::SyncMark`] waits
//! behind that round's pushes, so it still follows every entry it counts, and it counts what the
//! pushes actually sent. The core reports the queue as a timer due now
//! ([`StoreCore::poll_timeout`]), and [`StoreCore::handle_timeout`] composes the next batch.

use crate::anti_entropy::Cover;
use crate::core::StoreCore;
use crate::entry::Entry;
use crate::msg::{PARTIAL, StoreMsg};
use membership::NodeId;
use std::collections::BTreeSet;
use std::ops::Bound;

/// Work a push still owes a peer.
#[derive(Debug)]
pub(crate) enum Pending {
    /// The entries of the buckets `cover` of `store`, with keys after `after`, as round `round`'s
    /// entries (`0`: a periodic push nobody counts).
    Push {
        to: NodeId,
        store: String,
        cover: Cover,
        after: Option<String>,
        round: u64,
        sent: u64,
    },
    /// The mark that ends catch-up round `round`'s answer: `versions` counts the versions listed
    /// and the entries pushed before it.
    Mark {
        to: NodeId,
        round: u64,
        partial: bool,
        versions: u64,
    },
}

impl StoreCore {
    /// Queues a push of every entry of `buckets` of `store` to `to`.
    pub(crate) fn queue_push(
        &mut self,
        to: NodeId,
        store: &str,
        buckets: &BTreeSet<usize>,
        round: u64,
    ) {
        self.pushing.push_back(Pending::Push {
            to,
            store: store.into(),
            cover: Cover::buckets(buckets.iter().copied()),
            after: None,
            round,
            sent: 0,
        });
    }

    /// Sends round `round`'s mark to `to` once every push queued before it has gone.
    pub(crate) fn queue_mark(&mut self, to: NodeId, round: u64, partial: bool, versions: u64) {
        self.pushing.push_back(Pending::Mark {
            to,
            round,
            partial,
            versions,
        });
        self.continue_pushes();
    }

    /// Whether a push has batches left to compose (then [`StoreCore::poll_timeout`] says now).
    pub fn pushing(&self) -> bool {
        !self.pushing.is_empty()
    }

    /// Drops what is queued for peers no longer in the view (a lost message, as if sent).
    pub(crate) fn forget_pushes(&mut self) {
        let peers = &self.peers;
        self.pushing.retain(|p| match p {
            Pending::Push { to, .. } | Pending::Mark { to, .. } => peers.contains_key(to),
        });
    }

    /// Composes the next batch of the first push (and sends every mark that is due).
    pub(crate) fn continue_pushes(&mut self) {
        let batch = self.cfg.sync_push_batch.max(1);
        while let Some(front) = self.pushing.front_mut() {
            match front {
                Pending::Mark { .. } => {
                    let Some(Pending::Mark {
                        to,
                        round,
                        partial,
                        versions,
                    }) = self.pushing.pop_front()
                    else {
                        unreachable!("the front is a mark");
                    };
                    let lost = self.catch_up.as_ref().is_some_and(|c| c.lost);
                    let mark = StoreMsg::SyncMark {
                        round: if partial { round | PARTIAL } else { round },
                        lost,
                        versions,
                    };
                    self.outbox.push_back((to, mark));
                }
                Pending::Push {
                    to,
                    store,
                    cover,
                    after,
                    round,
                    sent,
                } => {
                    let chunk: Vec<(String, Entry)> = self
                        .replica
                        .store(store)
                        .map(|s| {
                            s.placed(
                                (
                                    after.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                                    Bound::Unbounded,
                                ),
                                |p| cover.covers_place(p),
                            )
                            .take(batch)
                            .map(|(k, e)| (k.to_string(), e.to_entry()))
                            .collect()
                        })
                        .unwrap_or_default();
                    let (to, round) = (*to, *round);
                    if let Some((last, _)) = chunk.last() {
                        *after = Some(last.clone());
                        *sent += chunk.len() as u64;
                        let store = store.clone();
                        self.send_entries_for(to, &store, chunk, (round != 0).then_some(round));
                        return; // one batch per step
                    }
                    // Done: its count goes to the mark of its round.
                    let done = *sent;
                    self.pushing.pop_front();
                    if round != 0 {
                        let mark = self.pushing.iter_mut().find_map(|p| match p {
                            Pending::Mark {
                                to: t,
                                round: r,
                                versions,
                                ..
                            } if *t == to && *r == round => Some(versions),
                            _ => None,
                        });
                        if let Some(versions) = mark {
                            *versions += done;
                        }
                    }
                }
            }
        }
    }
}
