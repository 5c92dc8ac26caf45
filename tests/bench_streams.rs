//! Event-stream and watch benchmark on real agents (not a test: it measures).
//!
//! `cargo bench -p chorus-agent --bench streams -- [--subscribers N] [--secs S] [--clients C]
//! [--samples K]`
//!
//! Three agents on loopback (`fsync = always`). Two parts:
//!
//! 1. **SSE fan-out.** `chorus bench` (its own process) writes 100-byte values through agent 0
//!    with C quorum clients for S seconds, twice: once with no subscriber, once with N Server-Sent
//!    Events subscribers on agent 0's `/v1/events` (threads of this process, one connection each,
//!    every event type). Each `key_changed` the writes cause is one event. Reported per phase: the
//!    write rate, the events the agent emitted per second, the events delivered to all subscribers
//!    per second, events lost to `gap`s, and agent 0's CPU time (user + system from
//!    `/proc/PID/stat`) per second of load; from the two phases, the agent CPU each delivered
//!    event costs.
//! 2. **Watch latency.** K times: a blocking read (`GET /v1/kv/default/KEY?index=V&wait=30s`) and
//!    a prefix watch (`/v1/watch/default?prefix=`) wait on agent 1 while agent 0 writes the key
//!    with a quorum put; the latency is from sending the put to the watch's answer or event, on
//!    this process's monotonic clock. The same for a blocking read on agent 0 itself.

#[path = "support/loopback.rs"]
mod loopback;

use loopback::start;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    subscribers: usize,
    secs: u64,
    clients: usize,
    samples: usize,
}

fn args() -> Args {
    let mut a = Args {
        subscribers: 100,
        secs: 10,
        clients: 8,
        samples: 200,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let num = || {
            v.get(i + 1)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", v[i]))
        };
        match v[i].as_str() {
            "--subscribers" => a.subscribers = num() as usize,
            "--secs" => a.secs = num(),
            "--clients" => a.clients = num() as usize,
            "--samples" => a.samples = num() as usize,
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

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The agent's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent's stat");
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// The newest event sequence number on the agent at `api`.
fn last_seq(api: &str) -> u64 {
    http()
        .get(format!("http://{api}/v1/events?since={}", u64::MAX / 2))
        .call()
        .expect("events")
        .body_mut()
        .read_json::<serde_json::Value>()
        .expect("events JSON")["last_seq"]
        .as_u64()
        .expect("last_seq")
}

/// One SSE subscriber: what it has seen so far.
#[derive(Default)]
struct Seen {
    /// Sequence numbers of the events received, in order.
    seqs: Vec<u64>,
    /// Events reported lost in `gap` events.
    lost: u64,
}

/// Opens a raw HTTP/1.1 stream request and returns the reader positioned after the headers.
fn open_stream(api: &str, path: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(api).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send request");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "{path}: {line}");
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line == "\r\n" {
            return r;
        }
    }
}

/// Follows `/v1/events` on `api` until `stop`, recording into `seen`. The body is chunked;
/// only whole `id:` and `data:` lines matter here, and chunk-size lines never start with those.
fn subscribe(api: String, seen: Arc<Mutex<Seen>>, ready: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut r = open_stream(&api, "/v1/events");
    r.get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    ready.fetch_add(1, Ordering::SeqCst);
    let mut line = String::new();
    let mut gap = false;
    while !stop.load(Ordering::SeqCst) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => panic!("subscriber: {e}"),
        }
        if line.starts_with("event: gap") {
            gap = true;
        } else if let Some(id) = line.strip_prefix("id: ") {
            if let Ok(seq) = id.trim().parse() {
                seen.lock().expect("seen").seqs.push(seq);
            }
        } else if gap && let Some(d) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(d.trim()).expect("gap JSON");
            let (from, to) = (v["missed_from"].as_u64(), v["missed_to"].as_u64());
            if let (Some(f), Some(t)) = (from, to) {
                seen.lock().expect("seen").lost += t + 1 - f;
            }
            gap = false;
        }
    }
}

struct Phase {
    writes_line: String,
    secs: f64,
    emitted: u64,
    delivered: u64,
    lost: u64,
    cpu: f64,
    /// CPU time of this process (the subscribers) over the same window.
    own_cpu: f64,
}

/// Runs the write load against `api` (agent `pid`) with `subscribers` following its events.
fn phase(api: &str, pid: u32, subscribers: usize, a: &Args) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let seen: Vec<Arc<Mutex<Seen>>> = (0..subscribers).map(|_| Arc::default()).collect();
    let threads: Vec<_> = seen
        .iter()
        .map(|s| {
            let (api, s, ready, stop) = (api.to_string(), s.clone(), ready.clone(), stop.clone());
            std::thread::spawn(move || subscribe(api, s, ready, stop))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::SeqCst) < subscribers as u64 {
        assert!(Instant::now() < deadline, "subscribers did not connect");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (seq0, cpu0, t0) = (last_seq(api), cpu_secs(pid), Instant::now());
    let own0 = cpu_secs(std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["bench", "--api", api, "--op", "put", "--keys", "10000"])
        .args(["--clients", &a.clients.to_string()])
        .args(["--duration", &format!("{}s", a.secs)])
        .output()
        .expect("chorus bench");
    let (seq1, cpu1, secs) = (last_seq(api), cpu_secs(pid), t0.elapsed().as_secs_f64());
    let own1 = cpu_secs(std::process::id());
    let writes_line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "chorus bench: {writes_line}");
    // Bounded wait for every subscriber to have the last event (or a gap past it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let caught_up = |s: &Arc<Mutex<Seen>>| {
        let s = s.lock().expect("seen");
        s.seqs.last().copied().unwrap_or(0) + s.lost >= seq1 || s.seqs.contains(&seq1)
    };
    while !seen.iter().all(caught_up) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("subscriber thread");
    }
    let in_window = |s: &Arc<Mutex<Seen>>| {
        let s = s.lock().expect("seen");
        (
            s.seqs.iter().filter(|&&q| q > seq0 && q <= seq1).count() as u64,
            s.lost,
        )
    };
    let (delivered, lost) = seen
        .iter()
        .map(in_window)
        .fold((0, 0), |(d, l), (a, b)| (d + a, l + b));
    Phase {
        writes_line,
        secs,
        emitted: seq1 - seq0,
        delivered,
        lost,
        cpu: cpu1 - cpu0,
        own_cpu: own1 - own0,
    }
}

fn report(name: &str, p: &Phase) {
    println!("{name}:");
    println!("  writes: {}", p.writes_line);
    println!(
        "  events emitted by agent 0: {:.0}/s; delivered to all subscribers: {:.0}/s; lost to gaps: {}",
        p.emitted as f64 / p.secs,
        p.delivered as f64 / p.secs,
        p.lost
    );
    println!(
        "  agent 0 CPU: {:.2} s per second of load ({:.1} us per emitted event)",
        p.cpu / p.secs,
        p.cpu / p.emitted.max(1) as f64 * 1e6
    );
    println!(
        "  the subscribers' process (this one) CPU: {:.2} s per second of load (the machine has 2 cores)",
        p.own_cpu / p.secs
    );
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn put(api: &str, key: &str, n: usize) -> u16 {
    http()
        .put(format!("http://{api}/v1/kv/default/{key}"))
        .send(format!("value {n}").as_bytes())
        .expect("put")
        .status()
        .as_u16()
}

fn version(api: &str, key: &str) -> String {
    let r = http()
        .get(format!(
            "http://{api}/v1/kv/default/{key}?consistency=quorum"
        ))
        .call()
        .expect("get");
    r.headers()
        .get("chorus-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string()
}

/// Latency from a quorum put on `writer` to a blocking read on `watcher` answering.
fn blocking_read_latency(writer: &str, watcher: &str, samples: usize) -> Vec<Duration> {
    let key = format!("watch-{}", watcher.replace([':', '.'], "-"));
    put(writer, &key, 0);
    let mut out = Vec::new();
    for n in 1..=samples {
        let index = version(watcher, &key);
        let (w, k) = (watcher.to_string(), key.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut r = http()
                .get(format!(
                    "http://{w}/v1/kv/default/{k}?index={index}&wait=30s"
                ))
                .call()
                .expect("blocking read");
            let mut body = Vec::new();
            r.body_mut()
                .as_reader()
                .read_to_end(&mut body)
                .expect("body");
            tx.send(Instant::now()).expect("send");
        });
        // The read must be waiting before the put, or it measures nothing: wait until the agent
        // counts it among its subscribers (`/metrics`).
        wait_for_subscribers(watcher, 1);
        let sent = Instant::now();
        assert_eq!(put(writer, &key, n), 200, "put");
        let answered = rx.recv_timeout(Duration::from_secs(40)).expect("answer");
        t.join().expect("reader");
        out.push(answered.saturating_duration_since(sent));
    }
    out
}

/// Waits (bounded) until the agent at `api` counts at least `base + extra` event subscribers;
/// `base` is what it counts with nobody following (the handler runner).
fn wait_for_subscribers(api: &str, extra: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = subscribers_now(api) as i64;
        if n >= BASE_SUBSCRIBERS.load(Ordering::SeqCst) as i64 + extra {
            return;
        }
        assert!(Instant::now() < deadline, "the watch did not register");
        std::thread::sleep(Duration::from_millis(1));
    }
}

static BASE_SUBSCRIBERS: AtomicU64 = AtomicU64::new(0);

fn subscribers_now(api: &str) -> u64 {
    let m = http()
        .get(format!("http://{api}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    m.lines()
        .find(|l| l.starts_with("chorus_event_subscribers "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Latency from a quorum put on `writer` to the `key_changed` event on a prefix watch on
/// `watcher`.
fn prefix_watch_latency(writer: &str, watcher: &str, samples: usize) -> Vec<Duration> {
    let mut r = open_stream(watcher, "/v1/watch/default?prefix=pw-");
    let mut out = Vec::new();
    let mut line = String::new();
    for n in 1..=samples {
        let key = format!("pw-{n}");
        let sent = Instant::now();
        assert_eq!(put(writer, &key, n), 200, "put");
        loop {
            line.clear();
            assert!(r.read_line(&mut line).expect("watch stream") > 0, "closed");
            if line.starts_with("data: ") && line.contains(&format!("\"{key}\"")) {
                out.push(sent.elapsed());
                break;
            }
        }
    }
    out
}

fn latency_line(name: &str, mut v: Vec<Duration>) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {name}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        ms(percentile(&mut v, 0.5)),
        ms(percentile(&mut v, 0.9)),
        ms(percentile(&mut v, 0.99)),
        ms(percentile(&mut v, 1.0)),
        v.len()
    );
}

fn main() {
    let a = args();
    let cluster = start(3, "always");
    let (api0, api1) = (cluster.apis[0].clone(), cluster.apis[1].clone());
    let pid0 = cluster.children[0].id();

    println!(
        "SSE fan-out: 3 agents on loopback, fsync always, {} quorum writers on agent 0 for {} s",
        a.clients, a.secs
    );
    let base = phase(&api0, pid0, 0, &a);
    report("no subscriber", &base);
    let fan = phase(&api0, pid0, a.subscribers, &a);
    report(&format!("{} subscribers", a.subscribers), &fan);
    let extra = fan.cpu - base.cpu * (fan.emitted as f64 / base.emitted.max(1) as f64);
    println!(
        "  cost of the subscribers: {:.2} s of agent CPU per second of load, {:.2} us per delivered event",
        extra / fan.secs,
        extra / fan.delivered.max(1) as f64 * 1e6
    );

    println!(
        "Watch latency, from sending a quorum put on agent 0 to the watcher's answer ({} samples each):",
        a.samples
    );
    BASE_SUBSCRIBERS.store(subscribers_now(&api1), Ordering::SeqCst);
    latency_line(
        "blocking read on agent 1",
        blocking_read_latency(&api0, &api1, a.samples),
    );
    BASE_SUBSCRIBERS.store(subscribers_now(&api0), Ordering::SeqCst);
    latency_line(
        "blocking read on agent 0 (the writer's agent)",
        blocking_read_latency(&api0, &api0, a.samples),
    );
    latency_line(
        "prefix watch (SSE) on agent 1",
        prefix_watch_latency(&api0, &api1, a.samples),
    );
}
