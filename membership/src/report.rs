//! What the core reports: the member list, events, and the quorum view, recomputed after every
//! input from what foca and the metadata say.

use crate::core::{Known, Membership};
use crate::identity::{NodeId, Peer};
use crate::meta::MetaRef;
use crate::quorum::QuorumStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tracing::{info, warn};

/// How a member is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared failed unless it refutes.
    Suspect,
    /// Declared down without having announced a leave.
    Failed,
    /// Announced a graceful leave.
    Left,
}

impl MemberState {
    /// All states, for metrics.
    pub const ALL: [MemberState; 4] = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
        MemberState::Left,
    ];

    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Failed => "failed",
            MemberState::Left => "left",
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Stable node id.
    pub id: NodeId,
    /// Node name (empty until its metadata arrives).
    pub name: String,
    /// Reported state.
    pub state: MemberState,
    /// Datacenter (empty until its metadata arrives).
    pub datacenter: String,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// HTTP API address, if known.
    pub api_addr: Option<SocketAddr>,
    /// Generation of the incarnation seen.
    pub generation: u64,
    /// Operator tags.
    pub tags: BTreeMap<String, String>,
    /// Quorum votes (1 until metadata arrives).
    pub votes: u32,
    /// True for the node itself.
    pub is_self: bool,
}

/// A member named in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRef {
    /// Stable node id.
    pub id: NodeId,
    /// Node name, if its metadata is known.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Generation of the incarnation concerned.
    pub generation: u64,
}

/// Something the operator or an application should hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A node joined for the first time (or after a graceful leave).
    MemberJoined {
        /// Who.
        member: MemberRef,
    },
    /// A node stopped answering and did not announce a leave.
    MemberFailed {
        /// Who.
        member: MemberRef,
    },
    /// A node left gracefully.
    MemberLeft {
        /// Who.
        member: MemberRef,
    },
    /// A node reported failed is alive again.
    MemberRecovered {
        /// Who.
        member: MemberRef,
    },
    /// A node restarted (a new generation) before anyone declared it failed.
    MemberRestarted {
        /// Who, with the new generation.
        member: MemberRef,
    },
    /// This node can no longer reach a quorum of votes.
    QuorumLost {
        /// The quorum view at the change.
        quorum: QuorumStatus,
    },
    /// This node reaches a quorum of votes again (or for the first time).
    QuorumRegained {
        /// The quorum view at the change.
        quorum: QuorumStatus,
    },
    /// This node took a new generation (it was declared down and rejoined); the driver persists it
    /// so that the next start uses a higher one.
    GenerationChanged {
        /// The new generation.
        generation: u64,
    },
}

impl Event {
    /// The member a member event is about (`None` for quorum and generation events).
    pub fn member(&self) -> Option<&MemberRef> {
        match self {
            Event::MemberJoined { member }
            | Event::MemberFailed { member }
            | Event::MemberLeft { member }
            | Event::MemberRecovered { member }
            | Event::MemberRestarted { member } => Some(member),
            _ => None,
        }
    }

    /// The member a member event is about, to fill in (the node names members late).
    pub fn member_mut(&mut self) -> Option<&mut MemberRef> {
        match self {
            Event::MemberJoined { member }
            | Event::MemberFailed { member }
            | Event::MemberLeft { member }
            | Event::MemberRecovered { member }
            | Event::MemberRestarted { member } => Some(member),
            _ => None,
        }
    }
}

/// The votes and datacenter of node `id` by its record in `table` (1 and "" until its record
/// arrives: a member of no datacenter counts for nothing in `datacenters` mode).
pub(crate) fn voter_in(table: &crate::meta::MetaTable, id: NodeId) -> crate::reach::Voter {
    table.get(id).map_or((1, String::new()), |meta| {
        (meta.votes, meta.datacenter.to_owned())
    })
}

/// The vote tally is checked against a full recount once per this many probe periods.
pub(crate) const RECOUNT_EVERY_PROBES: u64 = 20;

impl Membership {
    /// Every member this node knows, itself included, ordered by node id.
    pub fn members(&self) -> Vec<MemberView> {
        let table = self.table();
        let mut newest: BTreeMap<NodeId, (Peer, foca::State)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let p = *m.id();
            if p.id == self.identity.id {
                continue;
            }
            match newest.get(&p.id) {
                Some((q, _)) if q.generation >= p.generation => {}
                _ => {
                    newest.insert(p.id, (p, m.state()));
                }
            }
        }
        let mut out = Vec::with_capacity(newest.len() + 1);
        out.push(self.view_of(
            self.identity,
            MemberState::Alive,
            Some(self.own_meta.view()),
            true,
        ));
        for (id, (peer, state)) in newest {
            let meta = table.get(id);
            let state = match state {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down => {
                    if meta
                        .as_ref()
                        .is_some_and(|m| m.leaving && m.generation == peer.generation)
                    {
                        MemberState::Left
                    } else {
                        MemberState::Failed
                    }
                }
            };
            out.push(self.view_of(peer, state, meta, false));
        }
        out.sort_by_key(|m| m.id);
        out
    }

    /// How many members (itself included) are in each state.
    pub fn member_counts(&self) -> BTreeMap<MemberState, usize> {
        let mut counts: BTreeMap<MemberState, usize> =
            MemberState::ALL.iter().map(|s| (*s, 0)).collect();
        for m in self.members() {
            *counts.entry(m.state).or_default() += 1;
        }
        counts
    }

    /// Number of nodes whose metadata this node holds (itself included).
    pub fn known_metadata(&self) -> usize {
        self.table().len()
    }

    pub(crate) fn view_of(
        &self,
        peer: Peer,
        state: MemberState,
        meta: Option<MetaRef<'_>>,
        is_self: bool,
    ) -> MemberView {
        // Only metadata of the same incarnation or newer describes this peer.
        let meta = meta.filter(|m| m.generation >= peer.generation || is_self);
        MemberView {
            id: peer.id,
            name: meta.as_ref().map(|m| m.name.to_owned()).unwrap_or_default(),
            state,
            datacenter: meta
                .as_ref()
                .map(|m| m.datacenter.to_owned())
                .unwrap_or_default(),
            gossip_addr: peer.addr,
            api_addr: meta.as_ref().and_then(|m| m.api_addr),
            generation: peer.generation,
            tags: meta.as_ref().map(|m| m.to_meta().tags).unwrap_or_default(),
            votes: meta.as_ref().map_or(1, |m| m.votes),
            is_self,
        }
    }

    pub(crate) fn member_ref(&self, p: Peer) -> MemberRef {
        let name = self
            .table()
            .get(p.id)
            .map(|m| m.name.to_owned())
            .unwrap_or_default();
        MemberRef {
            id: p.id,
            name,
            addr: p.addr,
            generation: p.generation,
        }
    }

    /// Recomputes the quorum view after any input.
    pub(crate) fn after_input(&mut self) {
        let fresh = self.broadcasts.take_fresh();
        let strangers = self.apply_fresh_records(fresh);
        self.introduce_to(strangers);
        self.update_quorum();
    }

    /// Metadata records that arrived since the last input: their votes count at once, and a
    /// leaving record that arrives after the down update (reordered, or lost and repaired by a
    /// digest exchange) turns a reported failure into a leave. Returns the records' nodes that
    /// SWIM has not shown us (to be introduced to).
    fn apply_fresh_records(&mut self, fresh: Vec<NodeId>) -> Vec<NodeId> {
        for id in &fresh {
            let meta = &self.meta;
            self.reach.set_voter(*id, || {
                voter_in(&meta.lock().expect("meta lock poisoned"), *id)
            });
        }
        self.described.extend(fresh.iter().copied());
        let mut strangers = Vec::new();
        for id in fresh {
            let Some(k) = self.reach.known(id) else {
                strangers.push(id);
                continue;
            };
            if k.state != MemberState::Failed {
                continue;
            }
            let meta = self.table().get(id).map(|m| m.to_meta());
            if let Some(m) = meta
                && m.leaving
                && m.generation == k.generation
            {
                self.reach.set_known(
                    id,
                    Known {
                        generation: k.generation,
                        state: MemberState::Left,
                    },
                );
                let member = MemberRef {
                    id,
                    name: m.name.clone(),
                    addr: m.gossip_addr,
                    generation: m.generation,
                };
                let ev = Event::MemberLeft { member };
                self.events.push_back(ev);
            }
        }
        strangers
    }

    /// Recomputes the quorum view from the reachable votes; a change is an event.
    fn update_quorum(&mut self) {
        let reachable = self.own_meta.votes + self.reach.total();
        let met = match self.cfg.quorum.datacenter_votes() {
            None => self.cfg.quorum.is_met(reachable),
            Some(_) => self.cfg.quorum.met_by(self.voters()),
        };
        let has = met && !self.leaving;
        self.quorum.reachable_votes = reachable;
        if has != self.quorum.has_quorum {
            self.quorum.has_quorum = has;
            self.quorum.since = self.now;
            // The node's driver logs the event with its fields (at WARN for a loss).
            let ev = if has {
                Event::QuorumRegained {
                    quorum: self.quorum,
                }
            } else {
                if self.leaving {
                    info!("leaving: this node no longer counts towards a quorum");
                }
                Event::QuorumLost {
                    quorum: self.quorum,
                }
            };
            self.events.push_back(ev);
        }
    }

    /// The next node whose metadata record arrived or changed since the last call (the node
    /// uses it to name members in events that came before their record).
    pub fn poll_described(&mut self) -> Option<NodeId> {
        crate::queue::pop_front_or_shrink(&mut self.described)
    }

    /// Live members (alive or suspect, this node included) whose metadata names them `name`,
    /// with their gossip address and whether it is this node. A scan of names only, without
    /// building the member list (a join of n nodes asks this n times on every node).
    pub fn live_named(&self, name: &str) -> Vec<(NodeId, SocketAddr, bool)> {
        let table = self.table();
        table
            .named(name)
            .filter(|m| {
                m.id == self.identity.id
                    || self.reach.known(m.id).is_some_and(|k| {
                        matches!(k.state, MemberState::Alive | MemberState::Suspect)
                    })
            })
            .map(|m| (m.id, m.gossip_addr, m.id == self.identity.id))
            .collect()
    }

    /// The value of tag `key` in node `id`'s metadata (this node's own included).
    pub fn tag_of(&self, id: NodeId, key: &str) -> Option<String> {
        if id == self.identity.id {
            return self.own_meta.tags.get(key).cloned();
        }
        self.table()
            .get(id)
            .and_then(|m| m.tags.get(key).map(|v| (*v).to_owned()))
    }

    /// The datacenter node `id` gives in its metadata, once its record has arrived.
    pub fn datacenter_of(&self, id: NodeId) -> Option<String> {
        self.table()
            .get(id)
            .map(|m| m.datacenter.to_owned())
            .filter(|d| !d.is_empty())
    }

    /// The name node `id` gives in its metadata, once its record has arrived.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        self.table()
            .get(id)
            .map(|m| m.name.to_owned())
            .filter(|n| !n.is_empty())
    }

    /// The votes and datacenter of node `id` by its metadata (see [`voter_in`]).
    pub(crate) fn voter_of(&self, id: NodeId) -> crate::reach::Voter {
        voter_in(&self.table(), id)
    }

    /// This node and every member it reaches, as (datacenter, votes) per datacenter.
    fn voters(&self) -> impl Iterator<Item = (&str, u32)> {
        std::iter::once((self.own_meta.datacenter.as_str(), self.own_meta.votes))
            .chain(self.reach.by_dc())
    }

    /// Each configured datacenter's reach from this node (`datacenters` mode; empty otherwise).
    pub fn datacenter_reach(&self) -> Vec<crate::quorum::DatacenterReach> {
        if self.leaving {
            return self.cfg.quorum.datacenter_reach([]);
        }
        self.cfg.quorum.datacenter_reach(self.voters())
    }

    /// Recounts reachable votes from foca's member list and rebuilds the incremental tally if
    /// it drifted (it should not; this is a safety net run every few seconds).
    pub(crate) fn recount_reach(&mut self) {
        // One pass, each member's record decoded once, its datacenter borrowed from the table
        // (two passes that decoded every record twice and copied its datacenter were 1.5 % of a
        // simulated 1,000-node join).
        let (counted, drifted_dcs) = {
            let table = self.table();
            let mut members: Vec<(NodeId, u32, &str)> = self
                .foca
                .iter_members()
                .map(|m| m.id().id)
                .filter(|id| *id != self.identity.id)
                .map(|id| {
                    table
                        .get(id)
                        .map_or((id, 1, ""), |meta| (id, meta.votes, meta.datacenter))
                })
                .collect();
            // A restart listed under two generations counts once.
            members.sort_unstable_by_key(|(id, _, _)| *id);
            members.dedup_by_key(|(id, _, _)| *id);
            let counted: u32 = members.iter().map(|(_, v, _)| v).sum();
            let mut by_dc: std::collections::BTreeMap<&str, u32> = Default::default();
            for (_, v, dc) in &members {
                *by_dc.entry(dc).or_default() += v;
            }
            by_dc.retain(|_, v| *v > 0);
            (counted, by_dc.into_iter().ne(self.reach.by_dc()))
        };
        if counted != self.reach.total() || drifted_dcs {
            warn!(
                counted,
                tallied = self.reach.total(),
                "reachable votes drifted; recounted"
            );
            let peers: Vec<(Peer, crate::reach::Voter)> = {
                let table = self.table();
                self.foca
                    .iter_members()
                    .map(|m| *m.id())
                    .filter(|p| p.id != self.identity.id)
                    .map(|p| (p, voter_in(&table, p.id)))
                    .collect()
            };
            self.reach.rebuild(peers.into_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MembershipConfig, QuorumRule};
    use std::time::Duration;

    fn peer(i: u8) -> Peer {
        Peer {
            addr: SocketAddr::from(([10, 0, 0, i], 7946)),
            id: NodeId(u64::from(i)),
            generation: 1,
        }
    }

    /// Three cores, in datacenters "a", "b", "b" with 1, 2 and 4 votes, joined over a lossless
    /// exchange of every datagram.
    fn joined() -> Vec<Membership> {
        let mut nodes: Vec<Membership> = [(1u8, "a", 1u32), (2, "b", 2), (3, "b", 4)]
            .into_iter()
            .map(|(i, dc, votes)| {
                let mut cfg = MembershipConfig::single("recount");
                cfg.expected_nodes = 3;
                cfg.quorum = QuorumRule::majority(7).unwrap();
                cfg.me.datacenter = dc.into();
                cfg.me.votes = votes;
                Membership::new(cfg, peer(i), u64::from(i), Duration::ZERO)
            })
            .collect();
        nodes[1].announce_to(Duration::ZERO, peer(1).addr);
        nodes[2].announce_to(Duration::ZERO, peer(1).addr);
        crate::harness::exchange(&mut nodes, 0, 5_000, |_, _| {});
        nodes
    }

    fn tally(n: &Membership) -> (u32, Vec<(String, u32)>) {
        let by_dc = n.reach.by_dc().into_iter().map(|(d, v)| (d.to_owned(), v));
        (n.reach.total(), by_dc.collect())
    }

    /// The recount finds a tally that drifted in its total, or only in how the votes split over
    /// datacenters, and puts it back; a tally that did not drift it leaves alone.
    #[test]
    fn the_recount_restores_a_tally_that_drifted() {
        let mut nodes = joined();
        let n = &mut nodes[0];
        let right = (6, vec![("b".to_owned(), 6)]);
        assert_eq!(tally(n), right, "node 1 reaches 2 and 3 in b");
        n.recount_reach();
        assert_eq!(tally(n), right);

        // The total drifts: node 3 is counted with 9 votes.
        n.reach.set_voter(NodeId(3), || (9, "b".to_owned()));
        assert_eq!(tally(n).0, 11);
        n.recount_reach();
        assert_eq!(tally(n), right);

        // Only the split drifts: node 2's votes counted in "c", the total unchanged.
        n.reach.set_voter(NodeId(2), || (2, "c".to_owned()));
        assert_eq!(
            tally(n),
            (6, vec![("b".to_owned(), 4), ("c".to_owned(), 2)])
        );
        n.recount_reach();
        assert_eq!(tally(n), right);
    }
}
