//! Member joins held back until the joiner's name arrives (see `Node::emit_member`).
//!
//! Kept by id (a later event of the member releases its held join) and in the order they were
//! held (a join held [`NAME_WAIT`] is reported unnamed). The order is what makes this cheap: a
//! mass join holds one join per member for up to two seconds, and scanning every held join
//! after every input, as the node did with one map, cost 5 % of netsim's 1,000-node join.

use membership::{Event, MemberRef, NodeId};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a join waits for the joiner's name. Metadata rides the next gossip rounds after
/// the join; a join still unnamed after this is reported without a name rather than late.
pub(crate) const NAME_WAIT: Duration = Duration::from_secs(2);

/// Joins held until their member's name arrives or [`NAME_WAIT`] passes.
///
/// A mass join holds about one join per member on every node at once, so an entry is memory
/// per pair of members: holding the whole `Event` (its `MemberRef` with an empty name, and a
/// `Duration`) cost 88 bytes per pair at the peak of heaptrack of `netsim scale --nodes
/// 1000`, a fifth of the peak heap. A held join is only ever an unnamed `MemberJoined`, so
/// only what differs is kept: the address, the generation and when (in nanoseconds of core
/// time).
///
/// The order is a queue, not a sorted set: the node's clock never goes back
/// (`Node::advance`), so joins are held in time order, and a release leaves its queue entry
/// behind, to be dropped when it reaches the front (it no longer matches a held join). The
/// queue holds at most the joins of the last [`NAME_WAIT`]. The sorted set and the tree under
/// `by_id` were 12.7 % of netsim's 3,000-node join (perf, with what they call), each lookup
/// and removal a walk through nodes that miss the cache.
#[derive(Debug, Default)]
pub(crate) struct HeldJoins {
    by_id: HashMap<NodeId, Held>,
    /// `(since, id)` in the order held; an entry whose `since` is not its id's held join's
    /// is stale. The front is never stale (see `drop_stale`).
    by_time: VecDeque<(u64, NodeId)>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    addr: SocketAddr,
    generation: u64,
    since: u64,
}

impl Held {
    fn event(self, id: NodeId) -> Event {
        Event::MemberJoined {
            member: MemberRef {
                id,
                name: String::new(),
                addr: self.addr,
                generation: self.generation,
            },
        }
    }
}

fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

impl HeldJoins {
    /// Holds the join of `member` (not named yet) from `now`, which is never before the
    /// `now` of an earlier call.
    pub(crate) fn hold(&mut self, member: &MemberRef, now: Duration) {
        debug_assert!(member.name.is_empty(), "only unnamed joins are held");
        // Kept in order even if a caller's clock went back: a join is then reported a little
        // late, never early.
        let since = nanos(now).max(self.by_time.back().map_or(0, |(t, _)| *t));
        let held = Held {
            addr: member.addr,
            generation: member.generation,
            since,
        };
        self.by_id.insert(member.id, held);
        self.by_time.push_back((since, member.id));
        self.drop_stale();
    }

    /// The held join of `id`, if any, no longer held.
    pub(crate) fn release(&mut self, id: NodeId) -> Option<Event> {
        let held = self.by_id.remove(&id)?;
        self.drop_stale();
        self.shrink();
        Some(held.event(id))
    }

    /// When the oldest held join is due to be reported unnamed.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.by_time
            .front()
            .map(|(since, _)| Duration::from_nanos(*since) + NAME_WAIT)
    }

    /// The joins held for [`NAME_WAIT`] or longer at `now`, oldest first, no longer held.
    pub(crate) fn take_late(&mut self, now: Duration) -> Vec<Event> {
        let mut late = Vec::new();
        while let Some(&(since, id)) = self.by_time.front()
            && Duration::from_nanos(since) + NAME_WAIT <= now
        {
            self.by_time.pop_front();
            if let Some(held) = self.by_id.remove(&id) {
                late.push(held.event(id));
            }
            self.drop_stale();
        }
        if !late.is_empty() {
            self.shrink();
        }
        late
    }

    /// Pops queue entries from the front that no held join matches (released, or held again
    /// later), so that the front, and with it `next_deadline`, is always a held join's.
    fn drop_stale(&mut self) {
        while let Some(&(since, id)) = self.by_time.front()
            && self.by_id.get(&id).is_none_or(|held| held.since != since)
        {
            self.by_time.pop_front();
        }
    }

    /// Gives room back once a mass join has drained: both hold about one entry per member at
    /// its peak, and a node keeps running for days after.
    fn shrink(&mut self) {
        if self.by_id.capacity() > 64 && self.by_id.len() * 4 < self.by_id.capacity() {
            self.by_id.shrink_to(self.by_id.len() * 2);
        }
        if self.by_time.capacity() > 64 && self.by_time.len() * 4 < self.by_time.capacity() {
            self.by_time.shrink_to(self.by_time.len() * 2);
        }
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.by_time.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> MemberRef {
        MemberRef {
            id: NodeId(id),
            name: String::new(),
            addr: SocketAddr::from(([127, 0, 0, id as u8], 1000 + id as u16)),
            generation: 10 + id,
        }
    }

    fn join(id: u64) -> Event {
        Event::MemberJoined { member: member(id) }
    }

    #[test]
    fn joins_come_out_when_released_or_late_and_only_once() {
        let s = Duration::from_secs(1);
        let mut h = HeldJoins::default();
        h.hold(&member(3), s);
        h.hold(&member(1), 2 * s);
        h.hold(&member(2), 2 * s);
        assert_eq!(h.next_deadline(), Some(3 * s));
        // Held again (a rejoin): the later time counts.
        h.hold(&member(3), 3 * s);
        assert_eq!(h.next_deadline(), Some(4 * s));
        assert_eq!(
            h.release(NodeId(1)),
            Some(join(1)),
            "address and generation kept"
        );
        assert!(h.release(NodeId(1)).is_none());
        assert_eq!(h.next_deadline(), Some(4 * s), "member 2, held at 2 s");
        assert!(h.take_late(4 * s - Duration::from_millis(1)).is_empty());
        let late = h.take_late(4 * s);
        assert_eq!(late, vec![join(2)]);
        assert_eq!(h.next_deadline(), Some(5 * s));
        assert_eq!(h.take_late(10 * s), vec![join(3)]);
        assert_eq!(h.next_deadline(), None);
        assert_eq!(h.queued(), 0, "nothing stale left behind");
    }

    #[test]
    fn a_clock_that_goes_back_makes_a_join_late_never_early() {
        let s = Duration::from_secs(1);
        let mut h = HeldJoins::default();
        h.hold(&member(1), 5 * s);
        h.hold(&member(2), 4 * s);
        assert!(h.take_late(6 * s).is_empty());
        assert_eq!(h.take_late(7 * s), vec![join(1), join(2)]);
    }

    /// Random holds, releases and deadlines against a plain list of held joins: the same
    /// events come out at the same times, the deadline is always the oldest held join's, and
    /// the queue never holds more than the joins of the last `NAME_WAIT`.
    #[test]
    fn held_joins_agree_with_a_plain_list() {
        use rand::rngs::Xoshiro256PlusPlus;
        use rand::{RngExt, SeedableRng};
        for seed in 0..20u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut h = HeldJoins::default();
            // (id, since) in the order held, the newest hold of an id only.
            let mut model: Vec<(u64, Duration)> = Vec::new();
            let mut holds: Vec<Duration> = Vec::new();
            let mut since_of = [Duration::ZERO; 40];
            let mut now = Duration::ZERO;
            for step in 0..5_000 {
                let id = rng.random_range(0..40u64);
                match rng.random_range(0..10) {
                    0..=4 => {
                        model.retain(|(i, _)| *i != id);
                        model.push((id, now));
                        holds.push(now);
                        since_of[id as usize] = now;
                        h.hold(&member(id), now);
                    }
                    5..=7 => {
                        let want = model.iter().position(|(i, _)| *i == id);
                        let want = want.map(|at| join(model.remove(at).0));
                        assert_eq!(h.release(NodeId(id)), want, "seed {seed} step {step}");
                    }
                    _ => {
                        now += Duration::from_millis(rng.random_range(0..700));
                        let (late, held): (Vec<_>, Vec<_>) = model
                            .iter()
                            .partition(|(_, since)| *since + NAME_WAIT <= now);
                        model = held;
                        // Oldest first; joins held at the same instant in any order.
                        let mut got: Vec<(Duration, u64)> = h
                            .take_late(now)
                            .iter()
                            .map(|ev| {
                                let id = ev.member().unwrap().id.0;
                                (since_of[id as usize], id)
                            })
                            .collect();
                        assert!(got.is_sorted_by_key(|(t, _)| *t), "seed {seed} step {step}");
                        got.sort();
                        let mut want: Vec<(Duration, u64)> =
                            late.iter().map(|(i, t)| (*t, *i)).collect();
                        want.sort();
                        assert_eq!(got, want, "seed {seed} step {step}");
                    }
                }
                let oldest = model.iter().map(|(_, since)| *since).min();
                assert_eq!(
                    h.next_deadline(),
                    oldest.map(|t| t + NAME_WAIT),
                    "seed {seed} step {step}"
                );
                // The queue starts at the oldest held join: nothing older is left behind.
                let behind = oldest.map_or(0, |o| holds.iter().filter(|t| **t >= o).count());
                assert!(h.queued() <= behind, "seed {seed} step {step}");
            }
        }
    }
}
