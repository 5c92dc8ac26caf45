//! Lock clients: each runs beside one node and contends for one lock. It acquires, renews a few
//! times, releases, and between grants acts as holder only within the window each grant gives it
//! (`act_for`, counted on its node's clock from when it asked). Every grant goes into the history
//! with the true-time interval it acted in, for the lock checker.

use super::Sim;
use super::queue::What;
use crate::history::{Grant, StrongOp, StrongOutcome};
use coord::{Change, LockOp, LockOutcome, Outcome};
use rand::RngExt;
use std::time::Duration;

/// The one lock every lock client contends for.
pub const LOCK_KEY: &str = "#lock/sim";
/// Its lease.
pub const LOCK_TTL: Duration = Duration::from_secs(2);
/// No lock delay: takeovers come as early as the protocol allows, which makes the checker sharp.
pub const LOCK_DELAY: Duration = Duration::ZERO;
/// Renewals before a holder releases.
const RENEWALS: u32 = 3;

/// A lock client's state.
#[derive(Debug, Clone)]
pub(super) struct LockRole {
    node: usize,
    owner: String,
    /// The term held and when (global time) the client must stop acting.
    held: Option<(u64, Duration)>,
    renewals: u32,
}

impl LockRole {
    pub(super) fn new(client: usize, node: usize) -> Self {
        LockRole {
            node,
            owner: format!("owner{client}"),
            held: None,
            renewals: 0,
        }
    }
}

impl Sim {
    /// The lock client's next step: acquire when it holds nothing, renew a few times, release.
    pub(super) fn lock_call(&mut self, client: usize) {
        let now = self.now;
        let Some(role) = self.clients[client].lock.as_mut() else {
            return;
        };
        if role.held.is_some_and(|(_, until)| now >= until) {
            role.held = None; // its window ran out: it stopped acting
        }
        // Half the time a holder done with its renewals just stops renewing (as a hung one
        // would) and lets the lease run out, so that takeovers by expiry happen too.
        if let Some((_, until)) = role.held
            && role.renewals >= RENEWALS
            && self.rng.random_range(0..2) == 0
        {
            // It comes back (as a restarted application would) once others had their chance.
            role.renewals = 0;
            self.push(until + 2 * LOCK_TTL, What::Client { client });
            return;
        }
        let op = match role.held {
            None => LockOp::Acquire {
                owner: role.owner.clone(),
                ttl: LOCK_TTL,
                lock_delay: LOCK_DELAY,
            },
            Some((term, _)) if role.renewals < RENEWALS => LockOp::Renew {
                owner: role.owner.clone(),
                term,
            },
            Some((term, _)) => {
                // It stops acting before it asks to release.
                role.held = None;
                let owner = role.owner.clone();
                for g in self
                    .history
                    .grants
                    .iter_mut()
                    .filter(|g| g.owner == owner && g.term == term)
                {
                    g.until = g.until.min(now);
                }
                LockOp::Release { owner, term }
            }
        };
        let node = role.node;
        let op_index = self.history.strong.len();
        self.history.strong.push(StrongOp {
            client,
            node,
            key: LOCK_KEY.to_string(),
            change: Change::Lock(op),
            invoked: now,
            completed: None,
            outcome: StrongOutcome::Pending,
        });
        self.clients[client].pending = Some(super::clients::Pending::Strong(op_index));
        let incarnation = self.slots[node].incarnation;
        self.push(
            now,
            What::StrongRequest {
                to: node,
                incarnation,
                op: op_index,
            },
        );
    }

    /// A lock client got its answer: note a grant, and plan the next step.
    pub(super) fn lock_answer(&mut self, client: usize, op: usize) {
        let now = self.now;
        let rec = &self.history.strong[op];
        let invoked = rec.invoked;
        let Some(role) = self.clients[client].lock.as_mut() else {
            return;
        };
        let node = role.node;
        let skew = self.slots[node].skew;
        let mut next = Duration::from_millis(100);
        // A failed or unknown renew changes nothing: it may still act until its deadline.
        if let StrongOutcome::Done(Outcome::Lock(l)) = &rec.outcome {
            match l {
                LockOutcome::Holding { term, act_for, .. } => {
                    // Acts until act_for after it asked, by its node's clock.
                    let until = skew.global(skew.local(invoked) + *act_for);
                    let renewing = matches!(role.held, Some((t, _)) if t == *term);
                    role.renewals = if renewing { role.renewals + 1 } else { 0 };
                    role.held = Some((*term, until));
                    let owner = role.owner.clone();
                    // It checks its deadline on time but may act up to the stall later.
                    let stall = self
                        .workload
                        .as_ref()
                        .map_or(Duration::ZERO, |w| w.cfg.holder_stall);
                    if until > now {
                        self.history.grants.push(Grant {
                            owner,
                            node,
                            term: *term,
                            invoked,
                            from: now,
                            until: until + stall,
                        });
                    }
                    next = LOCK_TTL / 4;
                }
                LockOutcome::Busy { remaining, .. } => {
                    next =
                        (*remaining).clamp(Duration::from_millis(20), Duration::from_millis(300));
                }
                LockOutcome::Lost { .. } | LockOutcome::Released { .. } => {
                    role.held = None;
                    next = Duration::from_millis(50);
                }
                LockOutcome::State { .. } => {}
            }
        }
        let jitter = Duration::from_micros(self.rng.random_range(0..20_000));
        let at = now + next + jitter;
        self.clients[client].pending = None;
        self.push(at, What::Client { client });
    }
}
