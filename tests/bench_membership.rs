//! Membership benchmark on real agents in network namespaces (not a test: it measures).
//!
//! `cargo bench -p chorus-agent --bench membership -- [--nodes N] [--runs R] [--idle-secs S] [--soak-secs S]`
//!
//! Each run starts N agents (LAN profile, multicast discovery only) and measures, from the agents'
//! own event log timestamps (one clock: the same machine):
//! - full join: from the first spawn until every agent has logged every other one joining;
//! - kill -9 detection: until every survivor has logged the victim failed;
//! - split detection: with the first 40 % of the hosts cut from the rest, until every node has
//!   logged every node across the cut failed, and until the minority has logged quorum lost;
//! - merge after heal: until every node has logged every node across the cut alive again.
//!
//! In the last run, right after the join, idle traffic (UDP payload bytes sent per node per second over `--idle-secs`), and
//! with `--soak-secs`, the number of failures logged by an idle cluster over that time.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use support::{AgentSpec, Lab, which};

struct Args {
    nodes: usize,
    runs: usize,
    idle_secs: u64,
    soak_secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 5,
        runs: 5,
        idle_secs: 30,
        soak_secs: 0,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = || {
            v.get(i + 1)
                .and_then(|s| s.parse::<u64>().ok())
                .expect("flag needs a number")
        };
        match v[i].as_str() {
            "--nodes" => a.nodes = next() as usize,
            "--runs" => a.runs = next() as usize,
            "--idle-secs" => a.idle_secs = next(),
            "--soak-secs" => a.soak_secs = next(),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// One membership event from an agent's log.
#[derive(Debug, Clone)]
struct Ev {
    at: SystemTime,
    kind: String,
    subject: String,
}

fn events(lab: &Lab, a: usize) -> Vec<Ev> {
    let text = std::fs::read_to_string(&lab.agents[a].log).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(ts) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(at) = humantime::parse_rfc3339(ts) else {
            continue;
        };
        // Event lines carry fields: `event="member_failed" seq=7 name=n3 id=... addr=10.77.0.3:7946`.
        if let Some(rest) = line.split("event=\"").nth(1) {
            let name = rest.split('"').next().unwrap_or("");
            // MemberFailed, QuorumLost, ... as the bench's checks name them.
            let kind: String = name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            // Events name the member by gossip address (its name may not be known yet at join).
            let subject = rest
                .split(" addr=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("")
                .to_string();
            out.push(Ev { at, kind, subject });
        } else if line.contains("quorum lost") {
            out.push(Ev {
                at,
                kind: "QuorumLost".into(),
                subject: String::new(),
            });
        } else if line.contains("quorum regained") {
            out.push(Ev {
                at,
                kind: "QuorumRegained".into(),
                subject: String::new(),
            });
        }
    }
    out
}

/// Time from `t0` until `viewer` has logged one of `kinds` about every name in `subjects` after t0.
fn all_seen(
    lab: &Lab,
    viewer: usize,
    t0: SystemTime,
    kinds: &[&str],
    subjects: &BTreeSet<String>,
) -> Option<Duration> {
    let mut last = BTreeMap::new();
    for e in events(lab, viewer) {
        if e.at >= t0 && kinds.contains(&e.kind.as_str()) && subjects.contains(&e.subject) {
            last.entry(e.subject.clone()).or_insert(e.at);
        }
    }
    if last.len() < subjects.len() {
        return None;
    }
    Some(
        last.values()
            .max()
            .map_or(Duration::ZERO, |t| t.duration_since(t0).unwrap_or_default()),
    )
}

fn worst(
    lab: &Lab,
    viewers: &[usize],
    t0: SystemTime,
    kinds: &[&str],
    subjects: &[String],
    what: &str,
) -> Duration {
    let subjects: BTreeSet<String> = subjects.iter().cloned().collect();
    let mut worst = Duration::ZERO;
    lab.wait_for(Duration::from_secs(60), what, |l| {
        let mut w = Duration::ZERO;
        for v in viewers {
            let others: BTreeSet<String> = subjects
                .iter()
                .filter(|s| **s != format!("{}:7946", l.ip(l.agents[*v].host)))
                .cloned()
                .collect();
            match all_seen(l, *v, t0, kinds, &others) {
                Some(d) => w = w.max(d),
                None => return false,
            }
        }
        worst = w;
        true
    });
    worst
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let a = args();
    let n = a.nodes;
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let addrs: Vec<String> = (0..n)
        .map(|i| format!("10.77.{}.{}:7946", i / 200, i % 200 + 1))
        .collect();
    let minority = (n * 2).div_ceil(5); // 2 of 5, 6 of 15
    let mut join = Vec::new();
    let mut kill = Vec::new();
    let mut split = Vec::new();
    let mut split_first = Vec::new();
    let mut minority_quorum = Vec::new();
    let mut merge = Vec::new();
    let mut chorus_idle = None;
    for run in 0..a.runs {
        let mut lab = match Lab::new(n) {
            Ok(l) => l,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        };
        for h in 0..n {
            lab.count_wire(h);
        }
        let t0 = SystemTime::now();
        let agents: Vec<usize> = (0..n)
            .map(|i| lab.start(i, AgentSpec::new(&names[i], n as u32)))
            .collect();
        join.push(worst(
            &lab,
            &agents,
            t0,
            &["MemberJoined"],
            &addrs,
            "full join",
        ));
        // Idle traffic and the soak are measured on the freshly joined cluster, before any fault.
        if run + 1 == a.runs && (a.idle_secs > 0 || a.soak_secs > 0) {
            let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            lab.wait_for(Duration::from_secs(30), "all alive before idle", |l| {
                l.all_alive(&agents, &refs)
            });
            std::thread::sleep(Duration::from_secs(5));
            if a.idle_secs > 0 {
                // Interface counters of every host, and the agents' own payload counters.
                let payload = |lab: &Lab| -> BTreeMap<String, (u64, u64)> {
                    let mut t: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                    for x in &agents {
                        for line in lab.metrics(*x).lines() {
                            let v = line
                                .rsplit(' ')
                                .next()
                                .and_then(|v| v.parse::<f64>().ok())
                                .unwrap_or(0.0) as u64;
                            let chan = line
                                .split("channel=\"")
                                .nth(1)
                                .and_then(|r| r.split('"').next())
                                .unwrap_or("")
                                .to_string();
                            if line.starts_with("chorus_bytes_sent_total{") {
                                t.entry(chan).or_default().1 += v;
                            } else if line.starts_with("chorus_packets_sent_total{") {
                                t.entry(chan).or_default().0 += v;
                            }
                        }
                    }
                    t
                };
                let p0 = payload(&lab);
                let (wire, secs) = idle_wire(&lab, n, a.idle_secs);
                let p1 = payload(&lab);
                for (chan, (p, b)) in &p1 {
                    let (pa, ba) = p0.get(chan).copied().unwrap_or((0, 0));
                    println!(
                        "  chorus UDP payload {chan:<8} {:>7.1} B/node/s in {:>5.2} datagrams/node/s",
                        (b - ba) as f64 / secs / n as f64,
                        (p - pa) as f64 / secs / n as f64
                    );
                }
                chorus_idle = Some(report_wire("chorus", n, &wire, secs));
            }
            if a.soak_secs > 0 {
                let t = SystemTime::now();
                std::thread::sleep(Duration::from_secs(a.soak_secs));
                let failures: usize = agents
                    .iter()
                    .map(|x| {
                        events(&lab, *x)
                            .iter()
                            .filter(|e| e.at >= t && e.kind == "MemberFailed")
                            .count()
                    })
                    .sum();
                println!(
                    "soak, N={n}, {} s idle: {failures} failure events",
                    a.soak_secs
                );
            }
        }
        std::thread::sleep(Duration::from_secs(2)); // let the cluster settle before the next fault

        let victim = n - 1;
        let t = SystemTime::now();
        lab.kill9(victim);
        let survivors: Vec<usize> = (0..n - 1).collect();
        kill.push(worst(
            &lab,
            &survivors,
            t,
            &["MemberFailed"],
            &addrs[victim..],
            "kill -9 seen",
        ));
        lab.restart(victim);
        worst(
            &lab,
            &survivors,
            t,
            &["MemberRecovered", "MemberJoined", "MemberRestarted"],
            &addrs[victim..victim + 1],
            "restart seen",
        );
        std::thread::sleep(Duration::from_secs(2));

        let left: Vec<usize> = (0..minority).collect();
        let right: Vec<usize> = (minority..n).collect();
        let t = SystemTime::now();
        lab.partition(&[&left, &right]);
        // First detection: every node has marked at least one node across the cut failed.
        let first = |l: &Lab, viewers: &[usize], across: &[String]| -> Option<Duration> {
            let mut w = Duration::ZERO;
            for v in viewers {
                let d = events(l, *v)
                    .into_iter()
                    .filter(|e| {
                        e.at >= t && e.kind == "MemberFailed" && across.contains(&e.subject)
                    })
                    .map(|e| e.at.duration_since(t).unwrap_or_default())
                    .min()?;
                w = w.max(d);
            }
            Some(w)
        };
        let mut fd = Duration::ZERO;
        lab.wait_for(
            Duration::from_secs(60),
            "each side detects the split",
            |l| match (
                first(l, &left, &addrs[minority..]),
                first(l, &right, &addrs[..minority]),
            ) {
                (Some(a), Some(b)) => {
                    fd = a.max(b);
                    true
                }
                _ => false,
            },
        );
        split_first.push(fd);
        let a1 = worst(
            &lab,
            &left,
            t,
            &["MemberFailed"],
            &addrs[minority..],
            "minority sees majority failed",
        );
        let a2 = worst(
            &lab,
            &right,
            t,
            &["MemberFailed"],
            &addrs[..minority],
            "majority sees minority failed",
        );
        split.push(a1.max(a2));
        let q = left
            .iter()
            .map(|v| {
                lab.wait_for(Duration::from_secs(30), "minority quorum lost", |l| {
                    events(l, *v)
                        .iter()
                        .any(|e| e.kind == "QuorumLost" && e.at >= t)
                });
                events(&lab, *v)
                    .into_iter()
                    .find(|e| e.kind == "QuorumLost" && e.at >= t)
                    .unwrap()
                    .at
                    .duration_since(t)
                    .unwrap()
            })
            .max()
            .unwrap();
        minority_quorum.push(q);
        std::thread::sleep(Duration::from_secs(2));

        let t = SystemTime::now();
        lab.heal();
        let alive = ["MemberRecovered", "MemberJoined", "MemberRestarted"];
        let m1 = worst(
            &lab,
            &left,
            t,
            &alive,
            &addrs[minority..],
            "minority sees majority again",
        );
        let m2 = worst(
            &lab,
            &right,
            t,
            &alive,
            &addrs[..minority],
            "majority sees minority again",
        );
        merge.push(m1.max(m2));
        eprintln!(
            "run {run}: join {:?} kill {:?} split {:?} minority-no-quorum {:?} merge {:?}",
            join[run], kill[run], split[run], minority_quorum[run], merge[run]
        );
    }
    let show = |name: &str, v: &[Duration]| {
        let (lo, med, hi) = median(v.to_vec());
        println!(
            "{name:<40} min {:>7.2} s   median {:>7.2} s   max {:>7.2} s",
            lo.as_secs_f64(),
            med.as_secs_f64(),
            hi.as_secs_f64()
        );
    };
    println!(
        "N = {n}, {} runs, LAN profile, multicast discovery, one 2-core machine",
        a.runs
    );
    show("full join", &join);
    show("kill -9 seen failed everywhere", &kill);
    show(
        &format!(
            "split {}|{}: each node sees one across failed",
            minority,
            n - minority
        ),
        &split_first,
    );
    show(
        &format!(
            "split {}|{}: each node sees all across failed",
            minority,
            n - minority
        ),
        &split,
    );
    show("split: minority reports no quorum", &minority_quorum);
    show("merge after heal (everyone alive again)", &merge);

    if which("serf").is_none() {
        println!("serf not installed (Debian package `serf`): no comparison");
        return;
    }
    let serf = serf_runs(&a);
    let version = support::version_of("serf", "version");
    println!(
        "Serf ({version}), same topology, same run, LAN profile, joined through the first node"
    );
    show("serf: full join", &serf.join);
    show("serf: kill -9 seen failed everywhere", &serf.kill);
    let med = |v: &[Duration]| median(v.to_vec()).1.as_secs_f64();
    println!(
        "ratio chorus/serf: full join {:.2}, kill -9 detection {:.2}",
        med(&join) / med(&serf.join),
        med(&kill) / med(&serf.kill)
    );
    if let (Some(c), Some(s)) = (chorus_idle, serf.idle) {
        println!(
            "ratio chorus/serf: idle bytes on the wire per node {:.2} ({c:.0} / {s:.0} B/s)",
            c / s
        );
    }
}

/// Waits `secs` on an idle cluster and returns what every host sent meanwhile (summed), with the
/// seconds measured.
fn idle_wire(lab: &Lab, n: usize, secs: u64) -> (support::Wire, f64) {
    let before: Vec<support::Wire> = (0..n).map(|h| lab.wire(h)).collect();
    let start = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let secs = start.elapsed().as_secs_f64();
    let mut sum = support::Wire::default();
    for (h, b) in before.iter().enumerate() {
        sum.add(&lab.wire(h).since(b));
    }
    (sum, secs)
}

/// Prints idle traffic per node by kind and returns the interface bytes per node per second.
fn report_wire(who: &str, n: usize, w: &support::Wire, secs: f64) -> f64 {
    let per = |x: u64| x as f64 / secs / n as f64;
    let total = per(w.tx_bytes);
    println!(
        "idle traffic, {who}, N={n}: {total:.0} B/node/s on the wire (interface counters, Ethernet frames), {:.2} frames/node/s",
        per(w.tx_packets)
    );
    let mut counted = 0;
    for (kind, (p, b)) in &w.kinds {
        counted += b;
        println!(
            "  {who} wire {kind:<12} {:>7.1} B/node/s in {:>5.2} frames/node/s{}",
            per(*b),
            per(*p),
            if *p > 0 {
                format!(" ({:.0} B each)", *b as f64 / *p as f64)
            } else {
                String::new()
            }
        );
    }
    println!(
        "  {who} wire: kinds sum to {:.1} B/node/s of the interface's {total:.1}",
        per(counted)
    );
    total
}

struct SerfResult {
    join: Vec<Duration>,
    kill: Vec<Duration>,
    idle: Option<f64>,
}

/// Serf agents in the same topology: join through the first node, idle traffic in the last run,
/// kill -9 of the last node; times from the agents' event handlers (the same machine's clock).
fn serf_runs(a: &Args) -> SerfResult {
    let n = a.nodes;
    let mut out = SerfResult {
        join: Vec::new(),
        kill: Vec::new(),
        idle: None,
    };
    for run in 0..a.runs {
        let lab = Lab::new(n).expect("lab for serf");
        for h in 0..n {
            lab.count_wire(h);
        }
        let handler = lab.dir().join("serf-event.sh");
        std::fs::write(
            &handler,
            "#!/bin/sh\nwhile read -r name rest; do echo \"$(date +%s.%N) $SERF_EVENT $name\" >> \"$1\"; done\n",
        )
        .expect("write handler");
        let logs: Vec<std::path::PathBuf> = (0..n)
            .map(|h| lab.dir().join(format!("serf-{h}.events")))
            .collect();
        let t0 = SystemTime::now();
        let mut procs: Vec<Option<support::Background>> = (0..n)
            .map(|h| {
                let bind = format!("-bind={}:7946", lab.ip(h));
                let node = format!("-node=n{}", h + 1);
                let ev = format!(
                    "-event-handler=member-join,member-failed,member-leave=sh {} {}",
                    handler.display(),
                    logs[h].display()
                );
                let join = format!("-retry-join={}:7946", lab.ip(0));
                let mut args = vec![
                    "serf",
                    "agent",
                    &node,
                    &bind,
                    "-rpc-addr=127.0.0.1:7373",
                    "-log-level=err",
                    "-retry-interval=100ms",
                    &ev,
                ];
                if h > 0 {
                    args.push(&join);
                }
                Some(lab.spawn_in(h, &args))
            })
            .collect();
        let seen = |h: usize, event: &str, after: SystemTime| -> BTreeMap<String, SystemTime> {
            let text = std::fs::read_to_string(&logs[h]).unwrap_or_default();
            let mut m = BTreeMap::new();
            for line in text.lines() {
                let mut w = line.split_whitespace();
                let (Some(ts), Some(ev), Some(name)) = (w.next(), w.next(), w.next()) else {
                    continue;
                };
                let Ok(secs) = ts.parse::<f64>() else {
                    continue;
                };
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
                if ev == event && at >= after {
                    m.entry(name.to_string()).or_insert(at);
                }
            }
            m
        };
        let mut joined = Duration::ZERO;
        lab.wait_for(Duration::from_secs(60), "serf full join", |_| {
            let mut w = Duration::ZERO;
            for h in 0..n {
                let m = seen(h, "member-join", t0);
                if m.len() < n {
                    return false;
                }
                w = w.max(
                    m.values()
                        .max()
                        .unwrap()
                        .duration_since(t0)
                        .unwrap_or_default(),
                );
            }
            joined = w;
            true
        });
        out.join.push(joined);
        if run + 1 == a.runs && a.idle_secs > 0 {
            std::thread::sleep(Duration::from_secs(5));
            let (wire, secs) = idle_wire(&lab, n, a.idle_secs);
            out.idle = Some(report_wire("serf", n, &wire, secs));
        }
        std::thread::sleep(Duration::from_secs(2));
        let victim = n - 1;
        let t = SystemTime::now();
        if let Some(mut p) = procs[victim].take() {
            let _ = p.0.kill();
            let _ = p.0.wait();
            std::mem::forget(p); // reaped: nothing left for its drop to stop
        }
        let name = format!("n{}", victim + 1);
        let mut det = Duration::ZERO;
        lab.wait_for(Duration::from_secs(60), "serf kill -9 seen", |_| {
            let mut w = Duration::ZERO;
            for h in 0..n - 1 {
                match seen(h, "member-failed", t).get(&name) {
                    Some(at) => w = w.max(at.duration_since(t).unwrap_or_default()),
                    None => return false,
                }
            }
            det = w;
            true
        });
        out.kill.push(det);
        eprintln!("serf run {run}: join {joined:?} kill {det:?}");
        drop(procs);
    }
    out
}
