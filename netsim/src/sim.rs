//! The simulator: nodes (the agent's membership and store cores), a virtual clock, an event queue
//! and the network between them.
//!
//! One step processes the earliest of: a delivery (datagram, store message, client request), a
//! node's timer, a paused node's resume, or a client waking up. Ties go by insertion order, and
//! every random draw comes from one Xoshiro256++ seeded by [`SimConfig::seed`], so a run is a pure
//! function of its configuration and the calls made on it.

use crate::history::{History, OpKind, OpRecord, Outcome};
use crate::net::{LinkModel, Network};
use crate::workload::{Workload, WorkloadConfig};
use membership::{
    ClusterKey, Destination, Event, MemberState, Membership, MembershipConfig, NodeId, Peer,
    Profile, QuorumRule, SelfDescription,
};
use node::{Input, Node, NodeConfig, Output, Recovered};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;
use store::{Reply, Request, StoreConfig, StoreCore, StoreError, StoreMsg};

/// Unix milliseconds that virtual time zero maps to on a node's wall clock (before its skew).
pub const WALL_BASE_MS: u64 = 1_700_000_000_000;

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
    /// Timing profile of every node.
    pub profile: Profile,
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
    /// Record everything one node is built from, fed and asked to do during its first run (see
    /// [`Sim::recording`]).
    pub record_node: Option<usize>,
}

impl SimConfig {
    /// `nodes` nodes on a clean LAN, finding each other through beacons, membership only.
    pub fn lan(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            link: LinkModel::lan(),
            datacenters: 1,
            profile: Profile::Lan,
            beacons: true,
            seed_node_zero: false,
            expected_nodes: nodes as u32,
            store: false,
            durable: false,
            fsync: (Duration::from_micros(100), Duration::from_millis(2)),
            start_spread: Duration::ZERO,
            snapshot_min_records: 100_000,
            record_node: None,
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

/// A fault of the simulated world itself (not of a message), kept for checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldFault {
    /// The node crashed (lost its memory).
    Crash(usize),
    /// The node started again.
    Restart(usize),
    /// The node stopped gracefully.
    Leave(usize),
    /// The node's process stalled for a while.
    Pause(usize, Duration),
    /// The (crashed) node's disk was wiped: it restarts with an empty log.
    Wipe(usize),
}

/// One catch-up of a node after it started, and what it lacked when it called itself current.
#[derive(Debug, Clone)]
pub struct CatchUpRecord {
    /// The node.
    pub node: usize,
    /// When it started (and began catching up).
    pub began: Duration,
    /// When it cleared, if it has.
    pub ended: Option<Duration>,
    /// Quorum writes acknowledged before it began that it did not hold when it cleared.
    pub missing: Vec<String>,
}

/// What one node was built from, fed and asked to do during its first run: a node is a pure
/// function of these, so a harness that feeds a fresh node the same inputs gets the same outputs.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The node recorded.
    pub node: usize,
    /// Its configuration.
    pub cfg: NodeConfig,
    /// Its identity.
    pub identity: Peer,
    /// Its seed.
    pub seed: u64,
    /// Its clock readings at start (core time, wall milliseconds).
    pub started: (Duration, u64),
    /// What its disk held.
    pub disk: Recovered,
    /// Every input, with the node's clock readings when it was fed.
    pub inputs: Vec<(Duration, u64, Input)>,
    /// Every output, in the order the node gave them.
    pub outputs: Vec<Output>,
    /// Still recording (the first run has not ended).
    live: bool,
}

/// A node's clock error: its monotonic clock runs fast or slow, its wall clock is offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skew {
    /// Rate error in parts per million (positive: fast).
    pub drift_ppm: i32,
    /// Wall clock offset in milliseconds.
    pub wall_offset_ms: i64,
}

impl Skew {
    /// The node's monotonic reading at global time `t`.
    pub fn local(&self, t: Duration) -> Duration {
        let ns = t.as_nanos() as i128;
        let local = ns + ns * i128::from(self.drift_ppm) / 1_000_000;
        Duration::from_nanos(local.max(0) as u64)
    }

    /// The earliest global time at which the node's monotonic clock reads `local` or more.
    pub fn global(&self, local: Duration) -> Duration {
        let l = local.as_nanos() as i128;
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let mut g = Duration::from_nanos(((l * 1_000_000 + rate - 1) / rate).max(0) as u64);
        let ns = Duration::from_nanos(1);
        while self.local(g) < local {
            g += ns;
        }
        while g > Duration::ZERO && self.local(g - ns) >= local {
            g -= ns;
        }
        g
    }

    /// The node's wall clock (Unix milliseconds) at global time `t`.
    pub fn wall_ms(&self, t: Duration) -> u64 {
        let base = WALL_BASE_MS as i64 + self.local(t).as_millis() as i64;
        (base + self.wall_offset_ms).max(0) as u64
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
    armed: Option<Duration>,
    disk: Disk,
    /// Index into the catch-up records while the node catches up.
    catching: Option<usize>,
}

/// A node's simulated disk: the newest snapshot, one log segment after it that survives
/// crashes up to what was synced (plus, after a crash, a random part of what was not, as a real
/// disk may keep), and the catch-up marker.
///
/// A snapshot is written whole and durable at once, as the agent's temp file, fsync and rename
/// make it; the log it covers goes with it.
#[derive(Debug, Clone)]
struct Disk {
    /// The store directory exists (a node's first start creates it; a wipe removes it).
    exists: bool,
    snapshot: Vec<store::wal::Record>,
    bytes: Vec<u8>,
    synced_len: usize,
    written_lsn: u64,
    synced_lsn: u64,
    sync_pending: bool,
    /// Bumped by every snapshot: an fsync begun before it speaks for a log that is gone.
    epoch: u32,
    /// The catch-up marker file.
    marker: bool,
    /// Snapshots written so far.
    snapshots: u64,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            exists: false,
            snapshot: Vec::new(),
            bytes: store::wal::file_header().to_vec(),
            synced_len: store::wal::FILE_HEADER_LEN,
            written_lsn: 0,
            synced_lsn: 0,
            sync_pending: false,
            epoch: 0,
            marker: false,
            snapshots: 0,
        }
    }
}

enum What {
    Datagram {
        to: u32,
        from: u32,
        bytes: Rc<[u8]>,
    },
    Stream {
        to: usize,
        incarnation: u64,
        from: NodeId,
        // Boxed: the queue moves items around on every push and pop, so they must stay small.
        msg: Box<StoreMsg>,
    },
    Request {
        to: usize,
        incarnation: u64,
        op: usize,
    },
    Resume {
        node: usize,
    },
    Start {
        node: usize,
    },
    Synced {
        node: u32,
        // Which disk epoch the fsync began in (see `Disk::epoch`).
        epoch: u32,
        incarnation: u64,
        len: usize,
        lsn: u64,
    },
    Client {
        client: usize,
    },
}

struct Item {
    at: Duration,
    seq: u64,
    what: What,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What a node believes about another, as told by its events (suspects count as alive: an event
/// stream has no "suspect" event, and a suspect is still reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No event about it yet.
    Unknown,
    /// Joined, recovered or restarted.
    Alive,
    /// Reported failed.
    Failed,
    /// Reported left.
    Left,
}

const SEEN_CODES: [Seen; 4] = [Seen::Unknown, Seen::Alive, Seen::Failed, Seen::Left];

fn seen_code(s: Seen) -> u8 {
    SEEN_CODES.iter().position(|x| *x == s).expect("listed") as u8
}

/// Message counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams sent (a beacon counts once).
    pub datagrams: u64,
    /// Bytes of sealed datagram payload sent.
    pub datagram_bytes: u64,
    /// Store messages sent over the (simulated) stream transport.
    pub stream_msgs: u64,
    /// Bytes of those messages, postcard-encoded.
    pub stream_bytes: u64,
}

struct ClientState {
    pending: Option<usize>,
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
    history: History,
    torn_tails: u64,
    catch_ups: Vec<CatchUpRecord>,
    recording: Option<Recording>,
    frames_received: Vec<u64>,
}

impl Sim {
    /// Builds and starts a cluster.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let n = cfg.nodes;
        let dcs = cfg.datacenters.max(1);
        let dc: Vec<u16> = (0..n).map(|i| (i * dcs / n.max(1)) as u16).collect();
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
                membership_faults: vec![],
                store_faults: vec![],
                armed: None,
                disk: Disk::default(),
                catching: None,
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
            history: History::default(),
            torn_tails: 0,
            catch_ups: Vec::new(),
            recording: None,
            frames_received: vec![0; n],
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
            cluster: "sim".into(),
            key: ClusterKey::new([42; 32]),
            profile: self.cfg.profile,
            expected_nodes: self.cfg.expected_nodes,
            quorum: QuorumRule::majority(self.cfg.expected_nodes).expect("expected_nodes > 0"),
            me: SelfDescription {
                name: format!("node{i}"),
                datacenter: format!("dc{}", self.net.dc_of(i) + 1),
                api_addr: None,
                tags: BTreeMap::new(),
                votes: 1,
            },
            beacons: self.cfg.beacons,
            seeds,
        }
    }

    /// The store configuration every node runs with.
    pub fn store_config(&self) -> StoreConfig {
        let rule = QuorumRule::majority(self.cfg.expected_nodes).expect("expected_nodes > 0");
        let mut c = StoreConfig::new(rule.required());
        c.durable = self.cfg.durable;
        c
    }

    /// Torn log tails dropped by restarts so far.
    pub fn torn_tails(&self) -> u64 {
        self.torn_tails
    }

    fn start(&mut self, i: usize) {
        let cfg = NodeConfig::new(
            self.node_config(i),
            self.cfg.store.then(|| self.store_config()),
            self.cfg.snapshot_min_records,
        )
        .with_faults(node::Faults {
            membership: self.slots[i].membership_faults.clone(),
            store: self.slots[i].store_faults.clone(),
        });
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
        let mut torn = None;
        if durable {
            let d = store::wal::decode_file(&slot.disk.bytes).expect("the sim writes headers");
            if let Some(damage) = &d.damage {
                torn = Some((d.good_len, damage.clone()));
            }
            disk.records = slot.disk.snapshot.clone();
            disk.records.extend(d.records);
        }
        let last_lsn = disk.records.iter().map(|r| r.lsn).max().unwrap_or(0);
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
        if let Some((good, damage)) = torn {
            assert!(
                matches!(damage, store::wal::Damage::Torn { .. }),
                "node {i}: the simulated log is corrupt: {damage:?}"
            );
            slot.disk.bytes.truncate(good);
            self.torn_tails += 1;
        }
        let slot = &mut self.slots[i];
        slot.disk.exists = true;
        slot.disk.synced_len = slot.disk.bytes.len();
        slot.disk.sync_pending = false;
        slot.disk.written_lsn = last_lsn;
        slot.disk.synced_lsn = last_lsn;
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

    /// What [`SimConfig::record_node`] recorded so far.
    pub fn recording(&self) -> Option<&Recording> {
        self.recording.as_ref()
    }

    /// Store messages delivered to node `i` so far (over all its runs).
    pub fn frames_received(&self, i: usize) -> u64 {
        self.frames_received[i]
    }

    /// Delivers `msg` to node `to` on the stream from node `from` now, as if `from` had sent it
    /// (tests of what a node does with a message it cannot answer yet).
    pub fn inject_frame(&mut self, from: usize, to: usize, msg: StoreMsg) {
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

    /// Snapshots node `i` has written so far (over all its runs; a wipe starts again at zero).
    pub fn snapshots_written(&self, i: usize) -> u64 {
        self.slots[i].disk.snapshots
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

    /// Every event reported so far.
    pub fn log(&self) -> &[Logged] {
        &self.log
    }

    /// Crashes, restarts, leaves and pauses so far, with their times.
    pub fn world_faults(&self) -> &[(Duration, WorldFault)] {
        &self.world
    }

    /// Every client operation so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// A hash of every step and event so far: equal traces give equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Datagrams and bytes (sealed UDP payload) sent by all nodes so far; a multicast beacon counts
    /// once, as on a real network.
    pub fn sent(&self) -> (u64, u64) {
        (self.traffic.datagrams, self.traffic.datagram_bytes)
    }

    /// All message counters.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Number of deliveries processed so far.
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
        // What was written but not synced may be on the disk, in part, or not at all (a crash of
        // the machine rather than the process).
        let disk = &mut self.slots[i].disk;
        let unsynced = disk.bytes.len() - disk.synced_len;
        if unsynced > 0 {
            let keep = if self.rng.random_range(0..2) == 0 {
                0
            } else {
                self.rng.random_range(0..=unsynced)
            };
            disk.bytes.truncate(disk.synced_len + keep);
        }
        self.slots[i].paused_until = None;
        self.slots[i].catching = None;
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

    /// Every catch-up so far: one per node start.
    pub fn catch_ups(&self) -> &[CatchUpRecord] {
        &self.catch_ups
    }

    /// Closes node `i`'s catch-up record once its store says it is current, noting every quorum
    /// write acknowledged before it began that its replica lacks.
    fn note_caught_up(&mut self, i: usize) {
        let Some(rec) = self.slots[i].catching else {
            return;
        };
        let Some(store) = self.slots[i].node.as_ref().and_then(|n| n.store()) else {
            return;
        };
        let began = self.catch_ups[rec].began;
        let mut missing = Vec::new();
        for op in &self.history.ops {
            let Outcome::Written(v) = op.outcome else {
                continue;
            };
            if op.consistency != store::Consistency::Quorum
                || op.completed.is_none_or(|t| t > began)
            {
                continue;
            }
            let held = store
                .replica()
                .store("default")
                .map_or(store::Version::ZERO, |s| s.version(&op.key));
            if held < v {
                missing.push(format!("{} (version {v}, node holds {held})", op.key));
            }
        }
        self.catch_ups[rec].ended = Some(self.now);
        self.catch_ups[rec].missing = missing;
        self.slots[i].catching = None;
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

    /// Starts simulated clients (the simulation must run stores).
    pub fn start_clients(&mut self, cfg: WorkloadConfig) {
        assert!(self.cfg.store, "clients need stores: set SimConfig::store");
        let n = cfg.clients;
        self.workload = Some(Workload::new(cfg));
        self.clients_on = true;
        self.clients = (0..n).map(|_| ClientState { pending: None }).collect();
        for c in 0..n {
            let wait = self.workload.as_ref().expect("set").think(&mut self.rng);
            let at = self.now + wait;
            self.push(at, What::Client { client: c });
        }
    }

    /// Clients make no new calls; calls in flight still complete.
    pub fn stop_clients(&mut self) {
        self.clients_on = false;
    }

    /// Number of client operations without an answer yet.
    pub fn pending_ops(&self) -> usize {
        self.clients.iter().filter(|c| c.pending.is_some()).count()
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
        cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        self.run_until_cond_every(limit, Duration::ZERO, cond)
    }

    /// Like [`Sim::run_until_cond`], but checks `cond` at most once per `every` of virtual time
    /// (for conditions that cost O(n) on large clusters); the time returned is late by less
    /// than `every`.
    pub fn run_until_cond_every(
        &mut self,
        limit: Duration,
        every: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let until = self.now + limit;
        if cond(self) {
            return Some(Duration::ZERO);
        }
        let mut next_check = self.now + every;
        loop {
            let limit = if every.is_zero() {
                until
            } else {
                until.min(next_check)
            };
            if self.step(limit) {
                if every.is_zero() && cond(self) {
                    return Some(self.now - start);
                }
                continue;
            }
            self.now = self.now.max(limit);
            if !every.is_zero() {
                if cond(self) {
                    return Some(self.now - start);
                }
                next_check = self.now + every;
            }
            if limit >= until {
                return None;
            }
        }
    }

    fn push(&mut self, at: Duration, what: What) {
        self.seq += 1;
        self.queue.push(Reverse(Item {
            at,
            seq: self.seq,
            what,
        }));
    }

    /// Processes the next item at or before `limit`; false when there is none.
    fn step(&mut self, limit: Duration) -> bool {
        let next_item = self.queue.peek().map(|r| r.0.at);
        let next_timer = self.timers.first().copied();
        let take_item = match (next_item, next_timer) {
            (None, None) => return false,
            (Some(d), Some((t, _))) => d <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_item {
            if next_item.is_some_and(|t| t > limit) {
                return false;
            }
            let Reverse(item) = self.queue.pop().expect("peeked");
            self.now = self.now.max(item.at);
            self.handle_item(item.what);
        } else {
            let (t, i) = next_timer.expect("checked");
            if t > limit {
                return false;
            }
            self.now = self.now.max(t);
            self.fire_timers(i);
        }
        true
    }

    fn paused(&self, i: usize) -> bool {
        self.slots[i].paused_until.is_some_and(|t| t > self.now)
    }

    fn handle_item(&mut self, what: What) {
        let target = match &what {
            What::Datagram { to, .. } => Some(*to as usize),
            What::Stream { to, .. } | What::Request { to, .. } => Some(*to),
            _ => None,
        };
        if let Some(to) = target
            && self.paused(to)
        {
            let at = self.slots[to].paused_until.expect("paused");
            self.push(at, what);
            return;
        }
        let now = self.now;
        match what {
            What::Datagram { to, from, bytes } => {
                let (to, from) = (to as usize, self.slots[from as usize].addr);
                self.delivered += 1;
                self.mix(&[1, to as u64, bytes.len() as u64, now.as_micros() as u64]);
                let bytes = bytes.to_vec();
                self.feed(to, Input::Datagram { from, bytes });
                self.flush(to);
            }
            What::Stream {
                to,
                incarnation,
                from,
                msg,
            } => {
                if self.slots[to].incarnation != incarnation {
                    return; // the connection died with the process it was open to
                }
                self.delivered += 1;
                self.mix(&[2, to as u64, now.as_micros() as u64]);
                self.frames_received[to] += 1;
                self.feed(to, Input::Frame { from, msg: *msg });
                self.flush(to);
            }
            What::Request {
                to,
                incarnation,
                op,
            } => {
                self.mix(&[3, to as u64, op as u64, now.as_micros() as u64]);
                if self.slots[to].incarnation != incarnation || !self.is_up(to) {
                    self.complete(op, Outcome::Failed("node down".into()));
                    return;
                }
                let rec = &self.history.ops[op];
                let (store, key) = ("default".to_string(), rec.key.clone());
                let consistency = Some(rec.consistency);
                let req = match &rec.kind {
                    OpKind::Put(v) => Request::Put {
                        store,
                        key,
                        value: v.clone(),
                        ttl: None,
                        consistency,
                    },
                    OpKind::Delete => Request::Delete {
                        store,
                        key,
                        consistency,
                    },
                    OpKind::Get => Request::Get {
                        store,
                        key,
                        consistency,
                    },
                };
                self.in_flight.insert((to, op as u64));
                self.feed(
                    to,
                    Input::Request {
                        token: op as u64,
                        req,
                    },
                );
                self.flush(to);
            }
            What::Resume { node } => {
                self.mix(&[4, node as u64, now.as_micros() as u64]);
                self.slots[node].paused_until = None;
                self.refresh_timer(node);
            }
            What::Client { client } => self.client_call(client),
            What::Synced {
                node,
                incarnation,
                epoch,
                len,
                lsn,
            } => {
                let node = node as usize;
                if self.slots[node].incarnation != incarnation || !self.is_up(node) {
                    return; // the process died before its fsync returned
                }
                self.mix(&[8, node as u64, lsn, now.as_micros() as u64]);
                let disk = &mut self.slots[node].disk;
                if disk.epoch == epoch {
                    disk.synced_len = disk.synced_len.max(len);
                }
                disk.synced_lsn = disk.synced_lsn.max(lsn);
                disk.sync_pending = false;
                self.disk_progress(node);
                self.flush(node);
            }
            What::Start { node } => {
                self.mix(&[7, node as u64, now.as_micros() as u64]);
                if !self.is_up(node) {
                    self.start(node);
                }
            }
        }
    }

    fn client_call(&mut self, client: usize) {
        if !self.clients_on || self.clients[client].pending.is_some() {
            return;
        }
        let n = self.slots.len();
        let call =
            self.workload
                .as_mut()
                .expect("clients started")
                .next_call(&mut self.rng, client, n);
        let op = self.history.ops.len();
        self.history.ops.push(OpRecord {
            client,
            node: call.node,
            key: call.key,
            kind: call.kind,
            consistency: call.consistency,
            invoked: self.now,
            completed: None,
            outcome: Outcome::Pending,
        });
        self.clients[client].pending = Some(op);
        let incarnation = self.slots[call.node].incarnation;
        self.push(
            self.now,
            What::Request {
                to: call.node,
                incarnation,
                op,
            },
        );
    }

    fn complete(&mut self, op: usize, outcome: Outcome) {
        let rec = &mut self.history.ops[op];
        rec.completed = Some(self.now);
        rec.outcome = outcome;
        let client = rec.client;
        self.clients[client].pending = None;
        let wait = self
            .workload
            .as_ref()
            .expect("clients")
            .think(&mut self.rng);
        let at = self.now + wait;
        self.push(at, What::Client { client });
    }

    fn fire_timers(&mut self, i: usize) {
        let now = self.now;
        self.mix(&[5, i as u64, now.as_micros() as u64]);
        self.feed(i, Input::Timeout);
        self.flush(i);
    }

    fn disarm(&mut self, i: usize) {
        if let Some(t) = self.slots[i].armed.take() {
            self.timers.remove(&(t, i));
        }
    }

    fn refresh_timer(&mut self, i: usize) {
        self.disarm(i);
        if self.paused(i) {
            return;
        }
        let slot = &self.slots[i];
        let Some(n) = slot.node.as_ref() else { return };
        if let Some(local) = n.poll_timeout() {
            let t = slot.skew.global(local).max(self.now);
            self.slots[i].armed = Some(t);
            self.timers.insert((t, i));
        }
    }

    fn mix(&mut self, words: &[u64]) {
        for w in words {
            for b in w.to_le_bytes() {
                self.trace ^= u64::from(b);
                self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }

    /// Executes everything node `i` asked for: datagrams and store messages onto the network,
    /// records and snapshots onto its disk, replies to the clients, events into the log.
    fn flush(&mut self, i: usize) {
        loop {
            let Some(node) = self.slots[i].node.as_mut() else {
                self.disarm(i);
                return;
            };
            let outputs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
            if outputs.is_empty() {
                break;
            }
            if let Some(r) = self.recording.as_mut().filter(|r| r.node == i && r.live) {
                r.outputs.extend(outputs.iter().cloned());
            }
            let mut wrote = false;
            for out in outputs {
                match out {
                    Output::Datagram(tx) => self.send_datagram(i, tx),
                    Output::Frame { to, msg, .. } => self.send_frame(i, to, msg),
                    // Streams die with the process they are open to (see `What::Stream`); a
                    // closed connection loses nothing else here.
                    Output::CloseStreams(_) => {}
                    Output::AppendLog(records) => {
                        let disk = &mut self.slots[i].disk;
                        for rec in &records {
                            disk.written_lsn = rec.lsn;
                            store::wal::encode(rec, &mut disk.bytes);
                        }
                        wrote = true;
                    }
                    Output::WriteSnapshot { through, records } => {
                        let disk = &mut self.slots[i].disk;
                        disk.snapshot = records;
                        disk.bytes = store::wal::file_header().to_vec();
                        disk.synced_len = disk.bytes.len();
                        disk.written_lsn = disk.written_lsn.max(through);
                        disk.synced_lsn = disk.synced_lsn.max(through);
                        disk.epoch += 1;
                        disk.snapshots += 1;
                        wrote = true;
                    }
                    Output::Reply { token, result } => {
                        if self.in_flight.remove(&(i, token)) {
                            let op = token as usize;
                            let outcome = outcome_of(&self.history.ops[op].kind, result);
                            self.complete(op, outcome);
                        }
                    }
                    Output::Event(ev) => self.record_event(i, ev),
                    Output::PersistGeneration(g) => self.slots[i].generation = g,
                    Output::MarkCatchingUp => self.slots[i].disk.marker = true,
                    Output::CaughtUp => {
                        self.slots[i].disk.marker = false;
                        self.note_caught_up(i);
                    }
                }
            }
            if wrote {
                self.disk_progress(i);
            }
        }
        self.refresh_timer(i);
    }

    /// Node `i` wrote log records or an fsync returned: tell it how far the disk is, and start an
    /// fsync of what is unsynced unless one is running (group commit: one fsync covers everything
    /// written before it starts).
    fn disk_progress(&mut self, i: usize) {
        let now = self.now;
        let disk = &mut self.slots[i].disk;
        let (w, sy) = (disk.written_lsn, disk.synced_lsn);
        let sync = (w > sy && !disk.sync_pending).then(|| {
            disk.sync_pending = true;
            (disk.bytes.len(), w, disk.epoch)
        });
        self.feed(
            i,
            Input::Persisted {
                written: w,
                synced: sy,
            },
        );
        if let Some((len, lsn, epoch)) = sync {
            let (lo, hi) = self.cfg.fsync;
            let span = hi.saturating_sub(lo).as_micros().max(1) as u64;
            let d = lo + Duration::from_micros(self.rng.random_range(0..span));
            let incarnation = self.slots[i].incarnation;
            self.push(
                now + d,
                What::Synced {
                    node: i as u32,
                    incarnation,
                    epoch,
                    len,
                    lsn,
                },
            );
        }
    }

    fn send_datagram(&mut self, i: usize, tx: membership::Transmit) {
        self.traffic.datagrams += 1;
        self.traffic.datagram_bytes += tx.bytes.len() as u64;
        let bytes: Rc<[u8]> = Rc::from(tx.bytes);
        match tx.to {
            Destination::Unicast(addr) => {
                if let Some(to) = self.by_addr.get(&addr).copied() {
                    self.route_datagram(i, to, &bytes);
                }
            }
            Destination::Beacon => {
                let dc = self.net.dc_of(i);
                for to in 0..self.slots.len() {
                    if to != i && self.net.dc_of(to) == dc {
                        self.route_datagram(i, to, &bytes);
                    }
                }
            }
        }
    }

    /// A store message on the stream from node `i` to the node at `addr`: ordered per pair of
    /// nodes, lost when the link is cut either way (the connection breaks).
    fn send_frame(&mut self, i: usize, addr: SocketAddr, msg: StoreMsg) {
        let Some(to) = self.by_addr.get(&addr).copied() else {
            return;
        };
        self.traffic.stream_msgs += 1;
        self.traffic.stream_bytes += postcard::to_stdvec(&msg).map_or(0, |b| b.len() as u64);
        if !self.net.reaches(i, to) || !self.net.reaches(to, i) {
            return;
        }
        let lat = self.net.latency(&mut self.rng, i, to);
        let tail = self.stream_tail.entry((i, to)).or_default();
        let at = (self.now + lat).max(*tail);
        *tail = at;
        let incarnation = self.slots[to].incarnation;
        let from = self.slots[i].id;
        self.push(
            at,
            What::Stream {
                to,
                incarnation,
                from,
                msg: Box::new(msg),
            },
        );
    }

    /// Hands node `i` one input at its own clock's time (recorded when the node is being
    /// recorded). The caller flushes.
    fn feed(&mut self, i: usize, input: Input) {
        let skew = self.slots[i].skew;
        let (local, wall) = (skew.local(self.now), skew.wall_ms(self.now));
        let Some(n) = self.slots[i].node.as_mut() else {
            return;
        };
        if let Some(r) = self.recording.as_mut().filter(|r| r.node == i && r.live) {
            r.inputs.push((local, wall, input.clone()));
        }
        n.handle(local, wall, input);
    }

    fn route_datagram(&mut self, from_i: usize, to: usize, bytes: &Rc<[u8]>) {
        let fate = self.net.datagram_fate(&mut self.rng, from_i, to);
        for d in fate.as_slice() {
            let at = self.now + *d;
            self.push(
                at,
                What::Datagram {
                    to: to as u32,
                    from: from_i as u32,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn record_event(&mut self, viewer: usize, event: Event) {
        let now = self.now;
        self.mix(&[6, viewer as u64, now.as_micros() as u64]);
        let n = self.slots.len();
        let subject = match &event {
            Event::MemberJoined { member }
            | Event::MemberFailed { member }
            | Event::MemberLeft { member }
            | Event::MemberRecovered { member }
            | Event::MemberRestarted { member } => self.by_id.get(&member.id).copied(),
            _ => None,
        };
        let seen = match &event {
            Event::MemberJoined { .. }
            | Event::MemberRecovered { .. }
            | Event::MemberRestarted { .. } => Some(Seen::Alive),
            Event::MemberFailed { .. } => Some(Seen::Failed),
            Event::MemberLeft { .. } => Some(Seen::Left),
            _ => None,
        };
        if let (Some(s), Some(state)) = (subject, seen) {
            let cell = &mut self.seen[viewer * n + s];
            let alive = seen_code(Seen::Alive);
            if *cell == alive {
                self.alive_of[s] -= 1;
            }
            *cell = seen_code(state);
            if *cell == alive {
                self.alive_of[s] += 1;
            }
        }
        self.log.push(Logged {
            at: now,
            node: viewer,
            event,
        });
    }

    /// What `viewer`'s events say about `subject`.
    pub fn seen_by_events(&self, viewer: usize, subject: usize) -> Seen {
        let n = self.slots.len();
        SEEN_CODES[self.seen[viewer * n + subject] as usize]
    }

    /// True when every running node's events say every other running node is alive
    /// (O(n): suited to large clusters).
    pub fn all_running_alive_by_events(&self) -> bool {
        let running = self.slots.iter().filter(|s| s.node.is_some()).count() as u32;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node.is_some())
            .all(|(i, _)| self.alive_of[i] + 1 == running)
    }

    /// How many running nodes other than `subject` have reported it `state` by their events.
    pub fn count_reporting(&self, subject: usize, state: Seen) -> usize {
        (0..self.slots.len())
            .filter(|v| *v != subject && self.is_up(*v))
            .filter(|v| self.seen_by_events(*v, subject) == state)
            .count()
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

    /// True when every running node lists every node in `alive` as alive (from member lists:
    /// O(n^2), for small clusters).
    pub fn all_see_alive(&self, alive: &[usize]) -> bool {
        (0..self.slots.len()).filter(|v| self.is_up(*v)).all(|v| {
            let members = self.core(v).expect("up").members();
            alive.iter().all(|s| {
                let id = self.slots[*s].id;
                members
                    .iter()
                    .any(|m| m.id == id && m.state == MemberState::Alive)
            })
        })
    }

    /// True when every running node other than `subject` reports `subject` in `state`.
    pub fn all_report(&self, subject: usize, state: MemberState) -> bool {
        (0..self.slots.len())
            .filter(|v| *v != subject && self.is_up(*v))
            .all(|v| self.state_seen(v, subject) == Some(state))
    }

    /// True when every running node reaches a quorum.
    pub fn all_have_quorum(&self) -> bool {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref())
            .all(|n| n.membership().quorum().has_quorum)
    }
}

fn outcome_of(kind: &OpKind, reply: Result<Reply, StoreError>) -> Outcome {
    match reply {
        Ok(Reply::Written { version }) => Outcome::Written(version),
        Ok(Reply::Value { value, .. }) => Outcome::Read(Some(value)),
        Ok(Reply::Keys { .. }) => Outcome::Failed("unexpected list reply".into()),
        Err(StoreError::NotFound { .. }) if matches!(kind, OpKind::Get) => Outcome::Read(None),
        Err(StoreError::Indeterminate) => Outcome::Indeterminate("round timed out".into()),
        Err(e) => Outcome::Failed(e.code().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_items_stay_small() {
        assert!(
            std::mem::size_of::<Item>() <= 64,
            "{}",
            std::mem::size_of::<Item>()
        );
    }

    #[test]
    fn skew_maps_both_ways() {
        for drift in [-500, -1, 0, 1, 333, 20_000] {
            let s = Skew {
                drift_ppm: drift,
                wall_offset_ms: -1500,
            };
            for t in [0u64, 1, 999, 123_456_789, 3_600_000_000_007] {
                let local = Duration::from_nanos(t);
                let g = s.global(local);
                assert!(s.local(g) >= local, "drift {drift} t {t}");
                if g > Duration::ZERO {
                    assert!(s.local(g - Duration::from_nanos(1)) < local);
                }
            }
        }
        let s = Skew {
            drift_ppm: 0,
            wall_offset_ms: -1500,
        };
        assert_eq!(s.wall_ms(Duration::from_secs(2)), WALL_BASE_MS + 500);
    }
}
