//! Simulated clients: each issues one operation at a time against a node it picks at random,
//! waits for the answer, thinks, and goes again.
//!
//! Quorum operations use keys `q0..`, local ones keys `l0..`, so the linearizability checker only
//! ever looks at keys no local write touched. Every value written is unique, so a value read or
//! left in a replica names the operation that wrote it.

use crate::history::OpKind;
use coord::{Change, Expect};
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use std::collections::BTreeMap;
use std::time::Duration;
use store::Consistency;

/// What the clients do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Number of clients.
    pub clients: usize,
    /// Keys per consistency level (few keys make contention).
    pub keys: usize,
    /// Pause between an answer and the next call, drawn uniformly.
    pub think: (Duration, Duration),
    /// Share of operations (per million) that are local rather than quorum.
    pub local_ppm: u32,
    /// Share of quorum and local operations (per million) that are reads; of the rest, one in
    /// five is a delete.
    pub read_ppm: u32,
    /// Share of operations (per million) on the strong keyspace: reads, puts, compare-and-sets
    /// on the version the client saw last, creates and deletes.
    pub strong_ppm: u32,
    /// Clients beyond `clients` that contend for one lock: acquire, renew a few times, release,
    /// acting as holder only within the window each grant gives them.
    pub lock_clients: usize,
    /// How long a lock holder may still act after its window ran out: an application that
    /// stalls (a pause, a slow disk) between checking its deadline and acting. The lease's
    /// margin (`coord::CoordConfig::lease_margin`, 200 ms) is what covers it; beyond the margin two
    /// holders can act at once, which only fencing tokens catch.
    pub holder_stall: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 3,
            keys: 4,
            think: (Duration::from_millis(10), Duration::from_millis(120)),
            local_ppm: 100_000,
            read_ppm: 450_000,
            strong_ppm: 0,
            lock_clients: 0,
            holder_stall: Duration::ZERO,
        }
    }
}

/// The next operation a client calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which node to ask.
    pub node: usize,
    /// Key.
    pub key: String,
    /// What to do.
    pub kind: OpKind,
    /// Quorum or local.
    pub consistency: Consistency,
}

/// Picks operations; owns no randomness of its own (the simulator passes its RNG).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Settings.
    pub cfg: WorkloadConfig,
    counter: u64,
    /// The version each client last saw of each strong key (what its compare-and-sets expect).
    seen: BTreeMap<(usize, String), u64>,
}

/// The next strong-keyspace operation a client calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrongCall {
    /// Which node to ask.
    pub node: usize,
    /// Key.
    pub key: String,
    /// What to do.
    pub change: coord::Change,
}

/// A client's next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// On the object store.
    Kv(Call),
    /// On the strong keyspace.
    Strong(StrongCall),
}

impl Workload {
    /// Clients doing `cfg`.
    pub fn new(cfg: WorkloadConfig) -> Self {
        Workload {
            cfg,
            counter: 0,
            seen: BTreeMap::new(),
        }
    }

    /// How long client waits before its next call.
    pub fn think(&self, rng: &mut Xoshiro256PlusPlus) -> Duration {
        let (lo, hi) = self.cfg.think;
        let span = hi.saturating_sub(lo).as_micros().max(1) as u64;
        lo + Duration::from_micros(rng.random_range(0..span))
    }

    /// The next call of `client` in a cluster of `nodes`: on the strong keyspace with
    /// [`WorkloadConfig::strong_ppm`], else on the object store.
    pub fn next(&mut self, rng: &mut Xoshiro256PlusPlus, client: usize, nodes: usize) -> Next {
        if rng.random_range(0..1_000_000) >= self.cfg.strong_ppm {
            return Next::Kv(self.next_call(rng, client, nodes));
        }
        self.counter += 1;
        let node = rng.random_range(0..nodes);
        let key = format!("s{}", rng.random_range(0..self.cfg.keys.max(1)));
        let seen = self.seen.get(&(client, key.clone())).copied().unwrap_or(0);
        let value = format!("c{client}-{}", self.counter).into_bytes();
        let change = match rng.random_range(0..20) {
            0..8 => Change::Read,
            8..11 => Change::Put {
                value,
                expect: Expect::Any,
            },
            11..17 => Change::Put {
                value,
                expect: Expect::Version(seen),
            },
            17..19 => Change::Put {
                value,
                expect: Expect::Absent,
            },
            _ => Change::Delete {
                expect: Expect::Any,
            },
        };
        Next::Strong(StrongCall { node, key, change })
    }

    /// `client` saw `key` at `version` (its next compare-and-set expects it).
    pub fn saw(&mut self, client: usize, key: &str, version: u64) {
        self.seen.insert((client, key.to_string()), version);
    }

    /// The next call of `client` in a cluster of `nodes`.
    pub fn next_call(&mut self, rng: &mut Xoshiro256PlusPlus, client: usize, nodes: usize) -> Call {
        self.counter += 1;
        let node = rng.random_range(0..nodes);
        let local = rng.random_range(0..1_000_000) < self.cfg.local_ppm;
        let k = rng.random_range(0..self.cfg.keys.max(1));
        let (key, consistency) = if local {
            (format!("l{k}"), Consistency::Local)
        } else {
            (format!("q{k}"), Consistency::Quorum)
        };
        let kind = if rng.random_range(0..1_000_000) < self.cfg.read_ppm {
            OpKind::Get
        } else if rng.random_range(0..5) == 0 {
            OpKind::Delete
        } else {
            OpKind::Put(format!("c{client}-{}", self.counter).into_bytes())
        };
        Call {
            node,
            key,
            kind,
            consistency,
        }
    }
}
