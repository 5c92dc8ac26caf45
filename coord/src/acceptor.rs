//! The acceptor's rules for one key: promise only above every ballot promised or accepted, accept
//! only at or above the promise. The caller persists the state before it answers.

use crate::ballot::Ballot;
use crate::register::Register;
use serde::{Deserialize, Serialize};

/// What an acceptor holds for one key; durable before any answer that depends on it leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The ballot of the register accepted last.
    pub accepted: Ballot,
    /// The register accepted last.
    pub register: Register,
}

/// An acceptor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Phase 1 granted: what was accepted before, at which ballot.
    Promise {
        /// The ballot of `register` (zero: nothing accepted yet).
        accepted: Ballot,
        /// The register accepted last.
        register: Register,
    },
    /// Phase 2 granted.
    Accepted,
    /// Refused: a higher ballot was promised or accepted; the proposer jumps past it.
    Reject {
        /// The highest ballot this acceptor has seen.
        seen: Ballot,
    },
}

impl AcceptorState {
    /// The highest ballot seen (promised or accepted).
    pub fn seen(&self) -> Ballot {
        self.promised.max(self.accepted)
    }

    /// Phase 1: promises `b` if it is above everything seen. True in the second place when the
    /// state changed (and must be persisted before the answer goes out). With `forget` (a
    /// deliberate defect) the promise is answered but not kept.
    pub fn prepare(&mut self, b: Ballot, forget: bool) -> (Vote, bool) {
        if b <= self.seen() {
            return (Vote::Reject { seen: self.seen() }, false);
        }
        if !forget {
            self.promised = b;
        }
        let vote = Vote::Promise {
            accepted: self.accepted,
            register: self.register.clone(),
        };
        (vote, !forget)
    }

    /// Phase 2: accepts `register` at `b` unless a higher ballot was promised or accepted. True in
    /// the second place when the state changed.
    pub fn accept(&mut self, b: Ballot, register: Register) -> (Vote, bool) {
        if b < self.seen() {
            return (Vote::Reject { seen: self.seen() }, false);
        }
        let changed = self.accepted != b || self.register != register || self.promised != b;
        self.promised = b;
        self.accepted = b;
        self.register = register;
        (Vote::Accepted, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::NodeId;

    fn b(counter: u64, node: u64) -> Ballot {
        Ballot {
            counter,
            generation: 1,
            node: NodeId(node),
        }
    }

    fn reg(version: u64) -> Register {
        Register {
            version,
            value: Some(vec![version as u8]),
            ..Register::default()
        }
    }

    #[test]
    fn a_lower_or_equal_ballot_is_refused_with_the_higher_one() {
        let mut a = AcceptorState::default();
        assert!(matches!(
            a.prepare(b(5, 1), false),
            (Vote::Promise { .. }, true)
        ));
        assert_eq!(
            a.prepare(b(4, 9), false),
            (Vote::Reject { seen: b(5, 1) }, false)
        );
        assert_eq!(
            a.prepare(b(5, 1), false),
            (Vote::Reject { seen: b(5, 1) }, false)
        );
        assert_eq!(
            a.accept(b(4, 9), reg(1)),
            (Vote::Reject { seen: b(5, 1) }, false)
        );
        assert_eq!(a.accept(b(5, 1), reg(1)), (Vote::Accepted, true));
        assert_eq!(
            a.accept(b(5, 1), reg(1)),
            (Vote::Accepted, false),
            "a duplicate"
        );
        // A later proposer learns what was accepted, and at which ballot.
        assert_eq!(
            a.prepare(b(6, 2), false),
            (
                Vote::Promise {
                    accepted: b(5, 1),
                    register: reg(1)
                },
                true
            )
        );
        // The older proposer's late accept is refused.
        assert_eq!(
            a.accept(b(5, 1), reg(9)),
            (Vote::Reject { seen: b(6, 2) }, false)
        );
        assert_eq!(a.register, reg(1));
    }

    #[test]
    fn a_forgotten_promise_lets_a_lower_ballot_through() {
        // The defect the simulator's checkers must catch: answer the promise without keeping it.
        let mut a = AcceptorState::default();
        assert!(matches!(
            a.prepare(b(5, 1), true),
            (Vote::Promise { .. }, false)
        ));
        assert_eq!(a.accept(b(4, 9), reg(1)), (Vote::Accepted, true));
    }
}
