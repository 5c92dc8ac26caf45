//! Member joins held back until the joiner's name arrives (see `Node::emit_member`).
//!
//! Kept by id (a later event of the member releases its held join) and by time (a join held
//! [`NAME_WAIT`] is reported unnamed). The by-time order is what makes this cheap: a mass join
//! holds one join per member for up to two seconds, and scanning every held join after every
//! input, as the node did with one map, cost 5 % of netsim's 1,000-node join.

use membership::{Event, MemberRef, NodeId};
use std::collections::{BTreeMap, BTreeSet};
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
#[derive(Debug, Default)]
pub(crate) struct HeldJoins {
    by_id: BTreeMap<NodeId, Held>,
    by_time: BTreeSet<(u64, NodeId)>,
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
    /// Holds the join of `member` (not named yet) from `now`.
    pub(crate) fn hold(&mut self, member: &MemberRef, now: Duration) {
        debug_assert!(member.name.is_empty(), "only unnamed joins are held");
        let since = nanos(now);
        let held = Held {
            addr: member.addr,
            generation: member.generation,
            since,
        };
        if let Some(old) = self.by_id.insert(member.id, held) {
            self.by_time.remove(&(old.since, member.id));
        }
        self.by_time.insert((since, member.id));
    }

    /// The held join of `id`, if any, no longer held.
    pub(crate) fn release(&mut self, id: NodeId) -> Option<Event> {
        let held = self.by_id.remove(&id)?;
        self.by_time.remove(&(held.since, id));
        Some(held.event(id))
    }

    /// When the oldest held join is due to be reported unnamed.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.by_time
            .first()
            .map(|(since, _)| Duration::from_nanos(*since) + NAME_WAIT)
    }

    /// The joins held for [`NAME_WAIT`] or longer at `now`, oldest first, no longer held.
    pub(crate) fn take_late(&mut self, now: Duration) -> Vec<Event> {
        let mut late = Vec::new();
        while let Some(&(since, id)) = self.by_time.first()
            && Duration::from_nanos(since) + NAME_WAIT <= now
        {
            self.by_time.pop_first();
            if let Some(held) = self.by_id.remove(&id) {
                late.push(held.event(id));
            }
        }
        late
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
        h.hold(&member(2), 3 * s);
        assert_eq!(h.next_deadline(), Some(3 * s));
        // Held again (a rejoin): the later time counts.
        h.hold(&member(3), 2 * s);
        assert_eq!(h.next_deadline(), Some(4 * s));
        assert_eq!(
            h.release(NodeId(1)),
            Some(join(1)),
            "address and generation kept"
        );
        assert!(h.release(NodeId(1)).is_none());
        assert!(h.take_late(4 * s - Duration::from_millis(1)).is_empty());
        let late = h.take_late(4 * s);
        assert_eq!(late, vec![join(3)]);
        assert_eq!(h.next_deadline(), Some(5 * s));
        assert_eq!(h.take_late(10 * s), vec![join(2)]);
        assert_eq!(h.next_deadline(), None);
    }
}
