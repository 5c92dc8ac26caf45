//! Store benchmark on real agents (not a test: it measures).
//!
//! `cargo bench -p chorus-agent --bench store -- [--nodes N] [--secs S] [--memory-keys K]
//! [--converge-keys K [--keep-store] [--preload-keys P] [--repeat R [--other-bin PATH]]]
//! [--fsync always|never|100ms]`
//!
//! Starts N agents on loopback (LAN profile, seeds), then runs the load generator (`chorus bench`'s
//! engine, in this process) against them: quorum writes, quorum reads and local writes of 100-byte
//! values with 1 and 32 clients spread over the nodes, S seconds each. With `--memory-keys K` it
//! then writes K more keys and reports the growth of each agent's resident memory per key. With
//! `--converge-keys K` one node is stopped while K keys are written at quorum, then started again
//! with its store wiped (a replaced disk), or with `--keep-store` from its own log (a node that
//! missed K writes); `--preload-keys P` first writes P keys with every node up (the same names as
//! the first of the K, which then overwrite them). `--repeat R` stops and restarts the node R
//! times on the same data (wiped each time, or with `--keep-store` having missed nothing after the
//! first); `--other-bin PATH` runs every agent on that binary in every second repeat, to compare
//! two builds on one data set and one machine state.

use agent::loadgen::{LoadSpec, run};
#[path = "support/loopback.rs"]
mod loopback;

use loopback::{start, status};
use std::time::{Duration, Instant};

struct Args {
    nodes: usize,
    secs: u64,
    memory_keys: u64,
    converge_keys: u64,
    keep_store: bool,
    preload_keys: u64,
    repeat: u64,
    other_bin: Option<std::path::PathBuf>,
    fsync: String,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 3,
        secs: 10,
        memory_keys: 0,
        converge_keys: 0,
        keep_store: false,
        preload_keys: 0,
        repeat: 1,
        other_bin: None,
        fsync: "always".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let num = || {
            v.get(i + 1)
                .and_then(|s| s.parse::<u64>().ok())
                .expect("flag needs a number")
        };
        match v[i].as_str() {
            "--nodes" => a.nodes = num() as usize,
            "--secs" => a.secs = num(),
            "--memory-keys" => a.memory_keys = num(),
            "--converge-keys" => a.converge_keys = num(),
            "--preload-keys" => a.preload_keys = num(),
            "--repeat" => a.repeat = num(),
            "--other-bin" => {
                a.other_bin = Some(v.get(i + 1).expect("--other-bin needs a path").into())
            }
            "--keep-store" => {
                a.keep_store = true;
                i += 1;
                continue;
            }
            "--fsync" => a.fsync = v.get(i + 1).expect("--fsync needs a policy").clone(),
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
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let a = args();
    let mut cluster = start(a.nodes, &a.fsync);
    let apis = cluster.apis.clone();
    let spec = |op: &str, consistency: &str, clients: usize| LoadSpec {
        apis: apis.clone(),
        clients,
        duration: Duration::from_secs(a.secs),
        max_ops_per_client: 5_000_000,
        op: op.into(),
        value_bytes: 100,
        consistency: consistency.parse().expect("quorum or local"),
        store: "default".into(),
        keys: 1000,
    };
    // Puts of `total` distinct keys, spread over `clients`, each key once, however long it takes.
    let fill = |consistency: &str, clients: usize, total: u64| {
        let per = total.div_ceil(clients as u64);
        let mut s = spec("put", consistency, clients);
        s.duration = Duration::from_secs(3600);
        s.max_ops_per_client = per;
        s.keys = per;
        s
    };
    println!(
        "N = {} agents on loopback, 100-byte values, {} s per line, one 2-core machine",
        a.nodes, a.secs
    );
    for (op, c, clients) in [
        ("put", "quorum", 1),
        ("put", "quorum", 32),
        ("get", "quorum", 1),
        ("get", "quorum", 32),
        ("put", "local", 1),
        ("put", "local", 32),
        ("cas", "quorum", 1),
        ("cas", "quorum", 32),
        ("strong-get", "quorum", 1),
    ] {
        let r = run(&spec(op, c, clients), &|_, _| {});
        println!(
            "{op:<10} {c:<6} {clients:>2} clients: {:>7.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({})",
            r.rate(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
            r.errors_text()
        );
    }
    if a.converge_keys > 0 {
        // One replica misses every write (down, then back with its store wiped), as a replaced
        // disk would; time until its digest equals the others'.
        let last = a.nodes - 1;
        let clients = 32usize;
        if a.preload_keys > 0 {
            let s = fill("quorum", clients, a.preload_keys);
            let r = run(&s, &|ok, e| {
                eprint!("\r{ok} keys preloaded in {:.0} s", e.as_secs_f64())
            });
            eprintln!();
            println!(
                "preloaded {} keys with every node up ({})",
                r.ok,
                r.errors_text()
            );
        }
        cluster.kill(last);
        let mut s = fill("quorum", clients, a.converge_keys);
        s.apis.truncate(last);
        let r = run(&s, &|ok, e| {
            eprint!("\r{ok} keys written in {:.0} s", e.as_secs_f64())
        });
        eprintln!();
        if r.errors > 0 {
            let trouble = cluster.trouble();
            println!(
                "membership trouble in the logs during the writes ({} lines):",
                trouble.len()
            );
            for l in trouble.iter().take(40) {
                println!("  {l}");
            }
        }
        let digest = |api: &str| status(api).map(|v| v["stores"]["default"]["digest"].to_string());
        let target = digest(&cluster.apis[0]);
        // Wipe its store (the log), keeping node.json: a replaced disk, not a new node.
        let data_dir = std::path::PathBuf::from(cluster.commands[last].last().expect("data dir"));
        let built = cluster.bin.clone();
        for rep in 0..a.repeat.max(1) {
            if rep > 0 {
                // Again from the same data: the node is stopped and (unless `--keep-store`, when
                // it then missed nothing) wiped; with `--other-bin` every second repeat runs all
                // agents on that binary, so that two builds are compared on one data set.
                cluster.kill(last);
                if let Some(other) = &a.other_bin {
                    let bin = if rep % 2 == 1 {
                        other.clone()
                    } else {
                        built.clone()
                    };
                    if bin != cluster.bin {
                        cluster.bin = bin;
                        for i in 0..last {
                            cluster.kill(i);
                            cluster.restart(i);
                        }
                        let deadline = Instant::now() + Duration::from_secs(300);
                        while !(0..last).all(|i| {
                            status(&cluster.apis[i]).is_some_and(|s| s["catching_up"] == false)
                                && digest(&cluster.apis[i]) == target
                        }) {
                            assert!(Instant::now() < deadline, "peers not back within 300 s");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
            if !a.keep_store {
                std::fs::remove_dir_all(data_dir.join("store")).expect("wipe the store log");
            }
            let t = Instant::now();
            cluster.restart(last);
            let deadline = t + Duration::from_secs(600);
            let (mut equal, mut current, mut rounds) = (None, None, 0);
            while equal.is_none() || current.is_none() {
                let all: Vec<Option<String>> = cluster.apis.iter().map(|x| digest(x)).collect();
                if equal.is_none()
                    && all.iter().all(|d| d.is_some() && *d == all[0])
                    && all[0] == target
                {
                    equal = Some(t.elapsed());
                }
                if current.is_none()
                    && let Some(s) = status(&cluster.apis[last])
                {
                    if s["catching_up"] == false {
                        current = Some(t.elapsed());
                    } else {
                        rounds = s["catch_up"]["rounds"].as_u64().unwrap_or(0);
                    }
                }
                assert!(Instant::now() < deadline, "no convergence within 600 s");
                std::thread::sleep(Duration::from_millis(20));
            }
            let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
            println!(
                "convergence{}: {} keys written at quorum while n{last} was away ({}); n{last} came back {}: every replica's digest was equal {:.2} s after its restart, and it reported catching_up false after {:.2} s ({rounds} sync rounds)",
                if a.repeat > 1 {
                    format!(" [run {} on {}]", rep + 1, cluster.bin.display())
                } else {
                    String::new()
                },
                r.ok,
                r.errors_text(),
                match (a.keep_store, rep) {
                    (false, _) => "with its store wiped",
                    (true, 0) => "with its own log",
                    (true, _) => "with its own log, having missed nothing",
                },
                secs(equal),
                secs(current),
            );
        }
    }
    if a.memory_keys > 0 {
        let pids: Vec<u32> = cluster.children.iter().map(|c| c.id()).collect();
        // Growth is divided by the keys each agent came to hold, not by acknowledged writes:
        // the throughput lines above already wrote some of these keys.
        let held = |api: &str| {
            status(api)
                .and_then(|v| v["stores"]["default"]["entries"].as_u64())
                .unwrap_or(0)
        };
        let keys_before: Vec<u64> = cluster.apis.iter().map(|a| held(a)).collect();
        let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
        let s = fill("local", 32, a.memory_keys);
        let t = Instant::now();
        let r = run(&s, &|ok, e| {
            eprint!("\r{ok} keys written in {:.0} s", e.as_secs_f64())
        });
        eprintln!();
        // Memory while writes are still arriving (replication and anti-entropy in flight) ...
        let busy: Vec<(u64, u64)> = pids
            .iter()
            .zip(&cluster.apis)
            .map(|(p, a)| (rss_kib(*p), held(a)))
            .collect();
        // ... and after they settle.
        std::thread::sleep(Duration::from_secs(10));
        let after: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
        println!(
            "memory: {} writes acknowledged in {:.0} s ({})",
            r.ok,
            t.elapsed().as_secs_f64(),
            r.errors_text()
        );
        for (i, (b, a2)) in before.iter().zip(&after).enumerate() {
            let per_key = |rss: u64, keys: u64| {
                let n = keys.saturating_sub(keys_before[i]).max(1);
                (n, rss.saturating_sub(*b) as f64 * 1024.0 / n as f64)
            };
            let (n, at_rest) = per_key(*a2, held(&cluster.apis[i]));
            let (busy_n, busy_per) = per_key(busy[i].0, busy[i].1);
            println!(
                "memory: agent n{i}: RSS {b} KiB -> {a2} KiB holding {n} more keys: {at_rest:.0} bytes per key (100-byte values; {:.0} above the value); as the last write was acknowledged: {} KiB holding {busy_n} more, {busy_per:.0} per key",
                at_rest - 100.0,
                busy[i].0
            );
        }
    }
}
