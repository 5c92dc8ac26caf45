//! Cores wired to each other without a network, for tests: every unicast datagram is delivered
//! at once and none is lost. netsim is the harness with a network (delay, loss, partitions);
//! this is for a test about a core's own bookkeeping once its peers are joined.

use crate::core::{Destination, Membership};
use std::net::SocketAddr;
use std::time::Duration;

/// Runs `nodes` for `ms` milliseconds of core time from `from_ms`, in steps of 5 ms: each node's
/// timers, then its datagrams delivered to the node with the destination address (datagrams to
/// other addresses and broadcasts are dropped); events are drained. `keep` sees every datagram
/// delivered to the first node, with its sender.
pub fn exchange(
    nodes: &mut [Membership],
    from_ms: u64,
    ms: u64,
    mut keep: impl FnMut(SocketAddr, &[u8]),
) {
    for t in (from_ms..from_ms + ms).step_by(5) {
        let now = Duration::from_millis(t);
        for k in 0..nodes.len() {
            nodes[k].handle_timeout(now);
            let mut sent = Vec::new();
            while let Some(tx) = nodes[k].poll_transmit() {
                sent.push(tx);
            }
            while nodes[k].poll_event().is_some() {}
            let me = nodes[k].identity().addr;
            for tx in sent {
                let Destination::Unicast(to) = tx.to else {
                    continue;
                };
                if let Some(j) = nodes.iter().position(|n| n.identity().addr == to) {
                    if j == 0 {
                        keep(me, &tx.bytes);
                    }
                    nodes[j].handle_datagram(now, me, &tx.bytes);
                }
            }
        }
    }
}
