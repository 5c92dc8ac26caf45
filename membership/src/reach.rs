//! The votes this node reaches, kept up to date from member changes.
//!
//! Recounting every member after each input costs O(n) per datagram, and a join of n nodes
//! delivers n member changes and n metadata records to each node: O(n^2) per node, which made a
//! simulated 1,000-node cluster crawl. The tally changes only when a member comes up, goes down,
//! is renamed, or its votes change, so it is kept incrementally; the core recounts from foca now
//! and then and rebuilds the tally if it ever drifted.

use crate::identity::{NodeId, Peer};
use std::collections::{BTreeSet, HashMap};

/// Reachable votes of other members (the node's own votes are not included).
#[derive(Debug, Default)]
pub(crate) struct Reach {
    /// Per node: the active generations (foca may briefly list two) and the votes counted.
    active: HashMap<NodeId, (BTreeSet<u64>, u32)>,
    total: u32,
}

impl Reach {
    /// `p` is active (alive or suspect) with `votes`.
    pub(crate) fn up(&mut self, p: Peer, votes: u32) {
        let e = self
            .active
            .entry(p.id)
            .or_insert_with(|| (BTreeSet::new(), votes));
        if e.0.is_empty() {
            self.total += e.1;
        }
        e.0.insert(p.generation);
    }

    /// `p` is down.
    pub(crate) fn down(&mut self, p: Peer) {
        if let Some(e) = self.active.get_mut(&p.id) {
            e.0.remove(&p.generation);
            if e.0.is_empty() {
                self.total -= e.1;
                self.active.remove(&p.id);
            }
        }
    }

    /// Node `id` now has `votes` (its metadata changed).
    pub(crate) fn set_votes(&mut self, id: NodeId, votes: u32) {
        if let Some(e) = self.active.get_mut(&id) {
            self.total = self.total - e.1 + votes;
            e.1 = votes;
        }
    }

    /// Sum of the votes of active members.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Starts over from a full list of active members and their votes.
    pub(crate) fn rebuild(&mut self, members: impl Iterator<Item = (Peer, u32)>) {
        *self = Reach::default();
        for (p, votes) in members {
            self.up(p, votes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer(id: u64, generation: u64) -> Peer {
        Peer {
            addr: SocketAddr::from(([10, 0, 0, id as u8], 7946)),
            id: NodeId(id),
            generation,
        }
    }

    #[test]
    fn tally_follows_ups_downs_renames_and_vote_changes() {
        let mut r = Reach::default();
        r.up(peer(1, 1), 1);
        r.up(peer(2, 1), 3);
        assert_eq!(r.total(), 4);
        // A restart shows both generations for a moment: the node counts once.
        r.up(peer(2, 2), 3);
        assert_eq!(r.total(), 4);
        r.down(peer(2, 1));
        assert_eq!(r.total(), 4);
        r.set_votes(NodeId(2), 5);
        assert_eq!(r.total(), 6);
        r.down(peer(2, 2));
        assert_eq!(r.total(), 1);
        r.down(peer(9, 1));
        r.set_votes(NodeId(9), 7);
        assert_eq!(r.total(), 1);
        r.rebuild([(peer(3, 1), 2), (peer(4, 1), 2)].into_iter());
        assert_eq!(r.total(), 4);
    }
}
