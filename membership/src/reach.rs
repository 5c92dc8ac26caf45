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
use crate::meta::id_hash;
use crate::report::MemberState;
use hashbrown::HashTable;
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
/// 7/8 full). They became one tree of 24-byte entries (50 bytes per pair at the peak of a
/// 3,000-node join, heaptrack: a tree node is a separate allocation, about two thirds full), and
/// are now a list of entries found through a table of positions ([`Entries`]). The datacenter
/// is an index into `dcs`, and the rare second generation (a restart that foca lists twice for a
/// moment) is kept aside in `more`.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    members: Entries,
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

/// Entries by node id: a list, and a table of positions in it hashed by id (as the metadata
/// table keeps its records). 32 bytes an entry in the list and 5 a slot in the table, which
/// holds between 7/16 and 7/8 of its slots; a removal moves the last entry into the hole.
#[derive(Debug, Default)]
struct Entries {
    list: Vec<(NodeId, Entry)>,
    by_id: HashTable<u32>,
}

impl Entries {
    fn position(&self, id: NodeId) -> Option<usize> {
        let list = &self.list;
        self.by_id
            .find(id_hash(id), |at| list[*at as usize].0 == id)
            .map(|at| *at as usize)
    }

    fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.position(*id).map(|at| &self.list[at].1)
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Entry> {
        self.position(*id).map(|at| &mut self.list[at].1)
    }

    /// `id`'s entry, an empty one added if it had none.
    fn or_empty(&mut self, id: NodeId) -> &mut Entry {
        let at = match self.position(id) {
            Some(at) => at,
            None => {
                let at = u32::try_from(self.list.len()).expect("fewer than 2^32 members");
                self.list.push((id, Entry::EMPTY));
                let list = &self.list;
                self.by_id
                    .insert_unique(id_hash(id), at, |at| id_hash(list[*at as usize].0));
                at as usize
            }
        };
        &mut self.list[at].1
    }

    fn remove(&mut self, id: &NodeId) {
        let list = &self.list;
        let Ok(slot) = self
            .by_id
            .find_entry(id_hash(*id), |p| list[*p as usize].0 == *id)
        else {
            return;
        };
        let at = slot.remove().0 as usize;
        let last = self.list.len() - 1;
        if at != last {
            // The last entry moves into the hole: its slot in the table follows.
            let moved = self.list[last].0;
            let list = &self.list;
            if let Some(p) = self
                .by_id
                .find_mut(id_hash(moved), |p| list[*p as usize].0 == moved)
            {
                *p = at as u32;
            }
        }
        self.list.swap_remove(at);
    }

    /// Keeps the entries `keep` says to keep (and lets it change them).
    fn retain(&mut self, mut keep: impl FnMut(&mut Entry) -> bool) {
        self.list.retain_mut(|(_, e)| keep(e));
        self.by_id.clear();
        let list = &self.list;
        for at in 0..list.len() {
            self.by_id
                .insert_unique(id_hash(list[at].0), at as u32, |p| {
                    id_hash(list[*p as usize].0)
                });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.list.len()
    }
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
        let e = self.members.or_empty(id);
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
                let e = self.members.or_empty(p.id);
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
        self.members.retain(|e| {
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

    /// The list-and-table of entries against a `BTreeMap`, through random additions, changes,
    /// removals (the last entry moving into each hole) and retains, ids colliding in the table's
    /// low bits half the time. Shown to fail with the moved entry's slot left pointing at its
    /// old place.
    #[test]
    fn entries_find_what_a_map_would() {
        for seed in 1..=10u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut entries = Entries::default();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            for op in 0..4_000u32 {
                let id = if next(2) == 0 {
                    next(300)
                } else {
                    next(40) << 40
                };
                match next(20) {
                    0..=9 => {
                        entries.or_empty(NodeId(id)).votes = op;
                        model.insert(id, op);
                    }
                    10..=17 => {
                        entries.remove(&NodeId(id));
                        model.remove(&id);
                    }
                    18 => {
                        if let Some(e) = entries.get_mut(&NodeId(id)) {
                            e.votes += 1;
                        }
                        if let Some(v) = model.get_mut(&id) {
                            *v += 1;
                        }
                    }
                    _ => {
                        let odd = |v: u32| v % 2 == 1;
                        entries.retain(|e| odd(e.votes));
                        model.retain(|_, v| odd(*v));
                    }
                }
                assert_eq!(entries.len(), model.len(), "seed {seed}, op {op}");
                for (id, votes) in &model {
                    let got = entries.get(&NodeId(*id)).map(|e| e.votes);
                    assert_eq!(got, Some(*votes), "seed {seed}, op {op}: id {id}");
                }
                assert!(entries.get(&NodeId(u64::MAX)).is_none());
            }
        }
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
