//! What the store needs to know from membership, read off in one place, and which peers'
//! connections the driver must drop when that view changes.

use membership::{MemberState, MemberView, Membership, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The store's view of the cluster: reachable peers with their votes and addresses, and the quorum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreView {
    /// Peers membership holds reachable (alive or suspect), with their votes.
    pub peers: BTreeMap<NodeId, u32>,
    /// Peers membership holds failed (not left), with their votes: quorum rounds that wait ask
    /// them too, since the view can lag behind a network that changed shape (issue 18).
    pub failed: BTreeMap<NodeId, u32>,
    /// Where each reachable peer gossips (the store's stream transport shares the port).
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    /// Where each failed peer gossips: store messages go there (a quorum round that waits asks
    /// failed peers too, and they answer), coordination messages wait in the hold.
    pub failed_addrs: BTreeMap<NodeId, SocketAddr>,
    /// The datacenter of each member by its metadata (for a `datacenters`-mode quorum).
    pub dcs: BTreeMap<NodeId, String>,
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
            if !m.datacenter.is_empty() {
                view.dcs.insert(m.id, m.datacenter.clone());
            }
            match m.state {
                MemberState::Alive | MemberState::Suspect => {
                    view.peers.insert(m.id, m.votes);
                    view.addrs.insert(m.id, m.gossip_addr);
                    view.generations.insert(m.id, m.generation);
                }
                MemberState::Failed => {
                    view.failed.insert(m.id, m.votes);
                    view.failed_addrs.insert(m.id, m.gossip_addr);
                }
                MemberState::Left => {}
            }
        }
        view
    }

    /// The addresses whose stream connections must go when the view changes from `old` to
    /// `self`: peers no longer reachable, and peers that restarted (a new generation). Frames
    /// written to a connection whose process died would be lost without an error, so a restarted
    /// peer gets a fresh one.
    pub fn streams_to_close(&self, old: &StoreView) -> Vec<SocketAddr> {
        let live: BTreeSet<SocketAddr> = self.addrs.values().copied().collect();
        let mut close: BTreeSet<SocketAddr> = old
            .addrs
            .values()
            .filter(|a| !live.contains(a))
            .copied()
            .collect();
        for (id, g) in &self.generations {
            if old.generations.get(id).is_some_and(|o| o != g)
                && let Some(a) = self.addrs.get(id)
            {
                close.insert(*a);
            }
        }
        close.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(peers: &[(u64, &str, u64)]) -> StoreView {
        let mut v = StoreView::default();
        for (id, addr, g) in peers {
            let id = NodeId(*id);
            v.peers.insert(id, 1);
            v.addrs.insert(id, addr.parse().unwrap());
            v.generations.insert(id, *g);
        }
        v
    }

    #[test]
    fn streams_close_for_peers_gone_or_restarted_only() {
        let old = view(&[
            (1, "10.0.0.1:7946", 1),
            (2, "10.0.0.2:7946", 1),
            (3, "10.0.0.3:7946", 4),
        ]);
        let new = view(&[
            (1, "10.0.0.1:7946", 1),
            (3, "10.0.0.3:7946", 5),
            (4, "10.0.0.4:7946", 1),
        ]);
        let close = new.streams_to_close(&old);
        let want: Vec<SocketAddr> = vec![
            "10.0.0.2:7946".parse().unwrap(),
            "10.0.0.3:7946".parse().unwrap(),
        ];
        assert_eq!(close, want);
        assert!(new.streams_to_close(&new).is_empty());
    }
}
