//! `netsim run --scenario NAME --nodes N --seed S`: one simulated membership scenario, with a
//! report (what happened when, detection and convergence times, traffic, verdicts).
//!
//! Scenarios: steady, kill, leave, restart, split (40 % minority), loss10, loss30.
//! The same arguments replay the same run exactly.

use membership::{Event, MemberState};
use netsim::{Sim, SimConfig};
use std::process::ExitCode;
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

struct Args {
    scenario: String,
    nodes: usize,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let v: Vec<String> = std::env::args().skip(1).collect();
    if v.first().map(String::as_str) != Some("run") {
        return Err("usage: netsim run --scenario NAME [--nodes N] [--seed S]".into());
    }
    let mut a = Args {
        scenario: String::new(),
        nodes: 5,
        seed: 1,
    };
    let mut i = 1;
    while i < v.len() {
        let val = v
            .get(i + 1)
            .ok_or_else(|| format!("{} needs a value", v[i]))?;
        match v[i].as_str() {
            "--scenario" => a.scenario = val.clone(),
            "--nodes" => a.nodes = val.parse().map_err(|_| format!("--nodes {val:?}"))?,
            "--seed" => a.seed = val.parse().map_err(|_| format!("--seed {val:?}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    if a.nodes < 3 {
        return Err("--nodes must be at least 3".into());
    }
    Ok(a)
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let n = a.nodes;
    let mut cfg = SimConfig::lan(n, a.seed);
    match a.scenario.as_str() {
        "loss10" => cfg.loss_ppm = 100_000,
        "loss30" => cfg.loss_ppm = 300_000,
        "steady" | "kill" | "leave" | "restart" | "split" => {}
        other => {
            eprintln!(
                "error: unknown scenario {other:?} (steady, kill, leave, restart, split, loss10, loss30)"
            );
            return ExitCode::from(2);
        }
    }
    let mut sim = Sim::new(cfg);
    let mut verdicts: Vec<(String, bool)> = Vec::new();
    let joined = sim.run_until_cond(30 * S, |s| s.all_see_alive(&all(n)));
    println!(
        "netsim: scenario {} with {n} nodes, seed {}",
        a.scenario, a.seed
    );
    println!(
        "  full join: {}",
        joined.map_or("not within 30 s".into(), |d| format!(
            "{:.3} s",
            d.as_secs_f64()
        ))
    );
    verdicts.push(("everyone joined".into(), joined.is_some()));
    sim.run_for(5 * S);
    let (p0, b0) = sim.sent();
    let t0 = sim.now();
    sim.run_for(20 * S);
    let (p1, b1) = sim.sent();
    let secs = (sim.now() - t0).as_secs_f64();
    println!(
        "  idle traffic: {:.2} packets and {:.0} bytes per node per second (sealed UDP payload)",
        (p1 - p0) as f64 / secs / n as f64,
        (b1 - b0) as f64 / secs / n as f64
    );
    let victim = n - 1;
    match a.scenario.as_str() {
        "kill" | "restart" => {
            sim.crash(victim);
            let t = sim.run_until_cond(60 * S, |s| s.all_report(victim, MemberState::Failed));
            println!(
                "  crash of node {victim} seen failed everywhere after {}",
                fmt(t)
            );
            verdicts.push(("crash detected everywhere".into(), t.is_some()));
            if a.scenario == "restart" {
                sim.restart(victim);
                let t = sim.run_until_cond(60 * S, |s| s.all_see_alive(&all(n)));
                println!("  restarted node alive everywhere after {}", fmt(t));
                verdicts.push(("restart rejoined".into(), t.is_some()));
            }
        }
        "leave" => {
            sim.leave(victim, S);
            let t = sim.run_until_cond(60 * S, |s| s.all_report(victim, MemberState::Left));
            println!("  leave of node {victim} seen everywhere after {}", fmt(t));
            verdicts.push(("leave reported as left".into(), t.is_some()));
        }
        "split" => {
            let minority: Vec<usize> = (0..(n * 2).div_ceil(5)).collect();
            let majority: Vec<usize> = (minority.len()..n).collect();
            sim.partition(&[&minority, &majority]);
            let t = sim.run_until_cond(60 * S, |s| {
                minority
                    .iter()
                    .all(|i| !s.core(*i).unwrap().quorum().has_quorum)
            });
            println!(
                "  split {}|{}: minority without quorum after {}",
                minority.len(),
                majority.len(),
                fmt(t)
            );
            verdicts.push(("minority lost quorum".into(), t.is_some()));
            let kept = majority
                .iter()
                .all(|i| sim.core(*i).unwrap().quorum().has_quorum);
            verdicts.push(("majority kept quorum".into(), kept));
            sim.run_for(5 * S);
            sim.heal();
            let t = sim.run_until_cond(60 * S, |s| {
                s.all_see_alive(&all(n)) && (0..n).all(|i| s.core(i).unwrap().quorum().has_quorum)
            });
            println!("  merged after heal in {}", fmt(t));
            verdicts.push(("merged after heal".into(), t.is_some()));
        }
        _ => {
            sim.run_for(60 * S);
        }
    }
    let unexpected = sim
        .log()
        .iter()
        .filter(|l| matches!(&l.event, Event::MemberFailed { member } if member.id != sim.id_of(victim)))
        .count();
    let expected_failures = matches!(a.scenario.as_str(), "split");
    if !expected_failures {
        verdicts.push(("no false failures".into(), unexpected == 0));
    }
    println!("  events: {} in all (first 10 below)", sim.log().len());
    for l in sim
        .log()
        .iter()
        .filter(|l| {
            !matches!(
                l.event,
                Event::MemberJoined { .. } | Event::QuorumRegained { .. }
            )
        })
        .take(10)
    {
        println!(
            "    {:>9.3} s  node {:>3}  {:?}",
            l.at.as_secs_f64(),
            l.node,
            l.event
        );
    }
    let ok = verdicts.iter().all(|(_, v)| *v);
    for (name, v) in &verdicts {
        println!("  [{}] {name}", if *v { "pass" } else { "FAIL" });
    }
    println!(
        "  trace hash {:016x}; replay: netsim run --scenario {} --nodes {n} --seed {}",
        sim.trace_hash(),
        a.scenario,
        a.seed
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fmt(t: Option<Duration>) -> String {
    t.map_or("never (within the limit)".into(), |d| {
        format!("{:.3} s", d.as_secs_f64())
    })
}
