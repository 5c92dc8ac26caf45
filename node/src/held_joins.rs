//! Member joins held back until the joiner's name arrives (see `Node::emit_member`).
//!
//! Kept in the order they were held (a join held [`NAME_WAIT`] is reported unnamed) and found
//! by id (a later event of the member releases its held join). The order is what makes this
//! cheap: a mass join holds one join per member for up to two seconds, and scanning every held
//! join after every input, as the node did with one map, cost 5 % of netsim's 1,000-node join.

use hashbrown::HashTable;
use membership::envelope::spread64;
use membership::{Event, MemberRef, NodeId};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a join waits for the joiner's name. Metadata rides the next gossip rounds after
/// the join; a join still unnamed after this is reported without a name rather than late.
pub(crate) const NAME_WAIT: Duration = Duration::from_secs(2);

/// Joins held until their member's name arrives or [`NAME_WAIT`] passes.
///
/// A mass join holds about one join per member on every node at once, so a held join is memory
/// per pair of members. Each keeps only what differs from an unnamed `MemberJoined`: the id, the
/// address, the generation, and when (in nanoseconds of core time).
///
/// Why a slab, a table of slot numbers and a queue of `(time, hold number, slot)`: the node's
/// clock never goes back (`Node::advance`), so joins are held in time order, and the queue is
/// that order. A release frees its slot and leaves its queue entry behind, to be dropped when
/// it reaches the front (its hold number no longer matches the slot's). The held joins
/// themselves sit in the slab, which never holds more than the joins held at once, and the
/// table finds one by its id's hash through a 4-byte slot number. The `HashMap` by id that this
/// replaced kept 56-byte entries in a table that doubles past 7/8 full: 46 MB at the peak of
/// heaptrack of `netsim scale --nodes 1000 --secs 20`, a ninth of the heap (docs/benchmarks.md).
#[derive(Debug, Default)]
pub(crate) struct HeldJoins {
    /// Held joins, and free slots (`None`) listed in `free`.
    slots: Vec<Option<Held>>,
    free: Vec<u32>,
    /// The slot of every held join, hashed by its id.
    by_id: HashTable<u32>,
    /// `(since, hold, slot)` in the order held; stale when the slot no longer holds hold number
    /// `hold`. The front is never stale (see `drop_stale`).
    queue: VecDeque<Queued>,
    /// Holds so far, wrapping: a hold's number tells a stale queue entry from its slot's next
    /// join (a stale entry leaves within [`NAME_WAIT`] of its hold, 2^32 holds later at the
    /// earliest).
    holds: u32,
    /// The time of the latest hold (its queue entry may have been dropped already).
    latest: u64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    id: NodeId,
    addr: SocketAddr,
    generation: u64,
    hold: u32,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    since: u64,
    hold: u32,
    slot: u32,
}

impl Held {
    fn event(self) -> Event {
        Event::MemberJoined {
            member: MemberRef {
                id: self.id,
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

fn hash(id: NodeId) -> u64 {
    spread64(id.0)
}

/// The held join in `slot`: the table lists only slots that hold one.
fn held_in(slots: &[Option<Held>], slot: u32) -> &Held {
    slots[slot as usize]
        .as_ref()
        .expect("the table lists only slots that hold a join")
}

impl HeldJoins {
    /// Holds the join of `member` (not named yet) from `now`, which is never before the
    /// `now` of an earlier call. A join already held for the member is replaced.
    pub(crate) fn hold(&mut self, member: &MemberRef, now: Duration) {
        debug_assert!(member.name.is_empty(), "only unnamed joins are held");
        // Kept in order even if a caller's clock went back: a join is then reported a little
        // late, never early.
        let since = nanos(now).max(self.latest);
        self.latest = since;
        self.take(member.id);
        self.holds = self.holds.wrapping_add(1);
        let held = Held {
            id: member.id,
            addr: member.addr,
            generation: member.generation,
            hold: self.holds,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(held);
                slot
            }
            None => {
                self.slots.push(Some(held));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 members")
            }
        };
        let slots = &self.slots;
        self.by_id
            .insert_unique(hash(member.id), slot, |s| hash(held_in(slots, *s).id));
        self.queue.push_back(Queued {
            since,
            hold: self.holds,
            slot,
        });
        self.drop_stale();
    }

    /// The held join of `id`, if any, no longer held.
    pub(crate) fn release(&mut self, id: NodeId) -> Option<Event> {
        let held = self.take(id)?;
        self.drop_stale();
        self.shrink();
        Some(held.event())
    }

    /// When the oldest held join is due to be reported unnamed.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.queue
            .front()
            .map(|q| Duration::from_nanos(q.since) + NAME_WAIT)
    }

    /// The joins held for [`NAME_WAIT`] or longer at `now`, oldest first, no longer held.
    pub(crate) fn take_late(&mut self, now: Duration) -> Vec<Event> {
        let mut late = Vec::new();
        while let Some(&q) = self.queue.front()
            && Duration::from_nanos(q.since) + NAME_WAIT <= now
        {
            self.queue.pop_front();
            let id = held_in(&self.slots, q.slot).id;
            if let Some(held) = self.take(id) {
                late.push(held.event());
            }
            self.drop_stale();
        }
        if !late.is_empty() {
            self.shrink();
        }
        late
    }

    /// Frees the slot of the held join of `id`, and returns that join.
    fn take(&mut self, id: NodeId) -> Option<Held> {
        let slots = &self.slots;
        let slot = self
            .by_id
            .find_entry(hash(id), |s| held_in(slots, *s).id == id)
            .ok()?
            .remove()
            .0;
        self.free.push(slot);
        self.slots[slot as usize].take()
    }

    /// Pops queue entries from the front whose join is no longer held (released, or held again
    /// later), so that the front, and with it `next_deadline`, is always a held join's.
    fn drop_stale(&mut self) {
        while let Some(q) = self.queue.front()
            && self
                .slots
                .get(q.slot as usize)
                .and_then(Option::as_ref)
                .is_none_or(|h| h.hold != q.hold)
        {
            self.queue.pop_front();
        }
    }

    /// Gives room back once a mass join has drained: each holds about one entry per member at
    /// its peak, and a node keeps running for days after. The slab goes only when empty (a slot
    /// number is a position in it).
    fn shrink(&mut self) {
        if self.by_id.capacity() > 64 && self.by_id.len() * 4 < self.by_id.capacity() {
            let slots = &self.slots;
            self.by_id
                .shrink_to(self.by_id.len() * 2, |s| hash(held_in(slots, *s).id));
        }
        if self.queue.capacity() > 64 && self.queue.len() * 4 < self.queue.capacity() {
            self.queue.shrink_to(self.queue.len() * 2);
        }
        if self.by_id.is_empty() && self.slots.capacity() > 64 {
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Room held: slab slots, table buckets, queue entries.
    #[cfg(test)]
    fn room(&self) -> (usize, usize, usize) {
        (
            self.slots.capacity(),
            self.by_id.capacity(),
            self.queue.capacity(),
        )
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

    /// A held join is memory per pair of members in a mass join: pinned, so it does not grow
    /// unnoticed (a free slot takes no more room than a held one).
    #[test]
    fn a_held_join_takes_56_bytes_and_its_queue_entry_16() {
        assert_eq!(std::mem::size_of::<Option<Held>>(), 56);
        assert_eq!(std::mem::size_of::<Queued>(), 16);
    }

    /// A mass join, then its drain: the table shrinks while joins are still held (and finds
    /// them after its rehash), the slab goes once nothing is held, and holding starts again
    /// cleanly. The model test below never holds enough joins to reach these paths.
    #[test]
    fn a_drained_mass_join_gives_its_room_back_and_holding_goes_on() {
        let s = Duration::from_secs(1);
        let mut h = HeldJoins::default();
        for id in 0..1000 {
            h.hold(&member(id), s);
        }
        let (slots, table, _) = h.room();
        assert!(slots >= 1000 && table >= 1000);
        for id in 10..1000 {
            assert_eq!(h.release(NodeId(id)), Some(join(id)));
        }
        assert!(h.room().1 < table / 4, "the table shrank: {:?}", h.room());
        for id in 0..5 {
            assert_eq!(
                h.release(NodeId(id)),
                Some(join(id)),
                "found after the rehash"
            );
        }
        assert_eq!(h.take_late(3 * s), (5..10).map(join).collect::<Vec<_>>());
        assert_eq!(h.queued(), 0);
        assert_eq!(h.room().0, 0, "the slab goes once nothing is held");
        assert!(h.room().2 <= 64, "the queue shrank: {:?}", h.room());
        h.hold(&member(7), 4 * s);
        h.hold(&member(3), 5 * s);
        assert_eq!(h.release(NodeId(7)), Some(join(7)));
        assert_eq!(h.next_deadline(), Some(7 * s));
        assert_eq!(h.take_late(7 * s), vec![join(3)]);
    }

    #[test]
    fn a_clock_that_goes_back_makes_a_join_late_never_early() {
        let s = Duration::from_secs(1);
        let mut h = HeldJoins::default();
        h.hold(&member(1), 5 * s);
        h.hold(&member(2), 4 * s);
        assert!(h.take_late(6 * s).is_empty());
        assert_eq!(h.take_late(7 * s), vec![join(1), join(2)]);
        // Also when every earlier join was released already: the latest hold still counts.
        h.hold(&member(1), 8 * s);
        h.hold(&member(2), 8 * s);
        assert!(h.release(NodeId(2)).is_some() && h.release(NodeId(1)).is_some());
        assert_eq!(h.queued(), 0);
        h.hold(&member(3), 7 * s);
        assert_eq!(h.next_deadline(), Some(10 * s));
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
