//! Deliberate defects, and the fuzz entry point: test machinery kept out of the protocol files.

#[cfg(feature = "testing")]
use crate::core::StoreCore;

/// A deliberate defect, injected by simulation tests to show that a checker catches the broken
/// guarantee (a checker that never fails proves nothing). Never used by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// A coordinator writes without the first (learn) phase: its version need not exceed the
    /// quorum's.
    SkipLearnPhase,
    /// A snapshot leaves out every eighth key: a restart from it loses them.
    SnapshotDropsKeys,
    /// Replicas acknowledge a write without storing it: only the coordinator holds it.
    AckWithoutStoring,
    /// A coordinator ignores the quorum view and counts itself as a quorum for writes.
    QuorumOfOne,
    /// Quorum reads are answered from the local replica alone.
    ReadLocalOnly,
    /// Acknowledge writes before the log has them on disk.
    AckBeforeDurable,
    /// Anti-entropy never runs (neither periodically nor when a peer appears): replicas that
    /// missed writes stay behind.
    NoAntiEntropy,
    /// A catch-up ends as soon as it begins: a restarted node calls itself current at once.
    SkipCatchUp,
    /// A node that lost acknowledged writes votes in quorum rounds while it catches up.
    VoteWhileCatchingUp,
    /// Quorum rounds ask each reachable peer once, at the start, and a node whose view holds no
    /// quorum refuses at once (the behaviour before issue 18): a round whose requests were lost,
    /// or that needs a peer the view still holds failed, waits for its timeout.
    AskOnce,
    /// Quorum rounds count votes (`required_votes`) even in `datacenters` mode: a side with most
    /// of the votes but not a majority of the datacenters writes.
    CountVotesNotDatacenters,
    /// Periodic anti-entropy rounds list every key of a differing bucket, as before issue 15,
    /// instead of narrowing big buckets to their differing leaves: correct, but the comparison
    /// work the anti-entropy test bounds grows with the store.
    WholeBuckets,
}

#[cfg(feature = "testing")]
impl StoreCore {
    /// Breaks this core on purpose (simulation tests only; see [`Fault`]).
    pub fn inject_fault(&mut self, fault: Fault) {
        self.faults.insert(fault);
    }
}

/// What the `store_msg` fuzz target and its corpus replay run on any bytes: they are read as a
/// sequence of postcard-encoded store messages (until one does not decode) and fed to a core that
/// holds some entries and is catching up, from two peers in turn, with timers run between. Any
/// panic is a bug: an authenticated peer must not be able to crash a node.
#[cfg(feature = "testing")]
pub fn fuzz_messages(data: &[u8]) {
    use crate::config::StoreConfig;
    use crate::msg::StoreMsg;
    use crate::request::{Consistency, Request};
    use membership::NodeId;
    use std::time::Duration;
    let (a, b) = (NodeId(2), NodeId(3));
    let mut cfg = StoreConfig::new(2);
    cfg.durable = true;
    let mut core = StoreCore::new(NodeId(1), cfg, 7, Duration::ZERO, 1_700_000_000_000);
    core.begin_catch_up(true);
    core.set_view([(a, 1), (b, 1)].into(), true, 3);
    for i in 0..4u64 {
        let put = Request::Put {
            store: "default".into(),
            key: format!("k{i}"),
            value: vec![i as u8; 3],
            ttl: None,
            consistency: Some(Consistency::Local),
        };
        core.request(Duration::ZERO, 1_700_000_000_000, put);
    }
    let mut rest = data;
    let mut step = 0u64;
    while let Ok((msg, tail)) = postcard::take_from_bytes::<StoreMsg>(rest) {
        step += 1;
        let now = Duration::from_millis(step * 500);
        let from = if step.is_multiple_of(2) { a } else { b };
        core.handle_message(now, 1_700_000_000_000 + step, from, msg);
        core.persisted(now, 1_700_000_000_000 + step, u64::MAX, u64::MAX);
        core.handle_timeout(now, 1_700_000_000_000 + step);
        while core.poll_send().is_some() {}
        while core.poll_reply().is_some() {}
        while core.poll_log().is_some() {}
        let _ = core.catching_up();
        if tail.len() == rest.len() {
            break;
        }
        rest = tail;
    }
}
