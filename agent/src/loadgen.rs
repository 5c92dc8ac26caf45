//! `chorus bench`: a bounded load generator against running agents' key/value API.
//!
//! Each client is a thread with its own HTTP connection, bound to one agent (clients are spread
//! round-robin over the given API addresses). It runs for a fixed time and at most a fixed number
//! of operations, records every latency, and reports throughput and percentiles. It only talks to
//! the addresses it is given (loopback or the test's own namespaces).

use crate::cli::encode_segment;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Agents' API addresses (`host:port`).
    pub apis: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// Upper bound on operations per client.
    pub max_ops_per_client: u64,
    /// `put` or `get`.
    pub op: String,
    /// Value size in bytes.
    pub value_bytes: usize,
    /// `quorum` or `local`.
    pub consistency: String,
    /// Store name.
    pub store: String,
    /// Distinct keys per client.
    pub keys: u64,
}

/// Results of a run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Successful operations.
    pub ok: u64,
    /// Failed operations (any error answer or transport failure).
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency percentiles of successful operations: p50, p90, p99, max.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl LoadReport {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the load and reports; `progress` is called about once a second with (ok so far, elapsed).
pub fn run(spec: &LoadSpec, progress: &(dyn Fn(u64, Duration) + Sync)) -> LoadReport {
    let start = Instant::now();
    let deadline = start + spec.duration;
    let done = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<(Vec<Duration>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.clients)
            .map(|c| {
                let api = spec.apis[c % spec.apis.len()].clone();
                let done = &done;
                scope.spawn(move || client(spec, c, &api, deadline, done))
            })
            .collect();
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                progress(
                    done.load(std::sync::atomic::Ordering::Relaxed),
                    start.elapsed(),
                );
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed();
    let mut lat: Vec<Duration> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let errors = results.iter().map(|(_, e)| e).sum();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    LoadReport {
        ok: lat.len() as u64,
        errors,
        elapsed,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
    }
}

fn client(
    spec: &LoadSpec,
    c: usize,
    api: &str,
    deadline: Instant,
    done: &std::sync::atomic::AtomicU64,
) -> (Vec<Duration>, u64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let value = vec![b'x'; spec.value_bytes];
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut i = 0u64;
    while Instant::now() < deadline && i < spec.max_ops_per_client {
        let key = format!("bench-{c}-{}", i % spec.keys.max(1));
        let url = format!(
            "http://{api}/v1/kv/{}/{}?consistency={}",
            encode_segment(&spec.store),
            encode_segment(&key),
            spec.consistency
        );
        let t = Instant::now();
        let r = if spec.op == "get" {
            agent
                .get(&url)
                .call()
                .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_vec().is_ok()))
        } else {
            agent
                .put(&url)
                .send(&value[..])
                .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_vec().is_ok()))
        };
        match r {
            Ok((200, true)) => {
                lat.push(t.elapsed());
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => errors += 1,
        }
        i += 1;
    }
    (lat, errors)
}
