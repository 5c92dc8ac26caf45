//! Captured datagrams replayed into a running core are dropped as replays and change nothing.

use membership::{DropReason, MemberState, Membership, MembershipConfig, NodeId, Peer, QuorumRule};
use std::net::SocketAddr;
use std::time::Duration;

fn peer(i: u8) -> Peer {
    Peer {
        addr: SocketAddr::from(([10, 0, 0, i], 7946)),
        id: NodeId(u64::from(i)),
        generation: 1,
    }
}

fn cfg() -> MembershipConfig {
    let mut cfg = MembershipConfig::single("replay");
    cfg.expected_nodes = 3;
    cfg.quorum = QuorumRule::majority(3).unwrap();
    cfg
}

fn view(n: &Membership) -> Vec<(NodeId, MemberState, String, u64)> {
    n.members()
        .into_iter()
        .map(|m| (m.id, m.state, m.name, m.generation))
        .collect()
}

#[test]
fn every_captured_datagram_replayed_is_dropped_as_a_replay_and_changes_nothing() {
    let mut nodes: Vec<Membership> = (1..=3)
        .map(|i| Membership::new(cfg(), peer(i), u64::from(i), Duration::ZERO))
        .collect();
    nodes[1].announce_to(Duration::ZERO, peer(1).addr);
    nodes[2].announce_to(Duration::ZERO, peer(1).addr);
    let mut captured = Vec::new();
    membership::harness::exchange(&mut nodes, 0, 5_000, |from, bytes| {
        captured.push((from, bytes.to_vec()))
    });
    assert!(captured.len() > 15, "only {} datagrams", captured.len());
    assert!(
        view(&nodes[0]).iter().all(|m| m.1 == MemberState::Alive),
        "{:?}",
        view(&nodes[0])
    );
    // Node 2 dies; node 0 sees it failed. Replaying node 2's old datagrams (pings, acks, its
    // metadata) must not bring it back.
    nodes.truncate(2);
    membership::harness::exchange(&mut nodes, 5_000, 8_000, |_, _| {});
    let before = view(&nodes[0]);
    assert!(
        before
            .iter()
            .any(|m| m.0 == NodeId(3) && m.1 == MemberState::Failed),
        "{before:?}"
    );
    let replays_before = nodes[0].stats().dropped.get(&DropReason::Replay).copied();
    let n = captured.len() as u64;
    for (i, (from, bytes)) in captured.iter().enumerate() {
        let now = Duration::from_millis(13_000 + i as u64 / 10);
        nodes[0].handle_datagram(now, *from, bytes);
        nodes[0].handle_timeout(now);
        while nodes[0].poll_event().is_some() {}
    }
    let dropped = nodes[0].stats().dropped.get(&DropReason::Replay).copied();
    assert_eq!(
        dropped.unwrap_or(0) - replays_before.unwrap_or(0),
        n,
        "every replayed datagram is dropped as a replay"
    );
    assert_eq!(view(&nodes[0]), before, "a replay changed the member list");
}
