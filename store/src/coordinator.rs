//! The quorum coordinator: a write learns the highest version from a quorum, then stores a
//! higher one on a quorum (ABD over the entry join); a quorum read gathers a quorum and writes the
//! winner back where it is missing. A coordinator that cannot reach a quorum never gets past the
//! first phase, so its write reaches no replica.

use crate::config::MinorityReads;
use crate::core::{Due, StoreCore};
use crate::entry::{Entry, Version};
use crate::fault::Fault;
use crate::limits::StoreError;
use crate::log_gate::Held;
use crate::msg::StoreMsg;
use crate::request::{Consistency, OpId, Reply, not_found};
use membership::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug)]
pub(crate) enum Phase {
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
pub(crate) enum Intent {
    Write {
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    },
    Read,
}

#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) store: String,
    pub(crate) key: String,
    pub(crate) intent: Intent,
    pub(crate) phase: Phase,
    pub(crate) deadline: Duration,
    /// Started although the view held no quorum (see [`StoreCore::set_failed_peers`]): it asks
    /// the failed peers too, and answers `no_quorum` if its first phase has not reached a quorum
    /// after [`StoreCore::probe_window`].
    pub(crate) probe: bool,
}

impl StoreCore {
    pub(crate) fn write(
        &mut self,
        op: OpId,
        store: String,
        key: String,
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
        c: Consistency,
    ) -> Result<(), StoreError> {
        let probe = !self.view_quorum && !self.faults.contains(&Fault::QuorumOfOne);
        if probe
            && (c == Consistency::Local
                || !self.could_reach_quorum()
                || self.faults.contains(&Fault::AskOnce))
        {
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
                        probe,
                    },
                );
                self.schedule_round(op, probe);
                if self.faults.contains(&Fault::SkipLearnPhase) {
                    self.enter_store_phase(op);
                } else {
                    self.ask_peers(op, &store, &key);
                    self.progress(op);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn read(
        &mut self,
        op: OpId,
        store: String,
        key: String,
        c: Consistency,
    ) -> Result<(), StoreError> {
        let minority = !self.view_quorum;
        let local = c == Consistency::Local || self.faults.contains(&Fault::ReadLocalOnly);
        let probe = minority
            && !local
            && self.cfg.minority_reads == MinorityReads::Refuse
            && self.could_reach_quorum()
            && !self.faults.contains(&Fault::AskOnce);
        if local || (minority && !probe) {
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
                        version: e.version(),
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
                    .map(|e| e.to_entry()),
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
                probe,
            },
        );
        self.schedule_round(op, probe);
        self.ask_peers(op, &store, &key);
        self.progress(op);
        Ok(())
    }

    pub(crate) fn new_entry(&mut self, value: Option<Vec<u8>>, ttl: Option<Duration>) -> Entry {
        let ts = self.hlc.tick(self.wall_ms);
        let expires_at = ttl.map(|t| self.wall_ms.saturating_add(t.as_millis() as u64));
        Entry {
            version: Version { ts, node: self.me },
            value,
            expires_at,
        }
    }

    /// Schedules a new round's timers: its timeout, its first retry, and for a probe the end of
    /// its window.
    fn schedule_round(&mut self, op: OpId, probe: bool) {
        self.schedule(self.cfg.round_timeout, Due::Timeout(op));
        self.schedule(self.cfg.round_retry, Due::Retry(op));
        if probe {
            self.schedule(self.probe_window(), Due::Timeout(op));
        }
    }

    /// How long a round started without a quorum in the view may take to reach one in its first
    /// phase: two retries, so a peer that missed the first request is asked once more.
    pub(crate) fn probe_window(&self) -> Duration {
        (self.cfg.round_retry * 2).min(self.cfg.round_timeout)
    }

    /// Whether the reachable and the failed peers together hold a quorum of votes: if not, no
    /// round can succeed and a refusal needs no round.
    pub(crate) fn could_reach_quorum(&self) -> bool {
        let me = [self.me];
        self.is_quorum(self.peers.keys().chain(self.failed.keys()).chain(me.iter()))
    }

    /// Sends the first request of a round to every reachable peer, and for a probe to the
    /// failed ones too.
    pub(crate) fn ask_peers(&mut self, op: OpId, store: &str, key: &str) {
        let probe = self.ops.get(&op).is_some_and(|o| o.probe);
        let failed = self.failed.keys().filter(|_| probe);
        let peers: Vec<NodeId> = self.peers.keys().chain(failed).copied().collect();
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

    /// Asks again every peer, reachable or failed, that has not answered the operation's current
    /// phase: its request may have been lost (a cut connection drops what was queued on it), and
    /// a peer the view holds failed may be reachable again before SWIM says so. Every request is
    /// idempotent (a read, or a write of the same entry), so asking twice is harmless.
    pub(crate) fn ask_again(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        if self.faults.contains(&Fault::AskOnce) {
            return;
        }
        let (store, key) = (o.store.clone(), o.key.clone());
        let answered: BTreeSet<NodeId> = match &o.phase {
            Phase::Learn { answers } => answers.keys().copied().collect(),
            Phase::Gather { answers } => answers.keys().copied().collect(),
            Phase::Store { acks, .. } => acks.clone(),
            Phase::WriteBack { holders, .. } => holders.clone(),
        };
        let entry = match &o.phase {
            Phase::Store { entry, .. } | Phase::WriteBack { entry, .. } => Some(entry.clone()),
            _ => None,
        };
        let missing: Vec<NodeId> = self
            .peers
            .keys()
            .chain(self.failed.keys())
            .filter(|p| !answered.contains(p))
            .copied()
            .collect();
        for p in missing {
            match &entry {
                Some(e) => self.send_write(p, op, &store, &key, e),
                None => self.outbox.push_back((
                    p,
                    StoreMsg::ReadReq {
                        op,
                        store: store.clone(),
                        key: key.clone(),
                    },
                )),
            }
        }
    }

    pub(crate) fn push_to_peers(&mut self, op: OpId, store: &str, key: &str, entry: &Entry) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.send_write(p, op, store, key, entry);
        }
    }

    pub(crate) fn send_write(
        &mut self,
        to: NodeId,
        op: OpId,
        store: &str,
        key: &str,
        entry: &Entry,
    ) {
        let msg = StoreMsg::WriteReq {
            op,
            store: store.into(),
            key: key.into(),
            entry: entry.clone(),
        };
        self.outbox.push_back((to, msg));
    }

    /// Moves an operation forward after it learned something.
    pub(crate) fn progress(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let one = self.faults.contains(&Fault::QuorumOfOne);
        let write_quorum = |nodes: &mut dyn Iterator<Item = &NodeId>| {
            if one {
                self.votes(nodes) >= self.cfg.my_votes
            } else {
                self.is_quorum(nodes)
            }
        };
        match &o.phase {
            Phase::Learn { answers } => {
                if write_quorum(&mut answers.keys()) {
                    self.enter_store_phase(op);
                }
            }
            Phase::Store { entry, acks } => {
                if write_quorum(&mut acks.iter()) {
                    let version = entry.version;
                    self.finish(op, Ok(Reply::Written { version }));
                }
            }
            Phase::Gather { answers } => {
                if !self.is_quorum(answers.keys()) {
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
                if self.is_quorum(holders.iter()) {
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
                if self.is_quorum(holders.iter()) {
                    let entry = entry.clone();
                    self.answer_read(op, &entry);
                }
            }
        }
    }

    pub(crate) fn answer_read(&mut self, op: OpId, e: &Entry) {
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

    pub(crate) fn enter_store_phase(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let (highest, answered) = match &o.phase {
            Phase::Learn { answers } => (
                answers.values().max().copied().unwrap_or(Version::ZERO),
                answers.keys().copied().collect::<Vec<_>>(),
            ),
            _ => return,
        };
        // The reachable peers, and whoever answered the first phase (a peer the view holds
        // failed that answered is evidently reachable), and for a probe every failed peer.
        let mut targets: BTreeSet<NodeId> = self.peers.keys().copied().collect();
        targets.extend(answered.into_iter().filter(|n| *n != self.me));
        if o.probe {
            targets.extend(self.failed.keys().copied());
        }
        let (store, key) = (o.store.clone(), o.key.clone());
        let (value, ttl) = match &o.intent {
            Intent::Write { value, ttl } => (value.clone(), *ttl),
            Intent::Read => return,
        };
        self.hlc.observe(highest.ts);
        let entry = self.new_entry(value, ttl);
        self.apply_logged(&store, &key, entry.clone());
        for p in targets {
            self.send_write(p, op, &store, &key, &entry);
        }
        if let Some(o) = self.ops.get_mut(&op) {
            o.phase = Phase::Store {
                entry,
                acks: BTreeSet::new(),
            };
        }
        self.after_durable(&store, Held::OwnCopy { op });
    }

    pub(crate) fn finish(&mut self, op: OpId, reply: Result<Reply, StoreError>) {
        if self.ops.remove(&op).is_some() {
            self.timers
                .retain(|_, d| *d != Due::Timeout(op) && *d != Due::Retry(op));
            self.replies.push_back((op, reply));
        }
    }

    /// `node` holds the entry of operation `op` (a write's store phase or a read's write-back).
    pub(crate) fn count_copy(&mut self, op: OpId, node: NodeId) {
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

    pub(crate) fn votes_of(&self, n: NodeId) -> u32 {
        if n == self.me {
            self.cfg.my_votes
        } else {
            self.peers
                .get(&n)
                .or_else(|| self.failed.get(&n))
                .copied()
                .unwrap_or(1)
        }
    }

    pub(crate) fn votes<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> u32 {
        nodes.map(|n| self.votes_of(*n)).sum()
    }

    /// The datacenter of node `n` by the view ("" while unknown: it then counts for nothing in
    /// `datacenters` mode, which errs on the safe side).
    pub(crate) fn dc_of(&self, n: NodeId) -> &str {
        if n == self.me {
            &self.cfg.my_datacenter
        } else {
            self.dcs.get(&n).map_or("", String::as_str)
        }
    }

    /// Whether `nodes` (distinct) make a quorum by the configured rule.
    pub(crate) fn is_quorum<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> bool {
        if self.faults.contains(&Fault::CountVotesNotDatacenters) {
            // A count of votes out of all of them: the majority of the datacenters' votes.
            let total: u32 = self.cfg.datacenters.iter().flat_map(|t| t.values()).sum();
            return self.votes(nodes) * 2 > total.max(self.cfg.required_votes);
        }
        match &self.cfg.datacenters {
            None => self.votes(nodes) >= self.cfg.required_votes,
            Some(table) => membership::datacenters_met(
                table,
                nodes.map(|n| (self.dc_of(*n), self.votes_of(*n))),
            ),
        }
    }

    /// Each configured datacenter as this node's view reaches it (`datacenters` mode).
    pub(crate) fn datacenter_reach(&self) -> Vec<membership::DatacenterReach> {
        let Some(table) = &self.cfg.datacenters else {
            return Vec::new();
        };
        let rule =
            membership::QuorumRule::datacenters(table.clone()).expect("validated when configured");
        let me = [self.me];
        rule.datacenter_reach(
            self.peers
                .keys()
                .chain(me.iter())
                .map(|n| (self.dc_of(*n), self.votes_of(*n))),
        )
    }

    pub(crate) fn no_quorum(&self) -> StoreError {
        StoreError::NoQuorum {
            reachable_votes: self.view_reachable,
            required_votes: self.cfg.required_votes,
            datacenters: self.datacenter_reach(),
        }
    }
}
