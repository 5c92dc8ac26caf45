//! What this node knows of each other member: its reported state, and the votes it reaches,
//! kept up to date from member changes, in one map.
//!
//! Recounting every member after each input costs O(n) per datagram, and a join of n nodes
//! delivers n member changes and n metadata records to each node: O(n^2) per node, which made a
//! simulated 1,000-node cluster crawl. The tally changes only when a member comes up, goes down,
//! is renamed, or its votes change, so it is kept incrementally; the core recounts from foca now
//! and then and rebuilds the tally if it ever drifted.

use crate::core::Known;
use crate::identity::{NodeId, Peer};
use crate::report::MemberState;
use std::collections::{BTreeMap, HashMap};

/// A member's votes and datacenter, as its metadata says (1 and "" until its record arrives).
pub(crate) type Voter = (u32, String);

/// Each other member's reported state, and the reachable votes of the active ones (the node's
/// own votes are not included), in all and per datacenter.
///
/// Every node holds an entry per other member, so its size is memory per pair of nodes. The
/// states and the tally were two maps keyed by the same id: a `BTreeMap` of states (39 bytes
/// per pair at the peak of heaptrack of `netsim scale --nodes 1000`) and a `HashMap` of 16-byte
/// tally entries (51 bytes per pair: a hash table's room is a power of two, mostly empty past
/// 7/8 full). They are one tree of 24-byte entries now. The datacenter is an index into `dcs`,
/// and the rare second generation (a restart that foca lists twice for a moment) is kept aside
/// in `more`.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    members: BTreeMap<NodeId, Entry>,
    /// Further active generations of a node whose first is counted in `members`.
    more: HashMap<NodeId, Vec<u64>>,
    total: u32,
    /// Every datacenter name seen, with the active votes in it. Names are never removed (they
    /// are as many as the datacenters operators named), so an index stays valid.
    dcs: Vec<(String, u32)>,
}

/// One member: its reported state (if reported), and (if active) the generation foca lists and
/// the vote counted for it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The reported generation; meaningful when `state` is some.
    generation: u64,
    /// The generation counted; meaningful when `counted` is true.
    active: u64,
    votes: u32,
    dc: u16,
    state: Option<MemberState>,
    counted: bool,
}

impl Entry {
    const EMPTY: Entry = Entry {
        generation: 0,
        active: 0,
        votes: 0,
        dc: 0,
        state: None,
        counted: false,
    };
}

/// The index of datacenter `dc` in `dcs`, added if new.
fn dc_index(dcs: &mut Vec<(String, u32)>, dc: &str) -> u16 {
    match dcs.iter().position(|(name, _)| name == dc) {
        Some(i) => i as u16,
        None => {
            // As many as operators named; a cluster with 65,536 datacenter names has
            // bigger problems, and the periodic recount would rebuild the tally.
            debug_assert!(dcs.len() < u16::MAX as usize);
            dcs.push((dc.to_owned(), 0));
            (dcs.len() - 1).min(u16::MAX as usize) as u16
        }
    }
}

impl Reach {
    fn dc_index(&mut self, dc: &str) -> u16 {
        dc_index(&mut self.dcs, dc)
    }

    fn add(&mut self, votes: u32, dc: u16) {
        self.total += votes;
        self.dcs[dc as usize].1 += votes;
    }

    fn sub(&mut self, votes: u32, dc: u16) {
        self.total -= votes;
        self.dcs[dc as usize].1 -= votes;
    }

    /// What was last reported of `id`.
    pub(crate) fn known(&self, id: NodeId) -> Option<Known> {
        let e = self.members.get(&id)?;
        e.state.map(|state| Known {
            generation: e.generation,
            state,
        })
    }

    /// Whether anything was reported of `id`.
    pub(crate) fn is_known(&self, id: NodeId) -> bool {
        self.known(id).is_some()
    }

    /// Records what is reported of `id` now; returns what was before.
    pub(crate) fn set_known(&mut self, id: NodeId, k: Known) -> Option<Known> {
        let prev = self.known(id);
        let e = self.members.entry(id).or_insert(Entry::EMPTY);
        e.generation = k.generation;
        e.state = Some(k.state);
        prev
    }

    /// `p` is active (alive or suspect) with `voter`.
    pub(crate) fn up(&mut self, p: Peer, voter: Voter) {
        match self.members.get(&p.id) {
            Some(e) if e.counted && e.active == p.generation => {}
            Some(e) if e.counted => {
                let more = self.more.entry(p.id).or_default();
                if !more.contains(&p.generation) {
                    more.push(p.generation);
                }
            }
            _ => {
                let dc = self.dc_index(&voter.1);
                let e = self.members.entry(p.id).or_insert(Entry::EMPTY);
                e.active = p.generation;
                e.votes = voter.0;
                e.dc = dc;
                e.counted = true;
                self.add(voter.0, dc);
            }
        }
    }

    /// `p` is down.
    pub(crate) fn down(&mut self, p: Peer) {
        let Some(e) = self.members.get_mut(&p.id).filter(|e| e.counted) else {
            return;
        };
        if e.active != p.generation {
            if let Some(more) = self.more.get_mut(&p.id) {
                more.retain(|g| *g != p.generation);
                if more.is_empty() {
                    self.more.remove(&p.id);
                }
            }
            return;
        }
        if let Some(more) = self.more.get_mut(&p.id) {
            e.active = more.pop().expect("`more` holds no empty list");
            if more.is_empty() {
                self.more.remove(&p.id);
            }
            return;
        }
        e.counted = false;
        let (votes, dc, reported) = (e.votes, e.dc, e.state.is_some());
        if !reported {
            self.members.remove(&p.id);
        }
        self.sub(votes, dc);
    }

    /// Node `id` now has the votes and datacenter `voter` gives (its metadata changed); `voter`
    /// is asked only if `id` is counted. One lookup: a join of n nodes brings n records to every
    /// node, and looking each member up twice (and decoding its record when it was not counted)
    /// was 2.3 % of a simulated 1,000-node join (perf, docs/benchmarks.md "fourth pass").
    pub(crate) fn set_voter(&mut self, id: NodeId, voter: impl FnOnce() -> Voter) {
        let Reach {
            members,
            dcs,
            total,
            ..
        } = self;
        let Some(e) = members.get_mut(&id).filter(|e| e.counted) else {
            return;
        };
        let (votes, dc) = voter();
        let dc = dc_index(dcs, &dc);
        *total = *total - e.votes + votes;
        dcs[e.dc as usize].1 -= e.votes;
        dcs[dc as usize].1 += votes;
        e.votes = votes;
        e.dc = dc;
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

    /// Starts the tally over from a full list of active members and their votes (the reported
    /// states stay).
    pub(crate) fn rebuild(&mut self, members: impl Iterator<Item = (Peer, Voter)>) {
        self.members.retain(|_, e| {
            e.counted = false;
            e.state.is_some()
        });
        self.more.clear();
        self.total = 0;
        self.dcs.clear();
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
        r.set_voter(NodeId(2), || v(5, "a"));
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
        r.set_voter(NodeId(9), || v(7, "a"));
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
        assert!(
            r.more.is_empty() && r.members.len() == 1,
            "entries neither reported nor counted are gone"
        );
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

    #[test]
    fn reported_states_and_the_tally_share_entries_without_touching_each_other() {
        assert_eq!(
            std::mem::size_of::<Entry>(),
            24,
            "an entry is memory per pair of members"
        );
        let mut r = Reach::default();
        let known = |generation, state| Known { generation, state };
        assert_eq!(r.set_known(NodeId(1), known(1, MemberState::Alive)), None);
        r.up(peer(1, 1), v(2, "a"));
        r.up(peer(2, 1), v(3, "a"));
        assert_eq!(r.total(), 5);
        // Going down leaves the reported state; an unreported member leaves nothing.
        r.down(peer(1, 1));
        r.down(peer(2, 1));
        assert_eq!(r.total(), 0);
        assert_eq!(r.known(NodeId(1)), Some(known(1, MemberState::Alive)));
        assert!(!r.is_known(NodeId(2)));
        assert_eq!(r.members.len(), 1);
        // A state reported while counted keeps the count, and the count keeps the state.
        r.up(peer(1, 2), v(2, "a"));
        let prev = r.set_known(NodeId(1), known(2, MemberState::Failed));
        assert_eq!(prev, Some(known(1, MemberState::Alive)));
        assert_eq!(r.total(), 2);
        r.set_voter(NodeId(1), || v(4, "b"));
        assert_eq!(r.total(), 4);
        assert_eq!(r.known(NodeId(1)), Some(known(2, MemberState::Failed)));
        // A rebuild starts the tally over and keeps every reported state.
        r.rebuild([(peer(3, 1), v(1, "a"))].into_iter());
        assert_eq!(r.total(), 1);
        assert_eq!(r.known(NodeId(1)), Some(known(2, MemberState::Failed)));
        assert!(!r.is_known(NodeId(3)));
        r.down(peer(1, 2));
        assert_eq!(r.total(), 1, "no longer counted after the rebuild");
    }
}
