//! Event-handler benchmark on real agents in network namespaces (not a test: it measures).
//!
//! `cargo bench -p chorus-agent --bench events -- [--nodes N] [--runs R]`
//!
//! Each run starts N agents (LAN profile, multicast discovery), each with a `member_failed`
//! handler that appends the wall time it started (`date +%s%N`) to a file; once every agent
//! lists every other alive, the last agent is killed with SIGKILL and the run measures, on one
//! clock (the same machine), the time from the kill to the handler starting on each survivor.
//! Reported: the median over runs of the slowest survivor, and the fastest and slowest seen.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{AgentSpec, Lab};

fn arg(name: &str, default: usize) -> usize {
    let v: Vec<String> = std::env::args().collect();
    v.iter()
        .position(|a| a == name)
        .and_then(|i| v.get(i + 1))
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let (n, runs) = (arg("--nodes", 5), arg("--runs", 5));
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let mut worst = Vec::new();
    let mut all = Vec::new();
    for run in 0..runs {
        let mut lab = match Lab::new(n) {
            Ok(l) => l,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        };
        let dir = lab.dir().to_path_buf();
        let agents: Vec<usize> = (0..n)
            .map(|i| {
                let mut spec = AgentSpec::new(&names[i], n as u32);
                spec.extra_toml = format!(
                    "[[handlers]]\n\
                     events = [\"member_failed\"]\n\
                     command = [\"sh\", \"-c\", \"date +%s%N >> {}\"]\n",
                    dir.join(format!("{}.started", names[i])).display()
                );
                lab.start(i, spec)
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        lab.wait_for(
            Duration::from_secs(60),
            "every agent lists all alive",
            |l| l.all_alive(&agents, &refs),
        );
        let victim = agents[n - 1];
        let killed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        lab.kill9(victim);
        let started = |i: usize| -> Option<u128> {
            std::fs::read_to_string(dir.join(format!("{}.started", names[i])))
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        };
        lab.wait_for(
            Duration::from_secs(60),
            "every survivor ran its handler",
            |_| (0..n - 1).all(|i| started(i).is_some()),
        );
        let times: Vec<f64> = (0..n - 1)
            .map(|i| (started(i).expect("waited for") - killed) as f64 / 1e9)
            .collect();
        let slowest = times.iter().cloned().fold(0.0, f64::max);
        eprintln!("run {}: slowest survivor {slowest:.3} s", run + 1);
        worst.push(slowest);
        all.extend(times);
    }
    worst.sort_by(|a, b| a.total_cmp(b));
    all.sort_by(|a, b| a.total_cmp(b));
    println!(
        "N = {n}, {runs} runs: kill -9 to member_failed handler started on every survivor: median {:.2} s (runs {:.2}-{:.2} s); any survivor {:.2}-{:.2} s",
        worst[worst.len() / 2],
        worst[0],
        worst[worst.len() - 1],
        all[0],
        all[all.len() - 1]
    );
}
