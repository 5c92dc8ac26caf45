//! What the store needs to know from membership, computed in one place so that the agent's driver
//! and the simulator feed the store core identically.

use membership::{MemberState, MemberView, Membership, NodeId};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The store's view of the cluster: reachable peers with their votes and addresses, and the quorum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreView {
    /// Peers membership holds reachable (alive or suspect), with their votes.
    pub peers: BTreeMap<NodeId, u32>,
    /// Where each of those peers gossips (the store's stream transport shares the port).
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    /// The generation of each of those peers (a new one means the process restarted).
    pub generations: BTreeMap<NodeId, u64>,
    /// Whether this node reaches a quorum of votes.
    pub has_quorum: bool,
    /// Votes this node reaches, its own included.
    pub reachable_votes: u32,
}

impl StoreView {
    /// Reads the view off a membership core. A suspect still counts as reachable: suspicion is
    /// not failure, and dropping a suspect would fail quorum rounds that can still succeed.
    pub fn of(core: &Membership) -> Self {
        Self::from_members(&core.members(), core.quorum())
    }

    /// The view from a member list and a quorum status.
    pub fn from_members(members: &[MemberView], q: membership::QuorumStatus) -> Self {
        let mut view = StoreView {
            has_quorum: q.has_quorum,
            reachable_votes: q.reachable_votes,
            ..StoreView::default()
        };
        for m in members.iter().filter(|m| !m.is_self) {
            if matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                view.peers.insert(m.id, m.votes);
                view.addrs.insert(m.id, m.gossip_addr);
                view.generations.insert(m.id, m.generation);
            }
        }
        view
    }
}
