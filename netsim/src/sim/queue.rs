//! The event queue and the run loop: deliveries, node timers, resumes and client wake-ups in
//! time order, ties by insertion order.

use super::Sim;
use membership::NodeId;
use node::Input;
use node::PeerMsg;
use std::cmp::Reverse;
use std::rc::Rc;
use std::time::Duration;

pub(super) enum What {
    Datagram {
        to: u32,
        from: u32,
        bytes: Rc<[u8]>,
    },
    Stream {
        to: usize,
        incarnation: u64,
        from: NodeId,
        // Boxed: the queue moves items around on every push and pop, so they must stay small.
        msg: Box<PeerMsg>,
    },
    Request {
        to: usize,
        incarnation: u64,
        op: usize,
    },
    StrongRequest {
        to: usize,
        incarnation: u64,
        op: usize,
    },
    Resume {
        node: usize,
    },
    Start {
        node: usize,
    },
    Synced {
        node: u32,
        incarnation: u64,
        sync: super::disk::Sync,
    },
    Client {
        client: usize,
    },
    /// The outputs of inputs a node took since its last flush leave ([`SimConfig::batch_inputs`]).
    Flush {
        node: usize,
        incarnation: u64,
    },
}

pub(super) struct Item {
    pub(super) at: Duration,
    pub(super) seq: u64,
    pub(super) what: What,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Sim {
    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: Duration) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Runs until `cond` holds (checked after every step) or `limit` of virtual time passes;
    /// returns the time it took, or `None`.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        self.run_until_cond_every(limit, Duration::ZERO, cond)
    }

    /// Like [`Sim::run_until_cond`], but checks `cond` at most once per `every` of virtual time
    /// (for conditions that cost O(n) on large clusters); the time returned is late by less
    /// than `every`.
    pub fn run_until_cond_every(
        &mut self,
        limit: Duration,
        every: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let until = self.now + limit;
        if cond(self) {
            return Some(Duration::ZERO);
        }
        let mut next_check = self.now + every;
        loop {
            let limit = if every.is_zero() {
                until
            } else {
                until.min(next_check)
            };
            if self.step(limit) {
                if every.is_zero() && cond(self) {
                    return Some(self.now - start);
                }
                continue;
            }
            self.now = self.now.max(limit);
            if !every.is_zero() {
                if cond(self) {
                    return Some(self.now - start);
                }
                next_check = self.now + every;
            }
            if limit >= until {
                return None;
            }
        }
    }

    pub(super) fn push(&mut self, at: Duration, what: What) {
        self.seq += 1;
        self.queue.push(Reverse(Item {
            at,
            seq: self.seq,
            what,
        }));
    }

    /// Processes the next item at or before `limit`; false when there is none.
    pub(super) fn step(&mut self, limit: Duration) -> bool {
        let next_item = self.queue.peek().map(|r| r.0.at);
        let next_timer = self.timers.first().copied();
        let take_item = match (next_item, next_timer) {
            (None, None) => return false,
            (Some(d), Some((t, _))) => d <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_item {
            if next_item.is_some_and(|t| t > limit) {
                return false;
            }
            let Reverse(item) = self.queue.pop().expect("peeked");
            self.now = self.now.max(item.at);
            self.handle_item(item.what);
        } else {
            let (t, i) = next_timer.expect("checked");
            if t > limit {
                return false;
            }
            self.now = self.now.max(t);
            self.fire_timers(i);
        }
        true
    }

    pub(super) fn paused(&self, i: usize) -> bool {
        self.slots[i].paused_until.is_some_and(|t| t > self.now)
    }

    pub(super) fn fire_timers(&mut self, i: usize) {
        let now = self.now;
        self.mix(&[5, i as u64, now.as_micros() as u64]);
        self.feed(i, Input::Timeout);
        self.flush(i);
    }

    pub(super) fn disarm(&mut self, i: usize) {
        if let Some(t) = self.slots[i].armed.take() {
            self.timers.remove(&(t, i));
        }
    }

    pub(super) fn refresh_timer(&mut self, i: usize) {
        self.disarm(i);
        if self.paused(i) {
            return;
        }
        let slot = &self.slots[i];
        let Some(n) = slot.node.as_ref() else { return };
        if let Some(local) = n.poll_timeout() {
            let t = slot.skew.global(local).max(self.now);
            self.slots[i].armed = Some(t);
            self.timers.insert((t, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_items_stay_small() {
        assert!(
            std::mem::size_of::<Item>() <= 64,
            "{}",
            std::mem::size_of::<Item>()
        );
    }
}
