//! The store state machine: one node's replica plus the quorum protocol it coordinates.
//!
//! Writes at `quorum` follow the ABD register protocol over the entry join. The coordinator first
//! asks every reachable replica for the key's version and waits for a quorum of votes to answer;
//! only then does it pick a version above all of them and send the entry to every reachable
//! replica, acknowledging the client once a quorum of votes has stored it. A coordinator that cannot
//! reach a quorum never gets past the first phase, so its write reaches no replica, even while the
//! membership view still believes the partition is not there. Quorum reads gather a quorum, return
//! the highest version and write it back to the replicas that answered with less, before replying.
//!
//! Like the membership core it is sans-IO: the driver passes time, peers and messages, and
//! drains [`StoreCore::poll_send`] and [`StoreCore::poll_reply`].

use crate::entry::{Entry, Version};
use crate::hlc::Hlc;
use crate::limits::{StoreError, check_key, check_store_name, check_value};
use crate::replica::{BUCKETS, Replica, bucket_of};
use crate::wal::Record;
use membership::NodeId;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How a request trades safety for latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Quorum rounds: linearizable per key inside the majority.
    Quorum,
    /// Local read or write, replicated in the background; writes still need the quorum view.
    Local,
}

/// What a minority node does with reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinorityReads {
    /// Refuse with `no_quorum`.
    Refuse,
    /// Serve the local replica, marked stale.
    Stale,
}

/// When a store's writes are on disk, relative to their acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Acknowledged after an fsync (group commit: concurrent writes share one).
    #[default]
    Always,
    /// Acknowledged once written to the file; the file is fsynced every this often.
    Interval(Duration),
    /// Acknowledged once written to the file; fsync is left to the kernel.
    Never,
}

/// Per-store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Consistency when a request does not say.
    pub default_consistency: Consistency,
    /// When its writes count as durable.
    pub fsync: Fsync,
}

/// Settings of the store core.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Votes a quorum needs (the membership rule).
    pub required_votes: u32,
    /// This node's votes.
    pub my_votes: u32,
    /// How long a quorum round may take before it answers `indeterminate`.
    pub round_timeout: Duration,
    /// Largest value.
    pub max_value_bytes: usize,
    /// How long tombstones and expired entries are kept before they are collected.
    pub gc_grace: Duration,
    /// Anti-entropy period.
    pub anti_entropy_every: Duration,
    /// Largest sum of value bytes in one anti-entropy message.
    pub sync_chunk_bytes: usize,
    /// Most `(key, version)` pairs in one anti-entropy message.
    pub sync_versions_per_message: usize,
    /// Reads on a node without quorum.
    pub minority_reads: MinorityReads,
    /// The stores that exist, by name.
    pub stores: BTreeMap<String, StoreSettings>,
    /// Whether changes go to a write-ahead log ([`StoreCore::poll_log`]) and acknowledgements
    /// wait for it ([`StoreCore::persisted`]); off, replicas live in memory only.
    pub durable: bool,
}

impl StoreConfig {
    /// A configuration with one store, `default`, at quorum consistency.
    pub fn new(required_votes: u32) -> Self {
        let mut stores = BTreeMap::new();
        stores.insert(
            "default".to_string(),
            StoreSettings {
                default_consistency: Consistency::Quorum,
                fsync: Fsync::Always,
            },
        );
        StoreConfig {
            required_votes,
            my_votes: 1,
            round_timeout: Duration::from_secs(2),
            max_value_bytes: crate::limits::DEFAULT_MAX_VALUE_BYTES,
            gc_grace: Duration::from_secs(24 * 3600),
            anti_entropy_every: Duration::from_secs(5),
            sync_chunk_bytes: 256 * 1024,
            sync_versions_per_message: 8192,
            minority_reads: MinorityReads::Refuse,
            stores,
            durable: false,
        }
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Write a value.
    Put {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Time to live.
        ttl: Option<Duration>,
        /// Consistency; the store's default when `None`.
        consistency: Option<Consistency>,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Consistency; the store's default when `None`.
        consistency: Option<Consistency>,
    },
    /// Read a key.
    Get {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Consistency; the store's default when `None`.
        consistency: Option<Consistency>,
    },
    /// List keys by prefix (served from the local replica).
    List {
        /// Store name.
        store: String,
        /// Key prefix.
        prefix: String,
        /// Most keys to return.
        limit: usize,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The write (or delete) took effect with this version.
    Written {
        /// Version of the write.
        version: Version,
    },
    /// The value read and its version.
    Value {
        /// Value bytes.
        value: Vec<u8>,
        /// Its version.
        version: Version,
        /// True when served by a node without quorum (`minority_reads = stale`).
        stale: bool,
    },
    /// Keys, in order.
    Keys {
        /// The keys.
        keys: Vec<String>,
        /// True when served by a node without quorum.
        stale: bool,
    },
}

/// Identifies a request until its reply.
pub type OpId = u64;

/// Messages between store replicas.
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
}

#[derive(Debug)]
enum Phase {
    /// Write, phase one: versions gathered so far.
    Learn { answers: BTreeMap<NodeId, Version> },
    /// Write, phase two: who stored it.
    Store {
        entry: Entry,
        acks: BTreeSet<NodeId>,
    },
    /// Quorum read: entries gathered so far.
    Gather {
        answers: BTreeMap<NodeId, Option<Entry>>,
    },
    /// Quorum read, write-back: who holds the winner.
    WriteBack {
        entry: Entry,
        holders: BTreeSet<NodeId>,
    },
}

#[derive(Debug)]
enum Intent {
    Write {
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    },
    Read,
}

#[derive(Debug)]
struct Op {
    store: String,
    key: String,
    intent: Intent,
    phase: Phase,
    deadline: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Timeout(OpId),
    AntiEntropy,
    Collect,
}

/// The store core of one node.
#[derive(Debug)]
pub struct StoreCore {
    me: NodeId,
    cfg: StoreConfig,
    hlc: Hlc,
    replica: Replica,
    rng: Xoshiro256PlusPlus,
    now: Duration,
    wall_ms: u64,
    peers: BTreeMap<NodeId, u32>,
    view_quorum: bool,
    view_reachable: u32,
    ops: BTreeMap<OpId, Op>,
    next_op: OpId,
    timers: BTreeMap<(Duration, u64), Due>,
    seq: u64,
    outbox: VecDeque<(NodeId, StoreMsg)>,
    replies: VecDeque<(OpId, Result<Reply, StoreError>)>,
    /// Test-only fault switch: coordinate writes without the first (learn) phase. Exists so that
    /// tests can show the minority checker catches a broken protocol; never set in the agent.
    pub fault_skip_learn_phase: bool,
    faults: BTreeSet<Fault>,
    log: LogState,
    catch_up: Option<CatchUp>,
}

/// Something that may only happen once the log holds everything issued so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    /// Acknowledge a replica write to its coordinator.
    Ack { to: NodeId, op: OpId },
    /// Count this node's own copy in a write's store phase or a read's write-back.
    OwnCopy { op: OpId },
    /// Answer a local write.
    Reply { op: OpId, version: Version },
    /// End a catch-up: everything it brought is on disk.
    CaughtUp,
}

/// A node catching up after a start: whom it has fully synced with so far.
#[derive(Debug, Default)]
struct CatchUp {
    /// The node may have lost writes it acknowledged (a wiped or repaired log): it does not vote
    /// in quorum rounds until it has caught up and the log holds what catching up brought.
    lost: bool,
    /// Peers whose whole replica (as of the round) this node now holds.
    synced: BTreeSet<NodeId>,
    /// The round in progress. One at a time: the first round brings nearly everything, and the
    /// next peer's then differs in little, where rounds in parallel would fetch it all twice.
    round: Option<SyncRound>,
    /// When a round with each peer last began (the least recently tried peer goes next).
    tried: BTreeMap<NodeId, Duration>,
    next_round: u64,
    /// Rounds begun so far.
    rounds_started: u64,
    /// Synced with enough peers; waiting for the log (only when `lost`).
    draining: bool,
}

/// One catch-up round with one peer: digest, versions and fetches, then a barrier.
#[derive(Debug)]
struct SyncRound {
    peer: NodeId,
    id: u64,
    /// The peer has answered the digest; the barrier behind our fetches is out.
    fetching: bool,
    /// `(key, version)` pairs received in this round's versions.
    versions_seen: u64,
    /// Entries fetched and not yet held at the version the peer listed, by a hash of store and
    /// key. A lost message leaves some here (or the count above short): the round is then not
    /// trusted and starts again, whatever the transport did.
    pending: BTreeMap<u64, Version>,
    /// When the peer last sent anything for it (a round that goes quiet is started again).
    heard: Duration,
}

/// Where a catch-up stands (see [`StoreCore::catching_up`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatchUpStatus {
    /// The node may have lost acknowledged writes and does not vote until caught up.
    pub lost: bool,
    /// Peers fully synced with so far.
    pub synced_peers: usize,
    /// Their votes, plus this node's own unless `lost`.
    pub votes: u32,
    /// Votes needed: a quorum, so that every acknowledged write is among them.
    pub needed_votes: u32,
    /// Sync rounds begun so far (more than the peers needed means rounds were cut short).
    pub rounds: u64,
}

/// The write-ahead log as the core sees it: records handed out, and how far the driver says
/// they are written and synced.
#[derive(Debug, Default)]
struct LogState {
    next_lsn: u64,
    out: VecDeque<Record>,
    written: u64,
    synced: u64,
    /// Waiting for the log: (lsn needed, whether it must be synced, what then).
    held: VecDeque<(u64, bool, Held)>,
    /// Why the log cannot be written, while it cannot.
    failed: Option<String>,
}

/// A deliberate defect, injected by simulation tests to show that a checker catches the broken
/// guarantee (a checker that never fails proves nothing). Never used by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Replicas acknowledge a write without storing it: only the coordinator holds it.
    AckWithoutStoring,
    /// A coordinator ignores the quorum view and counts itself as a quorum for writes.
    QuorumOfOne,
    /// Quorum reads are answered from the local replica alone.
    ReadLocalOnly,
    /// Acknowledge writes before the log has them on disk.
    AckBeforeDurable,
    /// Anti-entropy never runs (neither periodically nor when a peer appears): replicas that
    /// missed writes stay behind.
    NoAntiEntropy,
    /// A catch-up ends as soon as it begins: a restarted node calls itself current at once.
    SkipCatchUp,
    /// A node that lost acknowledged writes votes in quorum rounds while it catches up.
    VoteWhileCatchingUp,
}

impl StoreCore {
    /// A store core for node `me`; random choices derive from `seed`; `now` is core time and
    /// `wall_ms` the wall clock in Unix milliseconds (used for versions and TTLs).
    pub fn new(me: NodeId, cfg: StoreConfig, seed: u64, now: Duration, wall_ms: u64) -> Self {
        let mut core = StoreCore {
            me,
            hlc: Hlc::default(),
            replica: Replica::default(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5707_e000_0000_0001),
            now,
            wall_ms,
            peers: BTreeMap::new(),
            view_quorum: cfg.my_votes >= cfg.required_votes,
            view_reachable: cfg.my_votes,
            ops: BTreeMap::new(),
            next_op: 1,
            timers: BTreeMap::new(),
            seq: 0,
            outbox: VecDeque::new(),
            replies: VecDeque::new(),
            fault_skip_learn_phase: false,
            faults: BTreeSet::new(),
            log: LogState {
                next_lsn: 1,
                ..LogState::default()
            },
            catch_up: None,
            cfg,
        };
        let every = core.cfg.anti_entropy_every;
        core.schedule(every, Due::AntiEntropy);
        core.schedule(Duration::from_secs(60), Due::Collect);
        core
    }

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
        for name in self.replica.store_names() {
            if let Some(m) = self.replica.store(name) {
                for (k, e) in m.iter() {
                    out.push(Record {
                        lsn: through,
                        store: name.clone(),
                        key: k.clone(),
                        entry: e.clone(),
                    });
                }
            }
        }
        (through, out)
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
    fn apply_logged(&mut self, store: &str, key: &str, entry: Entry) -> bool {
        if !self.replica.apply(store, key, entry.clone()) {
            return false;
        }
        if self.cfg.durable {
            let lsn = self.log.next_lsn;
            self.log.next_lsn += 1;
            self.log.out.push_back(Record {
                lsn,
                store: store.to_string(),
                key: key.to_string(),
                entry,
            });
        }
        true
    }

    /// Does `what` once everything the log was handed so far is durable under `store`'s fsync
    /// policy (at once without a log). An acknowledgement may be for an entry that was already
    /// held, so it waits for the last record issued, whatever it was.
    fn after_durable(&mut self, store: &str, what: Held) {
        let sync = self
            .cfg
            .stores
            .get(store)
            .is_none_or(|s| s.fsync == Fsync::Always);
        self.hold_until(sync, what);
    }

    /// Does `what` once everything issued to the log so far is written (and, with `sync`, synced).
    fn hold_until(&mut self, sync: bool, what: Held) {
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

    fn release(&mut self, what: Held) {
        match what {
            Held::Ack { to, op } => self.outbox.push_back((to, StoreMsg::WriteAck { op })),
            Held::Reply { op, version } => {
                self.replies.push_back((op, Ok(Reply::Written { version })))
            }
            Held::OwnCopy { op } => self.count_copy(op, self.me),
            Held::CaughtUp => self.catch_up = None,
        }
    }

    /// `node` holds the entry of operation `op` (a write's store phase or a read's write-back).
    fn count_copy(&mut self, op: OpId, node: NodeId) {
        if let Some(o) = self.ops.get_mut(&op) {
            match &mut o.phase {
                Phase::Store { acks, .. } => {
                    acks.insert(node);
                }
                Phase::WriteBack { holders, .. } => {
                    holders.insert(node);
                }
                _ => {}
            }
            self.progress(op);
        }
    }

    /// Starts catching up, as a node does whenever it starts: until it has synced with peers that,
    /// with itself, hold a quorum of votes, its local reads are answered as stale. Any write
    /// acknowledged before the start is on a quorum, which meets that set, so once it clears the
    /// replica holds every such write. `lost` says the node may have lost writes it acknowledged
    /// (its log was wiped or repaired): then its own copy does not count, it does not vote in
    /// quorum rounds meanwhile, and it clears only once the log holds what catching up brought.
    pub fn begin_catch_up(&mut self, lost: bool) {
        self.catch_up = Some(CatchUp {
            lost,
            next_round: 1,
            ..CatchUp::default()
        });
        if self.faults.contains(&Fault::SkipCatchUp) {
            self.catch_up = None;
            return;
        }
        self.advance_catch_up();
    }

    /// Where the catch-up stands; `None` once the node is current.
    pub fn catching_up(&self) -> Option<CatchUpStatus> {
        let c = self.catch_up.as_ref()?;
        Some(CatchUpStatus {
            lost: c.lost,
            synced_peers: c.synced.len(),
            votes: self.catch_up_votes(c),
            needed_votes: self.cfg.required_votes,
            rounds: c.rounds_started,
        })
    }

    fn catch_up_votes(&self, c: &CatchUp) -> u32 {
        let own = if c.lost { 0 } else { self.cfg.my_votes };
        own + self.votes(c.synced.iter())
    }

    /// Whether this node's replica may be missing writes it acknowledged, so it must not vote.
    fn abstains(&self) -> bool {
        self.catch_up.as_ref().is_some_and(|c| c.lost)
            && !self.faults.contains(&Fault::VoteWhileCatchingUp)
    }

    /// Ends the catch-up once enough peers are synced; otherwise begins a round with the least
    /// recently tried peer not yet synced, unless a live round is under way.
    fn advance_catch_up(&mut self) {
        let Some(c) = self.catch_up.as_ref() else {
            return;
        };
        if c.draining {
            return;
        }
        // Enough synced, or nobody could ever help (a one-node cluster): done.
        let enough = self.catch_up_votes(c) >= self.cfg.required_votes;
        let alone = c.lost && self.cfg.my_votes >= self.cfg.required_votes;
        if enough || alone {
            let lost = c.lost;
            if let Some(c) = self.catch_up.as_mut() {
                c.draining = true;
                c.round = None;
            }
            if lost {
                self.hold_until(true, Held::CaughtUp);
            } else {
                self.catch_up = None;
            }
            return;
        }
        // A round stalls only when a message was lost with a broken connection: the peer keeps
        // sending while a round is live (versions, then entries), so silence this long ends it.
        let quiet = 3 * self.cfg.anti_entropy_every.max(self.cfg.round_timeout);
        let now = self.now;
        if let Some(r) = &c.round
            && self.peers.contains_key(&r.peer)
            && now < r.heard + quiet
        {
            return;
        }
        let next = self
            .peers
            .keys()
            .filter(|p| !c.synced.contains(p))
            .min_by_key(|p| (c.tried.get(p).copied(), **p))
            .copied();
        let Some(c) = self.catch_up.as_mut() else {
            return;
        };
        c.round = None;
        let Some(peer) = next else { return };
        let id = c.next_round;
        c.next_round += 1;
        c.rounds_started += 1;
        c.tried.insert(peer, now);
        c.round = Some(SyncRound {
            peer,
            id,
            fetching: false,
            versions_seen: 0,
            pending: BTreeMap::new(),
            heard: now,
        });
        self.send_digest(peer, id);
    }

    /// A [`StoreMsg::SyncMark`] from `from` for our round `round`.
    fn on_sync_mark(&mut self, from: NodeId, round: u64, lost: bool, versions: u64) {
        let now = self.now;
        let Some(c) = self.catch_up.as_mut() else {
            return;
        };
        let Some(r) = c.round.as_mut().filter(|r| r.peer == from && r.id == round) else {
            return; // an old round's mark
        };
        r.heard = now;
        if !r.fetching {
            if r.versions_seen != versions {
                // Some versions were lost: start again (with the least recently tried peer).
                c.round = None;
                self.advance_catch_up();
                return;
            }
            // The versions are in and our fetches are out; a barrier follows them.
            r.fetching = true;
            self.outbox
                .push_back((from, StoreMsg::SyncBarrier { round }));
            return;
        }
        let complete = r.pending.is_empty();
        c.round = None;
        if !complete {
            self.advance_catch_up(); // fetched entries were lost
            return;
        }
        if lost {
            // Its replica may lack what it acknowledged; another peer (or it, later) next tick.
            return;
        }
        c.synced.insert(from);
        self.advance_catch_up();
    }

    /// Notes that `from` sent something, so a round with it is alive.
    fn heard_from(&mut self, from: NodeId) {
        let now = self.now;
        if let Some(r) = self
            .catch_up
            .as_mut()
            .and_then(|c| c.round.as_mut())
            .filter(|r| r.peer == from)
        {
            r.heard = now;
        }
    }

    /// Breaks this core on purpose (simulation tests only; see [`Fault`]).
    pub fn inject_fault(&mut self, fault: Fault) {
        self.faults.insert(fault);
    }

    /// The local replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Mutable access to the local replica (recovery from disk; tests).
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// The earliest time [`StoreCore::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// The next message to send.
    pub fn poll_send(&mut self) -> Option<(NodeId, StoreMsg)> {
        self.outbox.pop_front()
    }

    /// The next client reply.
    pub fn poll_reply(&mut self) -> Option<(OpId, Result<Reply, StoreError>)> {
        self.replies.pop_front()
    }

    /// Updates what membership says: reachable peers with their votes, and the quorum view.
    /// New peers get an anti-entropy round at once (a join, a restart or a heal).
    pub fn set_view(
        &mut self,
        peers: BTreeMap<NodeId, u32>,
        has_quorum: bool,
        reachable_votes: u32,
    ) {
        let new: Vec<NodeId> = peers
            .keys()
            .filter(|p| !self.peers.contains_key(p))
            .copied()
            .collect();
        self.peers = peers;
        self.peers.remove(&self.me);
        self.view_quorum = has_quorum;
        self.view_reachable = reachable_votes;
        if self.faults.contains(&Fault::NoAntiEntropy) {
            return;
        }
        if self.catch_up.is_some() {
            self.advance_catch_up(); // a catch-up round is also an anti-entropy round
            return;
        }
        for p in new {
            self.send_digest(p, 0);
        }
    }

    fn advance(&mut self, now: Duration, wall_ms: u64) {
        self.now = self.now.max(now);
        self.wall_ms = self.wall_ms.max(wall_ms);
    }

    fn schedule(&mut self, after: Duration, due: Due) {
        self.seq += 1;
        self.timers.insert((self.now + after, self.seq), due);
    }

    fn votes_of(&self, n: NodeId) -> u32 {
        if n == self.me {
            self.cfg.my_votes
        } else {
            self.peers.get(&n).copied().unwrap_or(1)
        }
    }

    fn votes<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> u32 {
        nodes.map(|n| self.votes_of(*n)).sum()
    }

    fn no_quorum(&self) -> StoreError {
        StoreError::NoQuorum {
            reachable_votes: self.view_reachable,
            required_votes: self.cfg.required_votes,
        }
    }

    fn check_store(&self, store: &str) -> Result<&StoreSettings, StoreError> {
        check_store_name(store)?;
        self.cfg
            .stores
            .get(store)
            .ok_or_else(|| StoreError::NotFound {
                message: format!("no store named {store:?} is configured"),
            })
    }

    /// Checks the store and key of a request and picks its consistency (the store's default
    /// unless the request names one).
    fn resolve(
        &self,
        store: &str,
        key: &str,
        c: Option<Consistency>,
    ) -> Result<Consistency, StoreError> {
        let default = self.check_store(store)?.default_consistency;
        check_key(key)?;
        Ok(c.unwrap_or(default))
    }

    /// Starts a client request; its answer comes out of [`StoreCore::poll_reply`] with the
    /// returned id (at once for local operations and errors).
    pub fn request(&mut self, now: Duration, wall_ms: u64, req: Request) -> OpId {
        self.advance(now, wall_ms);
        let op = self.next_op;
        self.next_op += 1;
        if let Err(e) = self.start(op, req) {
            self.replies.push_back((op, Err(e)));
        }
        op
    }

    fn start(&mut self, op: OpId, req: Request) -> Result<(), StoreError> {
        match req {
            Request::Put {
                store,
                key,
                value,
                ttl,
                consistency,
            } => {
                let c = self.resolve(&store, &key, consistency)?;
                check_value(value.len(), self.cfg.max_value_bytes)?;
                if ttl.is_some_and(|t| t.is_zero()) {
                    return Err(StoreError::BadRequest {
                        message: "ttl must be positive".into(),
                    });
                }
                self.write(op, store, key, Some(value), ttl, c)
            }
            Request::Delete {
                store,
                key,
                consistency,
            } => {
                let c = self.resolve(&store, &key, consistency)?;
                self.write(op, store, key, None, None, c)
            }
            Request::Get {
                store,
                key,
                consistency,
            } => {
                let c = self.resolve(&store, &key, consistency)?;
                self.read(op, store, key, c)
            }
            Request::List {
                store,
                prefix,
                limit,
            } => {
                self.check_store(&store)?;
                let minority = !self.view_quorum;
                if minority && self.cfg.minority_reads == MinorityReads::Refuse {
                    return Err(self.no_quorum());
                }
                let stale = minority || self.catch_up.is_some();
                let keys = self
                    .replica
                    .store(&store)
                    .map(|s| s.list(&prefix, limit, self.wall_ms))
                    .unwrap_or_default();
                self.replies
                    .push_back((op, Ok(Reply::Keys { keys, stale })));
                Ok(())
            }
        }
    }

    fn write(
        &mut self,
        op: OpId,
        store: String,
        key: String,
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
        c: Consistency,
    ) -> Result<(), StoreError> {
        if !self.view_quorum && !self.faults.contains(&Fault::QuorumOfOne) {
            return Err(self.no_quorum());
        }
        if let Some(why) = &self.log.failed {
            return Err(StoreError::Storage {
                message: format!("this node cannot write its log: {why}"),
            });
        }
        match c {
            Consistency::Local => {
                let held = self.replica.store_mut(&store).version(&key);
                self.hlc.observe(held.ts);
                let entry = self.new_entry(value, ttl);
                let version = entry.version;
                self.apply_logged(&store, &key, entry.clone());
                self.push_to_peers(0, &store, &key, &entry);
                self.after_durable(&store, Held::Reply { op, version });
            }
            Consistency::Quorum => {
                let deadline = self.now + self.cfg.round_timeout;
                let intent = Intent::Write { value, ttl };
                let mut answers = BTreeMap::new();
                if !self.abstains() {
                    answers.insert(self.me, self.replica.store_mut(&store).version(&key));
                }
                self.ops.insert(
                    op,
                    Op {
                        store: store.clone(),
                        key: key.clone(),
                        intent,
                        phase: Phase::Learn { answers },
                        deadline,
                    },
                );
                self.schedule(self.cfg.round_timeout, Due::Timeout(op));
                if self.fault_skip_learn_phase {
                    self.enter_store_phase(op);
                } else {
                    self.ask_peers(op, &store, &key);
                    self.progress(op);
                }
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        op: OpId,
        store: String,
        key: String,
        c: Consistency,
    ) -> Result<(), StoreError> {
        let minority = !self.view_quorum;
        let local = c == Consistency::Local || self.faults.contains(&Fault::ReadLocalOnly);
        if local || minority {
            if minority && self.cfg.minority_reads == MinorityReads::Refuse {
                return Err(self.no_quorum());
            }
            // A node catching up may not yet hold what its peers do.
            let stale = minority || self.catch_up.is_some();
            let absent = || {
                let mut e = not_found(&store, &key);
                if let (true, StoreError::NotFound { message }) = (stale, &mut e) {
                    message.push_str(" here (this node's copy is stale: it is ");
                    message.push_str(if minority {
                        "without quorum)"
                    } else {
                        "catching up after a start)"
                    });
                }
                e
            };
            let reply = match self.replica.store(&store).and_then(|s| s.get(&key)) {
                Some(e) => match e.visible(self.wall_ms) {
                    Some(v) => Ok(Reply::Value {
                        value: v.to_vec(),
                        version: e.version,
                        stale,
                    }),
                    None => Err(absent()),
                },
                None => Err(absent()),
            };
            self.replies.push_back((op, reply));
            return Ok(());
        }
        let deadline = self.now + self.cfg.round_timeout;
        let mut answers = BTreeMap::new();
        if !self.abstains() {
            answers.insert(
                self.me,
                self.replica
                    .store(&store)
                    .and_then(|s| s.get(&key))
                    .cloned(),
            );
        }
        self.ops.insert(
            op,
            Op {
                store: store.clone(),
                key: key.clone(),
                intent: Intent::Read,
                phase: Phase::Gather { answers },
                deadline,
            },
        );
        self.schedule(self.cfg.round_timeout, Due::Timeout(op));
        self.ask_peers(op, &store, &key);
        self.progress(op);
        Ok(())
    }

    fn new_entry(&mut self, value: Option<Vec<u8>>, ttl: Option<Duration>) -> Entry {
        let ts = self.hlc.tick(self.wall_ms);
        let expires_at = ttl.map(|t| self.wall_ms.saturating_add(t.as_millis() as u64));
        Entry {
            version: Version { ts, node: self.me },
            value,
            expires_at,
        }
    }

    fn ask_peers(&mut self, op: OpId, store: &str, key: &str) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.outbox.push_back((
                p,
                StoreMsg::ReadReq {
                    op,
                    store: store.into(),
                    key: key.into(),
                },
            ));
        }
    }

    fn push_to_peers(&mut self, op: OpId, store: &str, key: &str, entry: &Entry) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.send_write(p, op, store, key, entry);
        }
    }

    fn send_write(&mut self, to: NodeId, op: OpId, store: &str, key: &str, entry: &Entry) {
        let msg = StoreMsg::WriteReq {
            op,
            store: store.into(),
            key: key.into(),
            entry: entry.clone(),
        };
        self.outbox.push_back((to, msg));
    }

    /// Moves an operation forward after it learned something.
    fn progress(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let required = self.cfg.required_votes;
        let write_quorum = if self.faults.contains(&Fault::QuorumOfOne) {
            self.cfg.my_votes
        } else {
            required
        };
        match &o.phase {
            Phase::Learn { answers } => {
                if self.votes(answers.keys()) >= write_quorum {
                    self.enter_store_phase(op);
                }
            }
            Phase::Store { entry, acks } => {
                if self.votes(acks.iter()) >= write_quorum {
                    let version = entry.version;
                    self.finish(op, Ok(Reply::Written { version }));
                }
            }
            Phase::Gather { answers } => {
                if self.votes(answers.keys()) < required {
                    return;
                }
                let best = answers
                    .values()
                    .flatten()
                    .max_by_key(|e| e.version)
                    .cloned();
                let Some(best) = best else {
                    let err = not_found(&o.store, &o.key);
                    self.finish(op, Err(err));
                    return;
                };
                let holders: BTreeSet<NodeId> = answers
                    .iter()
                    .filter(|(_, e)| e.as_ref().is_some_and(|e| e.version == best.version))
                    .map(|(n, _)| *n)
                    .collect();
                let behind: Vec<NodeId> = answers
                    .keys()
                    .filter(|n| !holders.contains(n))
                    .copied()
                    .collect();
                let (store, key) = (o.store.clone(), o.key.clone());
                if self.votes(holders.iter()) >= required {
                    self.answer_read(op, &best);
                    return;
                }
                // Not yet held by a quorum: write it back to those that answered with less.
                let mut own = false;
                for n in behind {
                    if n == self.me {
                        self.hlc.observe(best.version.ts);
                        self.apply_logged(&store, &key, best.clone());
                        own = true;
                    } else {
                        self.send_write(n, op, &store, &key, &best);
                    }
                }
                if let Some(o) = self.ops.get_mut(&op) {
                    o.phase = Phase::WriteBack {
                        entry: best,
                        holders,
                    };
                }
                if own {
                    self.after_durable(&store, Held::OwnCopy { op });
                } else {
                    self.progress(op);
                }
            }
            Phase::WriteBack { entry, holders } => {
                if self.votes(holders.iter()) >= required {
                    let entry = entry.clone();
                    self.answer_read(op, &entry);
                }
            }
        }
    }

    fn answer_read(&mut self, op: OpId, e: &Entry) {
        let Some(o) = self.ops.get(&op) else { return };
        let reply = match e.visible(self.wall_ms) {
            Some(v) => Ok(Reply::Value {
                value: v.to_vec(),
                version: e.version,
                stale: false,
            }),
            None => Err(not_found(&o.store, &o.key)),
        };
        self.finish(op, reply);
    }

    fn enter_store_phase(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let highest = match &o.phase {
            Phase::Learn { answers } => answers.values().max().copied().unwrap_or(Version::ZERO),
            _ => return,
        };
        let (store, key) = (o.store.clone(), o.key.clone());
        let (value, ttl) = match &o.intent {
            Intent::Write { value, ttl } => (value.clone(), *ttl),
            Intent::Read => return,
        };
        self.hlc.observe(highest.ts);
        let entry = self.new_entry(value, ttl);
        self.apply_logged(&store, &key, entry.clone());
        self.push_to_peers(op, &store, &key, &entry);
        if let Some(o) = self.ops.get_mut(&op) {
            o.phase = Phase::Store {
                entry,
                acks: BTreeSet::new(),
            };
        }
        self.after_durable(&store, Held::OwnCopy { op });
    }

    fn finish(&mut self, op: OpId, reply: Result<Reply, StoreError>) {
        if self.ops.remove(&op).is_some() {
            self.timers.retain(|_, d| *d != Due::Timeout(op));
            self.replies.push_back((op, reply));
        }
    }

    /// Feeds a message from peer `from`.
    pub fn handle_message(&mut self, now: Duration, wall_ms: u64, from: NodeId, msg: StoreMsg) {
        self.advance(now, wall_ms);
        self.heard_from(from);
        match msg {
            StoreMsg::ReadReq { op, store, key } => {
                if self.abstains() {
                    return; // the coordinator counts on other replicas
                }
                let entry = self
                    .replica
                    .store(&store)
                    .and_then(|s| s.get(&key))
                    .cloned();
                self.outbox
                    .push_back((from, StoreMsg::ReadResp { op, entry }));
            }
            StoreMsg::WriteReq {
                op,
                store,
                key,
                entry,
            } => {
                if check_store_name(&store).is_err() || check_key(&key).is_err() {
                    return;
                }
                self.hlc.observe(entry.version.ts);
                if !self.faults.contains(&Fault::AckWithoutStoring) {
                    self.apply_logged(&store, &key, entry);
                }
                if op != 0 {
                    self.after_durable(&store, Held::Ack { to: from, op });
                }
            }
            StoreMsg::ReadResp { op, entry } => {
                if let Some(o) = self.ops.get_mut(&op) {
                    match &mut o.phase {
                        Phase::Learn { answers } => {
                            answers.insert(from, entry.map_or(Version::ZERO, |e| e.version));
                        }
                        Phase::Gather { answers } => {
                            answers.insert(from, entry);
                        }
                        _ => {}
                    }
                    self.progress(op);
                }
            }
            StoreMsg::WriteAck { op } => self.count_copy(op, from),
            StoreMsg::Digest { stores, round } => {
                // While catching up, this node's own rounds do the work; answering every periodic
                // digest too would have peers push it the same entries over and over.
                if round == 0 && self.catch_up.is_some() {
                    return;
                }
                let versions = self.on_digest(from, stores, round);
                if round != 0 {
                    let lost = self.catch_up.as_ref().is_some_and(|c| c.lost);
                    let mark = StoreMsg::SyncMark {
                        round,
                        lost,
                        versions,
                    };
                    self.outbox.push_back((from, mark));
                }
            }
            StoreMsg::SyncMark {
                round,
                lost,
                versions,
            } => self.on_sync_mark(from, round, lost, versions),
            StoreMsg::SyncBarrier { round } => {
                let lost = self.catch_up.as_ref().is_some_and(|c| c.lost);
                let mark = StoreMsg::SyncMark {
                    round,
                    lost,
                    versions: 0,
                };
                self.outbox.push_back((from, mark));
            }
            StoreMsg::Entries { store, entries } => {
                if check_store_name(&store).is_err() {
                    return;
                }
                for (k, e) in entries {
                    if check_key(&k).is_ok() {
                        self.hlc.observe(e.version.ts);
                        self.apply_logged(&store, &k, e);
                        self.fetched(&store, &k);
                    }
                }
            }
            StoreMsg::Versions {
                store,
                buckets,
                versions,
                from: lo,
                until: hi,
                round,
            } => self.on_versions(from, store, buckets, versions, (lo, hi), round),
            StoreMsg::Fetch { store, keys } => {
                if let Some(s) = self.replica.store(&store) {
                    let found: Vec<(String, Entry)> = keys
                        .into_iter()
                        .filter_map(|k| s.get(&k).cloned().map(|e| (k, e)))
                        .collect();
                    self.send_entries(from, &store, found);
                }
            }
        }
    }

    /// Fires due timers: round timeouts, anti-entropy, garbage collection.
    pub fn handle_timeout(&mut self, now: Duration, wall_ms: u64) {
        self.advance(now, wall_ms);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            match entry.remove() {
                Due::Timeout(op) => {
                    if self.ops.get(&op).is_some_and(|o| o.deadline <= self.now) {
                        self.finish(op, Err(StoreError::Indeterminate));
                    }
                }
                Due::AntiEntropy => {
                    let periodic = self.catch_up.is_none();
                    if periodic
                        && !self.peers.is_empty()
                        && !self.faults.contains(&Fault::NoAntiEntropy)
                    {
                        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
                        let p = peers[self.rng.random_range(0..peers.len())];
                        self.send_digest(p, 0);
                    }
                    if !self.faults.contains(&Fault::NoAntiEntropy) {
                        self.advance_catch_up();
                    }
                    let every = self.cfg.anti_entropy_every;
                    self.schedule(every, Due::AntiEntropy);
                }
                Due::Collect => {
                    let grace = self.cfg.gc_grace.as_millis() as u64;
                    let names: Vec<String> = self.replica.store_names().cloned().collect();
                    for n in names {
                        self.replica.store_mut(&n).collect(self.wall_ms, grace);
                    }
                    self.schedule(Duration::from_secs(60), Due::Collect);
                }
            }
        }
    }

    fn send_digest(&mut self, to: NodeId, round: u64) {
        let stores = self
            .replica
            .store_names()
            .map(|n| {
                (
                    n.clone(),
                    self.replica
                        .store(n)
                        .map(|s| s.digest().to_vec())
                        .unwrap_or_default(),
                )
            })
            .collect();
        self.outbox
            .push_back((to, StoreMsg::Digest { stores, round }));
    }

    /// Answers a digest with our versions of the buckets that differ; returns how many
    /// `(key, version)` pairs went out.
    fn on_digest(&mut self, from: NodeId, theirs: Vec<(String, Vec<u64>)>, round: u64) -> u64 {
        let mut sent = 0;
        let theirs: BTreeMap<String, Vec<u64>> = theirs.into_iter().collect();
        let mut names: BTreeSet<String> = self.replica.store_names().cloned().collect();
        names.extend(
            theirs
                .keys()
                .filter(|n| check_store_name(n).is_ok())
                .cloned(),
        );
        for name in names {
            let mine = self
                .replica
                .store(&name)
                .map(|s| s.digest().to_vec())
                .unwrap_or_else(|| vec![0; BUCKETS]);
            let other = theirs
                .get(&name)
                .cloned()
                .unwrap_or_else(|| vec![0; BUCKETS]);
            let differ: Vec<usize> = (0..BUCKETS)
                .filter(|b| mine.get(*b) != other.get(*b))
                .collect();
            if differ.is_empty() {
                continue;
            }
            // Send our versions of those buckets; the peer works out which entries go which way.
            let set: BTreeSet<usize> = differ.iter().copied().collect();
            let versions: Vec<(String, Version)> = self
                .replica
                .store(&name)
                .map(|s| {
                    s.iter()
                        .filter(|(k, _)| set.contains(&bucket_of(k)))
                        .map(|(k, e)| (k.clone(), e.version))
                        .collect()
                })
                .unwrap_or_default();
            let buckets: Vec<u16> = differ.iter().map(|b| *b as u16).collect();
            sent += versions.len() as u64;
            for (lo, hi, chunk) in chunk_versions(versions, self.cfg.sync_versions_per_message) {
                let msg = StoreMsg::Versions {
                    store: name.clone(),
                    buckets: buckets.clone(),
                    versions: chunk,
                    from: lo,
                    until: hi,
                    round,
                };
                self.outbox.push_back((from, msg));
            }
        }
        sent
    }

    /// An entry arrived for `store`/`key`: a fetch of the current round it satisfies is done.
    fn fetched(&mut self, store: &str, key: &str) {
        let Some(r) = self.catch_up.as_mut().and_then(|c| c.round.as_mut()) else {
            return;
        };
        let h = key_hash(store, key);
        if let Some(want) = r.pending.get(&h) {
            let held = self
                .replica
                .store(store)
                .map_or(Version::ZERO, |s| s.version(key));
            if held >= *want {
                r.pending.remove(&h);
            }
        }
    }

    fn on_versions(
        &mut self,
        from: NodeId,
        store: String,
        buckets: Vec<u16>,
        versions: Vec<(String, Version)>,
        range: (Option<String>, Option<String>),
        round: u64,
    ) {
        if check_store_name(&store).is_err() {
            return;
        }
        let listed = versions.len() as u64;
        let theirs: BTreeMap<String, Version> = versions.into_iter().collect();
        let set: BTreeSet<usize> = buckets.iter().map(|b| *b as usize % BUCKETS).collect();
        let mut push = Vec::new();
        let mut fetch = Vec::new();
        if let Some(s) = self.replica.store(&store) {
            // Only keys inside this message's range: the rest is another message's business.
            let keys = s.range(range.0.as_deref(), range.1.as_deref());
            for (k, e) in keys.filter(|(k, _)| set.contains(&bucket_of(k))) {
                match theirs.get(k) {
                    Some(v) if *v >= e.version => {}
                    _ => push.push((k.clone(), e.clone())),
                }
            }
        }
        for (k, v) in &theirs {
            let mine = self
                .replica
                .store(&store)
                .map_or(Version::ZERO, |s| s.version(k));
            if mine < *v {
                fetch.push(k.clone());
            }
        }
        // In our catch-up round with this peer, note what this message owes us.
        if let Some(r) = self
            .catch_up
            .as_mut()
            .and_then(|c| c.round.as_mut())
            .filter(|r| r.peer == from && r.id == round && round != 0)
        {
            r.versions_seen += listed;
            for k in &fetch {
                r.pending.insert(key_hash(&store, k), theirs[k]);
            }
        }
        self.send_entries(from, &store, push);
        for keys in fetch.chunks(self.cfg.sync_versions_per_message.max(1)) {
            self.outbox.push_back((
                from,
                StoreMsg::Fetch {
                    store: store.clone(),
                    keys: keys.to_vec(),
                },
            ));
        }
    }

    /// Sends entries in chunks of bounded size.
    fn send_entries(&mut self, to: NodeId, store: &str, entries: Vec<(String, Entry)>) {
        let mut chunk: Vec<(String, Entry)> = Vec::new();
        let mut bytes = 0usize;
        for (k, e) in entries {
            let size = k.len() + e.value.as_ref().map_or(0, |v| v.len()) + 64;
            if !chunk.is_empty() && bytes + size > self.cfg.sync_chunk_bytes {
                let msg = StoreMsg::Entries {
                    store: store.into(),
                    entries: std::mem::take(&mut chunk),
                };
                self.outbox.push_back((to, msg));
                bytes = 0;
            }
            bytes += size;
            chunk.push((k, e));
        }
        if !chunk.is_empty() {
            self.outbox.push_back((
                to,
                StoreMsg::Entries {
                    store: store.into(),
                    entries: chunk,
                },
            ));
        }
    }
}

/// Splits a key-ordered version list into messages, each with the key range it speaks for:
/// `[first key of this chunk, first key of the next)`, unbounded below for the first and above for
/// the last, so that together they cover every key, also keys only the receiver holds.
type VersionChunk = (Option<String>, Option<String>, Vec<(String, Version)>);

fn chunk_versions(versions: Vec<(String, Version)>, per: usize) -> Vec<VersionChunk> {
    let chunks: Vec<Vec<(String, Version)>> =
        versions.chunks(per.max(1)).map(|c| c.to_vec()).collect();
    if chunks.is_empty() {
        return vec![(None, None, Vec::new())];
    }
    let starts: Vec<String> = chunks.iter().map(|c| c[0].0.clone()).collect();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let lo = (i > 0).then(|| starts[i].clone());
            let hi = starts.get(i + 1).cloned();
            (lo, hi, c)
        })
        .collect()
}

/// What the `store_msg` fuzz target and its corpus replay run on any bytes: they are read as a
/// sequence of postcard-encoded store messages (until one does not decode) and fed to a core that
/// holds some entries and is catching up, from two peers in turn, with timers run between. Any
/// panic is a bug: an authenticated peer must not be able to crash a node.
pub fn fuzz_messages(data: &[u8]) {
    let (a, b) = (NodeId(2), NodeId(3));
    let mut cfg = StoreConfig::new(2);
    cfg.durable = true;
    let mut core = StoreCore::new(NodeId(1), cfg, 7, Duration::ZERO, 1_700_000_000_000);
    core.begin_catch_up(true);
    core.set_view([(a, 1), (b, 1)].into(), true, 3);
    for i in 0..4u64 {
        let put = Request::Put {
            store: "default".into(),
            key: format!("k{i}"),
            value: vec![i as u8; 3],
            ttl: None,
            consistency: Some(Consistency::Local),
        };
        core.request(Duration::ZERO, 1_700_000_000_000, put);
    }
    let mut rest = data;
    let mut step = 0u64;
    while let Ok((msg, tail)) = postcard::take_from_bytes::<StoreMsg>(rest) {
        step += 1;
        let now = Duration::from_millis(step * 500);
        let from = if step.is_multiple_of(2) { a } else { b };
        core.handle_message(now, 1_700_000_000_000 + step, from, msg);
        core.persisted(now, 1_700_000_000_000 + step, u64::MAX, u64::MAX);
        core.handle_timeout(now, 1_700_000_000_000 + step);
        while core.poll_send().is_some() {}
        while core.poll_reply().is_some() {}
        while core.poll_log().is_some() {}
        let _ = core.catching_up();
        if tail.len() == rest.len() {
            break;
        }
        rest = tail;
    }
}

/// A stable 64-bit hash of a store and key (the same in every process, for determinism).
fn key_hash(store: &str, key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    store.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

fn not_found(store: &str, key: &str) -> StoreError {
    StoreError::NotFound {
        message: format!("no key {key:?} in store {store:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_chunks_cover_every_key() {
        let v = |k: &str| (k.to_string(), Version::ZERO);
        let chunks = chunk_versions(vec![v("b"), v("d"), v("f"), v("h"), v("j")], 2);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[0].0.clone(), chunks[0].1.clone()),
            (None, Some("f".to_string()))
        );
        assert_eq!(
            (chunks[1].0.clone(), chunks[1].1.clone()),
            (Some("f".to_string()), Some("j".to_string()))
        );
        assert_eq!(
            (chunks[2].0.clone(), chunks[2].1.clone()),
            (Some("j".to_string()), None)
        );
        assert_eq!(chunk_versions(vec![], 2), vec![(None, None, vec![])]);
    }
}
