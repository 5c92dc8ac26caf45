//! Locks as registers: the change functions that acquire, renew and release a lease, judged by
//! the grantors' own clocks.
//!
//! A lock's register holds its holder, its term and its lease. The **term is the fencing
//! token**: it grows by one on every change of holder, so a resource that remembers the highest
//! term it has seen can refuse a holder whose lease ran out. Expiry uses no wall clock: each
//! acceptor measures, on its own monotonic clock, how long ago it accepted a change of the lock,
//! and the proposer takes the smallest of those ages over its quorum of promises. The last
//! change chosen was accepted by a quorum, which meets that one, so the smallest age never
//! overstates the time since it (beyond the clock-rate error the holder allows for).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a lock's register holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// Who holds it (the owner named in the acquire), if anyone.
    pub holder: Option<String>,
    /// The fencing token of the current (or last) holder.
    pub term: u64,
    /// The lease the holder was granted, in milliseconds.
    pub ttl_ms: u64,
    /// How long after an expiry (not a release) nobody may take the lock, in milliseconds.
    pub lock_delay_ms: u64,
}

/// A change to a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    /// Take the lock for `owner` with a lease of `ttl`; a lock whose holder's lease ran out
    /// (by the grantors' clocks) is taken over after `lock_delay` more.
    Acquire {
        /// Who takes it.
        owner: String,
        /// The lease.
        ttl: Duration,
        /// The wait after an expiry.
        lock_delay: Duration,
    },
    /// Extend `owner`'s lease, granted at `term`.
    Renew {
        /// The holder.
        owner: String,
        /// The term it holds.
        term: u64,
    },
    /// Give the lock up.
    Release {
        /// The holder.
        owner: String,
        /// The term it holds.
        term: u64,
    },
    /// Read the lock.
    Inspect,
}

/// What a lock change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// `owner` holds the lock at `term` (acquired, taken over, or renewed).
    Holding {
        /// The fencing token.
        term: u64,
        /// The lease granted.
        ttl: Duration,
        /// How long the holder may still act, counted from when it asked (the proposer fills it
        /// in: the lease less the clock-rate bound, the margin and the time the rounds took).
        act_for: Duration,
    },
    /// Another owner holds it; its lease may run `remaining` more (plus the lock delay).
    Busy {
        /// The holder.
        holder: String,
        /// Its term.
        term: u64,
        /// How long, at most, before it can be taken over.
        remaining: Duration,
    },
    /// A renew or release by an owner that no longer holds the lock at that term: its lease ran
    /// out and someone else took over (or it released already). It must stop acting.
    Lost {
        /// The current holder, if any.
        holder: Option<String>,
        /// The current term.
        term: u64,
    },
    /// Released; the next holder gets `term + 1`.
    Released {
        /// The term released.
        term: u64,
    },
    /// The lock as it stands, and the smallest age of its last change over the quorum.
    State {
        /// The lock.
        state: LockState,
        /// How long ago its last change was accepted, by the grantors' clocks (`None`: never).
        age: Option<Duration>,
    },
}

impl LockOp {
    /// The lock after this change (`None`: unchanged) and what to tell the client; `age` is
    /// the smallest age of the lock's last change over the quorum of promises.
    pub fn apply(
        &self,
        cur: &LockState,
        age: Option<Duration>,
    ) -> (Option<LockState>, LockOutcome) {
        let expired = |s: &LockState| {
            let lease = Duration::from_millis(s.ttl_ms) + Duration::from_millis(s.lock_delay_ms);
            age.is_none_or(|a| a >= lease)
        };
        match self {
            LockOp::Inspect => (
                None,
                LockOutcome::State {
                    state: cur.clone(),
                    age,
                },
            ),
            LockOp::Acquire {
                owner,
                ttl,
                lock_delay,
            } => {
                let grant = |term: u64| LockState {
                    holder: Some(owner.clone()),
                    term,
                    ttl_ms: ttl.as_millis() as u64,
                    lock_delay_ms: lock_delay.as_millis() as u64,
                };
                match &cur.holder {
                    // The holder asks again: a renewal, same term.
                    Some(h) if h == owner => (
                        Some(grant(cur.term)),
                        LockOutcome::Holding {
                            term: cur.term,
                            ttl: *ttl,
                            act_for: *ttl,
                        },
                    ),
                    Some(h) if !expired(cur) => {
                        let lease = Duration::from_millis(cur.ttl_ms + cur.lock_delay_ms);
                        let remaining = lease.saturating_sub(age.unwrap_or_default());
                        (
                            None,
                            LockOutcome::Busy {
                                holder: h.clone(),
                                term: cur.term,
                                remaining,
                            },
                        )
                    }
                    // Free, released, or its holder's lease and lock delay have run out.
                    _ => (
                        Some(grant(cur.term + 1)),
                        LockOutcome::Holding {
                            term: cur.term + 1,
                            ttl: *ttl,
                            act_for: *ttl,
                        },
                    ),
                }
            }
            LockOp::Renew { owner, term } => {
                if cur.holder.as_ref() == Some(owner) && cur.term == *term {
                    let ttl = Duration::from_millis(cur.ttl_ms);
                    (
                        Some(cur.clone()),
                        LockOutcome::Holding {
                            term: *term,
                            ttl,
                            act_for: ttl,
                        },
                    )
                } else {
                    (None, lost(cur))
                }
            }
            LockOp::Release { owner, term } => {
                if cur.holder.as_ref() == Some(owner) && cur.term == *term {
                    let next = LockState {
                        holder: None,
                        lock_delay_ms: 0,
                        ..cur.clone()
                    };
                    (Some(next), LockOutcome::Released { term: *term })
                } else {
                    (None, lost(cur))
                }
            }
        }
    }
}

/// Shortest lease.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest lease.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lock delay.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(3600);
/// Longest owner name, in bytes.
pub const MAX_OWNER_BYTES: usize = 256;

/// Checks a lock change's arguments; the message says what is wrong.
pub fn check(op: &LockOp) -> Result<(), String> {
    let owner_ok = |o: &str| {
        if o.is_empty() || o.len() > MAX_OWNER_BYTES {
            Err(format!(
                "an owner is 1 to {MAX_OWNER_BYTES} bytes, got {}",
                o.len()
            ))
        } else {
            Ok(())
        }
    };
    match op {
        LockOp::Inspect => Ok(()),
        LockOp::Renew { owner, .. } | LockOp::Release { owner, .. } => owner_ok(owner),
        LockOp::Acquire {
            owner,
            ttl,
            lock_delay,
        } => {
            owner_ok(owner)?;
            if *ttl < MIN_TTL || *ttl > MAX_TTL {
                return Err(format!(
                    "ttl {ttl:?} is out of range: a lease is 1 s to 24 h"
                ));
            }
            if *lock_delay > MAX_LOCK_DELAY {
                return Err(format!(
                    "lock delay {lock_delay:?} is out of range: at most 1 h"
                ));
            }
            Ok(())
        }
    }
}

fn lost(cur: &LockState) -> LockOutcome {
    LockOutcome::Lost {
        holder: cur.holder.clone(),
        term: cur.term,
    }
}

/// How long a holder granted `ttl` may act, counted from when it asked: short of the lease by
/// the clock-rate bound `rho_ppm` (its clock may run slow and the grantors' fast) and by
/// `margin` (the time it needs to stop), so that its lease ends before any grantor thinks so.
pub fn acting_window(ttl: Duration, rho_ppm: u32, margin: Duration) -> Duration {
    let rho = u128::from(rho_ppm);
    let ns = ttl.as_nanos() * (1_000_000 - rho) / (1_000_000 + rho);
    Duration::from_nanos(ns as u64).saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn acquire(owner: &str) -> LockOp {
        LockOp::Acquire {
            owner: owner.into(),
            ttl: 10 * S,
            lock_delay: 2 * S,
        }
    }

    #[test]
    fn the_term_grows_by_one_on_every_change_of_holder_and_only_then() {
        let free = LockState::default();
        let (a, out) = acquire("a").apply(&free, None);
        let a = a.unwrap();
        assert_eq!(
            out,
            LockOutcome::Holding {
                term: 1,
                ttl: 10 * S,
                act_for: 10 * S
            }
        );
        // Held, lease running: busy, nothing changes.
        let (none, out) = acquire("b").apply(&a, Some(3 * S));
        assert!(none.is_none());
        assert_eq!(
            out,
            LockOutcome::Busy {
                holder: "a".into(),
                term: 1,
                remaining: 9 * S
            }
        );
        // Expired by the lease but within the lock delay: still busy.
        assert!(matches!(
            acquire("b").apply(&a, Some(11 * S)).1,
            LockOutcome::Busy { .. }
        ));
        // Past lease and delay: taken over with the next term.
        let (b, out) = acquire("b").apply(&a, Some(12 * S));
        assert_eq!(
            out,
            LockOutcome::Holding {
                term: 2,
                ttl: 10 * S,
                act_for: 10 * S
            }
        );
        let b = b.unwrap();
        // The old holder's renew and release are refused: it lost the lock.
        let renew = LockOp::Renew {
            owner: "a".into(),
            term: 1,
        };
        assert_eq!(
            renew.apply(&b, Some(S)),
            (
                None,
                LockOutcome::Lost {
                    holder: Some("b".into()),
                    term: 2
                }
            )
        );
        // The holder renews (same term) and releases; the next acquire gets term 3 at once.
        let (b2, out) = LockOp::Renew {
            owner: "b".into(),
            term: 2,
        }
        .apply(&b, Some(S));
        assert_eq!(
            out,
            LockOutcome::Holding {
                term: 2,
                ttl: 10 * S,
                act_for: 10 * S
            }
        );
        let (freed, out) = LockOp::Release {
            owner: "b".into(),
            term: 2,
        }
        .apply(&b2.unwrap(), Some(S));
        assert_eq!(out, LockOutcome::Released { term: 2 });
        let (c, out) = acquire("c").apply(&freed.unwrap(), Some(Duration::ZERO));
        assert_eq!(
            out,
            LockOutcome::Holding {
                term: 3,
                ttl: 10 * S,
                act_for: 10 * S
            }
        );
        assert_eq!(c.unwrap().holder.as_deref(), Some("c"));
    }

    #[test]
    fn the_holder_stops_before_the_grantors_let_anyone_else_in() {
        // 1 % clock-rate bound, 200 ms margin: a 10 s lease is acted on for at most 9.602 s.
        let w = acting_window(10 * S, 10_000, Duration::from_millis(200));
        assert_eq!(
            w,
            Duration::from_nanos(9_801_980_198) - Duration::from_millis(200)
        );
        // Even with the holder's clock 1 % slow and a grantor's 1 % fast, the holder's window
        // in true time ends before the grantor's lease does.
        let holder_true = w.as_secs_f64() / 0.99;
        let grantor_true = 10.0 / 1.01;
        assert!(
            holder_true < grantor_true,
            "{holder_true} >= {grantor_true}"
        );
        assert_eq!(acting_window(S, 10_000, 2 * S), Duration::ZERO);
    }
}
