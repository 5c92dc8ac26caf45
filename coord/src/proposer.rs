//! The proposer: one proposal per request. Phase 1 gathers promises from a quorum of votes;
//! the change is applied to the register with the highest accepted ballot among them; phase 2
//! has a quorum accept the result. A proposal that meets a higher ballot in phase 1 tries again
//! with a higher one after a random backoff (dueling proposers); one that meets it in phase 2
//! stops with `indeterminate`, because its accept may already be chosen and applying the change
//! again would apply it twice. A read (of a value or of a lock's state) is the exception: its
//! accept writes back the register it read, so it tries again like a phase-1 loss (an agent asking for the leader or a lock's holder
//! while the holder renews got `indeterminate` for a question that changes nothing).

use crate::ballot::Ballot;
use crate::core::{CoordCore, Due, Request};
use crate::error::CoordError;
use crate::fault::Fault;
use crate::lock::{LockOutcome, acting_window};
use crate::msg::{CoordMsg, OpId};
use crate::register::{Change, Outcome, Register};
use membership::NodeId;
use rand::RngExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where a proposal stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for promises.
    Prepare {
        promises: BTreeMap<NodeId, (Ballot, Register, Option<Duration>)>,
    },
    /// Waiting for accepts of `register`; `outcome` goes to the client once a quorum has it.
    Accept {
        outcome: Outcome,
        acks: BTreeSet<NodeId>,
        rejects: BTreeSet<NodeId>,
    },
    /// Lost to a higher ballot in phase 1; a retry is scheduled.
    Backoff,
}

/// One request's proposal.
#[derive(Debug)]
pub(crate) struct Proposal {
    key: String,
    change: Change,
    ballot: Ballot,
    phase: Phase,
    /// An accept went out: the change may be chosen, so the proposal never starts again.
    accept_sent: bool,
    /// A higher ballot was met at least once.
    contended: bool,
    attempts: u32,
    deadline: Duration,
    /// When the request arrived (a lock holder's acting window counts from here).
    started: Duration,
}

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

impl CoordCore {
    pub(crate) fn propose(&mut self, op: OpId, req: Request) {
        let deadline = self.now + self.cfg.round_timeout;
        self.proposals.insert(
            op,
            Proposal {
                key: req.key,
                change: req.change,
                ballot: Ballot::ZERO,
                phase: Phase::Backoff,
                accept_sent: false,
                contended: false,
                attempts: 0,
                deadline,
                started: self.now,
            },
        );
        self.schedule(self.cfg.round_timeout, Due::Deadline(op));
        self.attempt(op);
    }

    /// A ballot above every one this node has used or seen.
    fn next_ballot(&mut self) -> Ballot {
        self.counter += 1;
        let generation = if self.faults.contains(&Fault::ReuseBallots) {
            0
        } else {
            self.generation
        };
        Ballot {
            counter: self.counter,
            generation,
            node: self.me,
        }
    }

    /// Phase 1 with a fresh ballot.
    fn attempt(&mut self, op: OpId) {
        let ballot = self.next_ballot();
        let Some(p) = self.proposals.get_mut(&op) else {
            return;
        };
        p.ballot = ballot;
        p.attempts += 1;
        p.phase = Phase::Prepare {
            promises: BTreeMap::new(),
        };
        let key = p.key.clone();
        self.broadcast(CoordMsg::Prepare { op, key, ballot });
    }

    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        op: OpId,
        ballot: Ballot,
        accepted: Ballot,
        register: Register,
        age: Option<Duration>,
    ) {
        let Some(p) = self.proposals.get_mut(&op).filter(|p| p.ballot == ballot) else {
            return;
        };
        let Phase::Prepare { promises } = &mut p.phase else {
            return;
        };
        promises.insert(from, (accepted, register, age));
        let voters: Vec<NodeId> = promises.keys().copied().collect();
        if !self.is_quorum(voters.iter()) {
            return;
        }
        let p = self.proposals.get_mut(&op).expect("checked");
        let Phase::Prepare { promises } = &p.phase else {
            return;
        };
        // The register accepted at the highest ballot is the current one: any value chosen
        // before was accepted by a quorum, which meets this one.
        let current = promises
            .values()
            .max_by_key(|(b, _, _)| *b)
            .map(|(_, r, _)| r.clone())
            .unwrap_or_default();
        // The youngest last change over the quorum: it never overstates the time since the last
        // change chosen (a quorum accepted that one, and it meets this quorum).
        let age = promises.values().filter_map(|(_, _, a)| *a).min();
        let (register, mut outcome) = p.change.apply(&current, age);
        if let Outcome::Lock(LockOutcome::Holding { ttl, act_for, .. }) = &mut outcome {
            let window = if self.faults.contains(&Fault::FullLeaseWindow) {
                *ttl
            } else {
                acting_window(*ttl, self.cfg.lease_rho_ppm, self.cfg.lease_margin)
            };
            *act_for = window.saturating_sub(self.now.saturating_sub(p.started));
        }
        p.phase = Phase::Accept {
            outcome,
            acks: BTreeSet::new(),
            rejects: BTreeSet::new(),
        };
        p.accept_sent = true;
        let key = p.key.clone();
        self.broadcast(CoordMsg::Accept {
            op,
            key,
            ballot,
            register,
        });
    }

    pub(crate) fn on_accepted(&mut self, from: NodeId, op: OpId, ballot: Ballot) {
        let Some(p) = self.proposals.get_mut(&op).filter(|p| p.ballot == ballot) else {
            return;
        };
        let Phase::Accept { acks, .. } = &mut p.phase else {
            return;
        };
        acks.insert(from);
        let voters: Vec<NodeId> = acks.iter().copied().collect();
        if !self.is_quorum(voters.iter()) {
            return;
        }
        let p = self.proposals.remove(&op).expect("checked");
        self.unschedule(Due::Deadline(op));
        if let Phase::Accept { outcome, .. } = p.phase {
            self.replies.push_back((op, Ok(outcome)));
        }
    }

    pub(crate) fn on_reject(&mut self, from: NodeId, op: OpId, ballot: Ballot, seen: Ballot) {
        self.counter = self.counter.max(seen.counter);
        let mut reachable: Vec<NodeId> = self.peers.keys().copied().collect();
        reachable.push(self.me);
        let Some(p) = self.proposals.get_mut(&op).filter(|p| p.ballot == ballot) else {
            return;
        };
        let read = p.change.is_read();
        if let Phase::Accept { rejects, .. } = &mut p.phase {
            // The others may still make a quorum; only when they cannot is the outcome known
            // to be out of reach (but not known to have failed: a quorum may yet accept a
            // later proposal's read of it).
            rejects.insert(from);
            let refused: BTreeSet<NodeId> = rejects.clone();
            if self.is_quorum(reachable.iter().filter(|n| !refused.contains(n))) {
                return;
            }
            if !read {
                self.finish(op, Err(CoordError::Indeterminate));
                return;
            }
        }
        let Some(p) = self.proposals.get_mut(&op) else {
            return;
        };
        if matches!(p.phase, Phase::Backoff) {
            return;
        }
        p.contended = true;
        p.phase = Phase::Backoff;
        // Randomised, growing backoff: two proposers that keep preempting each other soon
        // stop colliding.
        let cap = (MAX_BACKOFF.as_micros() as u64).min(1000 << p.attempts.min(10));
        let wait = Duration::from_micros(self.rng.random_range(0..=cap));
        self.schedule(wait, Due::Retry(op));
    }

    pub(crate) fn retry(&mut self, op: OpId) {
        if self
            .proposals
            .get(&op)
            .is_some_and(|p| matches!(p.phase, Phase::Backoff))
        {
            self.attempt(op);
        }
    }

    /// The deadline passed: nothing applied unless an accept went out.
    pub(crate) fn expire(&mut self, op: OpId) {
        let Some(p) = self.proposals.get(&op) else {
            return;
        };
        if p.deadline > self.now {
            return;
        }
        let err = if p.accept_sent && !p.change.is_read() {
            CoordError::Indeterminate
        } else if p.contended {
            CoordError::Contended
        } else {
            self.no_quorum()
        };
        self.finish(op, Err(err));
    }

    fn finish(&mut self, op: OpId, reply: Result<Outcome, CoordError>) {
        if self.proposals.remove(&op).is_some() {
            self.unschedule(Due::Deadline(op));
            self.unschedule(Due::Retry(op));
            self.replies.push_back((op, reply));
        }
    }
}
