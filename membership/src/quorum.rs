//! The quorum rule: how many votes a side needs, fixed by configuration, never by the current view.
//!
//! Deriving the quorum from the members a node currently sees would let both sides of a split
//! believe they are the majority. The rule is therefore a fixed number of votes out of a fixed
//! total, and a node only *reports* whether the votes it can reach meet it. Safety of writes comes
//! from the store's quorum rounds; this view drives reporting and fail-fast.

use serde::Serialize;
use std::time::Duration;

/// A fixed quorum: `required` votes out of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuorumRule {
    total: u32,
    required: u32,
}

/// Why a quorum rule is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Total votes must be at least one.
    #[error("the cluster must have at least one vote (got total_votes = 0)")]
    NoVotes,
    /// The explicit quorum is zero or more than the total.
    #[error("quorum must be between 1 and the total votes ({total}), got {required}")]
    OutOfRange {
        /// Configured quorum.
        required: u32,
        /// Total votes.
        total: u32,
    },
}

impl QuorumRule {
    /// A strict majority of `total` votes.
    pub fn majority(total: u32) -> Result<Self, QuorumError> {
        if total == 0 {
            return Err(QuorumError::NoVotes);
        }
        Ok(QuorumRule {
            total,
            required: total / 2 + 1,
        })
    }

    /// An explicit quorum. It may be below a majority (the operator's choice, and a warning in the
    /// agent's log: two sides could then both hold it) but never zero or above the total.
    pub fn explicit(total: u32, required: u32) -> Result<Self, QuorumError> {
        if total == 0 {
            return Err(QuorumError::NoVotes);
        }
        if required == 0 || required > total {
            return Err(QuorumError::OutOfRange { required, total });
        }
        Ok(QuorumRule { total, required })
    }

    /// Total votes in the cluster.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Votes a side must reach.
    pub fn required(&self) -> u32 {
        self.required
    }

    /// True when two disjoint sides could both meet the rule.
    pub fn allows_split_brain(&self) -> bool {
        self.required * 2 <= self.total
    }

    /// Whether `reachable` votes meet the rule.
    pub fn is_met(&self, reachable: u32) -> bool {
        reachable >= self.required
    }
}

/// What a node reports about its quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuorumStatus {
    /// Whether the votes this node can reach meet the rule.
    pub has_quorum: bool,
    /// Votes of this node plus every member it currently sees alive or suspect.
    pub reachable_votes: u32,
    /// Votes the rule requires.
    pub required_votes: u32,
    /// Total votes in the cluster.
    pub total_votes: u32,
    /// Core time at which `has_quorum` took its current value.
    pub since: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_is_strict() {
        assert_eq!(QuorumRule::majority(1).unwrap().required(), 1);
        assert_eq!(QuorumRule::majority(4).unwrap().required(), 3);
        assert_eq!(QuorumRule::majority(5).unwrap().required(), 3);
        assert!(!QuorumRule::majority(4).unwrap().allows_split_brain());
        assert_eq!(QuorumRule::majority(0), Err(QuorumError::NoVotes));
    }

    #[test]
    fn explicit_bounds() {
        assert!(QuorumRule::explicit(5, 0).is_err());
        assert!(QuorumRule::explicit(5, 6).is_err());
        assert!(QuorumRule::explicit(4, 2).unwrap().allows_split_brain());
        let r = QuorumRule::explicit(5, 4).unwrap();
        assert!(!r.is_met(3));
        assert!(r.is_met(4));
    }
}
