//! The face of the coordination core: its state, its inputs (`request`, `handle_message`,
//! `handle_timeout`, `set_view`, `persisted`) and its outputs (`poll_send`, `poll_reply`,
//! `poll_persist`, `poll_timeout`).
//!
//! Each strong key is a CASPaxos register (Rystsov 2018): a proposer runs phase 1 (prepare) on a
//! quorum of acceptors, applies a named change to the register with the highest accepted ballot,
//! and runs phase 2 (accept) with the result, for reads and failed compare-and-sets too. There is
//! no log of commands and no leader: every key is its own register. The proposer is in
//! `proposer.rs`, the acceptor's rules in `acceptor.rs`, the recovery of an acceptor that lost its
//! state in `sync.rs`; this file answers acceptor messages and holds every answer until the
//! acceptor state it depends on is durable.
//!
//! Acceptors are the nodes holding the configured votes and a quorum is the configured quorum;
//! the membership view only says whom to ask.

use crate::acceptor::{AcceptorState, Vote};
use crate::ballot::Ballot;
use crate::config::CoordConfig;
use crate::error::CoordError;
use crate::fault::Fault;
use crate::msg::{CoordMsg, OpId};
use crate::proposer::Proposal;
use crate::register::{Change, Outcome};
use crate::sync::Sync;
use membership::NodeId;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A client request on the strong keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The key.
    pub key: String,
    /// What to do to its register.
    pub change: Change,
}

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// A proposal's deadline.
    Deadline(OpId),
    /// A proposal that lost to a higher ballot tries again.
    Retry(OpId),
    /// An acceptor that lost its state asks its peers again.
    Sync,
}

/// Something that waits until every acceptor state issued so far is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    /// An acceptor's answer.
    Send(NodeId, CoordMsg),
    /// The end of a state sync: the acceptor may vote again.
    Synced,
}

/// The durability gate: acceptor states handed to the log, and answers waiting for them.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub(crate) issued: u64,
    pub(crate) durable: u64,
    pub(crate) out: VecDeque<(u64, String, AcceptorState)>,
    pub(crate) held: VecDeque<(u64, Held)>,
}

/// The coordination core of one node.
#[derive(Debug)]
pub struct CoordCore {
    pub(crate) me: NodeId,
    pub(crate) generation: u64,
    pub(crate) cfg: CoordConfig,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) now: Duration,
    pub(crate) peers: BTreeMap<NodeId, u32>,
    /// Members' datacenters (for a `datacenters`-mode quorum).
    pub(crate) dcs: BTreeMap<NodeId, String>,
    pub(crate) view_quorum: bool,
    pub(crate) view_reachable: u32,
    pub(crate) acceptors: BTreeMap<String, AcceptorState>,
    /// When (core time) each key's register last changed here: lock leases are judged by it.
    /// Kept in memory only; after a restart every key counts as changed at the start, which
    /// only makes leases look younger (safe).
    pub(crate) accepted_at: BTreeMap<String, Duration>,
    /// The highest ballot counter this node has used or seen.
    pub(crate) counter: u64,
    pub(crate) proposals: BTreeMap<OpId, Proposal>,
    pub(crate) next_op: OpId,
    pub(crate) timers: BTreeMap<(Duration, u64), Due>,
    pub(crate) seq: u64,
    pub(crate) outbox: VecDeque<(NodeId, CoordMsg)>,
    /// Messages from this node to itself (its proposer to its acceptor and back), handled at
    /// the end of the input that made them.
    pub(crate) loopback: VecDeque<CoordMsg>,
    pub(crate) replies: VecDeque<(OpId, Result<Outcome, CoordError>)>,
    pub(crate) gate: Gate,
    pub(crate) sync: Option<Sync>,
    pub(crate) faults: BTreeSet<Fault>,
}

impl CoordCore {
    /// A core for node `me` in its start `generation` (persisted before this start, so ballots
    /// are never reused); random choices derive from `seed`; `now` is core time.
    pub fn new(me: NodeId, generation: u64, cfg: CoordConfig, seed: u64, now: Duration) -> Self {
        CoordCore {
            me,
            generation,
            view_quorum: match &cfg.datacenters {
                None => cfg.my_votes >= cfg.required_votes,
                Some(t) => {
                    membership::datacenters_met(t, [(cfg.my_datacenter.as_str(), cfg.my_votes)])
                }
            },
            dcs: BTreeMap::new(),
            view_reachable: cfg.my_votes,
            cfg,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xc0_0a7d),
            now,
            peers: BTreeMap::new(),
            acceptors: BTreeMap::new(),
            accepted_at: BTreeMap::new(),
            counter: 0,
            proposals: BTreeMap::new(),
            next_op: 1,
            timers: BTreeMap::new(),
            seq: 0,
            outbox: VecDeque::new(),
            loopback: VecDeque::new(),
            replies: VecDeque::new(),
            gate: Gate::default(),
            sync: None,
            faults: BTreeSet::new(),
        }
    }

    /// Installs an acceptor state read back from the log at start (a later one for the same key
    /// replaces an earlier one).
    pub fn restore(&mut self, key: String, state: AcceptorState) {
        if !self.faults.contains(&Fault::ReuseBallots) {
            self.counter = self.counter.max(state.seen().counter);
        }
        if state.accepted != Ballot::ZERO {
            self.accepted_at.insert(key.clone(), self.now);
        }
        self.acceptors.insert(key, state);
    }

    /// Every key's acceptor state, for a snapshot.
    pub fn states(&self) -> impl Iterator<Item = (&String, &AcceptorState)> {
        self.acceptors.iter()
    }

    /// Number of strong keys this acceptor holds state for.
    pub fn len(&self) -> usize {
        self.acceptors.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.acceptors.is_empty()
    }

    /// Updates what membership says: reachable peers with their votes, and the quorum view.
    pub fn set_view(&mut self, peers: BTreeMap<NodeId, u32>, has_quorum: bool, reachable: u32) {
        self.peers = peers;
        self.peers.remove(&self.me);
        self.view_quorum = has_quorum;
        self.view_reachable = reachable;
        self.ask_for_sync();
        self.drain_loopback();
    }

    /// Starts a request; its answer comes out of [`CoordCore::poll_reply`] with the returned id.
    pub fn request(&mut self, now: Duration, req: Request) -> OpId {
        self.advance(now);
        let op = self.next_op;
        self.next_op += 1;
        match self.check(&req) {
            Err(e) => self.replies.push_back((op, Err(e))),
            Ok(()) if !self.view_quorum => {
                let e = self.no_quorum();
                self.replies.push_back((op, Err(e)));
            }
            Ok(()) => self.propose(op, req),
        }
        self.drain_loopback();
        op
    }

    fn check(&self, req: &Request) -> Result<(), CoordError> {
        if req.key.is_empty() || req.key.len() > MAX_KEY_BYTES {
            return Err(CoordError::BadRequest {
                message: format!(
                    "a strong key is 1 to {MAX_KEY_BYTES} bytes, got {}",
                    req.key.len()
                ),
            });
        }
        if let Change::Put { value, .. } = &req.change
            && value.len() > self.cfg.max_value_bytes
        {
            return Err(CoordError::TooLarge {
                size: value.len(),
                max: self.cfg.max_value_bytes,
            });
        }
        if let Change::Lock(op) = &req.change {
            crate::lock::check(op).map_err(|message| CoordError::BadRequest { message })?;
        }
        Ok(())
    }

    /// Feeds a message from peer `from`.
    pub fn handle_message(&mut self, now: Duration, from: NodeId, msg: CoordMsg) {
        self.advance(now);
        self.dispatch(from, msg);
        self.drain_loopback();
    }

    fn dispatch(&mut self, from: NodeId, msg: CoordMsg) {
        match msg {
            CoordMsg::Prepare { op, key, ballot } => self.on_prepare(from, op, key, ballot),
            CoordMsg::Accept {
                op,
                key,
                ballot,
                register,
            } => self.on_accept(from, op, key, ballot, register),
            CoordMsg::Promise {
                op,
                ballot,
                accepted,
                register,
                age_us,
            } => {
                let age = age_us.map(Duration::from_micros);
                self.on_promise(from, op, ballot, accepted, register, age)
            }
            CoordMsg::Accepted { op, ballot } => self.on_accepted(from, op, ballot),
            CoordMsg::Reject { op, ballot, seen } => self.on_reject(from, op, ballot, seen),
            CoordMsg::SyncRequest { round } => self.on_sync_request(from, round),
            CoordMsg::SyncState { round, states } => self.on_sync_state(from, round, states),
        }
    }

    /// Fires due timers: deadlines, retries, sync requests.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            match entry.remove() {
                Due::Deadline(op) => self.expire(op),
                Due::Retry(op) => self.retry(op),
                Due::Sync => {
                    if let Some(s) = self.sync.as_mut() {
                        s.asked = false;
                    }
                    self.ask_for_sync();
                }
            }
        }
        self.drain_loopback();
    }

    /// The log holds every acceptor state issued through `seq`: answers waiting on them go out.
    pub fn persisted(&mut self, seq: u64) {
        self.gate.durable = self.gate.durable.max(seq);
        while let Some((s, _)) = self.gate.held.front() {
            if *s > self.gate.durable {
                break;
            }
            let (_, what) = self.gate.held.pop_front().expect("peeked");
            self.release(what);
        }
        self.drain_loopback();
    }

    /// The next acceptor state to make durable: a sequence number, the key and the state. Report
    /// it with [`CoordCore::persisted`] once the log holds it.
    pub fn poll_persist(&mut self) -> Option<(u64, String, AcceptorState)> {
        self.gate.out.pop_front()
    }

    /// The next message to send.
    pub fn poll_send(&mut self) -> Option<(NodeId, CoordMsg)> {
        self.outbox.pop_front()
    }

    /// The next client reply.
    pub fn poll_reply(&mut self) -> Option<(OpId, Result<Outcome, CoordError>)> {
        self.replies.pop_front()
    }

    /// The earliest time [`CoordCore::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Proposals in flight.
    pub fn in_flight(&self) -> usize {
        self.proposals.len()
    }

    /// True while this acceptor lost its state and has not yet rebuilt it from its peers.
    pub fn syncing(&self) -> bool {
        self.sync.is_some()
    }

    pub(crate) fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    pub(crate) fn schedule(&mut self, after: Duration, due: Due) {
        self.seq += 1;
        self.timers.insert((self.now + after, self.seq), due);
    }

    pub(crate) fn unschedule(&mut self, due: Due) {
        self.timers.retain(|_, d| *d != due);
    }

    pub(crate) fn votes_of(&self, n: NodeId) -> u32 {
        if n == self.me {
            self.cfg.my_votes
        } else {
            self.peers.get(&n).copied().unwrap_or(1)
        }
    }

    pub(crate) fn votes<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> u32 {
        nodes.map(|n| self.votes_of(*n)).sum()
    }

    fn dc_of(&self, n: NodeId) -> &str {
        if n == self.me {
            &self.cfg.my_datacenter
        } else {
            self.dcs.get(&n).map_or("", String::as_str)
        }
    }

    /// Whether `nodes` (distinct) make a quorum by the configured rule.
    pub(crate) fn is_quorum<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> bool {
        match &self.cfg.datacenters {
            None => self.votes(nodes) >= self.cfg.required_votes,
            Some(table) => membership::datacenters_met(
                table,
                nodes.map(|n| (self.dc_of(*n), self.votes_of(*n))),
            ),
        }
    }

    /// The datacenters of the members (by their metadata), for a `datacenters`-mode quorum.
    pub fn set_datacenters(&mut self, dcs: BTreeMap<NodeId, String>) {
        self.dcs = dcs;
    }

    pub(crate) fn no_quorum(&self) -> CoordError {
        CoordError::NoQuorum {
            reachable_votes: self.view_reachable,
            required_votes: self.cfg.required_votes,
        }
    }

    /// Sends to a peer, or to this node's own acceptor or proposer.
    pub(crate) fn send(&mut self, to: NodeId, msg: CoordMsg) {
        if to == self.me {
            self.loopback.push_back(msg);
        } else {
            self.outbox.push_back((to, msg));
        }
    }

    /// Sends `msg` to this node and every reachable peer.
    pub(crate) fn broadcast(&mut self, msg: CoordMsg) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        self.send(self.me, msg.clone());
        for p in peers {
            self.send(p, msg.clone());
        }
    }

    fn drain_loopback(&mut self) {
        while let Some(msg) = self.loopback.pop_front() {
            self.dispatch(self.me, msg);
        }
    }

    /// Whether this acceptor stays out of votes (it lost its state and is rebuilding it).
    fn abstains(&self) -> bool {
        self.sync.is_some()
    }

    fn on_prepare(&mut self, from: NodeId, op: OpId, key: String, ballot: Ballot) {
        if self.abstains() {
            return;
        }
        self.counter = self.counter.max(ballot.counter);
        let forget = self.faults.contains(&Fault::SkipPromise);
        let age_us = self
            .accepted_at
            .get(&key)
            .map(|t| self.now.saturating_sub(*t).as_micros() as u64);
        let st = self.acceptors.entry(key.clone()).or_default();
        let (vote, changed) = st.prepare(ballot, forget);
        let msg = match vote {
            Vote::Promise { accepted, register } => CoordMsg::Promise {
                op,
                ballot,
                accepted,
                register,
                age_us,
            },
            Vote::Reject { seen } => CoordMsg::Reject { op, ballot, seen },
            Vote::Accepted => unreachable!("prepare never accepts"),
        };
        self.answer(from, key, changed, msg);
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        op: OpId,
        key: String,
        ballot: Ballot,
        register: crate::register::Register,
    ) {
        if self.abstains() {
            return;
        }
        self.counter = self.counter.max(ballot.counter);
        let st = self.acceptors.entry(key.clone()).or_default();
        let before = st.register.version;
        let (vote, changed) = st.accept(ballot, register);
        if st.register.version != before {
            self.accepted_at.insert(key.clone(), self.now);
        }
        let msg = match vote {
            Vote::Accepted => CoordMsg::Accepted { op, ballot },
            Vote::Reject { seen } => CoordMsg::Reject { op, ballot, seen },
            Vote::Promise { .. } => unreachable!("accept never promises"),
        };
        self.answer(from, key, changed, msg);
    }

    /// Sends an acceptor's answer once its state is durable. A refusal goes at once: it commits
    /// this acceptor to nothing.
    fn answer(&mut self, to: NodeId, key: String, changed: bool, msg: CoordMsg) {
        if changed {
            let state = self.acceptors[&key].clone();
            self.persist(key, state);
        }
        if matches!(msg, CoordMsg::Reject { .. }) {
            self.send(to, msg);
        } else {
            self.after_durable(Held::Send(to, msg));
        }
    }

    /// Hands an acceptor state to the log.
    pub(crate) fn persist(&mut self, key: String, state: AcceptorState) {
        if !self.cfg.durable {
            return;
        }
        self.gate.issued += 1;
        self.gate.out.push_back((self.gate.issued, key, state));
    }

    /// Does `what` once every state issued so far is durable (at once without a log).
    pub(crate) fn after_durable(&mut self, what: Held) {
        let ready = !self.cfg.durable
            || self.gate.durable >= self.gate.issued
            || self.faults.contains(&Fault::ReplyBeforeDurable);
        if ready {
            self.release(what);
        } else {
            self.gate.held.push_back((self.gate.issued, what));
        }
    }

    fn release(&mut self, what: Held) {
        match what {
            Held::Send(to, msg) => self.send(to, msg),
            Held::Synced => self.sync = None,
        }
    }
}
