//! Suspicion and down hints: suspected members are told so (they refute at once), members that
//! stay suspect too long are declared down by every node, and members held down are told so, so
//! that a healed partition merges without waiting for multicast.

use crate::core::{Destination, Due, Membership};
use crate::envelope::Channel;
use crate::identity::Peer;
use crate::meta::MetaMsg;
use foca::Timer;
use rand::RngExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long a member that refuted a suspicion raised by [`Membership::handle_process_gone`] is
/// not suspected that way again (its store port refuses connections while it answers probes).
const GONE_AGAIN_AFTER: Duration = Duration::from_secs(60);

impl Membership {
    /// The store transport found the process at `addr` gone: a connection to it was closed and a
    /// new one refused, so nothing listens on its port (a crashed or killed process on a host
    /// that is up). SWIM would see it only when some member next probes it: with random probe
    /// order that is most of a probe period later on average, and more than two periods in one
    /// case out of ten. This suspects it at once and declares it down one suspicion timeout
    /// later, as a failed probe would.
    ///
    /// It is a suspicion, not a verdict: a member that is alive (its store port firewalled, say)
    /// refutes it like any other, is warned about, and is not suspected this way again for a
    /// minute. Addresses that are not an alive member are ignored.
    pub fn handle_process_gone(&mut self, now: Duration, addr: SocketAddr) {
        self.advance(now);
        if self.leaving {
            return;
        }
        let Some((peer, incarnation)) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == addr && m.state() == foca::State::Alive)
            .map(|m| (*m.id(), m.incarnation()))
        else {
            return;
        };
        let now = self.now;
        self.gone_suspected
            .retain(|_, at| now.saturating_sub(*at) < GONE_AGAIN_AFTER);
        if self.gone_suspected.contains_key(&peer) {
            return;
        }
        self.gone_suspected.insert(peer, now);
        info!(peer = ?peer, "its store port refuses connections: the process is gone; suspecting it");
        let suspect = foca::Member::new(peer, incarnation, foca::State::Suspect);
        if let Err(e) = self
            .foca
            .apply_many(std::iter::once(suspect), true, &mut self.rt)
        {
            debug!(error = %e, "suspecting a gone process");
        }
        self.drain_foca();
        self.hint_suspects(&BTreeMap::from([(peer, incarnation)]));
        if !self.timers.values().any(|d| *d == Due::SuspectHints) {
            self.schedule(self.timings.probe_rtt, Due::SuspectHints);
        }
        let after = self.timings.suspect_to_down;
        self.schedule(after, Due::SuspectDown(peer, incarnation));
        self.after_input();
    }

    /// The end of a suspicion raised by [`Membership::handle_process_gone`]: down, unless the
    /// member refuted.
    pub(crate) fn declare_down_if_still(&mut self, peer: Peer, incarnation: u16) {
        let state = self
            .foca
            .iter_membership_state()
            .find(|m| *m.id() == peer)
            .map(|m| (m.state(), m.incarnation()));
        match state {
            Some((foca::State::Suspect, inc)) if inc == incarnation => {
                let down = foca::Member::new(peer, incarnation, foca::State::Down);
                if let Err(e) = self
                    .foca
                    .apply_many(std::iter::once(down), true, &mut self.rt)
                {
                    debug!(error = %e, "declaring a gone process down");
                }
                self.drain_foca();
            }
            Some((foca::State::Alive, inc)) if inc > incarnation => {
                warn!(peer = ?peer, "refuted a suspicion: it answers gossip while its store port refuses connections (a firewall rejecting TCP on the gossip port?)");
            }
            _ => {}
        }
    }

    /// The direct probe went unanswered and foca has just asked other members to probe
    /// indirectly. foca gives its verdict only when its next probe starts, a whole probe period
    /// later, though the indirect answers come within a round trip: the next probe (and with it
    /// the verdict) is moved to one probe timeout from now. A healthy cluster never gets here,
    /// so the probe period can be long (bytes on the wire) while a member found silent is
    /// suspected 2 probe timeouts after its probe began, not a period later (issue 16).
    pub(crate) fn hasten_probe_verdict(&mut self) {
        let deadline = self.now + self.timings.probe_rtt;
        let key = self
            .timers
            .iter()
            .find(|(_, d)| matches!(d, Due::Foca(Timer::ProbeRandomMember(_))))
            .map(|(k, _)| *k);
        if let Some(k) = key
            && k.0 > deadline
            && let Some(due) = self.timers.remove(&k)
        {
            self.seq += 1;
            self.timers.insert((deadline, self.seq), due);
        }
    }

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
