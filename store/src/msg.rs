//! Messages between store replicas.

use crate::entry::{Entry, Version};
use crate::request::OpId;
use serde::{Deserialize, Serialize};

/// Messages between store replicas.
/// Set in a catch-up round's id by builds that count [`StoreMsg::RoundEntries`] in the round: the
/// answering peer may then push the entries of buckets the digest shows empty instead of listing
/// their versions. Older builds echo the id without looking inside, and never set it.
pub const PUSH_EMPTY: u64 = 1 << 63;

/// Set in a catch-up round's id by builds that take a push in parts: the answering peer may push
/// the buckets the digest shows empty only up to
/// [`sync_push_budget_bytes`](crate::StoreConfig::sync_push_budget_bytes), and then sets
/// [`PARTIAL`] in its [`StoreMsg::SyncMark`]'s round; the node does not count that peer synced
/// but begins another round with it, whose digest shows the buckets it now holds. Why: a peer's
/// transport queues at most 32 MiB for a node, and a wiped node's 300,000 keys pushed at once
/// overflowed it; the dropped part cost a whole second round listing every key (docs/benchmarks.md).
pub const PUSH_PARTS: u64 = 1 << 62;

/// Set in the round of a [`StoreMsg::SyncMark`] that answers a digest with only part of the
/// empty buckets pushed (see [`PUSH_PARTS`]).
pub const PARTIAL: u64 = 1 << 61;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMsg {
    /// Phase one of a write, or a quorum read: "what do you hold for this key?"
    ReadReq {
        /// Coordinator's operation.
        op: OpId,
        /// Store.
        store: String,
        /// Key.
        key: String,
    },
    /// The answer to [`StoreMsg::ReadReq`].
    ReadResp {
        /// Coordinator's operation.
        op: OpId,
        /// The entry held, if any.
        entry: Option<Entry>,
    },
    /// Store this entry (phase two of a write, a write-back, or a background push).
    WriteReq {
        /// Coordinator's operation (0 for a push nobody waits on).
        op: OpId,
        /// Store.
        store: String,
        /// Key.
        key: String,
        /// The entry.
        entry: Entry,
    },
    /// The entry is stored (durably, once the store has a log).
    WriteAck {
        /// Coordinator's operation.
        op: OpId,
    },
    /// Anti-entropy: the sender's bucket digests of every store.
    Digest {
        /// `(store, digest per bucket)`.
        stores: Vec<(String, Vec<u64>)>,
        /// A catch-up round the sender tracks (0: a periodic round nobody tracks); the receiver
        /// ends its answer with [`StoreMsg::SyncMark`] for it.
        round: u64,
    },
    /// Catch-up: everything owed for `round` has been sent, either the versions answering a
    /// digest or the entries answering the fetches before a [`StoreMsg::SyncBarrier`]. Streams
    /// are ordered, so whatever the mark follows has arrived when it does.
    SyncMark {
        /// The round of the receiver's digest or barrier.
        round: u64,
        /// The sender may itself have lost acknowledged writes (see
        /// [`StoreCore::begin_catch_up`]), so syncing with it proves nothing.
        lost: bool,
        /// After a digest: how many `(key, version)` pairs the versions carried, so the receiver
        /// can tell whether a message was lost on the way (0 after a barrier).
        versions: u64,
    },
    /// Catch-up: "answer with a [`StoreMsg::SyncMark`] once everything before this is answered".
    SyncBarrier {
        /// The round.
        round: u64,
    },
    /// Anti-entropy: the sender's `(key, version)` for every key of the buckets that differ.
    /// The receiver pushes the entries the sender lacks and fetches the ones it lacks itself, so
    /// one exchange repairs both sides and only differing entries travel.
    Versions {
        /// Store.
        store: String,
        /// The buckets these versions cover (keys of other buckets are not compared).
        buckets: Vec<u16>,
        /// Every key of those buckets with its version, in key order, for keys in
        /// `[from, until)` (`None`: unbounded); a long list is split into consecutive ranges.
        versions: Vec<(String, Version)>,
        /// First key this message speaks for (inclusive).
        from: Option<String>,
        /// Key this message's range ends before (exclusive).
        until: Option<String>,
        /// The catch-up round of the digest this answers (0: a periodic one).
        round: u64,
    },
    /// Anti-entropy, periodic rounds: the sender's leaf digests of the buckets that differ from
    /// the digest it answers and hold more than a few of its keys. The receiver lists its keys
    /// of the leaves that differ in [`StoreMsg::LeafVersions`], so a bucket that one write
    /// changed no longer costs every key of the bucket. Not understood by builds before it.
    Leaves {
        /// Store.
        store: String,
        /// `(bucket, its leaf digests)`; a list of any other length than
        /// [`LEAVES`](crate::replica::LEAVES) is ignored.
        leaves: Vec<(u16, Vec<u64>)>,
    },
    /// Anti-entropy, periodic rounds: like [`StoreMsg::Versions`], for the keys of the leaves
    /// listed (`bucket * LEAVES + leaf`) rather than whole buckets.
    LeafVersions {
        /// Store.
        store: String,
        /// The leaves these versions cover.
        leaves: Vec<u16>,
        /// Every key of those leaves with its version, in key order, for keys in `[from, until)`.
        versions: Vec<(String, Version)>,
        /// First key this message speaks for (inclusive).
        from: Option<String>,
        /// Key this message's range ends before (exclusive).
        until: Option<String>,
    },
    /// Catch-up: the entries of every bucket that the round's digest showed empty, pushed at
    /// once instead of listed for the receiver to fetch, and counted in the round's
    /// [`StoreMsg::SyncMark`] like versions, so a lost one fails the round. Sent only in answer
    /// to a digest whose round carries [`PUSH_EMPTY`] (builds that count them).
    RoundEntries {
        /// Store.
        store: String,
        /// The catch-up round of the digest this answers.
        round: u64,
        /// Entries.
        entries: Vec<(String, Entry)>,
    },
    /// Anti-entropy: "send me these entries".
    Fetch {
        /// Store.
        store: String,
        /// Keys wanted.
        keys: Vec<String>,
    },
    /// Anti-entropy: entries the receiver lacks or holds older.
    Entries {
        /// Store.
        store: String,
        /// Entries.
        entries: Vec<(String, Entry)>,
    },
    /// Anti-entropy: "your digest equals mine", the answer to a periodic digest that found
    /// nothing to exchange. The sender of the digest then counts the receiver as in sync until
    /// its own replica changes (see [`StoreCore::fingerprint`](crate::StoreCore)).
    InSync {
        /// The fingerprint of the digest that was compared.
        fingerprint: u64,
    },
}
