//! The face of the store core: its state, its inputs (`request`, `handle_message`,
//! `handle_timeout`, `set_view`, `persisted`) and its outputs (`poll_send`, `poll_reply`,
//! `poll_log`, `poll_timeout`).
//!
//! The jobs live in their own files and return to this one: checking and starting requests
//! (`request`), the quorum coordinator (`coordinator`), anti-entropy (`anti_entropy`), catching up
//! after a start (`catch_up`) and the gate that holds acknowledgements until the log is durable
//! (`log_gate`). This file also answers replicas' reads and writes, which take a few lines each.
//!
//! Like the membership core it is sans-IO: the driver passes time, peers and messages, and
//! drains the `poll_*` methods.

use crate::catch_up::CatchUp;
use crate::config::StoreConfig;
use crate::coordinator::{Op, Phase};
use crate::entry::{Entry, Version};
use crate::fault::Fault;
use crate::hlc::Hlc;
use crate::limits::{StoreError, check_key, check_store_name};
use crate::log_gate::{Held, LogState};
use crate::msg::StoreMsg;
use crate::replica::Replica;
use crate::request::{OpId, Reply};
use membership::NodeId;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    Timeout(OpId),
    Retry(OpId),
    AntiEntropy,
    Collect,
}

/// The store core of one node.
#[derive(Debug)]
pub struct StoreCore {
    pub(crate) me: NodeId,
    pub(crate) cfg: StoreConfig,
    pub(crate) hlc: Hlc,
    pub(crate) replica: Replica,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) now: Duration,
    pub(crate) wall_ms: u64,
    pub(crate) peers: BTreeMap<NodeId, u32>,
    /// Peers membership holds failed, with their votes (see [`StoreCore::set_failed_peers`]).
    pub(crate) failed: BTreeMap<NodeId, u32>,
    /// Members' datacenters (for a `datacenters`-mode quorum).
    pub(crate) dcs: BTreeMap<NodeId, String>,
    pub(crate) view_quorum: bool,
    pub(crate) view_reachable: u32,
    pub(crate) ops: BTreeMap<OpId, Op>,
    pub(crate) next_op: OpId,
    pub(crate) timers: BTreeMap<(Duration, u64), Due>,
    pub(crate) seq: u64,
    pub(crate) outbox: VecDeque<(NodeId, StoreMsg)>,
    pub(crate) replies: VecDeque<(OpId, Result<Reply, StoreError>)>,
    pub(crate) faults: BTreeSet<Fault>,
    pub(crate) log: LogState,
    pub(crate) catch_up: Option<CatchUp>,
    pub(crate) sync_stats: crate::anti_entropy::SyncStats,
    /// Peers found in sync, with the fingerprint of this replica they were found in sync with:
    /// a peer counts as in sync while that is still this replica's fingerprint.
    pub(crate) in_sync: BTreeMap<NodeId, u64>,
    /// When this node last started a periodic anti-entropy round.
    pub(crate) last_round: Duration,
    /// Pushes still being composed, and the marks that wait behind them (`push.rs`).
    pub(crate) pushing: VecDeque<crate::push::Pending>,
}

impl StoreCore {
    /// Numbers this core's operations from `first` on. The node starts each run of a node at
    /// `generation << 40`: an answer captured from an earlier run (a replay, or a message late
    /// across a restart) never names an operation of this one. Call before the first request.
    pub fn number_ops_from(&mut self, first: OpId) {
        self.next_op = first.max(1);
    }

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
            failed: BTreeMap::new(),
            view_quorum: match &cfg.datacenters {
                None => cfg.my_votes >= cfg.required_votes,
                Some(t) => {
                    membership::datacenters_met(t, [(cfg.my_datacenter.as_str(), cfg.my_votes)])
                }
            },
            dcs: BTreeMap::new(),
            view_reachable: cfg.my_votes,
            ops: BTreeMap::new(),
            next_op: 1,
            timers: BTreeMap::new(),
            seq: 0,
            outbox: VecDeque::new(),
            pushing: VecDeque::new(),
            replies: VecDeque::new(),
            faults: BTreeSet::new(),
            log: LogState {
                next_lsn: 1,
                ..LogState::default()
            },
            catch_up: None,
            sync_stats: Default::default(),
            in_sync: BTreeMap::new(),
            last_round: Duration::ZERO,
            cfg,
        };
        let every = core.cfg.anti_entropy_every;
        core.schedule(every, Due::AntiEntropy);
        core.schedule(Duration::from_secs(60), Due::Collect);
        core
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
        // A push being composed is work due now: a batch per step (`push.rs`).
        let push = self.pushing().then_some(self.now);
        let timer = self.timers.keys().next().map(|(t, _)| *t);
        push.into_iter().chain(timer).min()
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
        // A peer that comes back may have changed meanwhile: it is in sync again once a round
        // says so.
        let peers = &self.peers;
        self.in_sync.retain(|p, _| peers.contains_key(p));
        self.forget_pushes();
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

    /// The datacenters of the members (by their metadata), for a `datacenters`-mode quorum.
    pub fn set_datacenters(&mut self, dcs: BTreeMap<NodeId, String>) {
        self.dcs = dcs;
    }

    /// Updates the peers membership holds failed, with their votes. Rounds never count on them,
    /// but a round that waits asks them too, and a node whose view holds no quorum tries one
    /// short round with them before it refuses: the view lags behind a network that changed
    /// shape (a member failed in the previous partition is reachable again well before SWIM
    /// says so), and an answer counts whoever gives it, since quorums intersect by
    /// configuration, never by view.
    pub fn set_failed_peers(&mut self, mut failed: BTreeMap<NodeId, u32>) {
        failed.remove(&self.me);
        for p in self.peers.keys() {
            failed.remove(p);
        }
        self.failed = failed;
    }

    pub(crate) fn advance(&mut self, now: Duration, wall_ms: u64) {
        self.now = self.now.max(now);
        self.wall_ms = self.wall_ms.max(wall_ms);
    }

    pub(crate) fn schedule(&mut self, after: Duration, due: Due) {
        self.seq += 1;
        self.timers.insert((self.now + after, self.seq), due);
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
                    .map(|e| e.to_entry());
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
                let (versions, equal, partial) = self.on_digest(from, stores, round);
                // Also in a catch-up round: a node that started sees its peers in sync in its
                // first round, rather than one 5 s round at a time afterwards.
                if equal {
                    let fingerprint = self.fingerprint();
                    self.in_sync.insert(from, fingerprint);
                    self.outbox
                        .push_back((from, StoreMsg::InSync { fingerprint }));
                }
                if round != 0 {
                    tracing::debug!(%from, round, versions, partial, "catch-up round answered");
                    // After this round's pushes, counting them too.
                    self.queue_mark(from, round, partial, versions);
                } else {
                    self.continue_pushes();
                }
            }
            StoreMsg::InSync { fingerprint } => {
                self.in_sync.insert(from, fingerprint);
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
            StoreMsg::Entries { store, entries } => self.on_entries(&store, entries),
            StoreMsg::RoundEntries {
                store,
                round,
                entries,
            } => {
                // Counted as they arrive, as the sender counted them: a lost message leaves
                // the round's count short of its mark's, and the round does not count.
                if let Some(r) = self
                    .catch_up
                    .as_mut()
                    .and_then(|c| c.round.as_mut())
                    .filter(|r| r.peer == from && r.id == round && !r.fetching)
                {
                    r.versions_seen += entries.len() as u64;
                }
                self.on_entries(&store, entries);
            }
            StoreMsg::Versions {
                store,
                buckets,
                versions,
                from: lo,
                until: hi,
                round,
            } => self.on_versions(from, store, (buckets, vec![]), versions, (lo, hi), round),
            StoreMsg::Leaves { store, leaves } => self.on_leaves(from, store, leaves),
            StoreMsg::LeafVersions {
                store,
                leaves,
                versions,
                from: lo,
                until: hi,
            } => {
                // An empty leaf list would read as "whole buckets" with none listed.
                if !leaves.is_empty() {
                    self.on_versions(from, store, (vec![], leaves), versions, (lo, hi), 0);
                }
            }
            StoreMsg::Fetch { store, keys } => {
                if let Some(s) = self.replica.store(&store) {
                    let found: Vec<(String, Entry)> = keys
                        .into_iter()
                        .filter_map(|k| s.get(&k).map(|e| (k, e.to_entry())))
                        .collect();
                    self.send_entries(from, &store, found);
                }
            }
        }
    }

    /// Entries from anti-entropy or a catch-up: each merged, logged, and checked off the round's
    /// fetches.
    fn on_entries(&mut self, store: &str, entries: Vec<(String, Entry)>) {
        if check_store_name(store).is_err() {
            return;
        }
        for (k, e) in entries {
            if check_key(&k).is_ok() {
                self.hlc.observe(e.version.ts);
                // Applying keeps the newer version, so the key is then held at `e`'s or newer.
                self.fetched(store, &k, e.version, crate::replica::wire_size(&k, &e));
                if self.apply_logged_owned(store, k, e) {
                    self.sync_stats.keys_repaired += 1;
                }
            }
        }
        self.pump_fetches();
    }

    /// Fires due timers: round timeouts, anti-entropy, garbage collection.
    pub fn handle_timeout(&mut self, now: Duration, wall_ms: u64) {
        self.advance(now, wall_ms);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            match entry.remove() {
                Due::Timeout(op) => match self.ops.get(&op) {
                    // A probe whose first phase reached no quorum applied nothing anywhere.
                    Some(o)
                        if o.probe
                            && matches!(o.phase, Phase::Learn { .. } | Phase::Gather { .. }) =>
                    {
                        let e = self.no_quorum();
                        self.finish(op, Err(e));
                    }
                    Some(o) if o.deadline <= self.now => {
                        self.finish(op, Err(StoreError::Indeterminate));
                    }
                    _ => {}
                },
                Due::Retry(op) => {
                    if self.ops.contains_key(&op) {
                        self.ask_again(op);
                        self.schedule(self.cfg.round_retry, Due::Retry(op));
                    }
                }
                Due::AntiEntropy => {
                    let periodic = self.catch_up.is_none();
                    if periodic
                        && !self.peers.is_empty()
                        && !self.faults.contains(&Fault::NoAntiEntropy)
                    {
                        // Rounds go to peers not known to be in sync with this replica as it is
                        // now; once every peer is, only a slow safety-net round runs (an idle
                        // cluster of 15 spent 60 of its 614 B/s per node on digests, issue 16).
                        let fp = self.fingerprint();
                        let unsure: Vec<NodeId> = self
                            .peers
                            .keys()
                            .filter(|p| self.in_sync.get(p) != Some(&fp))
                            .copied()
                            .collect();
                        let quiet_due =
                            self.now >= self.last_round + self.cfg.anti_entropy_quiet_every;
                        let pick = if !unsure.is_empty() {
                            Some(unsure[self.rng.random_range(0..unsure.len())])
                        } else if quiet_due {
                            let peers: Vec<NodeId> = self.peers.keys().copied().collect();
                            Some(peers[self.rng.random_range(0..peers.len())])
                        } else {
                            None
                        };
                        if let Some(p) = pick {
                            self.last_round = self.now;
                            self.send_digest(p, 0);
                        }
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
        if self.pushing() {
            self.continue_pushes();
        }
    }
}
