//! Ballots: totally ordered, and never used twice by two proposals.

use membership::NodeId;
use serde::{Deserialize, Serialize};

/// A ballot: a counter, then the proposer's generation, then its id. Two proposers never share a
/// ballot (their ids differ), and a proposer never reuses one after a restart: its generation
/// grows with every start and is persisted before it sends anything, so a counter that starts
/// again from zero still makes ballots it never made before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every attempt; a proposer jumps past every counter it has seen.
    pub counter: u64,
    /// The proposer's generation when it made the ballot.
    pub generation: u64,
    /// The proposer.
    pub node: NodeId,
}

impl Ballot {
    /// Below every real ballot: "nothing promised", "nothing accepted".
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        generation: 0,
        node: NodeId(0),
    };
}

impl Default for Ballot {
    fn default() -> Self {
        Ballot::ZERO
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.counter, self.generation, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_orders_first_then_generation_then_node() {
        let b = |c, g, n| Ballot {
            counter: c,
            generation: g,
            node: NodeId(n),
        };
        assert!(b(2, 1, 1) > b(1, 9, 9));
        assert!(b(1, 2, 1) > b(1, 1, 9));
        assert!(b(1, 1, 2) > b(1, 1, 1));
        assert!(b(1, 1, 1) > Ballot::ZERO);
        // A restarted node (generation 2) counting from 1 again never makes a ballot of its
        // first run (generation 1).
        assert_ne!(b(1, 2, 7), b(1, 1, 7));
    }
}
