//! Deliberate defects and the fuzz entry point: test machinery kept out of the protocol files.

use crate::core::Membership;
use std::net::SocketAddr;

/// A deliberate defect, injected by simulation tests to show that a checker catches the broken
/// guarantee (a checker that never fails proves nothing). Never used by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Drop every metadata record received: names, datacenters and votes never converge.
    DeafToMetadata,
    /// Drop every datagram from an address this node holds down: partitions never merge.
    IgnoreDownPeers,
    /// One indirect probe and a 1 ms suspicion: ordinary loss makes members fail.
    HastyFailureDetector,
    /// Never emit `MemberFailed`: the event stream stops matching the member list.
    SilentFailures,
}

impl Membership {
    /// Breaks this core on purpose (simulation tests only; see [`Fault`]).
    #[cfg(feature = "testing")]
    pub fn inject_fault(&mut self, fault: Fault) {
        match fault {
            Fault::DeafToMetadata => self.broadcasts.set_deaf(),
            Fault::IgnoreDownPeers => self.ignore_down_peers = true,
            Fault::SilentFailures => self.silent_failures = true,
            Fault::HastyFailureDetector => {
                let mut c = self.timings.foca_config(
                    self.cfg.expected_nodes,
                    crate::envelope::MAX_PAYLOAD,
                    self.cfg.max_queued_updates,
                );
                c.num_indirect_probes = std::num::NonZeroUsize::MIN;
                c.suspect_to_down_after = std::time::Duration::from_millis(1);
                self.foca
                    .set_config(c)
                    .expect("only suspicion settings change");
            }
        }
    }

    /// True when every incarnation this node knows at `addr` is down (the `IgnoreDownPeers` fault).
    pub(crate) fn holds_down(&self, addr: SocketAddr) -> bool {
        let mut seen = false;
        for m in self.foca.iter_membership_state() {
            if m.id().addr == addr {
                if m.state() != foca::State::Down {
                    return false;
                }
                seen = true;
            }
        }
        seen
    }
}

/// What the packet fuzz target and its corpus replay run on any bytes: the first byte picks a
/// channel, the rest is sealed with the cluster key and fed to a fresh core as a datagram from a
/// peer (twice, to reach code that reacts to a known sender), then the core's timers run. Any
/// panic is a bug: an authenticated peer must not be able to crash a node.
#[cfg(feature = "testing")]
pub fn fuzz_datagram(data: &[u8]) {
    use crate::config::MembershipConfig;
    use crate::envelope::{Channel, Sealer};
    use crate::identity::{NodeId, Peer};
    use std::time::Duration;
    let Some((first, payload)) = data.split_first() else {
        return;
    };
    let cfg = MembershipConfig::single("fuzz");
    let sealer = Sealer::new(&cfg.cluster, &cfg.key);
    let me = Peer {
        addr: SocketAddr::from(([10, 0, 0, 1], 7946)),
        id: NodeId(1),
        generation: 1,
    };
    let mut core = Membership::new(cfg, me, 7, Duration::ZERO);
    let channel = Channel::ALL[usize::from(*first) % Channel::ALL.len()];
    let from = SocketAddr::from(([10, 0, 0, 2], 7946));
    for step in 1..=2u64 {
        // Two nonces of one sender generation: the second datagram is not a replay.
        let mut nonce = [first.wrapping_add(1) | 0x80; 12];
        nonce[11] = step as u8;
        let datagram = sealer.seal(channel, nonce, payload);
        let now = Duration::from_millis(step);
        core.handle_datagram(now, from, &datagram);
        core.handle_datagram(now, from, data);
        core.handle_timeout(now + Duration::from_secs(2));
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
        let _ = core.members();
    }
}
