//! Finding the cluster: multicast beacons, seed addresses, and introductions to nodes whose
//! metadata arrived before SWIM showed them.

use crate::core::Destination;
use crate::core::{Due, Membership};
use crate::envelope::{Channel, DropReason};
use crate::identity::{NodeId, Peer};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{debug, warn};

/// A discovery beacon: "this node of this cluster gossips here".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Beacon {
    pub(crate) peer: Peer,
}

/// How long after a member failed beacons stay frequent (a partition may heal in that time).
pub(crate) const HEAL_WATCH: Duration = Duration::from_secs(300);

/// How long discovery may go without an answer before it says so at WARN: a seed never answering,
/// or multicast beacons from nobody while this node is alone.
pub(crate) const SILENCE_WARNING: Duration = Duration::from_secs(60);

/// Most announces to strangers (see `introduce_some`) per probe period.
pub(crate) const INTRODUCTIONS_PER_PROBE: usize = 4;

impl Membership {
    /// Replaces the seed addresses (the driver re-resolves DNS names).
    pub fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        self.cfg.seeds = seeds;
    }

    /// Announces this node to `addr` now (a seed or an operator's `join`).
    pub fn announce_to(&mut self, now: Duration, addr: SocketAddr) {
        self.advance(now);
        self.announce(addr);
        self.after_input();
    }

    pub(crate) fn on_beacon(&mut self, from: SocketAddr, payload: &[u8]) {
        let Ok(beacon) = postcard::from_bytes::<Beacon>(payload) else {
            self.drop_packet(DropReason::Malformed, from);
            return;
        };
        let peer = beacon.peer;
        if peer.id == self.identity.id || peer.addr == self.identity.addr {
            self.drop_packet(DropReason::FromSelf, from);
            return;
        }
        self.beacon_heard = (self.now, false);
        if self.leaving {
            return;
        }
        if self.held_down(peer) {
            self.send_down_hint(peer);
        }
        let known_alive = self
            .foca
            .iter_members()
            .any(|m| m.id().addr == peer.addr && m.id().generation >= peer.generation);
        if !known_alive {
            // Rate-limited per address: one announce per probe period is plenty for a beacon
            // storm after a heal, and answers within one round trip.
            let last = self.announced_at.get(&peer.addr).copied();
            if last.is_none_or(|t| self.now >= t + self.timings.probe_period) {
                debug!(peer = ?peer, "beacon from a node we do not see: announcing");
                self.announced_at.insert(peer.addr, self.now);
                if let Err(e) = self.foca.announce(peer, &mut self.rt) {
                    debug!(error = %e, "announce");
                }
                self.drain_foca();
            }
        }
    }

    pub(crate) fn on_beacon_timer(&mut self) {
        if self.leaving || !self.cfg.beacons {
            return;
        }
        let payload = postcard::to_stdvec(&Beacon {
            peer: self.identity,
        })
        .expect("encode");
        self.push_transmit(Destination::Beacon, Channel::Beacon, &payload);
        let (heard, warned) = self.beacon_heard;
        if self.foca.num_members() == 0 && !warned && self.now >= heard + SILENCE_WARNING {
            warn!(
                silent_s = (self.now - heard).as_secs(),
                "multicast discovery heard no other node for a minute and this node is alone: \
                 check the multicast route or discovery.multicast_interface, that the switch \
                 passes multicast (IGMP snooping without a querier drops it), or give seeds"
            );
            self.beacon_heard.1 = true;
        }
        let next = if self.foca.num_members() == 0 {
            let b = self.beacon_backoff;
            self.beacon_backoff = (b * 2).min(self.timings.beacon_every);
            b
        } else if self.last_failure.is_some_and(|t| self.now < t + HEAL_WATCH) {
            self.jitter(self.timings.beacon_after_failure)
        } else {
            self.jitter(self.timings.beacon_every)
        };
        self.schedule(next, Due::Beacon);
    }

    /// Announces this node to nodes whose metadata arrived but whom SWIM never showed us.
    ///
    /// SWIM spreads a join by piggybacked updates with a bounded number of transmissions; when
    /// hundreds join at once, an update can run out before it reaches everyone, and the two nodes
    /// only meet when one probes the other, a full probe cycle later (netsim: 300 nodes not fully
    /// joined after 60 s). Metadata converges by a pull as well, so its arrival is a reliable
    /// sign of a member we miss; one announce makes both sides learn each other.
    pub(crate) fn introduce_to(&mut self, ids: Vec<NodeId>) {
        self.strangers.extend(ids);
        self.introduce_some();
    }

    /// Announces to at most [`INTRODUCTIONS_PER_PROBE`] queued strangers per probe period; the
    /// rest wait (most are met through gossip meanwhile). Without the bound, a thousand nodes
    /// starting at once would send each other a million announces.
    pub(crate) fn introduce_some(&mut self) {
        if self.leaving || self.strangers.is_empty() {
            return;
        }
        let window = self.timings.probe_period;
        if self.now >= self.introduced.0 + window {
            self.introduced = (self.now, 0);
        }
        let mut peers = Vec::new();
        {
            // Field by field (not `self.table()`): the loop below changes other fields meanwhile.
            let table = self.meta.lock().expect("meta lock poisoned");
            while self.introduced.1 < INTRODUCTIONS_PER_PROBE {
                let Some(id) = self.strangers.pop_first() else {
                    break;
                };
                if id == self.identity.id || self.reach.is_known(id) {
                    continue;
                }
                if let Some(m) = table.get(id).filter(|m| !m.leaving) {
                    peers.push(Peer {
                        addr: m.gossip_addr,
                        id: m.id,
                        generation: m.generation,
                    });
                    self.introduced.1 += 1;
                }
            }
        }
        for peer in peers {
            self.announced_at.insert(peer.addr, self.now);
            if let Err(e) = self.foca.announce(peer, &mut self.rt) {
                debug!(error = %e, "announce");
            }
        }
        self.drain_foca();
    }

    pub(crate) fn on_seed_timer(&mut self) {
        if self.leaving {
            return;
        }
        let seeds = self.cfg.seeds.clone();
        for seed in seeds {
            if seed == self.identity.addr {
                continue;
            }
            let member = self.foca.iter_members().any(|m| m.id().addr == seed);
            if member {
                self.silent_seeds.remove(&seed);
                continue;
            }
            self.announce(seed);
            let now = self.now;
            let (since, warned) = self.silent_seeds.entry(seed).or_insert((now, false));
            if !*warned && now >= *since + SILENCE_WARNING {
                warn!(%seed, silent_s = (now - *since).as_secs(),
                    "seed has not answered for a minute: check its address and port, that it runs \
                     with the same cluster.name and cluster.key, and the firewall (UDP and TCP)");
                *warned = true;
            }
        }
        // Seeds removed by a reload are forgotten.
        let seeds = &self.cfg.seeds;
        self.silent_seeds.retain(|s, _| seeds.contains(s));
        let next = if self.foca.num_members() > 0 {
            self.timings.seed_every
        } else {
            let b = self.seed_backoff;
            self.seed_backoff = (b * 2).min(self.timings.seed_every);
            b
        };
        self.schedule(next, Due::Seeds);
    }
}
