//! Catching up after a start: until a node has synced with peers that, with itself, hold a
//! quorum of votes, its local reads are stale; a node that may have lost writes it acknowledged
//! also abstains from votes until then. One round at a time, with one peer: digest, versions and
//! fetches, then a barrier; a round that loses a message or goes quiet starts again.

use crate::core::StoreCore;
use crate::entry::Version;
use crate::fault::Fault;
use crate::log_gate::Held;
use crate::msg::{PARTIAL, PUSH_EMPTY, PUSH_PARTS, StoreMsg};
use membership::NodeId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A round's fetches by [`key_hash`]: the version each must reach.
pub(crate) type Pending = std::collections::HashMap<
    u64,
    Version,
    std::hash::BuildHasherDefault<std::hash::DefaultHasher>,
>;

/// Keys a round fetches before it knows how big the entries are: the window then follows the
/// average size of the entries that arrived ([`StoreCore::pump_fetches`]).
const FIRST_FETCH_WINDOW: u64 = 1024;

/// A node catching up after a start: whom it has fully synced with so far.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// The node may have lost writes it acknowledged (a wiped or repaired log): it does not vote
    /// in quorum rounds until it has caught up and the log holds what catching up brought.
    pub(crate) lost: bool,
    /// Peers whose whole replica (as of the round) this node now holds.
    pub(crate) synced: BTreeSet<NodeId>,
    /// The round in progress. One at a time: the first round brings nearly everything, and the
    /// next peer's then differs in little, where rounds in parallel would fetch it all twice.
    pub(crate) round: Option<SyncRound>,
    /// When a round with each peer last began (the least recently tried peer goes next).
    pub(crate) tried: BTreeMap<NodeId, Duration>,
    pub(crate) next_round: u64,
    /// Rounds begun so far.
    pub(crate) rounds_started: u64,
    /// Synced with enough peers; waiting for the log (only when `lost`).
    pub(crate) draining: bool,
}

/// One catch-up round with one peer: digest, versions and fetches, then a barrier (when it fetched
/// something).
#[derive(Debug)]
pub(crate) struct SyncRound {
    pub(crate) peer: NodeId,
    pub(crate) id: u64,
    /// The peer has answered the digest and we fetched something: the barrier behind our fetches
    /// is out.
    pub(crate) fetching: bool,
    /// The peer pushed only part of what we lack ([`PARTIAL`]): the next round is with it again.
    pub(crate) partial: bool,
    /// `(key, version)` pairs received in this round's versions.
    pub(crate) versions_seen: u64,
    /// Entries fetched and not yet held at the version the peer listed, by a hash of store and
    /// key. A lost message leaves some here (or the count above short): the round is then not
    /// trusted and starts again, whatever the transport did.
    /// (A hash map with a fixed hasher: never iterated, so its order cannot leak into what the
    /// core does; a B-tree's inserts and removals were 8 % of a 1M-key catch-up's profile.)
    pub(crate) pending: Pending,
    /// Fetches not sent yet, by store: at most a window of them is out at once, in messages of
    /// at most `sync_versions_per_message` keys ([`StoreCore::pump_fetches`]).
    pub(crate) to_fetch: VecDeque<(String, Vec<String>)>,
    /// Keys asked for so far.
    pub(crate) requested: u64,
    /// Keys of `pending` that arrived (the only way one leaves it), and their bytes on the wire:
    /// with `requested`, the window's measure.
    pub(crate) arrived: u64,
    pub(crate) arrived_bytes: u64,
    /// The barrier goes once the last fetch is out.
    pub(crate) barrier_due: bool,
    /// When the peer last sent anything for it (a round that goes quiet is started again).
    pub(crate) heard: Duration,
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
    /// Sync rounds begun so far: one per peer, plus one per further part of a push that came in
    /// parts; beyond that, rounds that were cut short.
    pub rounds: u64,
}

impl StoreCore {
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

    pub(crate) fn catch_up_votes(&self, c: &CatchUp) -> u32 {
        let own = if c.lost { 0 } else { self.cfg.my_votes };
        own + self.votes(c.synced.iter())
    }

    /// Whether this node's replica may be missing writes it acknowledged, so it must not vote.
    pub(crate) fn abstains(&self) -> bool {
        self.catch_up.as_ref().is_some_and(|c| c.lost)
            && !self.faults.contains(&Fault::VoteWhileCatchingUp)
    }

    /// Ends the catch-up once enough peers are synced; otherwise begins a round with the least
    /// recently tried peer not yet synced, unless a live round is under way.
    pub(crate) fn advance_catch_up(&mut self) {
        let Some(c) = self.catch_up.as_ref() else {
            return;
        };
        if c.draining {
            return;
        }
        // Enough synced, or nobody could ever help (a one-node cluster): done.
        let me = [self.me];
        let own: &[NodeId] = if c.lost { &[] } else { &me };
        let enough = self.is_quorum(c.synced.iter().chain(own.iter()));
        let alone = c.lost && self.is_quorum(me.iter());
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
        if let Some(c) = self.catch_up.as_mut() {
            c.round = None;
        }
        if let Some(peer) = next {
            self.begin_round(peer);
        }
    }

    /// Begins a catch-up round with `peer`.
    fn begin_round(&mut self, peer: NodeId) {
        let now = self.now;
        let Some(c) = self.catch_up.as_mut() else {
            return;
        };
        let id = c.next_round | PUSH_EMPTY | PUSH_PARTS;
        c.next_round += 1;
        c.rounds_started += 1;
        c.tried.insert(peer, now);
        tracing::debug!(%peer, round = id, "catch-up round begins");
        c.round = Some(SyncRound {
            peer,
            id,
            fetching: false,
            partial: false,
            versions_seen: 0,
            pending: Pending::default(),
            to_fetch: VecDeque::new(),
            requested: 0,
            arrived: 0,
            arrived_bytes: 0,
            barrier_due: false,
            heard: now,
        });
        self.send_digest(peer, id);
    }

    /// A [`StoreMsg::SyncMark`] from `from` for our round `round`.
    pub(crate) fn on_sync_mark(&mut self, from: NodeId, round: u64, lost: bool, versions: u64) {
        let now = self.now;
        let partial = round & PARTIAL != 0;
        let round = round & !PARTIAL;
        let Some(c) = self.catch_up.as_mut() else {
            return;
        };
        let Some(r) = c.round.as_mut().filter(|r| r.peer == from && r.id == round) else {
            return; // an old round's mark
        };
        r.heard = now;
        tracing::debug!(%from, round, fetching = r.fetching, versions, seen = r.versions_seen,
            pending = r.pending.len(), "catch-up mark");
        if !r.fetching {
            if r.versions_seen != versions {
                // Some versions were lost: start again (with the least recently tried peer).
                c.round = None;
                self.advance_catch_up();
                return;
            }
            r.partial = partial;
            if !r.pending.is_empty() {
                // The versions are in; a barrier follows our fetches, once the last is out.
                r.fetching = true;
                r.barrier_due = true;
                self.pump_fetches();
                return;
            }
            // Nothing to fetch (a wiped node's parts are all pushed): every entry the mark
            // counts is here, so the round ends now, without a barrier's round trip (7-22 ms a
            // part at 1M keys).
        }
        let complete = r.pending.is_empty();
        let partial = r.partial;
        c.round = None;
        if !complete {
            self.advance_catch_up(); // fetched entries were lost
            return;
        }
        if lost {
            // Its replica may lack what it acknowledged; another peer (or it, later) next tick.
            return;
        }
        if partial {
            // Everything it sent arrived, but it holds more: the next part, from it again.
            self.begin_round(from);
            return;
        }
        c.synced.insert(from);
        self.advance_catch_up();
    }

    /// Notes that `from` sent something, so a round with it is alive.
    pub(crate) fn heard_from(&mut self, from: NodeId) {
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

    /// Sends the round's next fetches while fewer keys than a window are asked for and not yet
    /// here, then the barrier once none is left. The window holds about `sync_push_budget_bytes`
    /// of entries (as a push answer does) at the average size of those that arrived
    /// ([`FIRST_FETCH_WINDOW`] keys before any did): the peer answers every fetch at once, and
    /// what exceeds its transport's queue for this node is dropped. Asked all at once, a node
    /// that had missed 1M writes lost two-thirds of each round's entries and needed four rounds,
    /// each listing 1M versions again: 5.3-5.6 s, and 3.04 s in one round with the window (half
    /// the budget gave 3.30 s; docs/benchmarks.md).
    pub(crate) fn pump_fetches(&mut self) {
        let budget = self.cfg.sync_push_budget_bytes.max(1) as u64;
        let per_message = self.cfg.sync_versions_per_message.max(1);
        let Some(r) = self.catch_up.as_mut().and_then(|c| c.round.as_mut()) else {
            return;
        };
        let window = match r.arrived_bytes.checked_div(r.arrived) {
            Some(avg) => (budget / avg.max(1)).max(1),
            None => FIRST_FETCH_WINDOW,
        };
        loop {
            let outstanding = r.requested.saturating_sub(r.arrived);
            let Some((_, keys)) = r.to_fetch.front() else {
                break;
            };
            if outstanding > 0 && outstanding + keys.len() as u64 > window {
                break;
            }
            let (store, mut keys) = r.to_fetch.pop_front().expect("just looked");
            // A message no bigger than the window (entries of a megabyte, say).
            let room = window.saturating_sub(outstanding).max(1) as usize;
            if keys.len() > room.min(per_message) {
                let rest = keys.split_off(room.min(per_message));
                r.to_fetch.push_front((store.clone(), rest));
            }
            r.requested += keys.len() as u64;
            self.outbox
                .push_back((r.peer, StoreMsg::Fetch { store, keys }));
        }
        if r.to_fetch.is_empty() && r.barrier_due {
            r.barrier_due = false;
            let round = r.id;
            self.outbox
                .push_back((r.peer, StoreMsg::SyncBarrier { round }));
        }
    }

    /// An entry at version `arriving`, `size` bytes on the wire, is being applied to
    /// `store`/`key`: a fetch of the current round that it (or what is held) satisfies is done.
    pub(crate) fn fetched(&mut self, store: &str, key: &str, arriving: Version, size: u64) {
        let Some(r) = self
            .catch_up
            .as_mut()
            .and_then(|c| c.round.as_mut())
            .filter(|r| !r.pending.is_empty())
        else {
            return;
        };
        let h = key_hash(store, key);
        if let Some(want) = r.pending.get(&h) {
            // The fetched entry itself nearly always is what was wanted: the replica is asked
            // only when it is not (6 % of a 1M-key catch-up's profile went to that lookup).
            let held = if arriving >= *want {
                arriving
            } else {
                self.replica
                    .store(store)
                    .map_or(Version::ZERO, |s| s.version(key))
                    .max(arriving)
            };
            if held >= *want {
                r.pending.remove(&h);
                r.arrived += 1;
                r.arrived_bytes += size;
            }
        }
    }
}

/// A stable 64-bit hash of a store and key (the same in every process, for determinism).
pub(crate) fn key_hash(store: &str, key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    store.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}
