//! The netsim command line.
//!
//! - `netsim run --scenario NAME [--nodes N] [--seed S] [--fault F]...`: one scenario, with a
//!   report (timeline, measures, traffic, checker verdicts). The same arguments replay exactly.
//! - `netsim sweep --scenario NAME|all --seeds A..B [--nodes N] [--jobs J] [--fault F]...`: many
//!   seeds with a progress bar; prints every failing seed with the command that replays it.
//! - `netsim scale --nodes 10,100,1000 [--secs S] [--seed S] [--start-spread-ms MS] [--svg DIR]`:
//!   membership at scale,
//!   with detection, dissemination and traffic per node, optionally drawn as SVG charts.
//! - `netsim list`: the scenarios and the faults that can be injected.

use indicatif::{ProgressBar, ProgressStyle};
use netsim::scale::{self, ScaleResult};
use netsim::scenario::{self, Faults, SCENARIOS};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const USAGE: &str = "usage:
  netsim run --scenario NAME [--nodes N] [--seed S] [--fault F]...
  netsim sweep --scenario NAME|all --seeds A..B [--nodes N] [--jobs J] [--fault F]...
  netsim scale --nodes N[,N...] [--secs S] [--seed S] [--start-spread-ms MS] [--svg DIR]
  netsim list";

const FAULTS: &[&str] = &[
    "store:ack-without-storing",
    "store:quorum-of-one",
    "store:read-local-only",
    "store:no-anti-entropy",
    "store:ack-before-durable",
    "store:skip-catch-up",
    "store:vote-while-catching-up",
    "membership:deaf-to-metadata",
    "membership:ignore-down-peers",
    "membership:hasty-failure-detector",
    "membership:silent-failures",
];

struct Args {
    cmd: String,
    scenario: Option<String>,
    nodes: Vec<usize>,
    seed: u64,
    seeds: (u64, u64),
    jobs: usize,
    faults: Faults,
    secs: u64,
    spread_ms: u64,
    svg: Option<String>,
}

fn parse_fault(s: &str, f: &mut Faults) -> Result<(), String> {
    match s {
        "store:ack-without-storing" => f.store.push(store::Fault::AckWithoutStoring),
        "store:quorum-of-one" => f.store.push(store::Fault::QuorumOfOne),
        "store:read-local-only" => f.store.push(store::Fault::ReadLocalOnly),
        "store:no-anti-entropy" => f.store.push(store::Fault::NoAntiEntropy),
        "store:ack-before-durable" => f.store.push(store::Fault::AckBeforeDurable),
        "store:skip-catch-up" => f.store.push(store::Fault::SkipCatchUp),
        "store:vote-while-catching-up" => f.store.push(store::Fault::VoteWhileCatchingUp),
        "membership:deaf-to-metadata" => f.membership.push(membership::Fault::DeafToMetadata),
        "membership:ignore-down-peers" => f.membership.push(membership::Fault::IgnoreDownPeers),
        "membership:hasty-failure-detector" => {
            f.membership.push(membership::Fault::HastyFailureDetector)
        }
        "membership:silent-failures" => f.membership.push(membership::Fault::SilentFailures),
        other => {
            return Err(format!(
                "unknown fault {other:?}; known: {}",
                FAULTS.join(", ")
            ));
        }
    }
    Ok(())
}

fn parse() -> Result<Args, String> {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let cmd = v.first().cloned().ok_or("no command")?;
    let mut a = Args {
        cmd,
        scenario: None,
        nodes: vec![5],
        seed: 1,
        seeds: (1, 100),
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        faults: Faults::default(),
        secs: 60,
        spread_ms: 0,
        svg: None,
    };
    let mut i = 1;
    while i < v.len() {
        let flag = v[i].as_str();
        let val = v
            .get(i + 1)
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {val:?}: {what}");
        match flag {
            "--scenario" => a.scenario = Some(val.clone()),
            "--nodes" => {
                a.nodes = val
                    .split(',')
                    .map(|x| x.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("expected a number or a comma-separated list"))?;
            }
            "--seed" => a.seed = val.parse().map_err(|_| bad("expected a number"))?,
            "--seeds" => {
                let (lo, hi) = val
                    .split_once("..")
                    .ok_or_else(|| bad("expected A..B, e.g. 1..500"))?;
                let lo: u64 = lo.parse().map_err(|_| bad("bad start"))?;
                let hi: u64 = hi.parse().map_err(|_| bad("bad end"))?;
                if hi < lo {
                    return Err(bad("the end is before the start"));
                }
                a.seeds = (lo, hi);
            }
            "--jobs" => {
                a.jobs = val
                    .parse()
                    .ok()
                    .filter(|j| *j > 0)
                    .ok_or_else(|| bad("expected a positive number"))?
            }
            "--fault" => parse_fault(val, &mut a.faults)?,
            "--secs" => a.secs = val.parse().map_err(|_| bad("expected seconds"))?,
            "--svg" => a.svg = Some(val.clone()),
            "--start-spread-ms" => {
                a.spread_ms = val.parse().map_err(|_| bad("expected milliseconds"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match a.cmd.as_str() {
        "run" => cmd_run(&a),
        "sweep" => cmd_sweep(&a),
        "scale" => cmd_scale(&a),
        "list" => {
            println!("scenarios:");
            for (name, about) in SCENARIOS {
                println!("  {name:<11} {about}");
            }
            println!("faults (--fault, for showing that checkers catch broken cores):");
            for f in FAULTS {
                println!("  {f}");
            }
            Ok(true)
        }
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn scenario_arg(a: &Args) -> Result<String, String> {
    a.scenario
        .clone()
        .ok_or_else(|| "--scenario is required".into())
}

fn cmd_run(a: &Args) -> Result<bool, String> {
    let name = scenario_arg(a)?;
    let report = scenario::run(&name, a.nodes[0], a.seed, &a.faults)?;
    print!("{}", report.render());
    Ok(report.ok())
}

fn cmd_sweep(a: &Args) -> Result<bool, String> {
    let name = scenario_arg(a)?;
    let names: Vec<String> = if name == "all" {
        SCENARIOS.iter().map(|(n, _)| n.to_string()).collect()
    } else {
        if !SCENARIOS.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "unknown scenario {name:?}; `netsim list` shows them"
            ));
        }
        vec![name]
    };
    let nodes = a.nodes[0];
    let work: Vec<(String, u64)> = names
        .iter()
        .flat_map(|n| (a.seeds.0..=a.seeds.1).map(move |s| (n.clone(), s)))
        .collect();
    let bar = ProgressBar::new(work.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} runs, {elapsed} elapsed, eta {eta} {msg}",
        )
        .expect("valid template"),
    );
    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..a.jobs {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, seed)) = work.get(k) else {
                        break;
                    };
                    match scenario::run(name, nodes, *seed, &a.faults) {
                        Ok(r) if r.ok() => {}
                        Ok(r) => {
                            let why: Vec<String> = r
                                .failures()
                                .iter()
                                .map(|v| format!("{}: {}", v.name, v.detail))
                                .collect();
                            let line = format!(
                                "FAIL {name} seed {seed}: {}\n  replay: {}",
                                why.join(" | "),
                                r.replay_command()
                            );
                            bar.println(&line);
                            let mut f = failed.lock().expect("not poisoned");
                            f.push(line);
                            bar.set_message(format!("{} failing", f.len()));
                        }
                        Err(e) => failed.lock().expect("not poisoned").push(e),
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish();
    let failed = failed.into_inner().expect("not poisoned");
    println!(
        "sweep: {} runs ({} scenario(s) x seeds {}..{} on {nodes} nodes), {} failing",
        work.len(),
        names.len(),
        a.seeds.0,
        a.seeds.1,
        failed.len()
    );
    for f in &failed {
        println!("{f}");
    }
    Ok(failed.is_empty())
}

fn cmd_scale(a: &Args) -> Result<bool, String> {
    let mut results: Vec<ScaleResult> = Vec::new();
    println!(
        "{:>7} {:>9} {:>12} {:>10} {:>14} {:>11} {:>12}",
        "nodes", "join s", "wall s/60s", "detect s", "disseminate s", "B/node/s", "msgs/node/s"
    );
    for n in &a.nodes {
        let r = scale::run(
            *n,
            a.seed,
            Duration::from_secs(a.secs),
            Duration::from_millis(a.spread_ms),
        );
        println!(
            "{:>7} {:>9} {:>12.1} {:>10} {:>14} {:>11.0} {:>12.2}",
            r.nodes,
            opt(r.join),
            r.wall_base.as_secs_f64() * 60.0 / a.secs as f64,
            opt(r.detect_first),
            opt(r.disseminate),
            r.bytes_per_node_sec,
            r.datagrams_per_node_sec
        );
        results.push(r);
    }
    if let Some(dir) = &a.svg {
        let files = scale::plot(&results, std::path::Path::new(dir))?;
        for f in files {
            println!("wrote {}", f.display());
        }
    }
    Ok(true)
}

fn opt(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
}
