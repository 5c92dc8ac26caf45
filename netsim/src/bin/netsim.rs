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

use clap::builder::PossibleValuesParser;
use clap::{Args as ClapArgs, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use netsim::scale::{self, ScaleResult};
use netsim::scenario::{self, FAULTS, Faults, SCENARIOS};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// jemalloc, as the agent (agent/src/main.rs): the simulation then allocates as the agents it
/// stands for do, and at scale, where every node holds small records of every other, memory
/// per pair of members is the limit (docs/benchmarks.md, "Membership at scale, third pass").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options for this binary (its `malloc_conf`, read at the first allocation;
/// `_RJEM_MALLOC_CONF` in the environment still overrides it): memory freed goes back to the
/// kernel at once rather than after jemalloc's default 10 s. A join at scale frees as it grows
/// (every table's old room when it doubles), and the freed pages, held resident meanwhile, added
/// to the peak: `netsim scale --nodes 3000 --secs 20`, side by side, peak resident 2,416 against
/// 2,587 MB (0.93) for 3.5 % more wall time (docs/benchmarks.md, "seventh pass"). Memory is
/// what limits the largest run, not time.
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"dirty_decay_ms:0,muzzy_decay_ms:0".as_ptr());

/// A C string's address, as jemalloc's `malloc_conf` is (`const char *`).
#[cfg(not(target_env = "msvc"))]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a string constant, which nothing writes.
#[cfg(not(target_env = "msvc"))]
unsafe impl Sync for MallocConf {}

/// Deterministic simulation of Chorus clusters: scenarios with faults and checkers, seed sweeps,
/// and membership at scale.
#[derive(Parser)]
#[command(name = "netsim", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario and print its report (timeline, measures, traffic, checker verdicts);
    /// the same arguments replay it exactly. Exits 1 when a checker fails.
    Run {
        /// The scenario (`netsim list` describes each).
        #[arg(long, value_parser = scenario_names(false))]
        scenario: String,
        /// Cluster size (at least 3).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// The seed every random draw derives from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Run many seeds of one scenario (or all) in parallel; print every failing seed with the
    /// command that replays it. Exits 1 when any run fails.
    Sweep {
        /// The scenario, or `all`.
        #[arg(long, value_parser = scenario_names(true))]
        scenario: String,
        /// Seeds to run, inclusive: A..B.
        #[arg(long, default_value = "1..100", value_parser = parse_seeds)]
        seeds: (u64, u64),
        /// Cluster size (at least 3).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Runs in parallel (default: the number of CPUs).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: Option<u32>,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Membership alone at scale: join, detection and dissemination times and traffic per node.
    Scale {
        /// Cluster sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        nodes: Vec<usize>,
        /// Simulated seconds after the join.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Nodes start one after another over this many milliseconds.
        #[arg(long = "start-spread-ms", default_value_t = 0)]
        spread_ms: u64,
        /// Draw the figures as SVG charts into this directory.
        #[arg(long)]
        svg: Option<String>,
    },
    /// Across datacenters: quorum write latency, failure detection and false failures against
    /// the one-way latency between datacenters, with LAN and with fitted timings.
    Wan {
        /// One-way latencies between datacenters, in milliseconds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,50,150")]
        latencies: Vec<u64>,
        /// Seeds 1..=N for every latency and timing choice.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// Draw the figures as SVG charts into this directory.
        #[arg(long)]
        svg: Option<String>,
    },
    /// List the scenarios and the defects `--fault` can inject.
    List,
}

#[derive(ClapArgs)]
struct FaultArgs {
    /// Inject a defect into every node, to show that a checker catches it (repeatable).
    #[arg(long = "fault", value_parser = fault_names())]
    fault: Vec<String>,
}

impl FaultArgs {
    fn faults(&self) -> Faults {
        let mut f = Faults::default();
        for name in &self.fault {
            let (_, fault) = FAULTS
                .iter()
                .find(|(n, _)| n == name)
                .expect("clap checked");
            f.add(*fault);
        }
        f
    }
}

fn scenario_names(with_all: bool) -> PossibleValuesParser {
    let mut names: Vec<&'static str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
    if with_all {
        names.push("all");
    }
    PossibleValuesParser::new(names)
}

fn fault_names() -> PossibleValuesParser {
    PossibleValuesParser::new(FAULTS.iter().map(|(n, _)| *n))
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or("expected A..B, for example 1..500")?;
    let lo: u64 = lo.parse().map_err(|_| format!("bad start {lo:?}"))?;
    let hi: u64 = hi.parse().map_err(|_| format!("bad end {hi:?}"))?;
    if hi < lo {
        return Err("the end is before the start".into());
    }
    Ok((lo, hi))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            scenario,
            nodes,
            seed,
            faults,
        } => cmd_run(&scenario, nodes, seed, &faults.faults()),
        Cmd::Sweep {
            scenario,
            seeds,
            nodes,
            jobs,
            faults,
        } => {
            let jobs = jobs.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |j| j as usize,
            );
            cmd_sweep(&scenario, seeds, nodes, jobs, &faults.faults())
        }
        Cmd::Scale {
            nodes,
            secs,
            seed,
            spread_ms,
            svg,
        } => cmd_scale(&nodes, secs, seed, spread_ms, svg.as_deref()),
        Cmd::Wan {
            latencies,
            seeds,
            svg,
        } => cmd_wan(&latencies, seeds, svg.as_deref()),
        Cmd::List => {
            println!("scenarios:");
            for (name, about) in SCENARIOS {
                println!("  {name:<11} {about}");
            }
            println!("faults (--fault, for showing that checkers catch broken cores):");
            for (f, _) in FAULTS {
                println!("  {f}");
            }
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn cmd_run(name: &str, nodes: usize, seed: u64, faults: &Faults) -> Result<bool, String> {
    let report = scenario::run(name, nodes, seed, faults)?;
    print!("{}", report.render());
    Ok(report.ok())
}

fn cmd_sweep(
    name: &str,
    seeds: (u64, u64),
    nodes: usize,
    jobs: usize,
    faults: &Faults,
) -> Result<bool, String> {
    let names: Vec<String> = if name == "all" {
        SCENARIOS.iter().map(|(n, _)| n.to_string()).collect()
    } else {
        vec![name.to_string()]
    };
    let work: Vec<(String, u64)> = names
        .iter()
        .flat_map(|n| (seeds.0..=seeds.1).map(move |s| (n.clone(), s)))
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
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, seed)) = work.get(k) else {
                        break;
                    };
                    match scenario::run(name, nodes, *seed, faults) {
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
        seeds.0,
        seeds.1,
        failed.len()
    );
    for f in &failed {
        println!("{f}");
    }
    Ok(failed.is_empty())
}

fn cmd_scale(
    sizes: &[usize],
    secs: u64,
    seed: u64,
    spread_ms: u64,
    svg: Option<&str>,
) -> Result<bool, String> {
    // Said before the first row, not after an hour of it: a size that cannot fit is killed for
    // memory at its join's peak, minutes into the run.
    if let Some(warning) =
        scale::available_bytes().and_then(|available| scale::memory_warning(sizes, available))
    {
        eprintln!("netsim scale: warning: {warning}");
    }
    let mut results: Vec<ScaleResult> = Vec::new();
    println!(
        "{:>7} {:>9} {:>12} {:>10} {:>14} {:>11} {:>12} {:>13} {:>9} {:>11}",
        "nodes",
        "join s",
        "wall s/60s",
        "detect s",
        "disseminate s",
        "B/node/s",
        "msgs/node/s",
        "join msgs/node",
        "RSS MB",
        "B/member^2"
    );
    for n in sizes {
        let r = scale::run(
            *n,
            seed,
            Duration::from_secs(secs),
            Duration::from_millis(spread_ms),
        );
        let rss = r.resident_bytes.unwrap_or(0) as f64;
        println!(
            "{:>7} {:>9} {:>12.1} {:>10} {:>14} {:>11.0} {:>12.2} {:>14.0} {:>9.0} {:>11.0}",
            r.nodes,
            opt(r.join),
            r.wall_base.as_secs_f64() * 60.0 / secs as f64,
            opt(r.detect_first),
            opt(r.disseminate),
            r.bytes_per_node_sec,
            r.datagrams_per_node_sec,
            r.join_datagrams_per_node,
            rss / 1e6,
            rss / (r.nodes as f64 * r.nodes as f64),
        );
        let by_channel: Vec<String> = r
            .join_datagrams_by_channel
            .iter()
            .map(|(c, n)| format!("{c:?} {n:.0}"))
            .collect();
        println!(
            "        join msgs/node by channel: {}",
            by_channel.join(", ")
        );
        results.push(r);
    }
    if let Some(dir) = svg {
        let files = scale::plot(&results, std::path::Path::new(dir))?;
        for f in files {
            println!("wrote {}", f.display());
        }
    }
    Ok(true)
}

fn cmd_wan(latencies: &[u64], seeds: u64, svg: Option<&str>) -> Result<bool, String> {
    println!(
        "{:>8} {:>16} {:>10} {:>10} {:>14} {:>14} {:>14} {:>8}",
        "one-way",
        "timings",
        "write p50",
        "write p99",
        "detect dc s",
        "detect all s",
        "all, worst s",
        "false"
    );
    let mut results = Vec::new();
    for ms in latencies {
        for fitted in [false, true] {
            let latency = Duration::from_millis(*ms);
            let r = netsim::wan::run(latency, fitted, 1..=seeds);
            let timings = if fitted {
                format!("fitted {}ms", netsim::wan::fitted_rtt(latency).as_millis())
            } else {
                "lan".to_string()
            };
            println!(
                "{:>6}ms {:>16} {:>8.1}ms {:>8.1}ms {:>14} {:>14} {:>14} {:>8}",
                ms,
                timings,
                r.write_p50.as_secs_f64() * 1e3,
                r.write_p99.as_secs_f64() * 1e3,
                opt(r.detect_lan),
                opt(r.detect_all),
                opt(r.detect_all_max),
                r.false_failures
            );
            results.push(r);
        }
    }
    if let Some(dir) = svg {
        for f in netsim::wan::plot(&results, std::path::Path::new(dir))? {
            println!("wrote {}", f.display());
        }
    }
    Ok(true)
}

fn opt(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
}
