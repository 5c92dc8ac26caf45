//! End-to-end membership tests: real `chorus agent` processes, each in its own network namespace
//! on a Linux bridge, discovering each other by multicast, failing, leaving, restarting, and being
//! partitioned and healed.

mod support;

use std::time::Duration;
use support::{AgentSpec, KEY_B};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

/// Starts agents n1..nN (multicast only) and waits until every one lists all of them alive;
/// returns their indices, their names, and how long the join took.
fn joined_cluster(lab: &mut support::Lab, n: usize) -> (Vec<usize>, Vec<String>, Duration) {
    let agents: Vec<usize> = (0..n)
        .map(|i| lab.start(i, AgentSpec::new(&format!("n{}", i + 1), n as u32)))
        .collect();
    let all = names(n);
    let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    let took = lab.wait_for(SECS(15), "every node lists all alive", |l| {
        l.all_alive(&agents, &refs)
    });
    (agents, all, took)
}

#[test]
fn five_agents_find_each_other_by_multicast_alone() {
    let mut lab = lab_or_skip!(5);
    let (agents, _, took) = joined_cluster(&mut lab, 5);
    eprintln!("full join by multicast took {took:?}");
    for a in &agents {
        let st = lab.status(*a).expect("status");
        assert_eq!(st["quorum"]["has_quorum"], true, "{st}");
        assert_eq!(st["members"]["alive"], 5, "{st}");
        assert_eq!(lab.members(*a).unwrap().len(), 5);
    }
}

#[test]
fn kill9_is_failed_sigterm_is_left_and_a_restart_rejoins_cleanly() {
    let mut lab = lab_or_skip!(5);
    joined_cluster(&mut lab, 5);
    let before = lab.members(0).unwrap();
    let (_, _, gen5, id5) = before.iter().find(|m| m.0 == "n5").cloned().unwrap();

    // kill -9: reported failed by everyone else.
    lab.kill9(4);
    let took = lab.wait_for(SECS(20), "n5 reported failed everywhere", |l| {
        (0..4).all(|v| l.state_of(v, "n5").as_deref() == Some("failed"))
    });
    eprintln!("kill -9 seen failed everywhere after {took:?}");
    // Found by the store transport (its connections closed, its port refused), not only by
    // probing: some survivor says so in its log.
    assert!(
        (0..4).any(|v| lab
            .log_of(v)
            .contains("its store port refuses connections: the process is gone")),
        "no survivor found the killed process gone through its store connection\n{}",
        lab.all_logs()
    );

    // SIGTERM: reported left, and never failed on the way.
    let status = lab.terminate(3);
    assert!(
        status.success(),
        "agent exited with {status} after SIGTERM\n{}",
        lab.log_of(3)
    );
    let mut seen_failed = false;
    lab.wait_for(SECS(20), "n4 reported left everywhere", |l| {
        let states: Vec<Option<String>> = (0..3).map(|v| l.state_of(v, "n4")).collect();
        seen_failed |= states.iter().any(|s| s.as_deref() == Some("failed"));
        states.iter().all(|s| s.as_deref() == Some("left"))
    });
    assert!(
        !seen_failed,
        "a node stopped with SIGTERM was reported failed\n{}",
        lab.all_logs()
    );

    // Restart the killed node on its data dir: alive again, same id, higher generation, one entry.
    lab.restart(4);
    lab.wait_for(SECS(20), "restarted n5 alive everywhere", |l| {
        [0usize, 1, 2, 4]
            .iter()
            .all(|v| l.state_of(*v, "n5").as_deref() == Some("alive"))
    });
    for v in [0usize, 1, 2, 4] {
        let ms = lab.members(v).unwrap();
        let n5: Vec<_> = ms.iter().filter(|m| m.0 == "n5").collect();
        assert_eq!(n5.len(), 1, "duplicate entries for n5 at agent {v}: {ms:?}");
        assert_eq!(n5[0].3, id5, "restarted node changed id");
        assert!(
            n5[0].2 > gen5,
            "generation did not grow: {} -> {}",
            gen5,
            n5[0].2
        );
        // The survivors still remember n4 (left); the restarted node never met it.
        let expected = if v == 4 { 4 } else { 5 };
        assert_eq!(ms.len(), expected, "agent {v} lists {ms:?}");
    }
}

#[test]
fn a_partition_takes_quorum_from_the_minority_and_heals() {
    let mut lab = lab_or_skip!(5);
    let (agents, all, _) = joined_cluster(&mut lab, 5);
    let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();

    lab.partition(&[&[0, 1], &[2, 3, 4]]);
    let has_quorum =
        |l: &support::Lab, a: usize| l.status(a).map(|s| s["quorum"]["has_quorum"] == true);
    let took = lab.wait_for(SECS(20), "n1 and n2 report no quorum", |l| {
        (0..2).all(|a| has_quorum(l, a) == Some(false))
    });
    eprintln!("minority reported no quorum after {took:?}");
    lab.wait_for(SECS(20), "majority sees the minority failed", |l| {
        (2..5).all(|v| {
            l.state_of(v, "n1").as_deref() == Some("failed")
                && l.state_of(v, "n2").as_deref() == Some("failed")
        })
    });
    for a in 2..5 {
        assert_eq!(
            has_quorum(&lab, a),
            Some(true),
            "majority node {a} lost quorum\n{}",
            lab.all_logs()
        );
    }
    let st = lab.status(0).unwrap();
    assert_eq!(st["quorum"]["reachable_votes"], 2, "{st}");
    assert_eq!(st["quorum"]["required_votes"], 3, "{st}");

    lab.heal();
    let took = lab.wait_for(SECS(20), "one cluster of 5 with quorum everywhere", |l| {
        l.all_alive(&agents, &refs) && agents.iter().all(|a| has_quorum(l, *a) == Some(true))
    });
    eprintln!("merged after heal in {took:?}");
}

#[test]
fn other_clusters_and_wrong_keys_never_merge() {
    let mut lab = lab_or_skip!(6);
    let a: Vec<usize> = (0..3)
        .map(|i| lab.start(i, AgentSpec::new(&format!("a{}", i + 1), 3)))
        .collect();
    let b: Vec<usize> = (3..5)
        .map(|i| {
            let mut s = AgentSpec::new(&format!("b{}", i - 2), 2);
            s.cluster = "other".into();
            lab.start(i, s)
        })
        .collect();
    let mut intruder = AgentSpec::new("x1", 3);
    intruder.key = KEY_B.into();
    let x = lab.start(5, intruder);
    lab.wait_for(SECS(15), "cluster e2e formed", |l| {
        l.all_alive(&a, &["a1", "a2", "a3"])
    });
    lab.wait_for(SECS(15), "cluster other formed", |l| {
        l.all_alive(&b, &["b1", "b2"])
    });
    // Both foreign senders beacon on the same group: the first cluster must see and drop them.
    lab.wait_for(SECS(15), "wrong-cluster and bad-key packets counted", |l| {
        l.metric(
            a[0],
            "chorus_packets_dropped_total{reason=\"wrong_cluster\"}",
        ) > 0
            && l.metric(a[0], "chorus_packets_dropped_total{reason=\"bad_auth\"}") > 0
    });
    // Observe for a while: the member lists stay exactly as they are.
    let deadline = std::time::Instant::now() + SECS(5);
    while std::time::Instant::now() < deadline {
        for v in &a {
            let ms = lab.members(*v).unwrap();
            assert_eq!(ms.len(), 3, "cluster e2e merged with something: {ms:?}");
        }
        for v in &b {
            assert_eq!(
                lab.members(*v).unwrap().len(),
                2,
                "cluster other merged with something"
            );
        }
        assert_eq!(
            lab.members(x).unwrap().len(),
            1,
            "the wrong-key node joined someone"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let mut lab = lab_or_skip!(4);
    let agents: Vec<usize> = (0..3)
        .map(|i| lab.start(i, AgentSpec::new(&format!("n{}", i + 1), 3)))
        .collect();
    lab.wait_for(SECS(15), "3 alive", |l| {
        l.all_alive(&agents, &["n1", "n2", "n3"])
    });
    let target = format!("{}:7946", lab.ip(0));
    let group = "239.255.79.46:7948";
    // Random bytes, a truncated envelope, an oversize datagram, a future protocol version, an
    // unknown channel, a valid-looking header with a forged tag: to gossip and to beacon ports.
    for dest in [target.as_str(), group] {
        lab.send_udp(3, dest, "os.urandom(1 + i % 1400)", 200);
        lab.send_udp(3, dest, "b'CH\\x01\\x01' + os.urandom(i % 20)", 50);
        lab.send_udp(3, dest, "b'CH\\x01\\x01' + os.urandom(3000)", 20);
        lab.send_udp(3, dest, "b'CH\\x09\\x01' + os.urandom(60)", 20);
        lab.send_udp(3, dest, "b'CH\\x01\\x63' + os.urandom(60)", 20);
        lab.send_udp(3, dest, "b''", 5);
    }
    lab.wait_for(SECS(10), "drop counters rise for every kind of junk", |l| {
        let m = |r: &str| {
            l.metric(
                agents[0],
                &format!("chorus_packets_dropped_total{{reason=\"{r}\"}}"),
            )
        };
        m("bad_magic") > 0
            && m("truncated") > 0
            && m("oversize") > 0
            && m("bad_version") > 0
            && m("bad_channel") > 0
    });
    // Everyone is still up and nobody was declared failed.
    for a in &agents {
        let ms = lab.members(*a).expect("agent still answers");
        assert!(
            ms.iter().all(|m| m.1 == "alive"),
            "membership disturbed: {ms:?}"
        );
    }
    lab.wait_for(SECS(5), "3 alive after the junk", |l| {
        l.all_alive(&agents, &["n1", "n2", "n3"])
    });
}
