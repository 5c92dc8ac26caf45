//! Store messages for peers membership does not list as reachable yet, kept a short while.
//!
//! A node that restarts sees its peers, and asks them for things, before their membership has
//! taken it back from `failed`; their answers would otherwise be dropped and its requests and
//! catch-up rounds would wait for a timeout.

use crate::io::PeerMsg;
use membership::NodeId;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a message waits for its peer's address.
pub const WAIT: Duration = Duration::from_secs(10);
/// Most messages held per peer (the oldest go first).
pub const PER_PEER: usize = 128;

/// What the hold did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldStats {
    /// Messages held for a peer without an address.
    pub held: u64,
    /// Held messages sent once their peer's address arrived.
    pub released: u64,
    /// Held messages dropped: too old, or too many for one peer.
    pub dropped: u64,
}

/// The hold itself.
#[derive(Debug, Default)]
pub struct Hold {
    held: BTreeMap<NodeId, VecDeque<(Duration, PeerMsg)>>,
    stats: HoldStats,
}

impl Hold {
    /// Holds `msg` for `to` at core time `now`.
    pub fn hold(&mut self, to: NodeId, msg: PeerMsg, now: Duration) {
        self.stats.held += 1;
        let q = self.held.entry(to).or_default();
        q.push_back((now, msg));
        while q.len() > PER_PEER {
            q.pop_front();
            self.stats.dropped += 1;
        }
    }

    /// Drops what waited longer than [`WAIT`] by `now`.
    pub fn expire(&mut self, now: Duration) {
        let mut dropped = 0;
        self.held.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) >= WAIT)
            {
                q.pop_front();
                dropped += 1;
            }
            !q.is_empty()
        });
        self.stats.dropped += dropped;
    }

    /// When the oldest held message runs out of time.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.held
            .values()
            .filter_map(|q| q.front())
            .map(|(t, _)| *t + WAIT)
            .min()
    }

    /// Takes the held messages for peers that now have an address, in the order they were held.
    pub fn routable(
        &mut self,
        addrs: &BTreeMap<NodeId, SocketAddr>,
    ) -> Vec<(NodeId, SocketAddr, PeerMsg)> {
        let ready: Vec<NodeId> = self
            .held
            .keys()
            .filter(|id| addrs.contains_key(id))
            .copied()
            .collect();
        let mut out = Vec::new();
        for id in ready {
            let addr = addrs[&id];
            out.extend(
                self.held
                    .remove(&id)
                    .into_iter()
                    .flatten()
                    .map(|(_, m)| (id, addr, m)),
            );
        }
        self.stats.released += out.len() as u64;
        out
    }

    /// Counters so far.
    pub fn stats(&self) -> HoldStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(op: u64) -> PeerMsg {
        PeerMsg::Store(store::StoreMsg::WriteAck { op })
    }

    #[test]
    fn messages_for_an_unreachable_peer_wait_for_its_address_and_no_longer() {
        let (a, b) = (NodeId(1), NodeId(2));
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let t0 = Duration::from_secs(100);
        let mut h = Hold::default();
        h.hold(a, msg(1), t0);
        h.hold(a, msg(2), t0);
        h.hold(b, msg(3), t0);
        assert_eq!(h.next_expiry(), Some(t0 + WAIT));
        assert!(h.routable(&BTreeMap::new()).is_empty(), "no address yet");
        let ready = h.routable(&[(a, addr)].into());
        assert_eq!(
            ready,
            vec![(a, addr, msg(1)), (a, addr, msg(2))],
            "in order, once"
        );
        assert!(h.routable(&[(a, addr)].into()).is_empty());
        h.expire(t0 + WAIT - Duration::from_millis(1));
        assert_eq!(h.stats().dropped, 0, "not yet");
        h.expire(t0 + WAIT);
        assert_eq!(h.stats().dropped, 1, "b's expired at the limit");
        assert_eq!(h.next_expiry(), None);
        // A peer that never comes back costs at most PER_PEER messages.
        for i in 0..PER_PEER as u64 + 10 {
            h.hold(b, msg(i), t0 + WAIT);
        }
        assert_eq!(h.stats().dropped, 11);
        assert_eq!(h.held[&b].len(), PER_PEER);
        assert_eq!(h.stats().held, 3 + PER_PEER as u64 + 10);
        assert_eq!(h.stats().released, 2);
    }
}
