//! netsim drives the same `node` code path the agent does: a node fed what netsim fed it gives
//! the same outputs under a plain harness, and the node's rules that used to live only in the
//! agent's driver (the hold for peers without an address) run here.

use netsim::sim::{Sim, SimConfig};
use netsim::workload::WorkloadConfig;
use netsim::{Seen, WorldFault};
use node::{Node, Output, PeerMsg};
use std::time::Duration;
use store::StoreMsg;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn cluster(nodes: usize, seed: u64, record: Option<usize>) -> Sim {
    let mut cfg = SimConfig::lan(nodes, seed);
    cfg.store = true;
    cfg.durable = true;
    cfg.snapshot_min_records = 20;
    cfg.record_node = record;
    let mut sim = Sim::new(cfg);
    let joined = sim.run_until_cond(10 * S, |s| {
        s.all_running_alive_by_events() && s.all_have_quorum()
    });
    assert!(joined.is_some(), "seed {seed}: the cluster did not form");
    sim
}

fn drain(node: &mut Node, into: &mut Vec<Output>) {
    while let Some(o) = node.poll_output() {
        into.push(o);
    }
}

#[test]
fn a_node_fed_what_netsim_fed_it_gives_the_same_outputs() {
    for seed in [3, 11] {
        let mut sim = cluster(3, seed, Some(0));
        sim.start_clients(WorkloadConfig::default());
        sim.run_for(5 * S);
        sim.crash(0);
        assert!(
            sim.world_faults()
                .iter()
                .any(|(_, f)| *f == WorldFault::Crash(0))
        );
        let rec = sim.recording().expect("node 0 was recorded").clone();

        // A plain harness: no network, no disk, just the recorded inputs in order.
        let mut node = Node::recover(
            rec.cfg.clone(),
            rec.identity,
            rec.seed,
            rec.started.0,
            rec.started.1,
            rec.disk.clone(),
        );
        let mut outputs = Vec::new();
        drain(&mut node, &mut outputs);
        for (now, wall, input) in &rec.inputs {
            node.handle(*now, *wall, input.clone());
            drain(&mut node, &mut outputs);
        }
        assert_eq!(outputs.len(), rec.outputs.len(), "seed {seed}");
        if let Some(i) = (0..outputs.len()).find(|i| outputs[*i] != rec.outputs[*i]) {
            panic!(
                "seed {seed}: output {i} differs:\n harness {:?}\n netsim  {:?}",
                outputs[i], rec.outputs[i]
            );
        }
        // The run exercised every kind of output a store node gives.
        let has = |f: fn(&Output) -> bool| outputs.iter().any(f);
        assert!(has(|o| matches!(o, Output::Datagram(_))));
        assert!(has(|o| matches!(o, Output::Frame { .. })));
        assert!(has(|o| matches!(o, Output::AppendLog(_))));
        assert!(has(|o| matches!(o, Output::WriteSnapshot { .. })));
        assert!(has(|o| matches!(o, Output::Reply { .. })));
        assert!(has(|o| matches!(o, Output::Event(_))));
        assert!(has(|o| matches!(o, Output::CaughtUp)));
    }
}

/// Node 2 leaves and everyone holds it left; node 0 then gets a read from it and must answer a
/// peer its membership gives no address for. (A peer held failed keeps its address for store
/// messages: a waiting quorum round asks failed peers too, issue 18.)
fn answer_a_peer_held_failed(seed: u64) -> Sim {
    let mut sim = cluster(3, seed, Some(0));
    sim.leave(2, S);
    let left = sim.run_until_cond(10 * S, |s| s.count_reporting(2, Seen::Left) == 2);
    assert!(left.is_some(), "seed {seed}: the leave went unnoticed");
    let before = sim.node(0).expect("up").hold_stats();
    let read = PeerMsg::Store(StoreMsg::ReadReq {
        op: 77,
        store: "default".into(),
        key: "k".into(),
    });
    sim.inject_frame(2, 0, read);
    sim.run_for(MS);
    let after = sim.node(0).expect("up").hold_stats();
    assert_eq!(
        after.held,
        before.held + 1,
        "seed {seed}: the answer is held"
    );
    assert_eq!(after.released, before.released);
    assert_eq!(answers_sent(&sim), 0, "seed {seed}: nothing sent yet");
    sim
}

/// How many answers to the injected read node 0 has sent.
fn answers_sent(sim: &Sim) -> usize {
    let to = Sim::addr_of(2);
    let rec = sim.recording().expect("node 0 is recorded");
    rec.outputs
        .iter()
        .filter(|o| {
            matches!(o, Output::Frame { to: a, msg: PeerMsg::Store(StoreMsg::ReadResp { op: 77, .. }), .. } if *a == to)
        })
        .count()
}

#[test]
fn a_store_message_for_a_peer_whose_address_arrives_late_is_held_then_delivered() {
    for seed in [1, 2, 3] {
        let mut sim = answer_a_peer_held_failed(seed);
        let released = sim.node(0).expect("up").hold_stats().released;
        let frames = sim.frames_received(2);
        sim.restart(2);
        let back = sim.run_until_cond(5 * S, |s| s.count_reporting(2, Seen::Alive) == 2);
        assert!(back.is_some(), "seed {seed}: node 2 did not come back");
        sim.run_for(100 * MS); // the released message's way over the network
        let stats = sim.node(0).expect("up").hold_stats();
        // The answer, and whatever else node 0 held for node 2 while it had no address.
        assert!(stats.released > released, "seed {seed}: {stats:?}");
        assert_eq!(stats.released, stats.held, "seed {seed}: {stats:?}");
        assert_eq!(stats.dropped, 0, "seed {seed}");
        assert_eq!(
            answers_sent(&sim),
            1,
            "seed {seed}: the held answer went out once"
        );
        assert!(
            sim.frames_received(2) > frames,
            "seed {seed}: nothing reached node 2"
        );
    }
}

#[test]
fn a_held_message_is_dropped_at_the_hold_limit() {
    let mut sim = answer_a_peer_held_failed(5);
    let dropped = sim.node(0).expect("up").hold_stats().dropped;
    sim.run_for(10 * S - 10 * MS);
    assert_eq!(
        sim.node(0).expect("up").hold_stats().dropped,
        dropped,
        "not before 10 s"
    );
    sim.run_for(20 * MS);
    let stats = sim.node(0).expect("up").hold_stats();
    assert_eq!(stats.dropped, dropped + 1, "dropped at 10 s: {stats:?}");
    assert_eq!(stats.released, 0);
    assert_eq!(answers_sent(&sim), 0, "a dropped answer never goes out");
}
