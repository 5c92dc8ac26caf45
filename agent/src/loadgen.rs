//! `chorus bench`: a bounded load generator against running agents' key/value API.
//!
//! Each client is a thread with its own HTTP connection, bound to one agent (clients are spread
//! round-robin over the given API addresses). It runs for a fixed time and at most a fixed number
//! of operations, records every latency, and reports throughput and percentiles. It only talks to
//! the addresses it is given (loopback or the test's own namespaces).

use crate::cli::encode_segment;
use std::collections::BTreeMap;
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
    /// `put` or `get` (the object store), `cas` (a compare-and-set on the strong key's version
    /// this client saw last; a client's keys are its own) or `strong-get`.
    pub op: String,
    /// Value size in bytes.
    pub value_bytes: usize,
    /// Quorum or local.
    pub consistency: store::Consistency,
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
    /// Failed operations by kind: the API's error code (`indeterminate`, `no_quorum`, ...) or
    /// `transport` when no answer came.
    pub errors_by_kind: BTreeMap<String, u64>,
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

    /// The errors as `N errors (kind N, ...)`, or `0 errors`.
    pub fn errors_text(&self) -> String {
        if self.errors == 0 {
            return "0 errors".into();
        }
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("{} errors: {}", self.errors, kinds.join(", "))
    }
}

/// Runs the load and reports; `progress` is called about once a second with (ok so far, elapsed).
pub fn run(spec: &LoadSpec, progress: &(dyn Fn(u64, Duration) + Sync)) -> LoadReport {
    let start = Instant::now();
    let deadline = start + spec.duration;
    let done = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<(Vec<Duration>, BTreeMap<String, u64>)> = std::thread::scope(|scope| {
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
    let mut errors_by_kind = BTreeMap::new();
    for (kind, n) in results.iter().flat_map(|(_, e)| e.iter()) {
        *errors_by_kind.entry(kind.clone()).or_insert(0) += n;
    }
    let errors = errors_by_kind.values().sum();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    LoadReport {
        ok: lat.len() as u64,
        errors,
        errors_by_kind,
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
) -> (Vec<Duration>, BTreeMap<String, u64>) {
    let agent = crate::cli::http_agent(Some(Duration::from_secs(10)));
    let base = crate::cli::base_url(api).0;
    let value = vec![b'x'; spec.value_bytes];
    let mut lat = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0u64;
    // For `cas`: the version each of this client's strong keys is at (its keys are its own, so
    // every compare-and-set should succeed).
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < deadline && i < spec.max_ops_per_client {
        let key = if spec.op == "cas" {
            // Apart from other runs' keys, so that the first write of each key creates it.
            format!("cas-{}-{c}-{}", spec.clients, i % spec.keys.max(1))
        } else if spec.op == "strong-get" {
            // The keys a 32-client `cas` run wrote.
            format!("cas-32-{}-{}", c % 32, i % spec.keys.max(1))
        } else {
            format!("bench-{c}-{}", i % spec.keys.max(1))
        };
        let url = match spec.op.as_str() {
            "cas" | "strong-get" => format!("{base}/v1/strong/{}", encode_segment(&key)),
            _ => format!(
                "{base}/v1/kv/{}/{}?consistency={}",
                encode_segment(&spec.store),
                encode_segment(&key),
                spec.consistency.name()
            ),
        };
        let t = Instant::now();
        let r = match spec.op.as_str() {
            "get" | "strong-get" => crate::cli::authorize(agent.get(&url)).call(),
            "cas" => match versions.get(&key) {
                Some(v) => crate::cli::authorize(agent.put(&url))
                    .header("if-match", v.to_string())
                    .send(&value[..]),
                None => crate::cli::authorize(agent.put(&url))
                    .header("if-none-match", "*")
                    .send(&value[..]),
            },
            _ => crate::cli::authorize(agent.put(&url)).send(&value[..]),
        }
        .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_vec().ok()));
        let failed = match r {
            Ok((200, Some(body))) => {
                lat.push(t.elapsed());
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if spec.op == "cas"
                    && let Some(v) = version_of(&body)
                {
                    versions.insert(key, v);
                }
                None
            }
            // The key was left by an earlier run: take its version and go on from there.
            Ok((409, Some(body))) if spec.op == "cas" => {
                if let Some(v) = version_of(&body) {
                    versions.insert(key, v);
                }
                Some("conflict".to_string())
            }
            Ok((status, Some(body))) => Some(error_code(status, &body)),
            Ok((_, None)) | Err(_) => Some("transport".to_string()),
        };
        if let Some(kind) = failed {
            *errors.entry(kind).or_insert(0) += 1;
        }
        i += 1;
    }
    (lat, errors)
}

/// The `version` of a strong-key answer: `{"version": N}`, or a conflict's
/// `{"error": {"version": N, ...}}`.
fn version_of(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["version"]
        .as_u64()
        .or_else(|| v["error"]["version"].as_u64())
}

/// The API's error code from an error answer (docs/http-api.md), or the HTTP status.
fn error_code(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("http {status}"))
}
