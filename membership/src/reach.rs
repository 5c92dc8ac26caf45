//! The votes this node reaches, kept up to date from member changes.
//!
//! Recounting every member after each input costs O(n) per datagram, and a join of n nodes
//! delivers n member changes and n metadata records to each node: O(n^2) per node, which made a
//! simulated 1,000-node cluster crawl. The tally changes only when a member comes up, goes down,
//! is renamed, or its votes change, so it is kept incrementally; the core recounts from foca now
//! and then and rebuilds the tally if it ever drifted.

use crate::identity::{NodeId, Peer};
use std::collections::{BTreeMap, HashMap};

/// A member's votes and datacenter, as its metadata says (1 and "" until its record arrives).
pub(crate) type Voter = (u32, String);

/// Reachable votes of other members (the node's own votes are not included), in all and per
/// datacenter.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    /// Per node: the active generations (foca may briefly list two) and the vote counted. A
    /// `Vec`: it holds one generation nearly always, and a set cost a tree node per member on
    /// every node (about 100 bytes each).
    active: HashMap<NodeId, (Vec<u64>, Voter)>,
    total: u32,
    by_dc: BTreeMap<String, u32>,
}

impl Reach {
    fn add(&mut self, v: &Voter) {
        self.total += v.0;
        *self.by_dc.entry(v.1.clone()).or_default() += v.0;
    }

    fn sub(&mut self, v: &Voter) {
        self.total -= v.0;
        if let Some(n) = self.by_dc.get_mut(&v.1) {
            *n -= v.0;
            if *n == 0 {
                self.by_dc.remove(&v.1);
            }
        }
    }

    /// `p` is active (alive or suspect) with `voter`.
    pub(crate) fn up(&mut self, p: Peer, voter: Voter) {
        let e = self
            .active
            .entry(p.id)
            .or_insert_with(|| (Vec::new(), voter));
        let first = e.0.is_empty();
        if !e.0.contains(&p.generation) {
            e.0.push(p.generation);
        }
        if first {
            let v = e.1.clone();
            self.add(&v);
        }
    }

    /// `p` is down.
    pub(crate) fn down(&mut self, p: Peer) {
        if let Some(e) = self.active.get_mut(&p.id) {
            e.0.retain(|g| *g != p.generation);
            if e.0.is_empty() {
                let (_, v) = self.active.remove(&p.id).expect("present");
                self.sub(&v);
            }
        }
    }

    /// Node `id` now has `voter` (its metadata changed).
    pub(crate) fn set_voter(&mut self, id: NodeId, voter: Voter) {
        if let Some(e) = self.active.get_mut(&id) {
            let old = std::mem::replace(&mut e.1, voter.clone());
            self.sub(&old);
            self.add(&voter);
        }
    }

    /// Sum of the votes of active members.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Votes of active members per datacenter.
    pub(crate) fn by_dc(&self) -> &BTreeMap<String, u32> {
        &self.by_dc
    }

    /// Starts over from a full list of active members and their votes.
    pub(crate) fn rebuild(&mut self, members: impl Iterator<Item = (Peer, Voter)>) {
        *self = Reach::default();
        for (p, voter) in members {
            self.up(p, voter);
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

    fn v(votes: u32, dc: &str) -> Voter {
        (votes, dc.to_string())
    }

    #[test]
    fn tally_follows_ups_downs_renames_and_vote_changes() {
        let mut r = Reach::default();
        r.up(peer(1, 1), v(1, "a"));
        r.up(peer(2, 1), v(3, "b"));
        assert_eq!(r.total(), 4);
        // A restart shows both generations for a moment: the node counts once.
        r.up(peer(2, 2), v(3, "b"));
        assert_eq!(r.total(), 4);
        r.down(peer(2, 1));
        assert_eq!(r.total(), 4);
        r.set_voter(NodeId(2), v(5, "a"));
        assert_eq!(r.total(), 6);
        assert_eq!(r.by_dc().get("a"), Some(&6));
        assert_eq!(r.by_dc().get("b"), None);
        r.down(peer(2, 2));
        assert_eq!(r.total(), 1);
        r.down(peer(9, 1));
        r.set_voter(NodeId(9), v(7, "a"));
        assert_eq!(r.total(), 1);
        r.rebuild([(peer(3, 1), v(2, "a")), (peer(4, 1), v(2, "c"))].into_iter());
        assert_eq!(r.total(), 4);
        assert_eq!(r.by_dc().len(), 2);
    }
}
