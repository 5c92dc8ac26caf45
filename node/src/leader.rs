//! The cluster leader: a node that is a candidate campaigns for the lock `#lock/leader` on its own
//! behalf (it is the node's own job, not an application's), renews it a third of the way through
//! each lease, and leads only within the acting window of its last grant. A node that cannot
//! reach a quorum cannot renew, so its window runs out and it stops leading before the majority's
//! grantors let a new leader in.

use coord::{Change, CoordCore, LockOp, LockOutcome, OpId, Outcome, Request};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

/// The lock the cluster leader holds.
pub const LEADER_LOCK: &str = "#lock/leader";

/// How a candidate campaigns.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The leader's lease.
    pub ttl: Duration,
    /// How long after an expiry nobody may take over.
    pub lock_delay: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            ttl: Duration::from_secs(10),
            lock_delay: Duration::from_secs(2),
        }
    }
}

/// Where this node's leadership stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The fencing token of its term as leader.
    pub token: u64,
    /// Until when (core time) it may act as leader.
    pub until: Duration,
}

/// A candidate's campaign.
#[derive(Debug)]
pub(crate) struct Campaign {
    cfg: LeaderConfig,
    owner: String,
    /// The request in flight and when it was sent.
    asking: Option<(OpId, Duration)>,
    held: Option<Leadership>,
    next_at: Duration,
    /// Spreads the candidates' requests: candidates that started together (after a heal, or a
    /// cluster start) would otherwise keep asking in step and preempt each other's rounds
    /// (netsim: six candidates after an even split went 4.5 s without a leader).
    rng: Xoshiro256PlusPlus,
}

impl Campaign {
    pub(crate) fn new(cfg: LeaderConfig, owner: String, now: Duration, seed: u64) -> Self {
        Campaign {
            cfg,
            owner,
            asking: None,
            held: None,
            next_at: now,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x1ead_e500),
        }
    }

    /// `d` scaled by a random factor in [0.5, 1.5).
    fn jitter(&mut self, d: Duration) -> Duration {
        d * self.rng.random_range(500u32..1500) / 1000
    }

    /// This node's leadership at `now`, if it leads.
    pub(crate) fn leading(&self, now: Duration) -> Option<Leadership> {
        self.held.filter(|h| now < h.until)
    }

    /// When the campaign has something to do: ask again, or stop leading.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let ask = self.asking.is_none().then_some(self.next_at);
        let stop = self.held.map(|h| h.until);
        [ask, stop].into_iter().flatten().min()
    }

    /// Asks for (or renews) the lock when it is time.
    pub(crate) fn tick(&mut self, coord: &mut CoordCore, now: Duration) {
        if self.held.is_some_and(|h| now >= h.until) {
            self.held = None;
        }
        if self.asking.is_some() || now < self.next_at {
            return;
        }
        let op = match self.held {
            Some(h) => LockOp::Renew {
                owner: self.owner.clone(),
                term: h.token,
            },
            None => LockOp::Acquire {
                owner: self.owner.clone(),
                ttl: self.cfg.ttl,
                lock_delay: self.cfg.lock_delay,
            },
        };
        let req = Request {
            key: LEADER_LOCK.to_string(),
            change: Change::Lock(op),
        };
        let id = coord.request(now, req);
        self.asking = Some((id, now));
    }

    /// True when `op` is the campaign's request (its answer is then the campaign's).
    pub(crate) fn owns(&self, op: OpId) -> bool {
        self.asking.is_some_and(|(id, _)| id == op)
    }

    /// The answer to the campaign's request.
    pub(crate) fn answered(&mut self, result: Result<Outcome, coord::CoordError>, now: Duration) {
        let Some((_, sent)) = self.asking.take() else {
            return;
        };
        self.next_at = now + self.jitter(Duration::from_millis(500));
        match result {
            Ok(Outcome::Lock(LockOutcome::Holding { term, act_for, .. })) => {
                self.held = Some(Leadership {
                    token: term,
                    until: sent + act_for,
                });
                // Renew a third of the way through (never later than half-way).
                let third = self.cfg.ttl / 3;
                self.next_at = sent + self.jitter(third).min(self.cfg.ttl / 2);
            }
            Ok(Outcome::Lock(LockOutcome::Busy { remaining, .. })) => {
                self.held = None;
                self.next_at =
                    now + remaining.clamp(Duration::from_millis(50), Duration::from_secs(1));
            }
            Ok(Outcome::Lock(LockOutcome::Lost { .. })) => self.held = None,
            // No quorum, a timeout: the lease runs on (until its window ends); try again soon.
            _ => {}
        }
    }
}
