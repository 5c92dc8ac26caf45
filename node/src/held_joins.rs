//! Member joins held back until the joiner's name arrives (see `Node::emit_member`).
//!
//! Kept by id (a later event of the member releases its held join) and by time (a join held
//! [`NAME_WAIT`] is reported unnamed). The by-time order is what makes this cheap: a mass join
//! holds one join per member for up to two seconds, and scanning every held join after every
//! input, as the node did with one map, cost 5 % of netsim's 1,000-node join.

use membership::{Event, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a join waits for the joiner's name. Metadata rides the next gossip rounds after
/// the join; a join still unnamed after this is reported without a name rather than late.
pub(crate) const NAME_WAIT: Duration = Duration::from_secs(2);

/// Joins held until their member's name arrives or [`NAME_WAIT`] passes.
#[derive(Debug, Default)]
pub(crate) struct HeldJoins {
    by_id: BTreeMap<NodeId, (Event, Duration)>,
    by_time: BTreeSet<(Duration, NodeId)>,
}

impl HeldJoins {
    /// Holds `ev`, the join of `id`, from `now`.
    pub(crate) fn hold(&mut self, id: NodeId, ev: Event, now: Duration) {
        if let Some((_, since)) = self.by_id.insert(id, (ev, now)) {
            self.by_time.remove(&(since, id));
        }
        self.by_time.insert((now, id));
    }

    /// The held join of `id`, if any, no longer held.
    pub(crate) fn release(&mut self, id: NodeId) -> Option<Event> {
        let (ev, since) = self.by_id.remove(&id)?;
        self.by_time.remove(&(since, id));
        Some(ev)
    }

    /// When the oldest held join is due to be reported unnamed.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.by_time.first().map(|(since, _)| *since + NAME_WAIT)
    }

    /// The joins held for [`NAME_WAIT`] or longer at `now`, oldest first, no longer held.
    pub(crate) fn take_late(&mut self, now: Duration) -> Vec<Event> {
        let mut late = Vec::new();
        while let Some(&(since, id)) = self.by_time.first()
            && since + NAME_WAIT <= now
        {
            self.by_time.pop_first();
            if let Some((ev, _)) = self.by_id.remove(&id) {
                late.push(ev);
            }
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::MemberRef;

    fn join(id: u64) -> Event {
        Event::MemberJoined {
            member: MemberRef {
                id: NodeId(id),
                name: String::new(),
                addr: "127.0.0.1:1".parse().unwrap(),
                generation: 1,
            },
        }
    }

    #[test]
    fn joins_come_out_when_released_or_late_and_only_once() {
        let s = Duration::from_secs(1);
        let mut h = HeldJoins::default();
        h.hold(NodeId(3), join(3), s);
        h.hold(NodeId(1), join(1), 2 * s);
        h.hold(NodeId(2), join(2), 3 * s);
        assert_eq!(h.next_deadline(), Some(3 * s));
        // Held again (a rejoin): the later time counts.
        h.hold(NodeId(3), join(3), 2 * s);
        assert_eq!(h.next_deadline(), Some(4 * s));
        assert!(h.release(NodeId(1)).is_some());
        assert!(h.release(NodeId(1)).is_none());
        assert!(h.take_late(4 * s - Duration::from_millis(1)).is_empty());
        let late = h.take_late(4 * s);
        assert_eq!(late, vec![join(3)]);
        assert_eq!(h.next_deadline(), Some(5 * s));
        assert_eq!(h.take_late(10 * s), vec![join(2)]);
        assert_eq!(h.next_deadline(), None);
    }
}
