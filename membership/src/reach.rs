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
///
/// Every node holds an entry per other member, so its size is memory per pair of nodes: a map
/// of `(Vec<u64>, (u32, String))` per member cost about 166 bytes per pair in heaptrack of
/// `netsim scale --nodes 1000` (the slot, the vector's allocation, the datacenter's copy). An
/// entry is now 16 bytes beside its key: the datacenter is an index into `dcs`, and the rare
/// second generation (a restart that foca lists twice for a moment) is kept aside in `more`.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    active: HashMap<NodeId, Active>,
    /// Further active generations of a node whose first is in `active`.
    more: HashMap<NodeId, Vec<u64>>,
    total: u32,
    /// Every datacenter name seen, with the active votes in it. Names are never removed (they
    /// are as many as the datacenters operators named), so an index stays valid.
    dcs: Vec<(String, u32)>,
}

/// One active member: a generation foca lists, and the vote counted for it.
#[derive(Debug, Clone, Copy)]
struct Active {
    generation: u64,
    votes: u32,
    dc: u32,
}

impl Reach {
    fn dc_index(&mut self, dc: &str) -> u32 {
        match self.dcs.iter().position(|(name, _)| name == dc) {
            Some(i) => i as u32,
            None => {
                self.dcs.push((dc.to_owned(), 0));
                (self.dcs.len() - 1) as u32
            }
        }
    }

    fn add(&mut self, votes: u32, dc: u32) {
        self.total += votes;
        self.dcs[dc as usize].1 += votes;
    }

    fn sub(&mut self, votes: u32, dc: u32) {
        self.total -= votes;
        self.dcs[dc as usize].1 -= votes;
    }

    /// `p` is active (alive or suspect) with `voter`.
    pub(crate) fn up(&mut self, p: Peer, voter: Voter) {
        match self.active.get(&p.id) {
            Some(a) if a.generation == p.generation => {}
            Some(_) => {
                let more = self.more.entry(p.id).or_default();
                if !more.contains(&p.generation) {
                    more.push(p.generation);
                }
            }
            None => {
                let dc = self.dc_index(&voter.1);
                let a = Active {
                    generation: p.generation,
                    votes: voter.0,
                    dc,
                };
                self.active.insert(p.id, a);
                self.add(a.votes, a.dc);
            }
        }
    }

    /// `p` is down.
    pub(crate) fn down(&mut self, p: Peer) {
        let Some(a) = self.active.get_mut(&p.id) else {
            return;
        };
        if a.generation != p.generation {
            if let Some(more) = self.more.get_mut(&p.id) {
                more.retain(|g| *g != p.generation);
                if more.is_empty() {
                    self.more.remove(&p.id);
                }
            }
            return;
        }
        if let Some(more) = self.more.get_mut(&p.id) {
            a.generation = more.pop().expect("`more` holds no empty list");
            if more.is_empty() {
                self.more.remove(&p.id);
            }
            return;
        }
        let a = self.active.remove(&p.id).expect("present");
        self.sub(a.votes, a.dc);
    }

    /// Node `id` now has `voter` (its metadata changed).
    pub(crate) fn set_voter(&mut self, id: NodeId, voter: Voter) {
        if let Some(old) = self.active.get(&id).copied() {
            let dc = self.dc_index(&voter.1);
            self.sub(old.votes, old.dc);
            self.add(voter.0, dc);
            let a = self.active.get_mut(&id).expect("present");
            a.votes = voter.0;
            a.dc = dc;
        }
    }

    /// Sum of the votes of active members.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Votes of active members per datacenter, for the datacenters that have any, in name
    /// order (`dcs` is in the order names were first seen, which differs from node to node and
    /// after a rebuild; the recount compares this with its own tally in name order).
    pub(crate) fn by_dc(&self) -> BTreeMap<&str, u32> {
        self.dcs
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(dc, v)| (dc.as_str(), *v))
            .collect()
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
        let dcs = |r: &Reach| {
            r.by_dc()
                .into_iter()
                .map(|(d, v)| (d.to_owned(), v))
                .collect::<Vec<_>>()
        };
        assert_eq!(dcs(&r), vec![("a".to_owned(), 6)]);
        r.down(peer(2, 2));
        assert_eq!(r.total(), 1);
        r.down(peer(9, 1));
        r.set_voter(NodeId(9), v(7, "a"));
        assert_eq!(r.total(), 1);
        // The newer generation goes first this time: the node still counts until both are down.
        r.up(peer(5, 1), v(2, "c"));
        r.up(peer(5, 2), v(2, "c"));
        r.up(peer(5, 2), v(2, "c"));
        r.down(peer(5, 2));
        assert_eq!(r.total(), 3);
        r.down(peer(5, 2));
        assert_eq!(r.total(), 3);
        r.down(peer(5, 1));
        assert_eq!(r.total(), 1);
        assert!(r.more.is_empty() && r.active.len() == 1);
        r.rebuild([(peer(3, 1), v(2, "a")), (peer(4, 1), v(2, "c"))].into_iter());
        assert_eq!(r.total(), 4);
        assert_eq!(r.by_dc().len(), 2);
        // Names first seen out of order still come out in name order (the recount compares
        // them with its own tally in name order: in first-seen order it saw a drift each time).
        r.up(peer(6, 1), v(1, "b"));
        assert_eq!(
            dcs(&r),
            vec![
                ("a".to_owned(), 2),
                ("b".to_owned(), 1),
                ("c".to_owned(), 2)
            ]
        );
    }
}
