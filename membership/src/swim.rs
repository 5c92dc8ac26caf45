//! The foca adapter: the runtime foca calls into, and what the core does with what foca
//! produced (datagrams, timers, and notifications turned into reachability and events).

use crate::core::{Destination, Due, Known, Membership};
use crate::envelope::{Channel, DropReason};
use crate::identity::Peer;
use crate::meta::DigestEntry;
use crate::report::{Event, MemberState};
use foca::{Notification, OwnedNotification, Runtime, Timer};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Collects what foca asks for during one call.
#[derive(Default)]
pub(crate) struct Collect {
    pub(crate) sends: Vec<(Peer, Vec<u8>)>,
    pub(crate) timers: Vec<(Duration, Timer<Peer>)>,
    pub(crate) notes: Vec<OwnedNotification<Peer>>,
}

impl Runtime<Peer> for Collect {
    fn notify(&mut self, notification: Notification<'_, Peer>) {
        self.notes.push(notification.to_owned());
    }
    fn send_to(&mut self, to: Peer, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: Timer<Peer>, after: Duration) {
        self.timers.push((after, event));
    }
}

impl Membership {
    pub(crate) fn on_swim(&mut self, from: SocketAddr, payload: &[u8]) {
        if self.left_swim {
            // Once gone, stay gone: answering a peer's "you are down" would make foca renew the
            // identity and rejoin. Timers still run, so the leave keeps spreading by gossip.
            return;
        }
        match self.foca.handle_data(payload, &mut self.rt) {
            Ok(()) => {}
            Err(foca::Error::MalformedPacket) | Err(foca::Error::Decode(_)) => {
                self.drop_packet(DropReason::Malformed, from);
            }
            Err(e) => debug!(%from, error = %e, "foca rejected data"),
        }
        self.drain_foca();
    }

    pub(crate) fn announce(&mut self, addr: SocketAddr) {
        if addr == self.identity.addr {
            return;
        }
        if let Err(e) = self.foca.announce(Peer::unknown(addr), &mut self.rt) {
            debug!(error = %e, %addr, "announce");
        }
        self.drain_foca();
    }

    /// Moves what foca produced into our queues and reacts to its notifications.
    pub(crate) fn drain_foca(&mut self) {
        let sends = std::mem::take(&mut self.rt.sends);
        for (to, data) in sends {
            self.push_transmit(Destination::Unicast(to.addr), Channel::Swim, &data);
        }
        let timers = std::mem::take(&mut self.rt.timers);
        for (after, timer) in timers {
            self.schedule(after, Due::Foca(timer));
        }
        let notes = std::mem::take(&mut self.rt.notes);
        for note in notes {
            self.on_notification(note);
        }
        let current = *self.foca.identity();
        if current != self.identity {
            self.on_new_identity(current);
        }
    }

    /// Keeps the reachable-vote tally and the events in step with what foca reports.
    pub(crate) fn on_notification(&mut self, note: OwnedNotification<Peer>) {
        match note {
            OwnedNotification::MemberUp(p) => self.on_member_up(p),
            OwnedNotification::MemberDown(p) => self.on_member_down(p),
            OwnedNotification::Rename(old, new) => self.on_rename(old, new),
            OwnedNotification::Idle => {
                info!("no reachable members: looking for the cluster");
                self.beacon_backoff = self.timings.beacon_fast;
                self.seed_backoff = self.timings.seed_retry;
                if !self.leaving {
                    self.reschedule(Due::Seeds, Duration::ZERO);
                    if self.cfg.beacons {
                        self.reschedule(Due::Beacon, Duration::ZERO);
                    }
                }
            }
            OwnedNotification::Active => debug!("connected to the cluster"),
            OwnedNotification::Rejoin(new) => {
                warn!(identity = ?new, "declared down by the cluster: rejoined with a new generation");
            }
            OwnedNotification::Defunct => {
                if !self.left_swim {
                    warn!("foca could not rejoin: identity defunct");
                }
            }
        }
    }

    /// A member is up: count its votes, report it joined, recovered or restarted, and ask for its
    /// record if we lack it.
    fn on_member_up(&mut self, p: Peer) {
        let voter = self.voter_of(p.id);
        self.reach.up(p, voter);
        let member = self.member_ref(p);
        let prev = self.reach.set_known(
            p.id,
            Known {
                generation: p.generation,
                state: MemberState::Alive,
            },
        );
        let event = match prev {
            None => Some(Event::MemberJoined { member }),
            Some(k) if k.state == MemberState::Left => Some(Event::MemberJoined { member }),
            Some(k) if k.state == MemberState::Failed => Some(Event::MemberRecovered { member }),
            Some(k) if p.generation > k.generation => Some(Event::MemberRestarted { member }),
            Some(_) => None,
        };
        let back = matches!(event, Some(Event::MemberRecovered { .. }));
        if let Some(ev) = event {
            self.events.push_back(ev);
        }
        if back {
            // A failed member is back: a partition probably healed. Tell every member we
            // hold down at once instead of waiting for the periodic hints.
            self.hint_down_members(usize::MAX);
        }
        // Ask for its record right away if we lack it, rather than at the next sync. Only
        // that: a whole digest per new member would make a join cost O(n^2) per node; it
        // asks for ours the same way, and the periodic summary exchange repairs the rest.
        // Learned from a SWIM datagram, the record is asked of that datagram's sender together
        // with every other one it made known: in a mass join a datagram introduces dozens of
        // members whose records have not arrived yet, and asking each member on its own cost
        // two datagrams per pair of nodes (2 million of a 1,000-node join's 2.2 million in
        // netsim). The sender knew the member, so it usually holds the record; what it lacks
        // is asked of the member a probe round trip later (`expect_record`).
        if crate::meta_sync::lacks_record(&self.table(), &p) {
            let want = DigestEntry {
                id: p.id,
                generation: p.generation,
                version: 0,
            };
            match &mut self.pull_batch {
                Some(batch) => batch.push(want),
                None => self.send_records(p.addr, Vec::new(), vec![want]),
            }
            self.expect_record(p);
        }
    }

    /// A member is down: stop counting it, and report it left or failed.
    fn on_member_down(&mut self, p: Peer) {
        self.reach.down(p);
        if self
            .reach
            .known(p.id)
            .is_some_and(|k| k.generation > p.generation)
        {
            return; // an old incarnation of a node that already came back
        }
        let left = self
            .table()
            .get(p.id)
            .is_some_and(|m| m.leaving && m.generation == p.generation);
        let state = if left {
            MemberState::Left
        } else {
            MemberState::Failed
        };
        self.reach.set_known(
            p.id,
            Known {
                generation: p.generation,
                state,
            },
        );
        let member = self.member_ref(p);
        let ev = if left {
            Event::MemberLeft { member }
        } else {
            Event::MemberFailed { member }
        };
        if !left {
            self.last_failure = Some(self.now);
        }
        self.events.push_back(ev);
    }

    /// foca renamed a member: a restart under the same id, or two nodes claiming one address.
    fn on_rename(&mut self, old: Peer, new: Peer) {
        self.reach.down(old);
        let voter = self.voter_of(new.id);
        self.reach.up(new, voter);
        if old.id == new.id {
            if let Some(k) = self.reach.known(new.id)
                && new.generation > k.generation
            {
                let was_alive = k.state == MemberState::Alive;
                self.reach.set_known(
                    new.id,
                    Known {
                        generation: new.generation,
                        state: k.state,
                    },
                );
                if was_alive {
                    let member = self.member_ref(new);
                    let ev = Event::MemberRestarted { member };
                    self.events.push_back(ev);
                }
            }
        } else {
            warn!(old = ?old, new = ?new, "two nodes claim one gossip address");
        }
    }

    pub(crate) fn on_new_identity(&mut self, new: Peer) {
        self.identity = new;
        self.own_meta.generation = new.generation;
        self.own_meta.version = 0;
        self.events.push_back(Event::GenerationChanged {
            generation: new.generation,
        });
        self.publish_own_meta();
    }
}
