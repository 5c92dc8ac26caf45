//! Per-node metadata: this node's record on foca broadcasts, and a pull-based digest exchange
//! (Scuttlebutt's idea) that repairs whatever the broadcasts missed.

use crate::core::{Destination, Due, Membership};
use crate::envelope::{Channel, DropReason, MAX_PAYLOAD};
use crate::identity::NodeId;
use crate::identity::Peer;
use crate::meta::{
    DigestEntry, MAX_META_BYTES, MetaMsg, MetaTable, NodeMeta, digest_parts, records_payload,
};
use rand::RngExt;
use std::net::SocketAddr;
use tracing::{debug, info, warn};

/// Most members asked directly for their missing record in one metadata sync round.
const MAX_DIRECT_PULLS: usize = 8;

/// Most records awaited for a second ask (see [`Membership::expect_record`]); more in one probe
/// round trip are left to the periodic sync.
const MAX_AWAITED: usize = 256;

impl Membership {
    pub(crate) fn publish_own_meta(&mut self) {
        let encoded = self.own_meta.encode();
        if encoded.len() > MAX_META_BYTES {
            // The agent validates tags against this limit at start; reaching here is a bug there.
            warn!(bytes = encoded.len(), "own metadata too large to broadcast");
        }
        match self.foca.add_broadcast(&encoded) {
            Ok(_) => {}
            Err(e) => warn!(error = %e, "add_broadcast"),
        }
        if self.foca.num_members() > 0
            && let Err(e) = self.foca.broadcast(&mut self.rt)
        {
            debug!(error = %e, "broadcast");
        }
        self.drain_foca();
    }

    pub(crate) fn on_meta(&mut self, from: SocketAddr, payload: &[u8]) {
        let Ok(msg) = postcard::from_bytes::<MetaMsg>(payload) else {
            self.drop_packet(DropReason::Malformed, from);
            return;
        };
        match msg {
            MetaMsg::Summary(hash) => {
                if hash != self.meta_hash() {
                    let digest = self.table().digest();
                    self.send_digest(from, digest);
                }
            }
            MetaMsg::Suspected {
                peer,
                incarnation,
                by,
            } => {
                if peer == self.identity && !self.left_swim {
                    let update = foca::Member::new(peer, incarnation, foca::State::Suspect);
                    if let Err(e) =
                        self.foca
                            .apply_many(std::iter::once(update), true, &mut self.rt)
                    {
                        debug!(error = %e, "refuting suspicion");
                    }
                    // Any SWIM message carries our new incarnation in its header: an announce to
                    // the suspecter refutes there at once.
                    if by.addr != self.identity.addr
                        && let Err(e) = self.foca.announce(by, &mut self.rt)
                    {
                        debug!(error = %e, "answering a suspicion");
                    }
                    // Spread the refutation now rather than at the next gossip tick.
                    if let Err(e) = self.foca.gossip(&mut self.rt) {
                        debug!(error = %e, "gossip refutation");
                    }
                    self.drain_foca();
                }
            }
            MetaMsg::Down { peer, by } => {
                if peer == self.identity && !self.left_swim {
                    info!("peers hold this node as down: rejoining with a new generation");
                    let update = foca::Member::new(peer, 0, foca::State::Down);
                    if let Err(e) =
                        self.foca
                            .apply_many(std::iter::once(update), true, &mut self.rt)
                    {
                        debug!(error = %e, "rejoin after down hint");
                    }
                    self.drain_foca();
                    // Introduce the new identity to the node that told us, which is across
                    // whatever cut just healed; gossip carries it to the rest. If we hold that
                    // node down too, tell it, so both sides renew within one round trip.
                    if self.held_down(by) {
                        self.send_down_hint(by);
                    }
                    self.announce(by.addr);
                }
            }
            MetaMsg::Digest(theirs) => {
                let all = NodeId(0)..=NodeId(u64::MAX);
                let (newer_here, newer_there) = self.table().compare(all, &theirs);
                self.send_records(from, newer_here, newer_there);
            }
            MetaMsg::DigestPart {
                from: first,
                to: last,
                entries,
            } => {
                let (newer_here, newer_there) = self.table().compare(first..=last, &entries);
                self.send_records(from, newer_here, newer_there);
            }
            MetaMsg::Records { records, want } => {
                for r in records {
                    if r.id == self.identity.id {
                        self.refute_own_record(&r);
                        continue;
                    }
                    self.broadcasts.accept(r);
                }
                if !want.is_empty() {
                    let table = self.table();
                    let send: Vec<Vec<u8>> = want
                        .iter()
                        .filter_map(|w| {
                            table
                                .encoded_since(w.id, (w.generation, w.version))
                                .map(<[u8]>::to_vec)
                        })
                        .collect();
                    drop(table);
                    self.send_records(from, send, Vec::new());
                }
            }
        }
    }

    /// Someone holds a record of this node at least as new as ours (we lost state, or a stale
    /// instance wrote it): jump past it so our own record wins everywhere.
    pub(crate) fn refute_own_record(&mut self, r: &NodeMeta) {
        if r.stamp() >= self.own_meta.stamp() && *r != self.own_meta {
            self.own_meta.generation = self.own_meta.generation.max(r.generation);
            self.own_meta.version = r.version + 1;
            self.publish_own_meta();
        }
    }

    pub(crate) fn meta_hash(&self) -> u64 {
        self.table().digest_hash()
    }

    pub(crate) fn send_digest(&mut self, to: SocketAddr, digest: Vec<DigestEntry>) {
        // A digest too large for one datagram goes in parts; each names the id range it covers
        // and is answered on its own, so nothing is lost or sent twice by splitting. A part's
        // head is the variant, two 8-byte ids and the entry count: under 32 bytes.
        for part in digest_parts(&digest, MAX_PAYLOAD - 32) {
            let payload = postcard::to_stdvec(&part).expect("encode");
            self.push_transmit(Destination::Unicast(to), Channel::Meta, &payload);
        }
    }

    /// Sends `records` (each as encoded, see [`records_payload`]) and `want` to `to`, in as many
    /// datagrams as they need.
    pub(crate) fn send_records(
        &mut self,
        to: SocketAddr,
        records: Vec<Vec<u8>>,
        mut want: Vec<DigestEntry>,
    ) {
        // A want list longer than a datagram holds goes first, in want-only datagrams.
        const WANT_MAX: usize = (MAX_PAYLOAD - 32) / 28;
        while want.len() > WANT_MAX {
            let rest = want.split_off(WANT_MAX);
            let payload = records_payload(&[], &std::mem::replace(&mut want, rest));
            self.push_transmit(Destination::Unicast(to), Channel::Meta, &payload);
        }
        // Greedy packing by encoded size; a record never exceeds MAX_META_BYTES so one always
        // fits. A record takes its encoding's size in the message (a sequence's elements carry
        // no length); the 2 bytes more per record are the slack this packing always counted,
        // kept so that the datagrams are the ones sent before records went out encoded (fuller
        // datagrams changed a simulated 3,000-node join's course, not its cost).
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 16 + want.len() * 28;
        for r in records {
            if !batch.is_empty() && size + r.len() + 2 > MAX_PAYLOAD {
                let payload = records_payload(&batch, &std::mem::take(&mut want));
                self.push_transmit(Destination::Unicast(to), Channel::Meta, &payload);
                batch.clear();
                size = 16;
            }
            size += r.len() + 2;
            batch.push(r);
        }
        if !batch.is_empty() || !want.is_empty() {
            let payload = records_payload(&batch, &want);
            self.push_transmit(Destination::Unicast(to), Channel::Meta, &payload);
        }
    }

    pub(crate) fn on_meta_sync_timer(&mut self) {
        if self.leaving {
            return;
        }
        let members: Vec<Peer> = self.foca.iter_members().map(|m| *m.id()).collect();
        if !members.is_empty() {
            let target = members[self.rng.random_range(0..members.len())].addr;
            let payload = postcard::to_stdvec(&MetaMsg::Summary(self.meta_hash())).expect("encode");
            self.push_transmit(Destination::Unicast(target), Channel::Meta, &payload);
        }
        // Come back five times sooner until every record is here.
        let mut every = self.jitter(self.timings.meta_sync_every);
        if self.ask_for_missing_records() {
            every /= 5;
        }
        self.schedule(every, Due::MetaSync);
    }

    /// A member came up whose record we lack, and we asked for it: of the gossiper that made it
    /// known, or of the member (see `swim::on_member_up`). The gossiper may lack it too: in a
    /// simultaneous start it learned the member moments before. So a probe round trip after the
    /// first such ask, each record asked for since and still missing is asked of its member,
    /// which always holds its own record. Without this the periodic sync found it, up to 12.5 s
    /// later, and the node reported the join unnamed after its 2 s wait (netsim: 9 of 50 seeds of 15 nodes started
    /// at once took 10 s to hold every record; the membership bench saw 2.0 s joins in half its
    /// runs). Only the records asked for in the last round trip; a sync finds any other.
    pub(crate) fn expect_record(&mut self, member: Peer) {
        if self.awaited.is_empty() {
            self.schedule(self.timings.probe_rtt, Due::PullMissing);
        }
        if self.awaited.len() < MAX_AWAITED {
            self.awaited.push(member);
        }
    }

    /// The second ask of [`Self::expect_record`], of the members themselves, when only a few
    /// records are still missing: a lost or unanswerable ask. Many missing is a mass join under
    /// way, which broadcasts and the syncs carry. Asked there as well, they cost nearly three times
    /// the metadata datagrams of an 80-node join through a seed (netsim
    /// `a_mass_join_spreads_every_record_without_a_request_per_pair_of_nodes`, seed 1: 5,410
    /// against 1,880).
    pub(crate) fn on_pull_missing_timer(&mut self) {
        let awaited = std::mem::take(&mut self.awaited);
        if self.leaving {
            return;
        }
        let missing: Vec<Peer> = {
            let table = self.table();
            awaited
                .into_iter()
                .filter(|p| lacks_record(&table, p))
                .collect()
        };
        if missing.len() <= MAX_DIRECT_PULLS {
            for p in missing {
                self.ask_directly(p);
            }
        }
    }

    /// Asks members whose record of their current generation never arrived for it, each
    /// directly (two datagrams instead of the summary exchange's four, which matters under
    /// heavy loss), at most [`MAX_DIRECT_PULLS`] of them. Whether any was missing.
    fn ask_for_missing_records(&mut self) -> bool {
        let missing: Vec<Peer> = {
            let table = self.table();
            self.foca
                .iter_members()
                .map(|m| *m.id())
                .filter(|p| lacks_record(&table, p))
                .take(MAX_DIRECT_PULLS)
                .collect()
        };
        for p in &missing {
            self.ask_directly(*p);
        }
        !missing.is_empty()
    }

    fn ask_directly(&mut self, p: Peer) {
        let want = vec![DigestEntry {
            id: p.id,
            generation: p.generation,
            version: 0,
        }];
        self.send_records(p.addr, Vec::new(), want);
    }
}

/// Whether `table` lacks `p`'s record of its current generation.
pub(crate) fn lacks_record(table: &MetaTable, p: &Peer) -> bool {
    table.stamp(p.id).is_none_or(|(g, _)| g < p.generation)
}
