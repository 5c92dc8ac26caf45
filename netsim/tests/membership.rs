//! Membership core under the virtual clock: join, failure, suspicion refuted, leave, restart,
//! metadata convergence, quorum under a split, and replay from a seed.

use membership::{Event, MemberState};
use netsim::{Sim, SimConfig};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

fn seeds() -> impl Iterator<Item = u64> {
    let base: u64 = std::env::var("NETSIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let count: u64 = std::env::var("NETSIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    base..base + count
}

fn failed_events(sim: &Sim, subject: usize) -> usize {
    let id = sim.id_of(subject);
    sim.log()
        .iter()
        .filter(|l| matches!(&l.event, Event::MemberFailed { member } if member.id == id))
        .count()
}

#[test]
fn five_nodes_join_by_beacons() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(5, seed));
        let t = sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)));
        assert!(t.is_some(), "seed {seed}: not everyone alive after 5 s");
        let t = sim.run_until_cond(10 * S, |s| {
            (0..5).all(|i| s.core(i).unwrap().known_metadata() == 5)
        });
        assert!(t.is_some(), "seed {seed}: metadata did not converge");
        for i in 0..5 {
            let q = sim.core(i).unwrap().quorum();
            assert!(q.has_quorum, "seed {seed}: node {i} has no quorum: {q:?}");
            assert_eq!(q.reachable_votes, 5);
            let names: Vec<String> = sim
                .core(i)
                .unwrap()
                .members()
                .into_iter()
                .map(|m| m.name)
                .collect();
            assert!(
                names.iter().all(|n| n.starts_with("node")),
                "seed {seed}: names {names:?}"
            );
        }
    }
}

#[test]
fn nodes_join_through_a_seed_without_beacons() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan_through_a_seed(5, seed));
        let t = sim.run_until_cond(10 * S, |s| s.all_see_alive(&all(5)));
        assert!(
            t.is_some(),
            "seed {seed}: seeds alone did not join the cluster"
        );
    }
}

#[test]
fn a_crashed_node_is_reported_failed_everywhere() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(5, seed));
        sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)))
            .expect("join");
        sim.run_for(2 * S);
        sim.crash(4);
        let t = sim.run_until_cond(20 * S, |s| s.all_report(4, MemberState::Failed));
        let t = t.unwrap_or_else(|| panic!("seed {seed}: crash not detected everywhere"));
        // A crashed host (nothing tells of it) is found by probing: with a 1 s probe period
        // and random probe order, 4 survivors may all probe others for 3-4 periods first
        // (1.6 % of runs at 5 nodes), then a failed probe (0.4 s) and suspicion (1 s).
        assert!(t < 8 * S, "seed {seed}: detection took {t:?}");
        assert_eq!(
            failed_events(&sim, 4),
            4,
            "seed {seed}: one failed event per survivor"
        );
    }
}

#[test]
fn a_suspicion_is_refuted_and_never_reported_failed() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(5, seed));
        sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)))
            .expect("join");
        sim.run_for(2 * S);
        // Node 3 hears nothing for a while: its probers time out and suspect it.
        for j in 0..5 {
            if j != 3 {
                sim.cut_one_way(j, 3);
            }
        }
        let suspected = sim.run_until_cond(8 * S, |s| {
            (0..5).any(|v| s.state_seen(v, 3) == Some(MemberState::Suspect))
        });
        assert!(
            suspected.is_some(),
            "seed {seed}: node 3 was never suspected"
        );
        sim.heal();
        sim.run_for(10 * S);
        assert_eq!(
            failed_events(&sim, 3),
            0,
            "seed {seed}: suspicion was not refuted"
        );
        assert!(
            sim.all_see_alive(&all(5)),
            "seed {seed}: not all alive after refutation"
        );
    }
}

#[test]
fn a_leaving_node_is_reported_left_not_failed() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(5, seed));
        sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)))
            .expect("join");
        sim.run_until_cond(10 * S, |s| {
            (0..5).all(|i| s.core(i).unwrap().known_metadata() == 5)
        })
        .expect("meta");
        sim.leave(2, S);
        let t = sim.run_until_cond(10 * S, |s| s.all_report(2, MemberState::Left));
        assert!(t.is_some(), "seed {seed}: leave not reported everywhere");
        sim.run_for(10 * S);
        assert!(
            sim.all_report(2, MemberState::Left),
            "seed {seed}: left became something else"
        );
        assert_eq!(
            failed_events(&sim, 2),
            0,
            "seed {seed}: a left node was reported failed"
        );
        let id = sim.id_of(2);
        let left = sim
            .log()
            .iter()
            .filter(|l| matches!(&l.event, Event::MemberLeft { member } if member.id == id))
            .count();
        assert_eq!(left, 4, "seed {seed}");
    }
}

#[test]
fn a_restarted_node_rejoins_with_a_higher_generation_and_no_duplicate() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(5, seed));
        sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)))
            .expect("join");
        sim.crash(1);
        sim.run_until_cond(20 * S, |s| s.all_report(1, MemberState::Failed))
            .expect("failed");
        let old_gen = sim
            .core(0)
            .unwrap()
            .members()
            .iter()
            .find(|m| m.id == sim.id_of(1))
            .unwrap()
            .generation;
        sim.restart(1);
        let t = sim.run_until_cond(10 * S, |s| s.all_see_alive(&all(5)));
        assert!(
            t.is_some(),
            "seed {seed}: restarted node not alive everywhere"
        );
        for v in [0, 2, 3, 4] {
            let members = sim.core(v).unwrap().members();
            assert_eq!(members.len(), 5, "seed {seed}: node {v} lists {members:?}");
            let m = members.iter().find(|m| m.id == sim.id_of(1)).unwrap();
            assert!(
                m.generation > old_gen,
                "seed {seed}: generation did not grow"
            );
        }
        let id = sim.id_of(1);
        let recovered = sim
            .log()
            .iter()
            .filter(|l| matches!(&l.event, Event::MemberRecovered { member } if member.id == id))
            .count();
        assert_eq!(recovered, 4, "seed {seed}");
    }
}

#[test]
fn metadata_converges_under_loss_and_for_late_joiners() {
    for seed in seeds() {
        let mut cfg = SimConfig::lan(7, seed);
        cfg.link.loss_ppm = 100_000; // 10 %
        let mut sim = Sim::new(cfg);
        sim.crash(6);
        sim.run_for(30 * S);
        sim.restart(6);
        let t = sim.run_until_cond(30 * S, |s| {
            (0..7).all(|i| s.core(i).unwrap().known_metadata() == 7)
        });
        assert!(
            t.is_some(),
            "seed {seed}: metadata not everywhere: {:?}",
            (0..7)
                .map(|i| sim.core(i).unwrap().known_metadata())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn quorum_follows_a_split_and_its_heal() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(5, seed));
        sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)))
            .expect("join");
        sim.partition(&[&[0, 1], &[2, 3, 4]]);
        let t = sim.run_until_cond(20 * S, |s| {
            !s.core(0).unwrap().quorum().has_quorum && !s.core(1).unwrap().quorum().has_quorum
        });
        assert!(t.is_some(), "seed {seed}: minority kept quorum");
        sim.run_for(5 * S);
        for i in 2..5 {
            assert!(
                sim.core(i).unwrap().quorum().has_quorum,
                "seed {seed}: majority node {i} lost quorum"
            );
        }
        for i in 0..2 {
            let q = sim.core(i).unwrap().quorum();
            assert_eq!(
                (q.reachable_votes, q.required_votes, q.total_votes),
                (2, 3, 5),
                "seed {seed}"
            );
        }
        sim.heal();
        let t = sim.run_until_cond(10 * S, |s| {
            s.all_see_alive(&all(5)) && (0..5).all(|i| s.core(i).unwrap().quorum().has_quorum)
        });
        assert!(t.is_some(), "seed {seed}: did not merge after heal");
        let lost = sim
            .log()
            .iter()
            .filter(|l| matches!(l.event, Event::QuorumLost { .. }) && l.node < 2)
            .count();
        assert!(
            lost >= 2,
            "seed {seed}: quorum loss not reported as an event"
        );
    }
}

#[test]
fn a_healed_split_merges_through_seeds_alone() {
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan_through_a_seed(5, seed));
        sim.run_until_cond(10 * S, |s| s.all_see_alive(&all(5)))
            .expect("join");
        sim.partition(&[&[0, 1], &[2, 3, 4]]);
        sim.run_until_cond(20 * S, |s| {
            s.all_report(4, MemberState::Failed) || s.state_seen(0, 4) == Some(MemberState::Failed)
        })
        .expect("split seen");
        sim.run_for(5 * S);
        sim.heal();
        let t = sim.run_until_cond(30 * S, |s| s.all_see_alive(&all(5)));
        assert!(t.is_some(), "seed {seed}: no merge through seeds");
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let run = |seed| {
        let mut cfg = SimConfig::lan(7, seed);
        cfg.link.loss_ppm = 50_000;
        let mut sim = Sim::new(cfg);
        sim.run_for(5 * S);
        sim.partition(&[&[0, 1, 2], &[3, 4, 5, 6]]);
        sim.run_for(10 * S);
        sim.heal();
        sim.crash(2);
        sim.run_for(10 * S);
        sim.restart(2);
        sim.run_for(10 * S);
        (sim.trace_hash(), sim.delivered(), sim.log().to_vec())
    };
    let a = run(42);
    let b = run(42);
    assert_eq!(a, b, "same seed gave different traces");
    let c = run(43);
    assert_ne!(a.0, c.0, "different seeds gave the same trace");
}

#[test]
fn no_false_failure_on_a_lossy_idle_cluster() {
    for seed in seeds() {
        let mut cfg = SimConfig::lan(9, seed);
        cfg.link.loss_ppm = std::env::var("NETSIM_LOSS_PPM")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50_000);
        let mut sim = Sim::new(cfg);
        sim.run_until_cond(10 * S, |s| s.all_see_alive(&all(9)))
            .expect("join");
        sim.run_for(120 * S);
        let failures: Vec<_> = sim
            .log()
            .iter()
            .filter(|l| matches!(l.event, Event::MemberFailed { .. }))
            .collect();
        assert!(
            failures.is_empty(),
            "seed {seed}: false failures {failures:?}"
        );
    }
}

/// Five nodes joined and settled for two seconds.
fn joined_five(seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::lan(5, seed));
    sim.run_until_cond(5 * S, |s| s.all_see_alive(&all(5)))
        .expect("join");
    sim.run_for(2 * S);
    sim
}

#[test]
fn a_killed_process_found_gone_by_one_peer_is_failed_everywhere_one_suspicion_timeout_later() {
    let suspicion = Sim::new(SimConfig::lan(5, 1))
        .node_config(0)
        .timings()
        .suspect_to_down;
    for seed in seeds() {
        let mut sim = joined_five(seed);
        sim.crash(4);
        // One survivor's store connection to it closed and a new one was refused.
        sim.report_process_gone(1, 4);
        let t = sim.run_until_cond(20 * S, |s| s.all_report(4, MemberState::Failed));
        let t = t.unwrap_or_else(|| panic!("seed {seed}: crash not detected everywhere"));
        // Probing alone needs a failed probe (two probe timeouts, 400 ms) before the same
        // suspicion timeout, and most of a probe period to start one.
        assert!(
            t < suspicion + Duration::from_millis(350),
            "seed {seed}: detection took {t:?}"
        );
        assert_eq!(failed_events(&sim, 4), 4, "seed {seed}");
    }
}

#[test]
fn a_live_member_reported_gone_refutes_and_is_never_reported_failed() {
    for seed in seeds() {
        let mut sim = joined_five(seed);
        // A firewall rejecting TCP to node 3 while its gossip flows: node 1 suspects it...
        sim.report_process_gone(1, 3);
        assert_eq!(
            sim.state_seen(1, 3),
            Some(MemberState::Suspect),
            "seed {seed}"
        );
        // ...it refutes, and nobody reports it failed; asking again at once changes nothing.
        sim.run_for(S / 2);
        assert_eq!(
            sim.state_seen(1, 3),
            Some(MemberState::Alive),
            "seed {seed}: not refuted"
        );
        sim.report_process_gone(1, 3);
        assert_eq!(
            sim.state_seen(1, 3),
            Some(MemberState::Alive),
            "seed {seed}: suspected again within the minute"
        );
        sim.run_for(10 * S);
        assert_eq!(failed_events(&sim, 3), 0, "seed {seed}: reported failed");
        assert!(sim.all_see_alive(&all(5)), "seed {seed}: not all alive");
    }
}

/// A mass join through one seed: every record reaches every node, and the records a node lacks
/// are asked of the gossiper that made their members known, in one request per datagram. Asked
/// of each new member on its own, they cost two datagrams per pair of nodes (about 2 n^2 metadata
/// datagrams; 2 million of a 1,000-node join's 2.2 million in `netsim scale`).
#[test]
fn a_mass_join_spreads_every_record_without_a_request_per_pair_of_nodes() {
    const N: usize = 80;
    for seed in seeds().take(5) {
        let mut sim = Sim::new(SimConfig::lan_through_a_seed(N, seed));
        let t = sim.run_until_cond_every(60 * S, S / 10, |s| {
            s.all_running_alive_by_events()
                && (0..N).all(|i| s.core(i).unwrap().known_metadata() == N)
        });
        assert!(
            t.is_some(),
            "seed {seed}: join or metadata did not converge"
        );
        let meta: u64 = (0..N)
            .map(|i| {
                let stats = sim.core(i).unwrap().stats();
                stats
                    .sent_packets
                    .get(&membership::Channel::Meta)
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        eprintln!("seed {seed}: converged after {t:?}, {meta} metadata datagrams");
        assert!(
            meta < (N * N / 2) as u64,
            "seed {seed}: {meta} metadata datagrams for {N} nodes (n^2 = {})",
            N * N
        );
    }
}

/// A join of more members at once than a node's gossip queue holds (foca patch 8,
/// `max_queued_updates`): the updates sent most are dropped, the join still completes through
/// other gossipers and periodic announces, a crash is still seen failed by every node, and no
/// other node is ever reported failed. The queue here holds 16 updates for 200 joining nodes,
/// where the agent's holds 1,024 (`membership::MAX_QUEUED_UPDATES`).
#[test]
fn a_join_larger_than_the_update_queue_completes_and_a_crash_is_seen_everywhere() {
    const N: usize = 200;
    for seed in seeds().take(5) {
        let mut cfg = SimConfig::lan_through_a_seed(N, seed);
        cfg.max_queued_updates = 16;
        let mut sim = Sim::new(cfg);
        let joined = sim.run_until_cond_every(60 * S, S / 10, |s| s.all_running_alive_by_events());
        let joined =
            joined.unwrap_or_else(|| panic!("seed {seed}: {N} nodes not all alive after 60 s"));
        let shed: u64 = (0..N).map(|i| sim.core(i).unwrap().updates_shed()).sum();
        assert!(
            shed > 0,
            "seed {seed}: no update was dropped: the test tests nothing"
        );
        sim.run_for(5 * S);
        sim.crash(N - 1);
        let t = sim.run_until_cond_every(30 * S, S / 100, |s| {
            s.count_reporting(N - 1, netsim::Seen::Failed) == N - 1
        });
        let t = t.unwrap_or_else(|| panic!("seed {seed}: the crash was not seen everywhere"));
        let false_failures: usize = (0..N - 1).map(|i| failed_events(&sim, i)).sum();
        assert_eq!(false_failures, 0, "seed {seed}: live nodes reported failed");
        println!(
            "seed {seed}: joined in {joined:?}, {shed} updates dropped in all, crash seen \
             everywhere after {t:?}"
        );
    }
}

/// Nodes started at once hold every member's record well within the node's wait for a joining
/// member's name (`NAME_WAIT`, 2 s), so no join is reported unnamed. A record is first asked of
/// the gossiper that made its member known, which in a simultaneous start may not hold it yet;
/// without the direct ask a probe round trip later, 9 of 50 seeds waited for the periodic
/// sync, 10 s (the membership bench saw 2.0 s joins in half its runs).
#[test]
fn nodes_started_at_once_hold_every_record_within_a_second() {
    const N: usize = 15;
    let mut slowest = Duration::ZERO;
    for seed in seeds() {
        let mut sim = Sim::new(SimConfig::lan(N, seed));
        let t = sim.run_until_cond_every(20 * S, S / 100, |s| {
            (0..N).all(|i| s.core(i).unwrap().known_metadata() == N)
        });
        let t = t.unwrap_or_else(|| panic!("seed {seed}: records not all held after 20 s"));
        assert!(t <= S, "seed {seed}: every record held only after {t:?}");
        slowest = slowest.max(t);
    }
    println!("slowest: {slowest:?}");
}
