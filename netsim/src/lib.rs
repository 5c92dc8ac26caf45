//! netsim: many Chorus membership cores in one process, on a virtual clock and a seeded network.
//!
//! The simulator runs the very cores the agent runs. Time only moves when the simulator says so;
//! every random draw (latency, loss, each core's own seed) derives from one seed, so a run replays
//! exactly. Faults are injected on purpose: loss, one-way and symmetric cuts, crashes, restarts.

use membership::{
    ClusterKey, Destination, Event, MemberState, Membership, MembershipConfig, NodeId, Peer,
    Profile, QuorumRule, SelfDescription,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Options for a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The seed every random draw derives from.
    pub seed: u64,
    /// Probability (per million) that a datagram is lost.
    pub loss_ppm: u32,
    /// One-way latency range.
    pub latency: (Duration, Duration),
    /// Timing profile of every node.
    pub profile: Profile,
    /// Whether nodes find each other by (simulated) multicast beacons.
    pub beacons: bool,
    /// Whether every node is given node 0 as a seed.
    pub seed_node_zero: bool,
    /// Expected cluster size (quorum = strict majority of this many votes).
    pub expected_nodes: u32,
}

impl SimConfig {
    /// `nodes` nodes on a clean LAN, finding each other through beacons.
    pub fn lan(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            loss_ppm: 0,
            latency: (Duration::from_micros(200), Duration::from_millis(2)),
            profile: Profile::Lan,
            beacons: true,
            seed_node_zero: false,
            expected_nodes: nodes as u32,
        }
    }
}

/// A record of something a node reported, for checkers and traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Virtual time.
    pub at: Duration,
    /// Which node reported it.
    pub node: usize,
    /// What it reported.
    pub event: Event,
}

struct Slot {
    core: Option<Membership>,
    addr: SocketAddr,
    id: NodeId,
    generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// A simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    now: Duration,
    slots: Vec<Slot>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BTreeMap<(Duration, u64), Delivery>,
    seq: u64,
    rng: Xoshiro256PlusPlus,
    cut: BTreeSet<(usize, usize)>,
    log: Vec<Logged>,
    trace: u64,
    delivered: u64,
    sent_bytes: u64,
    sent_packets: u64,
}

impl Sim {
    /// Builds and starts a cluster.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let mut slots = Vec::new();
        let mut by_addr = BTreeMap::new();
        for i in 0..cfg.nodes {
            let addr = Self::addr_of(i);
            by_addr.insert(addr, i);
            slots.push(Slot {
                core: None,
                addr,
                id: NodeId(rng.random::<u64>() | 1),
                generation: 1,
            });
        }
        let mut sim = Sim {
            cfg,
            now: Duration::ZERO,
            slots,
            by_addr,
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            cut: BTreeSet::new(),
            log: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            delivered: 0,
            sent_bytes: 0,
            sent_packets: 0,
        };
        for i in 0..sim.cfg.nodes {
            sim.start(i);
        }
        sim
    }

    /// The gossip address of node `i`.
    pub fn addr_of(i: usize) -> SocketAddr {
        let ip = Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8 + 1, 1);
        SocketAddr::new(IpAddr::V4(ip), 7946)
    }

    /// The membership configuration node `i` runs with.
    pub fn node_config(&self, i: usize) -> MembershipConfig {
        let cluster = "sim";
        MembershipConfig {
            cluster: cluster.into(),
            key: ClusterKey::new([42; 32]),
            profile: self.cfg.profile,
            expected_nodes: self.cfg.expected_nodes,
            quorum: QuorumRule::majority(self.cfg.expected_nodes).expect("expected_nodes > 0"),
            me: SelfDescription {
                name: format!("node{i}"),
                datacenter: "dc1".into(),
                api_addr: None,
                tags: BTreeMap::new(),
                votes: 1,
            },
            beacons: self.cfg.beacons,
            seeds: if self.cfg.seed_node_zero {
                vec![Self::addr_of(0)]
            } else {
                vec![]
            },
        }
    }

    fn start(&mut self, i: usize) {
        let cfg = self.node_config(i);
        let slot = &self.slots[i];
        let peer = Peer {
            addr: slot.addr,
            id: slot.id,
            generation: slot.generation,
        };
        let seed = self.rng.random::<u64>();
        let core = Membership::new(cfg, peer, seed, self.now);
        self.slots[i].core = Some(core);
        self.flush(i);
    }

    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The core of node `i`, unless it is crashed.
    pub fn core(&self, i: usize) -> Option<&Membership> {
        self.slots[i].core.as_ref()
    }

    /// Mutable access to the core of node `i`, unless it is crashed.
    pub fn core_mut(&mut self, i: usize) -> Option<&mut Membership> {
        self.slots[i].core.as_mut()
    }

    /// The stable id of node `i`.
    pub fn id_of(&self, i: usize) -> NodeId {
        self.slots[i].id
    }

    /// Every event reported so far.
    pub fn log(&self) -> &[Logged] {
        &self.log
    }

    /// A hash of every delivery and event so far: equal traces give equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Datagrams and bytes (sealed UDP payload) sent by all nodes so far; a multicast beacon counts
    /// once, as on a real network.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent_packets, self.sent_bytes)
    }

    /// Number of datagrams delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Kills node `i` at once: it loses all memory and sends nothing more.
    pub fn crash(&mut self, i: usize) {
        self.slots[i].core = None;
    }

    /// Restarts a crashed node with its persisted id and the next generation.
    pub fn restart(&mut self, i: usize) {
        assert!(self.slots[i].core.is_none(), "node {i} is running");
        self.slots[i].generation += 1;
        self.start(i);
    }

    /// Gracefully stops node `i`: it announces its leave, runs until the leave reached the SWIM
    /// layer and `linger` more, then stops (what the agent does on SIGTERM).
    pub fn leave(&mut self, i: usize, linger: Duration) {
        let now = self.now;
        if let Some(c) = self.slots[i].core.as_mut() {
            c.leave(now);
        }
        self.flush(i);
        let limit = self.now + 10 * linger;
        self.run_until_cond(limit, |s| s.core(i).is_none_or(|c| c.has_left()));
        let until = self.now + linger;
        self.run_until(until);
        self.crash(i);
    }

    /// Cuts the link from `a` to `b` (one way).
    pub fn cut_one_way(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
    }

    /// Splits the cluster: no datagram crosses between different groups.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.cut.clear();
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                if gi != hi {
                    for a in *g {
                        for b in *h {
                            self.cut.insert((*a, *b));
                        }
                    }
                }
            }
        }
    }

    /// Cuts node `i` off from everyone, both ways.
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.slots.len() {
            if j != i {
                self.cut.insert((i, j));
                self.cut.insert((j, i));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Sets the loss rate (per million datagrams).
    pub fn set_loss_ppm(&mut self, ppm: u32) {
        self.cfg.loss_ppm = ppm;
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: Duration) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Runs until `cond` holds (checked after every step) or `limit` of virtual time passes;
    /// returns the time it took, or `None`.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let until = self.now + limit;
        if cond(self) {
            return Some(Duration::ZERO);
        }
        while self.step(until) {
            if cond(self) {
                return Some(self.now - start);
            }
        }
        self.now = self.now.max(until);
        None
    }

    /// Processes the next delivery or timer at or before `limit`; false when there is none.
    fn step(&mut self, limit: Duration) -> bool {
        let next_delivery = self.queue.keys().next().map(|(t, _)| *t);
        let mut next_timer: Option<(Duration, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(t) = s.core.as_ref().and_then(|c| c.poll_timeout())
                && next_timer.is_none_or(|(nt, _)| t < nt)
            {
                next_timer = Some((t, i));
            }
        }
        let take_delivery = match (next_delivery, next_timer) {
            (None, None) => return false,
            (Some(d), Some((t, _))) => d <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_delivery {
            let key = *self.queue.keys().next().expect("peeked");
            if key.0 > limit {
                return false;
            }
            let d = self.queue.remove(&key).expect("peeked");
            self.now = self.now.max(key.0);
            self.delivered += 1;
            self.mix(&[d.to as u64, d.bytes.len() as u64, key.0.as_micros() as u64]);
            let now = self.now;
            if let Some(core) = self.slots[d.to].core.as_mut() {
                core.handle_datagram(now, d.from, &d.bytes);
                self.flush(d.to);
            }
        } else {
            let (t, i) = next_timer.expect("checked");
            if t > limit {
                return false;
            }
            self.now = self.now.max(t);
            let now = self.now;
            if let Some(core) = self.slots[i].core.as_mut() {
                core.handle_timeout(now);
            }
            self.flush(i);
        }
        true
    }

    fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.trace ^= u64::from(b);
                self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }

    fn flush(&mut self, i: usize) {
        let now = self.now;
        let from = self.slots[i].addr;
        loop {
            let Some(core) = self.slots[i].core.as_mut() else {
                return;
            };
            let tx = core.poll_transmit();
            let ev = if tx.is_none() {
                core.poll_event()
            } else {
                None
            };
            if let Some(tx) = tx {
                self.sent_packets += 1;
                self.sent_bytes += tx.bytes.len() as u64;
                let targets: Vec<usize> = match tx.to {
                    Destination::Unicast(addr) => {
                        self.by_addr.get(&addr).copied().into_iter().collect()
                    }
                    Destination::Beacon => (0..self.slots.len()).filter(|j| *j != i).collect(),
                };
                for to in targets {
                    if self.cut.contains(&(i, to)) {
                        continue;
                    }
                    if self.cfg.loss_ppm > 0
                        && self.rng.random_range(0..1_000_000) < self.cfg.loss_ppm
                    {
                        continue;
                    }
                    let (lo, hi) = self.cfg.latency;
                    let span = (hi - lo).as_micros() as u64;
                    let lat = lo
                        + Duration::from_micros(if span == 0 {
                            0
                        } else {
                            self.rng.random_range(0..span)
                        });
                    self.seq += 1;
                    self.queue.insert(
                        (now + lat, self.seq),
                        Delivery {
                            to,
                            from,
                            bytes: tx.bytes.clone(),
                        },
                    );
                }
            } else if let Some(event) = ev {
                self.mix(&[
                    i as u64,
                    now.as_micros() as u64,
                    format!("{event:?}").len() as u64,
                ]);
                if let Event::GenerationChanged { generation } = event {
                    self.slots[i].generation = generation;
                }
                self.log.push(Logged {
                    at: now,
                    node: i,
                    event,
                });
            } else {
                return;
            }
        }
    }

    /// The state node `viewer` reports for node `subject`, if it lists it.
    pub fn state_seen(&self, viewer: usize, subject: usize) -> Option<MemberState> {
        let id = self.slots[subject].id;
        self.core(viewer)?
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
    }

    /// True when every running node lists every node in `alive` as alive.
    pub fn all_see_alive(&self, alive: &[usize]) -> bool {
        (0..self.slots.len())
            .filter(|v| self.slots[*v].core.is_some())
            .all(|v| {
                alive
                    .iter()
                    .all(|s| self.state_seen(v, *s) == Some(MemberState::Alive))
            })
    }

    /// True when every running node other than `subject` reports `subject` in `state`.
    pub fn all_report(&self, subject: usize, state: MemberState) -> bool {
        (0..self.slots.len())
            .filter(|v| *v != subject && self.slots[*v].core.is_some())
            .all(|v| self.state_seen(v, subject) == Some(state))
    }
}
