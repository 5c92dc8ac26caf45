//! Suspicion and down hints: suspected members are told so (they refute at once), members that
//! stay suspect too long are declared down by every node, and members held down are told so, so
//! that a healed partition merges without waiting for multicast.

use crate::core::{Destination, Membership};
use crate::envelope::Channel;
use crate::identity::Peer;
use crate::meta::MetaMsg;
use rand::RngExt;
use std::collections::BTreeMap;
use tracing::debug;

impl Membership {
    /// Tells every member this node holds as suspect, once per probe period, that it is suspected.
    pub(crate) fn hint_suspects(&mut self, suspects: &BTreeMap<Peer, u16>) {
        for (&peer, &incarnation) in suspects {
            let msg = MetaMsg::Suspected {
                peer,
                incarnation,
                by: self.identity,
            };
            let payload = postcard::to_stdvec(&msg).expect("encode");
            self.push_transmit(Destination::Unicast(peer.addr), Channel::Meta, &payload);
        }
    }

    /// Members this node holds suspect, with the incarnation suspected (one pass over foca's list
    /// serves both the hints and the expiry each probe period).
    pub(crate) fn suspects(&self) -> BTreeMap<Peer, u16> {
        self.foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| (*m.id(), m.incarnation()))
            .collect()
    }

    /// Declares down a member that stayed suspect, at one incarnation, for three suspicion
    /// timeouts. foca starts a suspicion timer only on the node whose probe failed; the others
    /// wait for that node's down update. Netsim showed that update can miss a node in a large
    /// cluster (1 of 99 nodes held a crashed member suspect for 38 s), so every node keeps its
    /// own, longer, timer, as SWIM describes. A suspect that refuted has a higher incarnation, so
    /// it is never declared down by this.
    pub(crate) fn expire_stale_suspects(&mut self, suspects: BTreeMap<Peer, u16>) {
        let now = self.now;
        let limit = self.timings.suspect_to_down * 3;
        self.suspect_since
            .retain(|p, (inc, _)| suspects.get(p) == Some(inc));
        let mut expired = Vec::new();
        for (peer, inc) in suspects {
            let (_, since) = *self.suspect_since.entry(peer).or_insert((inc, now));
            if now.saturating_sub(since) >= limit {
                expired.push(foca::Member::new(peer, inc, foca::State::Down));
            }
        }
        if !expired.is_empty() {
            for m in &expired {
                self.suspect_since.remove(m.id());
                debug!(peer = ?m.id(), "suspect for three suspicion timeouts: declaring it down");
            }
            if let Err(e) = self
                .foca
                .apply_many(expired.into_iter(), true, &mut self.rt)
            {
                debug!(error = %e, "declaring stale suspects down");
            }
            self.drain_foca();
        }
    }

    /// True when foca holds exactly this identity as down.
    pub(crate) fn held_down(&self, peer: Peer) -> bool {
        self.foca
            .iter_membership_state()
            .any(|m| *m.id() == peer && m.state() == foca::State::Down)
    }

    pub(crate) fn send_down_hint(&mut self, peer: Peer) {
        let last = self.hinted_at.get(&peer.addr).copied();
        if last.is_some_and(|t| self.now < t + self.timings.probe_period) {
            return;
        }
        self.hinted_at.insert(peer.addr, self.now);
        let payload = postcard::to_stdvec(&MetaMsg::Down {
            peer,
            by: self.identity,
        })
        .expect("encode");
        self.push_transmit(Destination::Unicast(peer.addr), Channel::Meta, &payload);
    }

    /// A few members held down (not left) are told so, so that a healed partition merges even
    /// without multicast: the other side renews its identity and announces itself again.
    pub(crate) fn hint_down_members(&mut self, max: usize) {
        let table = self.table();
        let mut down: Vec<Peer> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| *m.id())
            .filter(|p| {
                !table
                    .get(p.id)
                    .is_some_and(|m| m.leaving && m.generation == p.generation)
            })
            .collect();
        drop(table);
        for _ in 0..max {
            if down.is_empty() {
                break;
            }
            let i = self.rng.random_range(0..down.len());
            let peer = down.swap_remove(i);
            self.send_down_hint(peer);
        }
    }
}
