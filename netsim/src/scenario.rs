//! Named scenarios: a cluster with stores and clients, one kind of trouble, a heal, and every
//! checker at the end. [`run`] is what `netsim run` and `netsim sweep` call, and what the sweep
//! test runs for hundreds of seeds.

use crate::check::{self, Verdict};
pub use crate::faults::{AnyFault, FAULTS, Faults};
use crate::sim::{Seen, Sim, SimConfig, Skew};
use crate::workload::WorkloadConfig;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Every scenario, with what it does.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("steady", "nothing goes wrong"),
    ("kill", "one node crashes for good"),
    ("leave", "one node leaves gracefully"),
    (
        "restart",
        "one node crashes and restarts from its log 5 s later",
    ),
    (
        "kill-all",
        "every node crashes at once during writes; all restart from their logs",
    ),
    (
        "wipe",
        "a node acknowledges writes in a bare quorum, loses its disk, and restarts among nodes \
         that never saw them",
    ),
    ("split", "a 40 % minority is cut off, then healed"),
    (
        "even-split",
        "two equal halves, neither with a quorum, then healed",
    ),
    ("three-way", "three groups, none with a quorum, then healed"),
    (
        "bridge",
        "A reaches B, B reaches C, A does not reach C; then healed",
    ),
    (
        "one-way",
        "one node hears nothing but can still send, then healed",
    ),
    (
        "flapping",
        "one node's links go down and up every 0.5-3 s for 20 s",
    ),
    (
        "shapes",
        "the partition changes shape every 2.5 s: split, bridge, split, isolate, one-way, split, \
         isolate (issue 18's walk)",
    ),
    ("loss10", "10 % of datagrams lost"),
    (
        "loss30",
        "30 % of datagrams lost (beyond the profile's tolerance)",
    ),
    (
        "chaos",
        "5 % loss, 5 % duplication, 10 % reordered by up to 50 ms",
    ),
    (
        "pauses",
        "one node stalls for 5 s, then short stalls on random nodes; lock holders act up to \
         180 ms past their window",
    ),
    (
        "skew",
        "wall clocks off by up to 10 s and rates by up to 200 ppm",
    ),
    (
        "multi-dc",
        "3 datacenters 20-40 ms apart; one is cut off, then healed",
    ),
    (
        "dc-quorum",
        "unequal datacenters (n-2, 1, 1 nodes) with quorum by datacenters; each is cut off in \
         turn (the big one too, where a count of votes would choose the other side), then healed",
    ),
];

/// Share of client operations (per million) on the strong keyspace in every scenario.
pub const STRONG_PPM: u32 = 300_000;
/// How long lock holders may act after their window in the `pauses` scenario: just under the
/// lease's 200 ms margin.
pub const HOLDER_STALL: Duration = Duration::from_millis(180);

/// Every node is a candidate for the cluster leader, with this lease and lock delay.
pub const LEADER_TTL: Duration = Duration::from_secs(2);
/// The leader's lease across datacenters (`multi-dc`): a renewal is a CASPaxos round of two
/// round trips of up to 300 ms, so a 2 s lease would leave its holder little time to act.
pub const LEADER_TTL_WAN: Duration = Duration::from_secs(6);
/// See [`LEADER_TTL`].
pub const LEADER_DELAY: Duration = Duration::from_millis(500);
/// How long after the merge a leader must exist beyond its lease and lock delay: a candidate asks
/// again within 1 s, and its rounds take milliseconds.
pub const LEADER_BOUND: Duration = Duration::from_secs(2);

/// Lock clients contending for one lock in every scenario.
pub const LOCK_CLIENTS: usize = 3;

/// How long a node may hold the outputs of inputs it took before they leave, in the scenarios'
/// odd seeds ([`SimConfig::batch_inputs`]): a few LAN hops' worth, so that replies, frames and
/// fsync reports arrive meanwhile.
pub const BATCH_INPUTS: Duration = Duration::from_micros(400);

/// The snapshot threshold of every scenario.
pub const SNAPSHOT_MIN_RECORDS: usize = 20;

/// Loss above which the LAN profile does not promise zero false failures.
const TOLERATED_LOSS_PPM: u32 = 100_000;

/// What a scenario run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Cluster size.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Names of the defects injected (see [`FAULTS`]).
    pub faults: Vec<&'static str>,
    /// What happened when (virtual time).
    pub timeline: Vec<(Duration, String)>,
    /// Measured figures, by name.
    pub measures: Vec<(String, String)>,
    /// Checker verdicts.
    pub verdicts: Vec<Verdict>,
    /// Hash of the whole trace (equal runs give equal hashes).
    pub trace_hash: u64,
}

impl Report {
    /// True when every checker passed.
    pub fn ok(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }

    /// The verdicts that failed.
    pub fn failures(&self) -> Vec<&Verdict> {
        self.verdicts.iter().filter(|v| !v.ok).collect()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "netsim run --scenario {} --nodes {} --seed {}",
            self.scenario, self.nodes, self.seed
        );
        for f in &self.faults {
            cmd.push_str(" --fault ");
            cmd.push_str(f);
        }
        cmd
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "netsim: scenario {} with {} nodes, seed {}\n",
            self.scenario, self.nodes, self.seed
        );
        out.push_str("timeline:\n");
        for (t, what) in &self.timeline {
            out.push_str(&format!("  {:>9.3} s  {what}\n", t.as_secs_f64()));
        }
        out.push_str("measures:\n");
        for (k, v) in &self.measures {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str("checkers:\n");
        for v in &self.verdicts {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                if v.ok { "pass" } else { "FAIL" },
                v.name,
                v.detail
            ));
        }
        out.push_str(&format!(
            "trace hash {:016x}; replay: {}\n",
            self.trace_hash,
            self.replay_command()
        ));
        out
    }
}

struct Run {
    sim: Sim,
    report: Report,
    rng: Xoshiro256PlusPlus,
}

impl Run {
    fn note(&mut self, what: impl Into<String>) {
        let now = self.sim.now();
        self.report.timeline.push((now, what.into()));
    }

    fn measure(&mut self, name: &str, value: impl Into<String>) {
        self.report.measures.push((name.into(), value.into()));
    }

    fn verdict(&mut self, name: &'static str, ok: bool, detail: impl Into<String>) {
        self.report.verdicts.push(Verdict {
            name,
            ok,
            detail: detail.into(),
        });
    }

    fn span(&mut self, d: Duration, lo: u64, hi: u64) -> Duration {
        d * self.rng.random_range(lo as u32..hi as u32) / 1000
    }
}

/// A verdict that each of `nodes` had written a snapshot before its restart, so the restart read
/// a snapshot and the log after it (the checkers that follow judge what it rebuilt).
fn restarted_from_snapshots(run: &mut Run, nodes: &[usize]) {
    let without: Vec<usize> = nodes
        .iter()
        .copied()
        .filter(|i| run.sim.snapshots_written(*i) == 0)
        .collect();
    let taken: u64 = nodes.iter().map(|i| run.sim.snapshots_written(*i)).sum();
    run.verdict(
        "restarts read a snapshot",
        without.is_empty(),
        if without.is_empty() {
            format!("{taken} snapshots written by the restarted nodes before they restarted")
        } else {
            format!("nodes {without:?} restarted without ever writing a snapshot")
        },
    );
}

fn secs(t: Option<Duration>) -> String {
    t.map_or("not within the limit".into(), |d| {
        format!("{:.3} s", d.as_secs_f64())
    })
}

/// Runs scenario `name` on `nodes` nodes with `seed`, with `faults` injected into every node.
pub fn run(name: &str, nodes: usize, seed: u64, faults: &Faults) -> Result<Report, String> {
    run_keeping(name, nodes, seed, faults).map(|(r, _)| r)
}

/// Like [`run`], and hands back the simulation as it was when the checkers ran.
pub fn run_keeping(
    name: &str,
    nodes: usize,
    seed: u64,
    faults: &Faults,
) -> Result<(Report, Sim), String> {
    if !SCENARIOS.iter().any(|(n, _)| *n == name) {
        let names: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown scenario {name:?}; known: {}",
            names.join(", ")
        ));
    }
    if nodes < 3 {
        return Err("a scenario needs at least 3 nodes".into());
    }
    let n = if name == "even-split" {
        nodes.next_multiple_of(2)
    } else {
        nodes
    };
    let mut cfg = SimConfig::lan(n, seed);
    cfg.store = true;
    cfg.durable = true;
    // Small, so that every node writes snapshots during the run and restarts read one back
    // with the log after it (the agent's default is 100,000 records).
    cfg.snapshot_min_records = SNAPSHOT_MIN_RECORDS;
    match name {
        "loss10" => cfg.link.loss_ppm = 100_000,
        "loss30" => cfg.link.loss_ppm = 300_000,
        "chaos" => {
            cfg.link.loss_ppm = 50_000;
            cfg.link.duplicate_ppm = 50_000;
            cfg.link.reorder_ppm = 100_000;
            cfg.link.reorder_by = 50 * MS;
        }
        "dc-quorum" => {
            cfg.datacenters = 3;
            cfg.dc_sizes = Some(vec![n - 2, 1, 1]);
            cfg.quorum_by_datacenter = true;
            cfg.seed_node_zero = true;
        }
        "multi-dc" => {
            cfg.datacenters = 3;
            cfg.seed_node_zero = true;
            // 50-150 ms one way, with the timings fitted to the slowest round trip, as
            // `gossip.max_rtt` does for agents (docs/datacenters.md).
            cfg.link.inter_dc = (50 * MS, 150 * MS);
            cfg.max_rtt = Some(crate::wan::fitted_rtt(125 * MS));
        }
        _ => {}
    }
    // Odd seeds run nodes that take several inputs before their outputs leave, as the agent's
    // driver does under load (it takes up to 64 queued inputs, then flushes): a reordering of
    // acknowledgements or replies that batching could cause is then in half of every sweep.
    if seed % 2 == 1 {
        cfg.batch_inputs = Some(BATCH_INPUTS);
    }
    let loss = cfg.link.loss_ppm;
    cfg.leader = Some(node::LeaderConfig {
        ttl: if name == "multi-dc" {
            LEADER_TTL_WAN
        } else {
            LEADER_TTL
        },
        lock_delay: LEADER_DELAY,
    });
    cfg.faults = node::Faults {
        membership: faults.membership.clone(),
        store: faults.store.clone(),
        coord: faults.coord.clone(),
    };
    let sim = Sim::new(cfg);
    let mut run = Run {
        sim,
        report: Report {
            scenario: name.into(),
            nodes: n,
            seed,
            faults: faults.names(),
            timeline: vec![],
            measures: vec![],
            verdicts: vec![],
            trace_hash: 0,
        },
        rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5ce7_a210),
    };
    if name == "skew" {
        for i in 0..n {
            let skew = Skew {
                drift_ppm: run.rng.random_range(-200..=200),
                wall_offset_ms: run.rng.random_range(-10_000..=10_000),
            };
            run.sim.set_skew(i, skew);
        }
        run.note("clocks skewed");
    }

    let joined = run.sim.run_until_cond_every(30 * S, MS, |s| {
        s.all_running_alive_by_events() && s.all_have_quorum()
    });
    run.note("cluster formed");
    run.measure("full join", secs(joined));
    run.verdict(
        "everyone joined",
        joined.is_some(),
        format!("in {}", secs(joined)),
    );

    run.sim.start_clients(WorkloadConfig {
        strong_ppm: STRONG_PPM,
        lock_clients: LOCK_CLIENTS,
        // In `pauses`, lock holders stall too, up to just under the lease's margin after their
        // window (nodes stall longer: 0.2-0.8 s and 5 s, which the grantors' clocks absorb).
        holder_stall: if name == "pauses" {
            HOLDER_STALL
        } else {
            Duration::ZERO
        },
        ..WorkloadConfig::default()
    });
    run.note("clients start");
    run.sim.run_for(3 * S);
    let t0 = run.sim.now();
    let traffic0 = run.sim.traffic();
    trouble(&mut run, name, n);
    if !run.sim.net.is_whole() {
        run.sim.heal();
        run.note("network healed");
    }
    let merged = run.sim.run_until_cond_every(30 * S, MS, |s| {
        s.all_running_alive_by_events() && s.all_have_quorum()
    });
    run.measure(
        "all running nodes alive and with quorum after",
        secs(merged),
    );
    run.verdict(
        "merged after heal",
        merged.is_some(),
        format!("within {}", secs(merged)),
    );
    let ttl = run
        .sim
        .config()
        .leader
        .as_ref()
        .map_or(LEADER_TTL, |l| l.ttl);
    let bound = ttl + LEADER_DELAY + LEADER_BOUND;
    let led = run
        .sim
        .run_until_cond_every(bound, MS, |s| s.leader_now().is_some());
    run.measure("a leader after the merge", secs(led));
    run.verdict(
        "a leader after the heal",
        led.is_some(),
        format!(
            "after {} (bound: lease + lock delay + {} = {})",
            secs(led),
            secs(Some(LEADER_BOUND)),
            secs(Some(bound))
        ),
    );
    run.sim.run_for(5 * S);
    run.sim.stop_clients();
    run.note("clients stop");
    let drained = run.sim.run_until_cond(15 * S, |s| s.pending_ops() == 0);
    run.verdict(
        "every operation answered",
        drained.is_some(),
        format!("{} still pending", run.sim.pending_ops()),
    );
    let conv = run
        .sim
        .run_until_cond_every(30 * S, 10 * MS, check::converged);
    run.measure("replicas identical after", secs(conv));
    // Metadata of a new generation spreads by broadcast and, where that missed a node, by the
    // periodic pull; give the pull its bounded time before judging.
    let meta = run
        .sim
        .run_until_cond_every(30 * S, 10 * MS, |s| check::metadata_everywhere(s).ok);
    run.measure("metadata everywhere after", secs(meta));
    run.note("checkers run");
    let t1 = run.sim.now();
    let traffic1 = run.sim.traffic();
    let span = (t1 - t0).as_secs_f64() * n as f64;
    run.measure(
        "traffic per node per second",
        format!(
            "{:.1} datagrams, {:.0} B membership; {:.1} messages, {:.0} B store",
            (traffic1.datagrams - traffic0.datagrams) as f64 / span,
            (traffic1.datagram_bytes - traffic0.datagram_bytes) as f64 / span,
            (traffic1.stream_msgs - traffic0.stream_msgs) as f64 / span,
            (traffic1.stream_bytes - traffic0.stream_bytes) as f64 / span,
        ),
    );
    let (ok, failed, indeterminate, pending) = run.sim.history().tally();
    run.measure(
        "client operations",
        format!(
            "{} in all ({} on the strong keyspace): {ok} ok, {failed} failed, \
             {indeterminate} indeterminate, {pending} pending",
            run.sim.history().ops.len() + run.sim.history().strong.len(),
            run.sim.history().strong.len()
        ),
    );

    let sim = &run.sim;
    let mut verdicts = vec![
        check::no_acknowledged_write_lost(sim),
        check::no_minority_write_takes_effect(sim),
        check::linearizable(sim),
        check::replicas_identical(sim),
        check::caught_up_means_current(sim),
        crate::check_strong::strong_linearizable(sim),
        crate::check_locks::locks_exclusive(sim),
        crate::check_locks::one_leader_at_a_time(sim),
    ];
    let failures = check::no_false_failures(sim, 30 * S);
    if loss <= TOLERATED_LOSS_PPM {
        verdicts.push(failures);
    } else {
        let count = sim
            .log()
            .iter()
            .filter(|l| matches!(l.event, membership::Event::MemberFailed { .. }))
            .count();
        run.report.measures.push((
            "failure reports (loss beyond the promise; not judged)".into(),
            count.to_string(),
        ));
    }
    if run.sim.config().batch_inputs.is_some() {
        let batched = run.sim.batched_inputs();
        run.measure(
            "inputs taken before earlier ones' outputs left (batched seed)",
            batched.to_string(),
        );
    }
    let sim = &run.sim;
    verdicts.push(check::metadata_everywhere(sim));
    verdicts.push(check::events_match_members(sim));
    verdicts.push(crate::check_events::failures_reported_once(sim));
    verdicts.push(crate::check_events::joins_named(sim, name == "steady"));
    run.report.verdicts.extend(verdicts);
    run.report.trace_hash = run.sim.trace_hash();
    Ok((run.report, run.sim))
}

/// The scenario's trouble: faults injected, measured, and (where the scenario says) healed.
fn trouble(run: &mut Run, name: &str, n: usize) {
    let victim = n - 1;
    match name {
        "steady" | "loss10" | "loss30" | "chaos" | "skew" => run.sim.run_for(20 * S),
        "kill" | "restart" => {
            run.sim.crash(victim);
            run.note(format!("node {victim} crashes"));
            let others = n - 1;
            let first = run
                .sim
                .run_until_cond_every(30 * S, MS, |s| s.count_reporting(victim, Seen::Failed) > 0);
            let all = run.sim.run_until_cond_every(30 * S, MS, |s| {
                s.count_reporting(victim, Seen::Failed) == others
            });
            run.measure("crash first reported failed after", secs(first));
            run.measure(
                "then reported failed everywhere after (dissemination)",
                secs(all),
            );
            run.verdict(
                "crash detected everywhere",
                all.is_some(),
                format!("first after {}, all after {} more", secs(first), secs(all)),
            );
            if name == "restart" {
                run.sim.run_for(5 * S);
                run.sim.restart(victim);
                run.note(format!("node {victim} restarts"));
                restarted_from_snapshots(run, &[victim]);
            }
            run.sim.run_for(10 * S);
        }
        "kill-all" => {
            for i in 0..n {
                run.sim.crash(i);
            }
            run.note("every node crashes");
            run.sim.run_for(2 * S);
            for i in 0..n {
                run.sim.restart(i);
            }
            run.note("every node restarts from its log");
            let all: Vec<usize> = (0..n).collect();
            restarted_from_snapshots(run, &all);
            let back = run.sim.run_until_cond_every(30 * S, MS, |s| {
                s.all_running_alive_by_events() && s.all_have_quorum()
            });
            run.measure("cluster whole again after", secs(back));
            run.measure(
                "torn log tails dropped at restart",
                run.sim.torn_tails().to_string(),
            );
            run.sim.run_for(10 * S);
        }
        "wipe" => {
            // A bare quorum with the victim takes writes; the rest sees none of them.
            let q = run.sim.store_config().required_votes as usize;
            let holders: Vec<usize> = (0..q - 1).chain([victim]).collect();
            let others: Vec<usize> = (q - 1..victim).collect();
            run.sim.partition(&[&holders, &others]);
            run.note(format!(
                "nodes {holders:?} hold a bare quorum; {others:?} are cut off"
            ));
            run.sim.run_for(8 * S);
            run.sim.crash(victim);
            run.sim.wipe(victim);
            run.note(format!("node {victim} crashes and loses its disk"));
            run.sim.run_for(2 * S);
            // It comes back among the nodes that never saw those writes: together a quorum, but
            // the writes are only on the holders it cannot reach.
            let mut side: Vec<usize> = others.clone();
            side.push(victim);
            let rest: Vec<usize> = (0..q - 1).collect();
            run.sim.partition(&[&rest, &side]);
            run.sim.restart(victim);
            run.note(format!("node {victim} restarts with nodes {others:?}"));
            run.sim.run_for(10 * S);
        }
        "leave" => {
            run.note(format!("node {victim} leaves"));
            run.sim.leave(victim, S);
            let others = n - 1;
            let t = run.sim.run_until_cond_every(30 * S, MS, |s| {
                s.count_reporting(victim, Seen::Left) == others
            });
            run.measure("leave reported everywhere after", secs(t));
            run.verdict("leave reported as left everywhere", t.is_some(), secs(t));
            run.sim.run_for(10 * S);
        }
        "split" | "even-split" | "three-way" | "multi-dc" => {
            let groups: Vec<Vec<usize>> = match name {
                "split" => {
                    let k = (n * 2).div_ceil(5).min((n - 1) / 2).max(1);
                    vec![(0..k).collect(), (k..n).collect()]
                }
                "even-split" => vec![(0..n / 2).collect(), (n / 2..n).collect()],
                "three-way" => {
                    let a = n / 3;
                    let b = (n - a) / 2;
                    vec![(0..a).collect(), (a..a + b).collect(), (a + b..n).collect()]
                }
                _ => {
                    let last = run.sim.net.dc_of(n - 1);
                    vec![
                        (0..n).filter(|i| run.sim.net.dc_of(*i) != last).collect(),
                        (0..n).filter(|i| run.sim.net.dc_of(*i) == last).collect(),
                    ]
                }
            };
            let refs: Vec<&[usize]> = groups.iter().map(|g| g.as_slice()).collect();
            run.sim.partition(&refs);
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            run.note(format!("network split {sizes:?}"));
            let minority: Vec<usize> = groups
                .iter()
                .filter(|g| !run.sim.is_quorum(g))
                .flatten()
                .copied()
                .collect();
            let lost = run.sim.run_until_cond_every(30 * S, MS, |s| {
                minority
                    .iter()
                    .all(|i| !s.core(*i).is_some_and(|c| c.quorum().has_quorum))
            });
            run.measure("every minority node without quorum after", secs(lost));
            run.verdict("minority nodes lose quorum", lost.is_some(), secs(lost));
            let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
            run.sim.run_for(15 * S);
            let kept = majority
                .iter()
                .all(|i| run.sim.core(*i).is_some_and(|c| c.quorum().has_quorum));
            run.verdict(
                "majority keeps quorum",
                kept,
                format!("majority {majority:?}"),
            );
        }
        "bridge" => {
            let a: Vec<usize> = (0..n / 2).collect();
            let c: Vec<usize> = (n / 2 + 1..n).collect();
            run.sim.net.cut_between(run.sim.now(), &a, &c);
            run.note(format!(
                "{a:?} and {c:?} cut apart; node {} bridges them",
                n / 2
            ));
            run.sim.run_for(20 * S);
        }
        "one-way" => {
            for j in 0..n - 1 {
                run.sim.cut_one_way(j, victim);
            }
            run.note(format!("node {victim} stops hearing anyone"));
            run.sim.run_for(15 * S);
        }
        "flapping" => {
            let end = run.sim.now() + 20 * S;
            run.note(format!("node {victim} starts flapping"));
            while run.sim.now() < end {
                run.sim.isolate(victim);
                let d = run.span(3 * S, 166, 1000);
                run.sim.run_for(d);
                let now = run.sim.now();
                run.sim.net.reconnect(now, victim, 0);
                let d = run.span(3 * S, 166, 1000);
                run.sim.run_for(d);
            }
            run.note(format!("node {victim} stops flapping"));
        }
        "pauses" => {
            run.sim.pause(victim, 5 * S);
            run.note(format!("node {victim} stalls for 5 s"));
            run.sim.run_for(8 * S);
            for _ in 0..5 {
                let i = run.rng.random_range(0..n);
                let d = run.span(S, 200, 800);
                run.sim.pause(i, d);
                run.note(format!("node {i} stalls for {} ms", d.as_millis()));
                let gap = run.span(2 * S, 500, 1000);
                run.sim.run_for(gap);
            }
            run.sim.run_for(5 * S);
        }
        "shapes" => shapes(run, n),
        "dc-quorum" => dc_quorum(run, n),
        other => unreachable!("scenario {other} is listed but has no trouble"),
    }
}

/// Cuts each datacenter off in turn for 12 s (healing 8 s in between): the side with a majority
/// of datacenters keeps its quorum, the cut one loses it, whatever their numbers of votes.
fn dc_quorum(run: &mut Run, n: usize) {
    let dcs: Vec<Vec<usize>> = (0..3)
        .map(|d| (0..n).filter(|i| run.sim.net.dc_of(*i) == d).collect())
        .collect();
    for (d, cut) in dcs.iter().enumerate() {
        let rest: Vec<usize> = (0..n).filter(|i| !cut.contains(i)).collect();
        run.sim.partition(&[cut, &rest]);
        run.note(format!("datacenter dc{} ({cut:?}) cut off", d + 1));
        let lost = run.sim.run_until_cond_every(30 * S, MS, |s| {
            cut.iter()
                .all(|i| !s.core(*i).is_some_and(|c| c.quorum().has_quorum))
        });
        run.measure(
            &format!("dc{} cut: its nodes without quorum after", d + 1),
            secs(lost),
        );
        run.verdict(
            "a cut-off datacenter loses quorum",
            lost.is_some(),
            format!(
                "dc{}: {} node(s), {} of the votes",
                d + 1,
                cut.len(),
                if cut.len() * 2 > n {
                    "a majority"
                } else {
                    "a minority"
                }
            ),
        );
        run.sim.run_for(12 * S);
        let kept = rest
            .iter()
            .all(|i| run.sim.core(*i).is_some_and(|c| c.quorum().has_quorum));
        run.verdict(
            "the other datacenters keep quorum",
            kept,
            format!("dc{} cut; {} node(s) on the other side", d + 1, rest.len()),
        );
        run.sim.heal();
        run.note("healed");
        run.sim.run_for(8 * S);
    }
}

/// One network shape of the `shapes` walk.
enum Shape {
    Split(Vec<Vec<usize>>),
    /// Cut between the two sets both ways; the nodes in neither reach both.
    Bridge(Vec<usize>, Vec<usize>),
    /// The first cannot send to the second.
    OneWay(usize, usize),
}

/// How long after a change of shape a quorum write on a node that reaches a quorum may take
/// (issue 18's target).
const SHAPE_BOUND: Duration = Duration::from_millis(300);

/// Walks the network through the shapes of the e2e test `tests/availability.rs` (nodes 0-4; more
/// nodes go with node 0), then checks that every quorum write started on a node that reaches a
/// quorum (with the nodes it reaches both ways) was acknowledged within [`SHAPE_BOUND`] of the
/// later of its start and the change. Store rounds are modelled here (a round that waits asks
/// again, also peers the view holds failed); TCP's retransmission backoff is not (netsim delivers
/// messages, not segments), so the e2e test covers the transport.
fn shapes(run: &mut Run, n: usize) {
    if n < 5 {
        run.verdict("shapes need 5 nodes", false, format!("{n} given"));
        return;
    }
    let more: Vec<usize> = (5..n).collect();
    let with0 = |g: &[usize]| -> Vec<usize> {
        let mut g = g.to_vec();
        if g.contains(&0) {
            g.extend(&more);
        }
        g
    };
    let walk = vec![
        (
            "split 012|34",
            Shape::Split(vec![with0(&[0, 1, 2]), vec![3, 4]]),
        ),
        (
            "bridge 01|24 over 3",
            Shape::Bridge(with0(&[0, 1]), vec![2, 4]),
        ),
        (
            "split 123|04",
            Shape::Split(vec![vec![1, 2, 3], with0(&[0, 4])]),
        ),
        (
            "isolate 1",
            Shape::Split(vec![vec![1], with0(&[0, 2, 3, 4])]),
        ),
        ("one-way 2 to 3", Shape::OneWay(2, 3)),
        (
            "split 034|12",
            Shape::Split(vec![with0(&[0, 3, 4]), vec![1, 2]]),
        ),
        (
            "isolate 3",
            Shape::Split(vec![vec![3], with0(&[0, 1, 2, 4])]),
        ),
    ];
    let required = run.sim.store_config().required_votes as usize;
    let mut changes: Vec<(&str, Duration, Vec<usize>)> = Vec::new();
    for (name, shape) in walk {
        let now = run.sim.now();
        match shape {
            Shape::Split(groups) => {
                let refs: Vec<&[usize]> = groups.iter().map(|g| g.as_slice()).collect();
                run.sim.partition(&refs);
            }
            Shape::Bridge(a, b) => {
                run.sim.heal();
                run.sim.net.cut_between(now, &a, &b);
            }
            Shape::OneWay(a, b) => {
                run.sim.heal();
                run.sim.cut_one_way(a, b);
            }
        }
        run.note(format!("shape: {name}"));
        let net = &run.sim.net;
        let quorate: Vec<usize> = (0..n)
            .filter(|&i| {
                (0..n)
                    .filter(|&j| j == i || (net.reaches(i, j) && net.reaches(j, i)))
                    .count()
                    >= required
            })
            .collect();
        changes.push((name, now, quorate));
        run.sim.run_for(2500 * MS);
    }
    let end = run.sim.now();
    let mut worst: Option<(Duration, String)> = None;
    let mut late = Vec::new();
    let mut checked = 0;
    for (k, (name, at, quorate)) in changes.iter().enumerate() {
        let until = changes.get(k + 1).map_or(end, |c| c.1);
        for op in run.sim.history().ops.iter().filter(|o| {
            o.is_write()
                && o.consistency == store::Consistency::Quorum
                && quorate.contains(&o.node)
                && o.invoked >= *at
                && o.invoked + 500 * MS < until
        }) {
            checked += 1;
            let ready = op.invoked.max(*at);
            let took = match (&op.outcome, op.completed) {
                (crate::history::Outcome::Written(_), Some(c)) => c - ready,
                _ => until - ready,
            };
            if worst.as_ref().is_none_or(|w| took > w.0) {
                worst = Some((took, format!("{name}, node {}", op.node)));
            }
            if took > SHAPE_BOUND {
                late.push(format!(
                    "{name}: node {} {:?} invoked {:.3} s after the change: {:?} after {:.3} s",
                    op.node,
                    op.kind,
                    (op.invoked - *at).as_secs_f64(),
                    op.outcome,
                    took.as_secs_f64()
                ));
            }
        }
    }
    let detail = match &worst {
        Some((d, at)) => format!("{checked} writes, slowest {:.3} s ({at})", d.as_secs_f64()),
        None => "no quorum write to check".to_string(),
    };
    run.measure(
        "slowest quorum-side write after a change of shape",
        detail.clone(),
    );
    run.verdict(
        "quorum side writes soon after every change of shape",
        late.is_empty() && checked > 0,
        if late.is_empty() {
            detail
        } else {
            format!("{} late: {}", late.len(), late.join("; "))
        },
    );
}
