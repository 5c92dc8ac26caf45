//! The simulator: nodes (the same `node::Node` the agent runs), a virtual clock, an event queue
//! and the network between them; each node's simulated disk; clients and what they saw.
//!
//! This file builds the cluster, starts, crashes and restarts nodes, and executes their outputs
//! (`flush`). The event queue and run loop are in `queue`, clocks in `clock`, disks in `disk`,
//! clients in `clients`, and what checkers read in `observe`.
//!
//! One step processes the earliest of: a delivery (datagram, store message, client request), a
//! node's timer, a paused node's resume, or a client waking up. Ties go by insertion order, and
//! every random draw comes from one Xoshiro256++ seeded by [`SimConfig::seed`], so a run is a pure
//! function of its configuration and the calls made on it.

use crate::history::{History, Outcome, StrongOutcome};
use crate::net::{LinkModel, Network};
use crate::workload::Workload;
use membership::{
    ClusterKey, Membership, MembershipConfig, NodeId, Peer, Profile, QuorumRule, SelfDescription,
};
use node::PeerMsg;
use node::{Input, Node, NodeConfig, Recovered};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use store::{StoreConfig, StoreCore};

mod clients;
mod clock;
mod disk;
mod io;
mod locks;
mod observe;
mod queue;

use self::clients::ClientState;
pub use self::clock::{Skew, WALL_BASE_MS};
use self::disk::Disk;
use self::observe::seen_code;
pub use self::observe::{CatchUpRecord, LeaderSpan, Logged, Recording, Seen, Traffic, WorldFault};
use self::queue::{Item, What};

/// Options for a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The seed every random draw derives from.
    pub seed: u64,
    /// How links behave.
    pub link: LinkModel,
    /// Number of datacenters; nodes are split into contiguous, near-equal blocks.
    pub datacenters: usize,
    /// Sizes of the datacenters' blocks instead (unequal datacenters), in order.
    pub dc_sizes: Option<Vec<usize>>,
    /// Quorum by datacenters (`cluster.quorum_mode = "datacenters"`), each datacenter's
    /// configured votes being its number of nodes; otherwise a majority of `expected_nodes`.
    pub quorum_by_datacenter: bool,
    /// Timing profile of every node.
    pub profile: Profile,
    /// The profile's timings fitted to this longest round trip (`gossip.max_rtt`).
    pub max_rtt: Option<Duration>,
    /// Whether nodes find each other by (simulated) multicast beacons, which reach only the
    /// sender's datacenter, as multicast does.
    pub beacons: bool,
    /// Whether every node is given the first node of each datacenter as a seed.
    pub seed_node_zero: bool,
    /// Expected cluster size (quorum = strict majority of this many votes).
    pub expected_nodes: u32,
    /// Whether nodes run a store core next to membership (clients need it).
    pub store: bool,
    /// Whether stores log to a simulated disk that survives crashes (up to what was synced)
    /// and acknowledge writes only once synced; off, replicas live in memory only.
    pub durable: bool,
    /// How long an fsync takes, drawn uniformly.
    pub fsync: (Duration, Duration),
    /// Nodes start one after another over this span (zero: all at once), as in a rolling start.
    pub start_spread: Duration,
    /// Fewest log records between two snapshots (the node's snapshot policy; small in scenarios
    /// so that restarts read a snapshot and the log after it).
    pub snapshot_min_records: usize,
    /// Deliberate defects every node has from its first start on.
    pub faults: node::Faults,
    /// Every node campaigns for the cluster leader with these settings (`None`: none does).
    pub leader: Option<node::LeaderConfig>,
    /// Record everything one node is built from, fed and asked to do during its first run (see
    /// [`Sim::recording`]).
    pub record_node: Option<usize>,
    /// Inputs a node takes before its outputs leave. `None`: every input is followed at once by
    /// the execution of what it asked for. `Some(span)`: an input that finds no flush pending
    /// schedules one within `span` (drawn), and inputs arriving meanwhile are taken first, as
    /// the agent's driver takes the inputs already queued (up to 64) before it executes the
    /// node's outputs together. Timeouts still flush at once, as the driver's do.
    pub batch_inputs: Option<Duration>,
    /// Whether every member event is kept in [`Sim::log`] for the checkers. The scale runs turn
    /// it off: the log holds an event per pair of nodes (every join), about 120 bytes each by
    /// heaptrack of `netsim scale --nodes 1000`, memory of the harness and not of the nodes;
    /// what they ask of events (who sees whom alive or failed) is kept in a matrix anyway.
    pub event_log: bool,
    /// The most member updates each node keeps queued for gossip (membership's
    /// `MAX_QUEUED_UPDATES`; a test makes it smaller than the cluster to see the limit work).
    pub max_queued_updates: usize,
}

impl SimConfig {
    /// `nodes` nodes on a clean LAN, finding each other through beacons, membership only.
    pub fn lan(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            link: LinkModel::lan(),
            datacenters: 1,
            dc_sizes: None,
            quorum_by_datacenter: false,
            profile: Profile::Lan,
            max_rtt: None,
            beacons: true,
            seed_node_zero: false,
            expected_nodes: nodes as u32,
            store: false,
            durable: false,
            fsync: (Duration::from_micros(100), Duration::from_millis(2)),
            start_spread: Duration::ZERO,
            snapshot_min_records: 100_000,
            record_node: None,
            batch_inputs: None,
            event_log: true,
            max_queued_updates: membership::MAX_QUEUED_UPDATES,
            faults: node::Faults::default(),
            leader: None,
        }
    }

    /// `nodes` nodes on a clean LAN that find each other only through node 0 as their seed (no
    /// beacons), as hosts do where multicast does not reach: the scale runs, and the tests of
    /// joins through a seed.
    pub fn lan_through_a_seed(nodes: usize, seed: u64) -> Self {
        SimConfig {
            beacons: false,
            seed_node_zero: true,
            ..SimConfig::lan(nodes, seed)
        }
    }
}

struct Slot {
    node: Option<Node>,
    addr: SocketAddr,
    id: NodeId,
    generation: u64,
    incarnation: u64,
    paused_until: Option<Duration>,
    skew: Skew,
    membership_faults: Vec<membership::Fault>,
    store_faults: Vec<store::Fault>,
    coord_faults: Vec<coord::Fault>,
    armed: Option<Duration>,
    disk: Disk,
    /// Index into the catch-up records while the node catches up.
    catching: Option<usize>,
    /// Whether a flush is scheduled for inputs taken since the last one
    /// ([`SimConfig::batch_inputs`]).
    flush_due: bool,
}

/// A simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    now: Duration,
    slots: Vec<Slot>,
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<NodeId, usize>,
    queue: BinaryHeap<Reverse<Item>>,
    timers: BTreeSet<(Duration, usize)>,
    seq: u64,
    rng: Xoshiro256PlusPlus,
    /// The network between the nodes.
    pub net: Network,
    stream_tail: HashMap<(usize, usize), Duration>,
    log: Vec<Logged>,
    world: Vec<(Duration, WorldFault)>,
    trace: u64,
    delivered: u64,
    traffic: Traffic,
    seen: Vec<u8>,
    alive_of: Vec<u32>,
    workload: Option<Workload>,
    clients: Vec<ClientState>,
    clients_on: bool,
    /// Client operations in flight, by the node coordinating them (the token is the op index).
    in_flight: BTreeSet<(usize, u64)>,
    /// Strong-keyspace operations in flight, by proposer (the token is the op index).
    in_flight_strong: BTreeSet<(usize, u64)>,
    history: History,
    torn_tails: u64,
    catch_ups: Vec<CatchUpRecord>,
    recording: Option<Recording>,
    /// Every stretch of time a node led the cluster, by its own account.
    leaders: Vec<observe::LeaderSpan>,
    frames_received: Vec<u64>,
    /// Inputs taken while a flush for earlier ones was still pending.
    batched_inputs: u64,
}

impl Sim {
    /// Builds and starts a cluster.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let n = cfg.nodes;
        let dcs = cfg.datacenters.max(1);
        let dc: Vec<u16> = match &cfg.dc_sizes {
            Some(sizes) => {
                assert_eq!(
                    sizes.iter().sum::<usize>(),
                    n,
                    "dc_sizes add up to the nodes"
                );
                sizes
                    .iter()
                    .enumerate()
                    .flat_map(|(d, k)| std::iter::repeat_n(d as u16, *k))
                    .collect()
            }
            None => (0..n).map(|i| (i * dcs / n.max(1)) as u16).collect(),
        };
        let mut slots = Vec::new();
        let mut by_addr = HashMap::new();
        let mut by_id = HashMap::new();
        for i in 0..n {
            let addr = Self::addr_of(i);
            let id = NodeId(rng.random::<u64>() | 1);
            by_addr.insert(addr, i);
            by_id.insert(id, i);
            slots.push(Slot {
                node: None,
                addr,
                id,
                generation: 1,
                incarnation: 0,
                paused_until: None,
                skew: Skew::default(),
                membership_faults: cfg.faults.membership.clone(),
                store_faults: cfg.faults.store.clone(),
                coord_faults: cfg.faults.coord.clone(),
                armed: None,
                disk: Disk::default(),
                catching: None,
                flush_due: false,
            });
        }
        let net = Network::new(dc, cfg.link.clone());
        let mut sim = Sim {
            now: Duration::ZERO,
            slots,
            by_addr,
            by_id,
            queue: BinaryHeap::new(),
            timers: BTreeSet::new(),
            seq: 0,
            rng,
            net,
            stream_tail: HashMap::new(),
            log: Vec::new(),
            world: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            delivered: 0,
            traffic: Traffic::default(),
            seen: vec![0; n * n],
            alive_of: vec![0; n],
            workload: None,
            clients: Vec::new(),
            clients_on: false,
            in_flight: BTreeSet::new(),
            in_flight_strong: BTreeSet::new(),
            history: History::default(),
            torn_tails: 0,
            catch_ups: Vec::new(),
            recording: None,
            leaders: Vec::new(),
            frames_received: vec![0; n],
            batched_inputs: 0,
            cfg,
        };
        let spread = sim.cfg.start_spread;
        for i in 0..n {
            if spread.is_zero() {
                sim.start(i);
            } else {
                let at = spread * i as u32 / n as u32;
                sim.push(at, What::Start { node: i });
            }
        }
        sim
    }

    /// The gossip address of node `i`.
    pub fn addr_of(i: usize) -> SocketAddr {
        let ip = Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8 + 1, 1);
        SocketAddr::new(IpAddr::V4(ip), 7946)
    }

    /// The configuration this simulation was built with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The membership configuration node `i` runs with.
    pub fn node_config(&self, i: usize) -> MembershipConfig {
        let seeds = if self.cfg.seed_node_zero {
            let mut firsts: Vec<SocketAddr> = Vec::new();
            for j in 0..self.slots.len() {
                if j == 0 || self.net.dc_of(j) != self.net.dc_of(j - 1) {
                    firsts.push(Self::addr_of(j));
                }
            }
            firsts
        } else {
            vec![]
        };
        MembershipConfig {
            other_keys: Vec::new(),
            cluster: "sim".into(),
            key: ClusterKey::new([42; 32]),
            profile: self.cfg.profile,
            max_rtt: self.cfg.max_rtt,
            expected_nodes: self.cfg.expected_nodes,
            quorum: self.quorum_rule(),
            me: SelfDescription {
                name: format!("node{i}"),
                datacenter: self.dc_name(i),
                api_addr: None,
                tags: BTreeMap::new(),
                votes: 1,
            },
            beacons: self.cfg.beacons,
            seeds,
            max_queued_updates: self.cfg.max_queued_updates,
        }
    }

    /// The quorum rule every node runs with.
    pub fn quorum_rule(&self) -> QuorumRule {
        if self.cfg.quorum_by_datacenter {
            let mut table: BTreeMap<String, u32> = BTreeMap::new();
            for i in 0..self.slots.len() {
                *table.entry(self.dc_name(i)).or_default() += 1;
            }
            QuorumRule::datacenters(table).expect("every datacenter has a node")
        } else {
            QuorumRule::majority(self.cfg.expected_nodes).expect("expected_nodes > 0")
        }
    }

    /// Node `i`'s datacenter as its metadata names it.
    pub fn dc_name(&self, i: usize) -> String {
        format!("dc{}", self.net.dc_of(i) + 1)
    }

    /// Whether nodes `nodes` make a quorum by the rule the cluster runs with.
    pub fn is_quorum(&self, nodes: &[usize]) -> bool {
        let names: Vec<String> = nodes.iter().map(|i| self.dc_name(*i)).collect();
        self.quorum_rule()
            .met_by(names.iter().map(|d| (d.as_str(), 1)))
    }

    /// The store configuration every node runs with (its datacenter aside: see
    /// [`Sim::store_config_of`]).
    pub fn store_config(&self) -> StoreConfig {
        let rule = self.quorum_rule();
        let mut c = StoreConfig::new(rule.required());
        c.datacenters = rule.datacenter_votes().cloned();
        c.durable = self.cfg.durable;
        // As the agent does with gossip.max_rtt: ask again only after two round trips.
        if let Some(rtt) = self.cfg.max_rtt {
            c.round_retry = c.round_retry.max(rtt * 2);
        }
        // Small push batches and parts, so that the scenarios' small stores take, where they
        // push enough, the paths a million keys take in the agent: a push composed over several
        // steps, interleaved with everything else, and a catch-up in parts (the `wipe` scenario
        // pushes a handful of entries; store/tests/quorum.rs drives thousands through both).
        c.sync_push_batch = 16;
        c.sync_push_budget_bytes = 8 << 10;
        c
    }

    /// The store configuration node `i` runs with.
    pub fn store_config_of(&self, i: usize) -> StoreConfig {
        let mut c = self.store_config();
        c.my_datacenter = self.dc_name(i);
        c
    }

    fn start(&mut self, i: usize) {
        let mut cfg = NodeConfig::new(
            self.node_config(i),
            self.cfg.store.then(|| self.store_config_of(i)),
            self.cfg.snapshot_min_records,
        )
        .with_faults(node::Faults {
            membership: self.slots[i].membership_faults.clone(),
            store: self.slots[i].store_faults.clone(),
            coord: self.slots[i].coord_faults.clone(),
        });
        cfg.leader = self.cfg.leader.clone();
        let now = self.now;
        let slot = &self.slots[i];
        let local = slot.skew.local(now);
        let wall = slot.skew.wall_ms(now);
        let peer = Peer {
            addr: slot.addr,
            id: slot.id,
            generation: slot.generation,
        };
        let seed = self.rng.random::<u64>();
        // Recovery as the agent does it: the snapshot, then the log after it, a torn tail dropped.
        let durable = self.cfg.store && self.cfg.durable;
        let mut disk = Recovered {
            log_existed: durable && slot.disk.exists,
            identity_created: slot.incarnation == 0,
            marked_lost: slot.disk.marker,
            ..Recovered::default()
        };
        if durable {
            let back = self.slots[i].disk.read_back(i);
            disk.records = back.records;
            self.torn_tails += u64::from(back.torn);
        }
        if self.cfg.record_node == Some(i) && self.recording.is_none() {
            self.recording = Some(Recording {
                node: i,
                cfg: cfg.clone(),
                identity: peer,
                seed,
                started: (local, wall),
                disk: disk.clone(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                live: true,
            });
        }
        let node = Node::recover(cfg, peer, seed, local, wall, disk);
        if node.store().is_some() {
            self.slots[i].catching = Some(self.catch_ups.len());
            self.catch_ups.push(CatchUpRecord {
                node: i,
                began: now,
                ended: None,
                missing: Vec::new(),
            });
        }
        let slot = &mut self.slots[i];
        slot.disk.exists = true;
        slot.incarnation += 1;
        slot.node = Some(node);
        self.flush(i);
    }

    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The membership core of node `i`, unless it is crashed.
    pub fn core(&self, i: usize) -> Option<&Membership> {
        self.slots[i].node.as_ref().map(|n| n.membership())
    }

    /// Mutable access to the membership core of node `i`, unless it is crashed.
    pub fn core_mut(&mut self, i: usize) -> Option<&mut Membership> {
        self.slots[i].node.as_mut().map(|n| n.membership_mut())
    }

    /// The store core of node `i`, unless it is crashed or the simulation runs no stores.
    pub fn store(&self, i: usize) -> Option<&StoreCore> {
        self.slots[i].node.as_ref().and_then(|n| n.store())
    }

    /// Node `i` as a whole, unless it is crashed.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.slots[i].node.as_ref()
    }

    /// Delivers `msg` to node `to` on the stream from node `from` now, as if `from` had sent it
    /// (tests of what a node does with a message it cannot answer yet).
    pub fn inject_frame(&mut self, from: usize, to: usize, msg: PeerMsg) {
        let incarnation = self.slots[to].incarnation;
        let from = self.slots[from].id;
        let msg = Box::new(msg);
        self.push(
            self.now,
            What::Stream {
                to,
                incarnation,
                from,
                msg,
            },
        );
    }

    /// Tells node `at` now what the agent's stream transport tells it when a connection to node
    /// `gone` closed and a new one was refused: its process is gone.
    pub fn report_process_gone(&mut self, at: usize, gone: usize) {
        if self.is_up(at) {
            let addr = Self::addr_of(gone);
            self.feed(at, node::Input::ProcessGone(addr));
            self.flush(at);
        }
    }

    /// True when node `i` is running (not crashed; it may be paused).
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    /// The stable id of node `i`.
    pub fn id_of(&self, i: usize) -> NodeId {
        self.slots[i].id
    }

    /// The node with stable id `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Every client operation so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// A hash of every step and event so far: equal traces give equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Nodes currently running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|i| self.is_up(*i)).collect()
    }

    /// Gives node `i` a clock error from now on (also across restarts).
    pub fn set_skew(&mut self, i: usize, skew: Skew) {
        self.slots[i].skew = skew;
        self.refresh_timer(i);
    }

    /// Breaks node `i`'s membership core on purpose (kept across restarts).
    pub fn inject_membership_fault(&mut self, i: usize, f: membership::Fault) {
        self.slots[i].membership_faults.push(f);
        if let Some(n) = self.slots[i].node.as_mut() {
            n.membership_mut().inject_fault(f);
        }
    }

    /// Breaks node `i`'s store core on purpose (kept across restarts).
    pub fn inject_store_fault(&mut self, i: usize, f: store::Fault) {
        self.slots[i].store_faults.push(f);
        if let Some(s) = self.slots[i].node.as_mut().and_then(|n| n.store_mut()) {
            s.inject_fault(f);
        }
    }

    /// Breaks node `i`'s coordination core on purpose (from its next start on, and kept across
    /// restarts; a fault must be in place before the core reads its log).
    pub fn inject_coord_fault(&mut self, i: usize, f: coord::Fault) {
        self.slots[i].coord_faults.push(f);
    }

    /// Kills node `i` at once: it loses all memory and sends nothing more; operations it was
    /// coordinating become indeterminate.
    pub fn crash(&mut self, i: usize) {
        if self.is_up(i) {
            self.world.push((self.now, WorldFault::Crash(i)));
            self.halt(i);
        }
    }

    fn halt(&mut self, i: usize) {
        if self.slots[i].node.take().is_none() {
            return;
        }
        if let Some(r) = self.recording.as_mut().filter(|r| r.node == i) {
            r.live = false;
        }
        // A crashed leader stops leading at once.
        let now = self.now;
        for s in self.leaders.iter_mut().filter(|s| s.node == i) {
            s.until = s.until.min(now);
        }
        self.slots[i].disk.crash(&mut self.rng);
        self.slots[i].paused_until = None;
        self.slots[i].catching = None;
        self.slots[i].flush_due = false;
        self.disarm(i);
        let n = self.slots.len();
        for s in 0..n {
            if self.seen[i * n + s] == seen_code(Seen::Alive) {
                self.alive_of[s] -= 1;
            }
            self.seen[i * n + s] = 0;
        }
        let lost: Vec<(usize, u64)> = self
            .in_flight
            .range((i, 0)..=(i, u64::MAX))
            .copied()
            .collect();
        for key in lost {
            self.in_flight.remove(&key);
            self.complete(
                key.1 as usize,
                Outcome::Indeterminate("coordinator crashed".into()),
            );
        }
        let lost: Vec<(usize, u64)> = self
            .in_flight_strong
            .range((i, 0)..=(i, u64::MAX))
            .copied()
            .collect();
        for key in lost {
            self.in_flight_strong.remove(&key);
            self.complete_strong(
                key.1 as usize,
                StrongOutcome::Indeterminate("proposer crashed".into()),
            );
        }
    }

    /// Restarts a crashed node with its persisted id and the next generation. Its store starts
    /// empty: replicas live in memory until the store has a log.
    pub fn restart(&mut self, i: usize) {
        assert!(self.slots[i].node.is_none(), "node {i} is running");
        self.world.push((self.now, WorldFault::Restart(i)));
        self.slots[i].generation += 1;
        self.start(i);
    }

    /// Wipes the disk of crashed node `i`: it restarts with an empty log, knowing it may have
    /// lost writes it acknowledged (as the agent knows from its marker file).
    pub fn wipe(&mut self, i: usize) {
        assert!(self.slots[i].node.is_none(), "node {i} is running");
        self.world.push((self.now, WorldFault::Wipe(i)));
        self.slots[i].disk = Disk::default();
    }

    /// Stalls node `i` for `d`: it handles nothing (timers, datagrams, requests) until then, and
    /// everything that arrived meanwhile is handled late, as after a long GC or a SIGSTOP.
    pub fn pause(&mut self, i: usize, d: Duration) {
        if !self.is_up(i) || self.slots[i].paused_until.is_some() {
            return;
        }
        self.world.push((self.now, WorldFault::Pause(i, d)));
        self.slots[i].paused_until = Some(self.now + d);
        self.disarm(i);
        let at = self.now + d;
        self.push(at, What::Resume { node: i });
    }

    /// Gracefully stops node `i`: it announces its leave, runs until the leave reached the SWIM
    /// layer and `linger` more, then stops (what the agent does on SIGTERM).
    pub fn leave(&mut self, i: usize, linger: Duration) {
        self.world.push((self.now, WorldFault::Leave(i)));
        self.feed(i, Input::Leave);
        self.flush(i);
        let limit = 10 * linger;
        self.run_until_cond(limit, |s| s.core(i).is_none_or(|c| c.has_left()));
        let until = self.now + linger;
        self.run_until(until);
        self.halt(i);
    }

    /// Cuts the link from `a` to `b` (one way).
    pub fn cut_one_way(&mut self, a: usize, b: usize) {
        self.net.cut_one_way(self.now, a, b);
    }

    /// Splits the cluster: no message crosses between different groups.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.net.partition(self.now, groups);
    }

    /// Cuts node `i` off from everyone, both ways.
    pub fn isolate(&mut self, i: usize) {
        self.net.isolate(self.now, i);
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.net.heal(self.now);
    }

    /// Sets the loss rate (per million datagrams).
    pub fn set_loss_ppm(&mut self, ppm: u32) {
        self.net.model.loss_ppm = ppm;
    }

    fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.trace ^= u64::from(b);
                self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
}
