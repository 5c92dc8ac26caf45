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

    pub(crate) fn new_entry(&mut self, value: Option<Vec<u8>>, ttl: Option<Duration>) -> Entry {
        let ts = self.hlc.tick(self.wall_ms);
        let expires_at = ttl.map(|t| self.wall_ms.saturating_add(t.as_millis() as u64));
        Entry {
            version: Version { ts, node: self.me },
            value,
            expires_at,
        }
    }

    pub(crate) fn ask_peers(&mut self, op: OpId, store: &str, key: &str) {
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

    pub(crate) fn finish(&mut self, op: OpId, reply: Result<Reply, StoreError>) {
        if self.ops.remove(&op).is_some() {
            self.timers.retain(|_, d| *d != Due::Timeout(op));
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
            self.peers.get(&n).copied().unwrap_or(1)
        }
    }

    pub(crate) fn votes<'a>(&self, nodes: impl Iterator<Item = &'a NodeId>) -> u32 {
        nodes.map(|n| self.votes_of(*n)).sum()
    }

    pub(crate) fn no_quorum(&self) -> StoreError {
        StoreError::NoQuorum {
            reachable_votes: self.view_reachable,
            required_votes: self.cfg.required_votes,
        }
    }
}
