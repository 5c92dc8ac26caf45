//! Store write throughput and latency measured from outside, against etcd in the same run (not a
//! test: it measures).
//!
//! `cargo bench -p chorus-agent --bench wrk -- [--secs S] [--clients 1,32,96] [--keys K]
//! [--consistency quorum|local] [--no-etcd] [--profile FILE.svg]`
//!
//! With `--profile`, the first agent is sampled with `perf record -g --call-graph dwarf` during
//! the last Chorus line (from 1 s in, for S - 2 seconds) and the profile is drawn as a flame
//! graph with `inferno` (`cargo install inferno`) into FILE.svg.
//!
//! Three agents in network namespaces on one bridge (LAN profile, multicast, `fsync = "always"`),
//! and an external load generator in its own processes: `wrk` (Debian package `wrk`), one per
//! agent, run inside that agent's namespace against its API, the connections spread over the three
//! (with one client, one `wrk` with one connection on the first). Each request writes a 100-byte
//! value to one of K keys (10,000 by default) in turn. Then, when `etcd` is installed (Debian
//! package `etcd-server`), the agents are stopped and a 3-member etcd cluster runs on the same
//! hosts, measured the same way through its JSON gateway (`POST /v3/kv/put`), and the ratios are
//! printed.
//!
//! Throughput is the sum of the `wrk` processes' requests per second. Latency percentiles are
//! each `wrk`'s own; the figure printed for a percentile is the largest of the processes' (the
//! processes have the same share of connections, so this is close to, and not below, the merged
//! percentile). A run with any error or non-2xx answer says so.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;
use support::{AgentSpec, Lab, which};

struct Args {
    secs: u64,
    clients: Vec<usize>,
    keys: u64,
    consistency: String,
    etcd: bool,
    profile: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        secs: 10,
        clients: vec![1, 32, 96],
        keys: 10_000,
        consistency: "quorum".into(),
        etcd: true,
        profile: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = || v.get(i + 1).cloned().expect("flag needs a value");
        match v[i].as_str() {
            "--secs" => a.secs = next().parse().expect("--secs: a number"),
            "--keys" => a.keys = next().parse().expect("--keys: a number"),
            "--clients" => {
                a.clients = next()
                    .split(',')
                    .map(|c| c.parse().expect("--clients: numbers, comma-separated"))
                    .collect()
            }
            "--consistency" => a.consistency = next(),
            "--profile" => a.profile = Some(next()),
            "--no-etcd" => {
                a.etcd = false;
                i += 1;
                continue;
            }
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

/// What one load line measured.
#[derive(Debug, Clone, Default)]
struct Line {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

/// A duration as `wrk` prints it (`812.00us`, `3.60ms`, `1.02s`), in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Reads one `wrk --latency` report.
fn parse(out: &str) -> Line {
    let mut l = Line::default();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", r] => l.rate = r.parse().unwrap_or(0.0),
            ["50%", t] => l.p50_ms = millis(t).unwrap_or(f64::NAN),
            ["99%", t] => l.p99_ms = millis(t).unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => l.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => l.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                l.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    l
}

/// Runs `wrk` with `conns[h]` connections in host `h`'s namespace against `url` (one per host
/// with connections, all at once) and sums what they measured.
fn load(lab: &Lab, conns: &[usize], url: &str, script: &std::path::Path, secs: u64) -> Line {
    let outs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(h, c)| {
                let (c, d) = (c.to_string(), format!("{secs}s"));
                let script = script.display().to_string();
                s.spawn(move || {
                    let out = lab.exec(
                        h,
                        &[
                            "env",
                            &format!("BENCH_HOST={h}"),
                            "wrk",
                            "-t1",
                            "-c",
                            &c,
                            "-d",
                            &d,
                            "--latency",
                            "--timeout",
                            "10s",
                            "-s",
                            &script,
                            url,
                        ],
                    );
                    String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("wrk thread"))
            .collect()
    });
    let mut sum = Line::default();
    for out in &outs {
        let l = parse(out);
        if l.requests == 0 {
            eprintln!("wrk measured nothing:\n{out}");
        }
        sum.rate += l.rate;
        sum.requests += l.requests;
        sum.errors += l.errors;
        sum.p50_ms = sum.p50_ms.max(l.p50_ms);
        sum.p99_ms = sum.p99_ms.max(l.p99_ms);
    }
    sum
}

/// `clients` connections spread over three hosts (one client: the first host only).
fn spread(clients: usize) -> Vec<usize> {
    (0..3)
        .map(|h| clients / 3 + usize::from(h < clients % 3))
        .collect()
}

fn chorus_script(dir: &std::path::Path, keys: u64, consistency: &str) -> std::path::PathBuf {
    let path = dir.join("chorus-put.lua");
    std::fs::write(
        &path,
        format!(
            "local host = os.getenv(\"BENCH_HOST\") or \"0\"\n\
             local n = tonumber(host) * 7919\n\
             local value = string.rep(\"v\", 100)\n\
             request = function()\n\
               n = (n + 1) % {keys}\n\
               return wrk.format(\"PUT\", \"/v1/kv/default/bench-\" .. n .. \"?consistency={consistency}\", nil, value)\n\
             end\n"
        ),
    )
    .expect("write wrk script");
    path
}

fn etcd_script(dir: &std::path::Path, keys: u64) -> std::path::PathBuf {
    // etcd's gateway takes base64 keys and values; the bodies are built once per thread.
    let path = dir.join("etcd-put.lua");
    std::fs::write(
        &path,
        format!(
            "local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'\n\
             local function b64(data)\n\
               return ((data:gsub('.', function(x)\n\
                 local r, c = '', x:byte()\n\
                 for i = 8, 1, -1 do r = r .. (c % 2 ^ i - c % 2 ^ (i - 1) > 0 and '1' or '0') end\n\
                 return r\n\
               end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)\n\
                 if #x < 6 then return '' end\n\
                 local c = 0\n\
                 for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end\n\
                 return b:sub(c + 1, c + 1)\n\
               end) .. ({{ '', '==', '=' }})[#data % 3 + 1])\n\
             end\n\
             local value = b64(string.rep('v', 100))\n\
             local bodies = {{}}\n\
             for i = 0, {keys} - 1 do\n\
               bodies[i] = '{{\"key\":\"' .. b64('bench-' .. i) .. '\",\"value\":\"' .. value .. '\"}}'\n\
             end\n\
             local host = os.getenv(\"BENCH_HOST\") or \"0\"\n\
             local n = tonumber(host) * 7919\n\
             request = function()\n\
               n = (n + 1) % {keys}\n\
               return wrk.format('POST', '/v3/kv/put', {{['Content-Type'] = 'application/json'}}, bodies[n])\n\
             end\n"
        ),
    )
    .expect("write wrk script");
    path
}

/// Samples process `pid` from 1 s into a `secs`-second line for `secs - 2` seconds and draws the
/// profile as a flame graph into `svg`, in a thread the caller joins.
fn profile(pid: u32, secs: u64, svg: &str) -> std::thread::JoinHandle<()> {
    // Kept after the bench (the lab's directory is not) for a closer look with `perf report`.
    let data = std::env::temp_dir().join("chorus-wrk-perf.data");
    let svg = svg.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let sample = secs.saturating_sub(2).max(1).to_string();
        let rec = std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "-g",
                "--call-graph",
                "dwarf,16384",
                "-o",
            ])
            .arg(&data)
            .args(["-p", &pid.to_string(), "--", "sleep", &sample])
            .output()
            .expect("perf record (is perf installed?)");
        assert!(
            rec.status.success(),
            "perf record: {}",
            String::from_utf8_lossy(&rec.stderr)
        );
        let script = std::process::Command::new("perf")
            .args(["script", "-i"])
            .arg(&data)
            .output()
            .expect("perf script");
        let folded = pipe("inferno-collapse-perf", &[], &script.stdout);
        let drawn = pipe(
            "inferno-flamegraph",
            &["--title", "chorus agent under quorum writes (perf, wrk)"],
            &folded,
        );
        std::fs::write(&svg, drawn).expect("write the flame graph");
        println!(
            "profile of the first agent during the last line: {svg} (perf data: {})",
            data.display()
        );
        for (what, children) in [("self", "--no-children"), ("with callees", "--children")] {
            let top = std::process::Command::new("perf")
                .args([
                    "report",
                    children,
                    "--stdio",
                    "-g",
                    "none",
                    "--percent-limit",
                    "1.5",
                    "-i",
                ])
                .arg(&data)
                .output()
                .expect("perf report");
            println!("top of the profile ({what}):");
            String::from_utf8_lossy(&top.stdout)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(40)
                .for_each(|l| println!("  {l}"));
        }
    })
}

/// Runs `cmd args` with `input` on its standard input and returns its standard output.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (cargo install inferno)"));
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    if let Err(e) = feeder.join().expect("feeder") {
        panic!("writing to {cmd}: {e}");
    }
    out.stdout
}

/// Sends one request like the load's with curl from host 0 and stops the bench, saying what came
/// back, unless it succeeded: a load of failing requests measures nothing.
fn check_one(lab: &Lab, method: &str, url: &str, body: &str) {
    let out = lab.exec(
        0,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-X",
            method,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            "-w",
            "\n%{http_code}",
            url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.trim_end().ends_with("200") {
        panic!("{method} {url} did not succeed: {text}");
    }
}

/// Anti-entropy's comparison work so far over `agents`: `(key, version)` pairs listed, rounds.
fn ae_work(lab: &Lab, agents: &[usize]) -> (u64, u64) {
    agents.iter().fold((0, 0), |(v, r), a| {
        let m = lab.metrics(*a);
        let get = |name: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .map_or(0, |x| x as u64)
        };
        (
            v + get("chorus_anti_entropy_versions_sent_total"),
            r + get("chorus_anti_entropy_rounds_total"),
        )
    })
}

fn print_ae(what: &str, before: (u64, u64), after: (u64, u64)) {
    let (v, r) = (after.0 - before.0, after.1 - before.1);
    println!(
        "  anti-entropy {what}: {v} (key, version) pairs listed in {r} rounds ({} per round)",
        v.checked_div(r).map_or("-".into(), |x| x.to_string())
    );
}

fn print_line(who: &str, clients: usize, l: &Line) {
    println!(
        "{who:>6} {clients:>8} {:>10.0} {:>9.2} {:>9.2} {:>10}",
        l.rate, l.p50_ms, l.p99_ms, l.errors
    );
}

fn main() {
    let a = args();
    if which("wrk").is_none() {
        eprintln!("wrk is not installed: `apt-get install wrk` (Debian), then run again");
        std::process::exit(2);
    }
    if a.profile.is_some() {
        for tool in ["perf", "inferno-collapse-perf", "inferno-flamegraph"] {
            if which(tool).is_none() {
                eprintln!(
                    "--profile needs {tool}: `apt-get install linux-perf`, `cargo install inferno`"
                );
                std::process::exit(2);
            }
        }
    }
    let etcd = a.etcd && which("etcd").is_some();
    if a.etcd && !etcd {
        println!("etcd not installed (Debian package `etcd-server`): no comparison");
    }
    let mut lab = Lab::new(3).expect("lab: needs root, ip netns and a bridge");
    let agents: Vec<usize> = (0..3)
        .map(|h| {
            let mut spec = AgentSpec::new(&format!("n{}", h + 1), 3);
            spec.extra_toml = "[store]\nfsync = \"always\"\n".into();
            lab.start(h, spec)
        })
        .collect();
    lab.wait_whole(&agents);
    lab.wait_for(Duration::from_secs(30), "quorum on every agent", |l| {
        agents.iter().all(|a| {
            l.status(*a)
                .is_some_and(|s| s["quorum"]["has_quorum"] == true && s["catching_up"] == false)
        })
    });
    let script = chorus_script(lab.dir(), a.keys, &a.consistency);
    println!(
        "{} put, 100-byte values, {} keys, {} s per line, fsync always, 3 nodes in namespaces, wrk",
        a.consistency, a.keys, a.secs
    );
    println!(
        "{:>6} {:>8} {:>10} {:>9} {:>9} {:>10}",
        "system", "clients", "writes/s", "p50 ms", "p99 ms", "errors"
    );
    let url = "http://127.0.0.1:7947";
    check_one(
        &lab,
        "PUT",
        &format!("{url}/v1/kv/default/check?consistency={}", a.consistency),
        &"v".repeat(100),
    );
    // A short warm-up line: connections, the first keys' entries, the log file's first blocks.
    load(&lab, &spread(3), url, &script, 2);
    let mut chorus = Vec::new();
    for (i, &c) in a.clients.iter().enumerate() {
        let profiler = (i + 1 == a.clients.len())
            .then_some(a.profile.as_deref())
            .flatten()
            .map(|svg| profile(lab.pid(agents[0]), a.secs, svg));
        let ae = ae_work(&lab, &agents);
        let l = load(&lab, &spread(c), url, &script, a.secs);
        if let Some(p) = profiler {
            p.join().expect("profiler thread");
        }
        print_line("chorus", c, &l);
        print_ae("during the line", ae, ae_work(&lab, &agents));
        chorus.push(l);
    }
    // At rest: two anti-entropy periods to settle, then a window of four.
    std::thread::sleep(Duration::from_secs(10));
    let ae = ae_work(&lab, &agents);
    std::thread::sleep(Duration::from_secs(20));
    print_ae(
        "at rest (20 s, after 10 s to settle)",
        ae,
        ae_work(&lab, &agents),
    );
    for ag in &agents {
        lab.kill9(*ag);
    }
    if !etcd || a.consistency != "quorum" {
        return;
    }
    let version = support::version_of("etcd", "--version");
    let cluster: Vec<String> = (0..3)
        .map(|h| format!("e{h}=http://{}:2380", lab.ip(h)))
        .collect();
    let cluster = cluster.join(",");
    let _etcd: Vec<support::Background> = (0..3)
        .map(|h| {
            let ip = lab.ip(h);
            let data = lab.dir().join(format!("etcd-{h}"));
            lab.spawn_in(
                h,
                &[
                    "etcd",
                    "--name",
                    &format!("e{h}"),
                    "--data-dir",
                    &data.display().to_string(),
                    "--listen-client-urls",
                    &format!("http://{ip}:2379,http://127.0.0.1:2379"),
                    "--advertise-client-urls",
                    &format!("http://{ip}:2379"),
                    "--listen-peer-urls",
                    &format!("http://{ip}:2380"),
                    "--initial-advertise-peer-urls",
                    &format!("http://{ip}:2380"),
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                    "--log-level",
                    "error",
                ],
            )
        })
        .collect();
    lab.wait_for(
        Duration::from_secs(60),
        "etcd healthy on every member",
        |l| {
            (0..3).all(|h| {
                let out = l.exec(
                    h,
                    &["curl", "-s", "-m", "2", "http://127.0.0.1:2379/health"],
                );
                String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"")
            })
        },
    );
    let script = etcd_script(lab.dir(), a.keys);
    let url = "http://127.0.0.1:2379";
    check_one(
        &lab,
        "POST",
        &format!("{url}/v3/kv/put"),
        "{\"key\":\"Y2hlY2s=\",\"value\":\"dg==\"}",
    );
    load(&lab, &spread(3), url, &script, 2);
    println!("etcd: {version}");
    for (i, &c) in a.clients.iter().enumerate() {
        let l = load(&lab, &spread(c), url, &script, a.secs);
        print_line("etcd", c, &l);
        let ch = &chorus[i];
        println!(
            "{:>6} {c:>8} {:>10.2} {:>9.2} {:>9.2}   (chorus / etcd; > 1 is more writes, < 1 lower latency)",
            "ratio",
            ch.rate / l.rate,
            ch.p50_ms / l.p50_ms,
            ch.p99_ms / l.p99_ms
        );
    }
}
