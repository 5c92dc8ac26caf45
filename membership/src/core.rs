//! The membership state machine: foca plus metadata, discovery, quorum and event reporting.
//!
//! It never touches a socket, a clock or a thread. The driver feeds it datagrams and the current
//! time, fires it when [`Membership::poll_timeout`] says, and drains [`Membership::poll_transmit`]
//! and [`Membership::poll_event`] after every call. The agent drives it with tokio and UDP; netsim
//! drives many of them with a virtual clock. Given the same seed and inputs it produces the same
//! outputs: every collection it iterates is ordered and every random choice comes from its seed.

use crate::config::{MembershipConfig, Timings};
use crate::envelope::{Channel, DropReason, MAX_PAYLOAD, Sealer, fnv1a64};
use crate::identity::{NodeId, Peer};
use crate::meta::{DigestEntry, MAX_META_BYTES, MetaBroadcasts, MetaMsg, NodeMeta, SharedMeta};
use crate::quorum::QuorumStatus;
use crate::reach::Reach;
use foca::{Foca, Notification, OwnedNotification, PostcardCodec, Runtime, Timer};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{debug, info, warn};

type SwimCore = Foca<Peer, PostcardCodec, Xoshiro256PlusPlus, MetaBroadcasts>;

/// How long after a member failed beacons stay frequent (a partition may heal in that time).
const HEAL_WATCH: Duration = Duration::from_secs(300);

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// One peer's gossip address.
    Unicast(SocketAddr),
    /// The multicast discovery group the driver is configured with.
    Beacon,
}

/// A sealed datagram the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub to: Destination,
    /// What it carries (for traffic accounting).
    pub channel: Channel,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
}

/// How a member is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared failed unless it refutes.
    Suspect,
    /// Declared down without having announced a leave.
    Failed,
    /// Announced a graceful leave.
    Left,
}

impl MemberState {
    /// All states, for metrics.
    pub const ALL: [MemberState; 4] = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
        MemberState::Left,
    ];

    /// Stable lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Failed => "failed",
            MemberState::Left => "left",
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Stable node id.
    pub id: NodeId,
    /// Node name (empty until its metadata arrives).
    pub name: String,
    /// Reported state.
    pub state: MemberState,
    /// Datacenter (empty until its metadata arrives).
    pub datacenter: String,
    /// Gossip address.
    pub gossip_addr: SocketAddr,
    /// HTTP API address, if known.
    pub api_addr: Option<SocketAddr>,
    /// Generation of the incarnation seen.
    pub generation: u64,
    /// Operator tags.
    pub tags: BTreeMap<String, String>,
    /// Quorum votes (1 until metadata arrives).
    pub votes: u32,
    /// True for the node itself.
    pub is_self: bool,
}

/// A member named in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRef {
    /// Stable node id.
    pub id: NodeId,
    /// Node name, if its metadata is known.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Generation of the incarnation concerned.
    pub generation: u64,
}

/// Something the operator or an application should hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A node joined for the first time (or after a graceful leave).
    MemberJoined {
        /// Who.
        member: MemberRef,
    },
    /// A node stopped answering and did not announce a leave.
    MemberFailed {
        /// Who.
        member: MemberRef,
    },
    /// A node left gracefully.
    MemberLeft {
        /// Who.
        member: MemberRef,
    },
    /// A node reported failed is alive again.
    MemberRecovered {
        /// Who.
        member: MemberRef,
    },
    /// A node restarted (a new generation) before anyone declared it failed.
    MemberRestarted {
        /// Who, with the new generation.
        member: MemberRef,
    },
    /// This node can no longer reach a quorum of votes.
    QuorumLost {
        /// The quorum view at the change.
        quorum: QuorumStatus,
    },
    /// This node reaches a quorum of votes again (or for the first time).
    QuorumRegained {
        /// The quorum view at the change.
        quorum: QuorumStatus,
    },
    /// This node took a new generation (it was declared down and rejoined); the driver persists it
    /// so that the next start uses a higher one.
    GenerationChanged {
        /// The new generation.
        generation: u64,
    },
}

/// Packet and byte counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams sent, by channel.
    pub sent_packets: BTreeMap<Channel, u64>,
    /// Bytes sent (sealed, UDP payload), by channel.
    pub sent_bytes: BTreeMap<Channel, u64>,
    /// Datagrams received and authenticated, by channel.
    pub recv_packets: BTreeMap<Channel, u64>,
    /// Bytes received and authenticated, by channel.
    pub recv_bytes: BTreeMap<Channel, u64>,
    /// Datagrams dropped, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
}

/// A discovery beacon: "this node of this cluster gossips here".
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Beacon {
    peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Foca(Timer<Peer>),
    Beacon,
    Seeds,
    MetaSync,
    DownHints,
    LeaveSwim,
}

/// Collects what foca asks for during one call.
#[derive(Default)]
struct Collect {
    sends: Vec<(Peer, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Peer>)>,
    notes: Vec<OwnedNotification<Peer>>,
}

impl Runtime<Peer> for Collect {
    fn notify(&mut self, notification: Notification<'_, Peer>) {
        self.notes.push(notification.to_owned());
    }
    fn send_to(&mut self, to: Peer, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: Timer<Peer>, after: Duration) {
        self.timers.push((after, event));
    }
}

#[derive(Debug, Clone, Copy)]
struct Known {
    generation: u64,
    state: MemberState,
}

/// Most announces to strangers (see `introduce_some`) per probe period.
const INTRODUCTIONS_PER_PROBE: usize = 4;

/// The vote tally is checked against a full recount once per this many probe periods.
const RECOUNT_EVERY_PROBES: u64 = 20;

/// Most members asked directly for their missing record in one metadata sync round.
const MAX_DIRECT_PULLS: usize = 8;

/// A deliberate defect, injected by simulation tests to show that a checker catches the broken
/// guarantee (a checker that never fails proves nothing). Never used by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Drop every metadata record received: names, datacenters and votes never converge.
    DeafToMetadata,
    /// Drop every datagram from an address this node holds down: partitions never merge.
    IgnoreDownPeers,
    /// One indirect probe and a 1 ms suspicion: ordinary loss makes members fail.
    HastyFailureDetector,
    /// Never emit `MemberFailed`: the event stream stops matching the member list.
    SilentFailures,
}

/// The membership core of one node.
pub struct Membership {
    foca: SwimCore,
    rt: Collect,
    identity: Peer,
    cfg: MembershipConfig,
    timings: Timings,
    sealer: Sealer,
    rng: Xoshiro256PlusPlus,
    now: Duration,
    timers: BTreeMap<(Duration, u64), Due>,
    seq: u64,
    meta: SharedMeta,
    broadcasts: MetaBroadcasts,
    own_meta: NodeMeta,
    known: BTreeMap<NodeId, Known>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    store_inbound: VecDeque<(SocketAddr, Vec<u8>)>,
    stats: Stats,
    quorum: QuorumStatus,
    beacon_backoff: Duration,
    seed_backoff: Duration,
    announced_at: BTreeMap<SocketAddr, Duration>,
    hinted_at: BTreeMap<SocketAddr, Duration>,
    leaving: bool,
    left_swim: bool,
    last_failure: Option<Duration>,
    ignore_down_peers: bool,
    silent_failures: bool,
    suspect_since: BTreeMap<Peer, (u16, Duration)>,
    /// Reachable votes, recomputed only when members or metadata changed (it costs O(n)).
    reach: Reach,
    probes: u64,
    /// Nodes whose metadata arrived but whom SWIM has not shown us, waiting for an announce.
    strangers: BTreeSet<NodeId>,
    /// Start of the current introduction window and announces sent in it.
    introduced: (Duration, usize),
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Starts a node as `identity` at core time `now`; every random choice derives from `seed`.
    pub fn new(cfg: MembershipConfig, identity: Peer, seed: u64, now: Duration) -> Self {
        let timings = cfg.timings();
        let sealer = Sealer::new(&cfg.cluster, &cfg.key);
        let meta = SharedMeta::default();
        let broadcasts = MetaBroadcasts::new(meta.clone());
        let foca_cfg = timings.foca_config(cfg.expected_nodes, MAX_PAYLOAD);
        let foca = Foca::with_custom_broadcast(
            identity,
            foca_cfg,
            Xoshiro256PlusPlus::seed_from_u64(seed),
            PostcardCodec,
            broadcasts.clone(),
        );
        let own_meta = NodeMeta {
            id: identity.id,
            generation: identity.generation,
            version: 0,
            name: cfg.me.name.clone(),
            datacenter: cfg.me.datacenter.clone(),
            gossip_addr: identity.addr,
            api_addr: cfg.me.api_addr,
            tags: cfg.me.tags.clone(),
            votes: cfg.me.votes,
            leaving: false,
        };
        let has = cfg.quorum.is_met(cfg.me.votes);
        let quorum = QuorumStatus {
            has_quorum: has,
            reachable_votes: cfg.me.votes,
            required_votes: cfg.quorum.required(),
            total_votes: cfg.quorum.total(),
            since: now,
        };
        let mut core = Membership {
            foca,
            rt: Collect::default(),
            identity,
            beacon_backoff: timings.beacon_fast,
            seed_backoff: timings.seed_retry,
            timings,
            sealer,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6368_6f72_7573_0001),
            now,
            timers: BTreeMap::new(),
            seq: 0,
            meta,
            broadcasts,
            own_meta,
            known: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            store_inbound: VecDeque::new(),
            stats: Stats::default(),
            quorum,
            announced_at: BTreeMap::new(),
            hinted_at: BTreeMap::new(),
            leaving: false,
            left_swim: false,
            last_failure: None,
            ignore_down_peers: false,
            silent_failures: false,
            suspect_since: BTreeMap::new(),
            reach: Reach::default(),
            probes: 0,
            strangers: BTreeSet::new(),
            introduced: (Duration::ZERO, 0),
            cfg,
        };
        core.publish_own_meta();
        if core.cfg.beacons {
            core.schedule(Duration::ZERO, Due::Beacon);
        }
        core.schedule(Duration::ZERO, Due::Seeds);
        let sync = core.timings.meta_sync_every;
        core.schedule(sync, Due::MetaSync);
        let hints = core.timings.announce_down_every;
        core.schedule(hints, Due::DownHints);
        core.after_input();
        core
    }

    /// Breaks this core on purpose (simulation tests only; see [`Fault`]).
    pub fn inject_fault(&mut self, fault: Fault) {
        match fault {
            Fault::DeafToMetadata => self.broadcasts.set_deaf(),
            Fault::IgnoreDownPeers => self.ignore_down_peers = true,
            Fault::SilentFailures => self.silent_failures = true,
            Fault::HastyFailureDetector => {
                let mut c = self
                    .timings
                    .foca_config(self.cfg.expected_nodes, MAX_PAYLOAD);
                c.num_indirect_probes = std::num::NonZeroUsize::MIN;
                c.suspect_to_down_after = Duration::from_millis(1);
                self.foca
                    .set_config(c)
                    .expect("only suspicion settings change");
            }
        }
    }

    /// This node's current identity (its generation can grow while running).
    pub fn identity(&self) -> Peer {
        self.identity
    }

    /// The configuration the core runs with.
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// The current quorum view.
    pub fn quorum(&self) -> QuorumStatus {
        self.quorum
    }

    /// Packet counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True once [`Membership::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The core time of the last input.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The earliest time at which [`Membership::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front();
        if self.silent_failures && matches!(ev, Some(Event::MemberFailed { .. })) {
            return self.poll_event();
        }
        ev
    }

    /// The next authenticated store-channel payload and its sender's address.
    pub fn poll_store_inbound(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.store_inbound.pop_front()
    }

    /// Seals `payload` on the store channel for `to`.
    pub fn send_store(&mut self, to: SocketAddr, payload: &[u8]) {
        self.push_transmit(Destination::Unicast(to), Channel::Store, payload);
    }

    /// Replaces the seed addresses (the driver re-resolves DNS names).
    pub fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        self.cfg.seeds = seeds;
    }

    /// Announces this node to `addr` now (a seed or an operator's `join`).
    pub fn announce_to(&mut self, now: Duration, addr: SocketAddr) {
        self.advance(now);
        self.announce(addr);
        self.after_input();
    }

    /// Feeds a datagram that arrived from `from` on the gossip or the beacon socket.
    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddr, datagram: &[u8]) {
        self.advance(now);
        if self.ignore_down_peers && self.holds_down(from) {
            return;
        }
        match self.sealer.open(datagram) {
            Err(reason) => self.drop_packet(reason, from),
            Ok(opened) => {
                *self.stats.recv_packets.entry(opened.channel).or_default() += 1;
                *self.stats.recv_bytes.entry(opened.channel).or_default() += datagram.len() as u64;
                match opened.channel {
                    Channel::Swim => self.on_swim(from, &opened.payload),
                    Channel::Beacon => self.on_beacon(from, &opened.payload),
                    Channel::Meta => self.on_meta(from, &opened.payload),
                    Channel::Store => self.store_inbound.push_back((from, opened.payload)),
                }
            }
        }
        self.after_input();
    }

    /// Fires every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let due = entry.remove();
            match due {
                Due::Foca(timer) => {
                    let probe = matches!(timer, Timer::ProbeRandomMember(_));
                    if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                        debug!(error = %e, "foca timer");
                    }
                    self.drain_foca();
                    if probe {
                        if !self.left_swim {
                            let suspects = self.suspects();
                            self.hint_suspects(&suspects);
                            self.expire_stale_suspects(suspects);
                        }
                        self.introduce_some();
                        self.probes += 1;
                        if self.probes.is_multiple_of(RECOUNT_EVERY_PROBES) {
                            self.recount_reach();
                        }
                    }
                }
                Due::Beacon => self.on_beacon_timer(),
                Due::Seeds => self.on_seed_timer(),
                Due::MetaSync => self.on_meta_sync_timer(),
                Due::DownHints => {
                    if !self.leaving {
                        self.hint_down_members(3);
                        let every = self.jitter(self.timings.announce_down_every);
                        self.schedule(every, Due::DownHints);
                    }
                }
                Due::LeaveSwim => {
                    self.left_swim = true;
                    if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
                        warn!(error = %e, "leave_cluster");
                    }
                    self.drain_foca();
                }
            }
        }
        self.after_input();
    }

    /// Announces a graceful leave: peers will report this node `left`, not `failed`.
    ///
    /// The leave has two phases so that peers learn "leaving" before they learn "down": first the
    /// leaving record is pushed to every member (and broadcast), then, one probe round trip later,
    /// foca announces the leave. The driver keeps feeding the core until [`Membership::has_left`]
    /// and a moment more (a probe period) so the leave spreads, then stops.
    pub fn leave(&mut self, now: Duration) {
        self.advance(now);
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.own_meta.leaving = true;
        self.own_meta.version += 1;
        // Push the leaving record to every member directly before foca announces the leave, so
        // that the down update never arrives at a peer that cannot tell it apart from a failure.
        let record = MetaMsg::Records {
            records: vec![self.own_meta.clone()],
            want: vec![],
        };
        let payload = postcard::to_stdvec(&record).expect("encode meta");
        let targets: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in targets {
            self.push_transmit(Destination::Unicast(addr), Channel::Meta, &payload);
        }
        self.publish_own_meta();
        let wait = self.timings.probe_rtt;
        self.schedule(wait, Due::LeaveSwim);
        self.after_input();
    }

    /// True when every incarnation this node knows at `addr` is down (the `IgnoreDownPeers` fault).
    fn holds_down(&self, addr: SocketAddr) -> bool {
        let mut seen = false;
        for m in self.foca.iter_membership_state() {
            if m.id().addr == addr {
                if m.state() != foca::State::Down {
                    return false;
                }
                seen = true;
            }
        }
        seen
    }

    /// True once the leave has been announced to the SWIM layer.
    pub fn has_left(&self) -> bool {
        self.left_swim
    }

    /// Every member this node knows, itself included, ordered by node id.
    pub fn members(&self) -> Vec<MemberView> {
        let table = self.meta.lock().expect("meta lock poisoned");
        let mut newest: BTreeMap<NodeId, (Peer, foca::State)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let p = *m.id();
            if p.id == self.identity.id {
                continue;
            }
            match newest.get(&p.id) {
                Some((q, _)) if q.generation >= p.generation => {}
                _ => {
                    newest.insert(p.id, (p, m.state()));
                }
            }
        }
        let mut out = Vec::with_capacity(newest.len() + 1);
        out.push(self.view_of(
            self.identity,
            MemberState::Alive,
            Some(&self.own_meta),
            true,
        ));
        for (id, (peer, state)) in newest {
            let meta = table.get(id);
            let state = match state {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down => {
                    if meta.is_some_and(|m| m.leaving && m.generation == peer.generation) {
                        MemberState::Left
                    } else {
                        MemberState::Failed
                    }
                }
            };
            out.push(self.view_of(peer, state, meta, false));
        }
        out.sort_by_key(|m| m.id);
        out
    }

    /// How many members (itself included) are in each state.
    pub fn member_counts(&self) -> BTreeMap<MemberState, usize> {
        let mut counts: BTreeMap<MemberState, usize> =
            MemberState::ALL.iter().map(|s| (*s, 0)).collect();
        for m in self.members() {
            *counts.entry(m.state).or_default() += 1;
        }
        counts
    }

    /// Number of nodes whose metadata this node holds (itself included).
    pub fn known_metadata(&self) -> usize {
        self.meta.lock().expect("meta lock poisoned").len()
    }

    fn view_of(
        &self,
        peer: Peer,
        state: MemberState,
        meta: Option<&NodeMeta>,
        is_self: bool,
    ) -> MemberView {
        // Only metadata of the same incarnation or newer describes this peer.
        let meta = meta.filter(|m| m.generation >= peer.generation || is_self);
        MemberView {
            id: peer.id,
            name: meta.map(|m| m.name.clone()).unwrap_or_default(),
            state,
            datacenter: meta.map(|m| m.datacenter.clone()).unwrap_or_default(),
            gossip_addr: peer.addr,
            api_addr: meta.and_then(|m| m.api_addr),
            generation: peer.generation,
            tags: meta.map(|m| m.tags.clone()).unwrap_or_default(),
            votes: meta.map_or(1, |m| m.votes),
            is_self,
        }
    }

    fn advance(&mut self, now: Duration) {
        // A driver whose clock stepped back must not make timers fire early or late: time only
        // moves forward inside the core.
        if now > self.now {
            self.now = now;
        }
    }

    /// `d` scaled by a random factor in [0.75, 1.25): nodes started together would otherwise keep
    /// their periodic timers in phase, and a heal would wait for the next common tick.
    fn jitter(&mut self, d: Duration) -> Duration {
        d * self.rng.random_range(750u32..1250) / 1000
    }

    fn schedule(&mut self, after: Duration, due: Due) {
        self.seq += 1;
        self.timers.insert((self.now + after, self.seq), due);
    }

    fn drop_packet(&mut self, reason: DropReason, from: SocketAddr) {
        debug!(%from, %reason, "dropped datagram");
        *self.stats.dropped.entry(reason).or_default() += 1;
    }

    fn push_transmit(&mut self, to: Destination, channel: Channel, payload: &[u8]) {
        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        let bytes = self.sealer.seal(channel, nonce, payload);
        *self.stats.sent_packets.entry(channel).or_default() += 1;
        *self.stats.sent_bytes.entry(channel).or_default() += bytes.len() as u64;
        self.transmits.push_back(Transmit { to, channel, bytes });
    }

    fn publish_own_meta(&mut self) {
        let encoded = self.own_meta.encode();
        if encoded.len() > MAX_META_BYTES {
            // The agent validates tags against this limit at start; reaching here is a bug there.
            warn!(bytes = encoded.len(), "own metadata too large to broadcast");
        }
        match self.foca.add_broadcast(&encoded) {
            Ok(_) => {}
            Err(e) => warn!(error = %e, "add_broadcast"),
        }
        if self.foca.num_members() > 0
            && let Err(e) = self.foca.broadcast(&mut self.rt)
        {
            debug!(error = %e, "broadcast");
        }
        self.drain_foca();
    }

    fn on_swim(&mut self, from: SocketAddr, payload: &[u8]) {
        if self.left_swim {
            // Once gone, stay gone: answering a peer's "you are down" would make foca renew the
            // identity and rejoin. Timers still run, so the leave keeps spreading by gossip.
            return;
        }
        match self.foca.handle_data(payload, &mut self.rt) {
            Ok(()) => {}
            Err(foca::Error::MalformedPacket) | Err(foca::Error::Decode(_)) => {
                self.drop_packet(DropReason::Malformed, from);
            }
            Err(e) => debug!(%from, error = %e, "foca rejected data"),
        }
        self.drain_foca();
    }

    fn on_beacon(&mut self, from: SocketAddr, payload: &[u8]) {
        let Ok(beacon) = postcard::from_bytes::<Beacon>(payload) else {
            self.drop_packet(DropReason::Malformed, from);
            return;
        };
        let peer = beacon.peer;
        if peer.id == self.identity.id || peer.addr == self.identity.addr {
            self.drop_packet(DropReason::FromSelf, from);
            return;
        }
        if self.leaving {
            return;
        }
        if self.held_down(peer) {
            self.send_down_hint(peer);
        }
        let known_alive = self
            .foca
            .iter_members()
            .any(|m| m.id().addr == peer.addr && m.id().generation >= peer.generation);
        if !known_alive {
            // Rate-limited per address: one announce per probe period is plenty for a beacon
            // storm after a heal, and answers within one round trip.
            let last = self.announced_at.get(&peer.addr).copied();
            if last.is_none_or(|t| self.now >= t + self.timings.probe_period) {
                debug!(peer = ?peer, "beacon from a node we do not see: announcing");
                self.announced_at.insert(peer.addr, self.now);
                if let Err(e) = self.foca.announce(peer, &mut self.rt) {
                    debug!(error = %e, "announce");
                }
                self.drain_foca();
            }
        }
    }

    /// Announces this node to nodes whose metadata arrived but whom SWIM never showed us.
    ///
    /// SWIM spreads a join by piggybacked updates with a bounded number of transmissions; when
    /// hundreds join at once, an update can run out before it reaches everyone, and the two nodes
    /// only meet when one probes the other, a full probe cycle later (netsim: 300 nodes not fully
    /// joined after 60 s). Metadata converges by a pull as well, so its arrival is a reliable
    /// sign of a member we miss; one announce makes both sides learn each other.
    fn introduce_to(&mut self, ids: Vec<NodeId>) {
        self.strangers.extend(ids);
        self.introduce_some();
    }

    /// Announces to at most [`INTRODUCTIONS_PER_PROBE`] queued strangers per probe period; the
    /// rest wait (most are met through gossip meanwhile). Without the bound, a thousand nodes
    /// starting at once would send each other a million announces.
    fn introduce_some(&mut self) {
        if self.leaving || self.strangers.is_empty() {
            return;
        }
        let window = self.timings.probe_period;
        if self.now >= self.introduced.0 + window {
            self.introduced = (self.now, 0);
        }
        let mut peers = Vec::new();
        {
            let table = self.meta.lock().expect("meta lock poisoned");
            while self.introduced.1 < INTRODUCTIONS_PER_PROBE {
                let Some(id) = self.strangers.pop_first() else {
                    break;
                };
                if id == self.identity.id || self.known.contains_key(&id) {
                    continue;
                }
                if let Some(m) = table.get(id).filter(|m| !m.leaving) {
                    peers.push(Peer {
                        addr: m.gossip_addr,
                        id: m.id,
                        generation: m.generation,
                    });
                    self.introduced.1 += 1;
                }
            }
        }
        for peer in peers {
            self.announced_at.insert(peer.addr, self.now);
            if let Err(e) = self.foca.announce(peer, &mut self.rt) {
                debug!(error = %e, "announce");
            }
        }
        self.drain_foca();
    }

    /// Tells every member this node holds as suspect, once per probe period, that it is suspected.
    fn hint_suspects(&mut self, suspects: &BTreeMap<Peer, u16>) {
        for (&peer, &incarnation) in suspects {
            let msg = MetaMsg::Suspected {
                peer,
                incarnation,
                by: self.identity,
            };
            let payload = postcard::to_stdvec(&msg).expect("encode");
            self.push_transmit(Destination::Unicast(peer.addr), Channel::Meta, &payload);
        }
    }

    /// Members this node holds suspect, with the incarnation suspected (one pass over foca's list
    /// serves both the hints and the expiry each probe period).
    fn suspects(&self) -> BTreeMap<Peer, u16> {
        self.foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| (*m.id(), m.incarnation()))
            .collect()
    }

    /// Declares down a member that stayed suspect, at one incarnation, for three suspicion
    /// timeouts. foca starts a suspicion timer only on the node whose probe failed; the others
    /// wait for that node's down update. Netsim showed that update can miss a node in a large
    /// cluster (1 of 99 nodes held a crashed member suspect for 38 s), so every node keeps its
    /// own, longer, timer, as SWIM describes. A suspect that refuted has a higher incarnation, so
    /// it is never declared down by this.
    fn expire_stale_suspects(&mut self, suspects: BTreeMap<Peer, u16>) {
        let now = self.now;
        let limit = self.timings.suspect_to_down * 3;
        self.suspect_since
            .retain(|p, (inc, _)| suspects.get(p) == Some(inc));
        let mut expired = Vec::new();
        for (peer, inc) in suspects {
            let (_, since) = *self.suspect_since.entry(peer).or_insert((inc, now));
            if now.saturating_sub(since) >= limit {
                expired.push(foca::Member::new(peer, inc, foca::State::Down));
            }
        }
        if !expired.is_empty() {
            for m in &expired {
                self.suspect_since.remove(m.id());
                debug!(peer = ?m.id(), "suspect for three suspicion timeouts: declaring it down");
            }
            if let Err(e) = self
                .foca
                .apply_many(expired.into_iter(), true, &mut self.rt)
            {
                debug!(error = %e, "declaring stale suspects down");
            }
            self.drain_foca();
        }
    }

    fn on_meta(&mut self, from: SocketAddr, payload: &[u8]) {
        let Ok(msg) = postcard::from_bytes::<MetaMsg>(payload) else {
            self.drop_packet(DropReason::Malformed, from);
            return;
        };
        match msg {
            MetaMsg::Summary(hash) => {
                if hash != self.meta_hash() {
                    let digest = self.meta.lock().expect("meta lock poisoned").digest();
                    self.send_digest(from, digest);
                }
            }
            MetaMsg::Suspected {
                peer,
                incarnation,
                by,
            } => {
                if peer == self.identity && !self.left_swim {
                    let update = foca::Member::new(peer, incarnation, foca::State::Suspect);
                    if let Err(e) =
                        self.foca
                            .apply_many(std::iter::once(update), true, &mut self.rt)
                    {
                        debug!(error = %e, "refuting suspicion");
                    }
                    // Any SWIM message carries our new incarnation in its header: an announce to
                    // the suspecter refutes there at once.
                    if by.addr != self.identity.addr
                        && let Err(e) = self.foca.announce(by, &mut self.rt)
                    {
                        debug!(error = %e, "answering a suspicion");
                    }
                    // Spread the refutation now rather than at the next gossip tick.
                    if let Err(e) = self.foca.gossip(&mut self.rt) {
                        debug!(error = %e, "gossip refutation");
                    }
                    self.drain_foca();
                }
            }
            MetaMsg::Down { peer, by } => {
                if peer == self.identity && !self.left_swim {
                    info!("peers hold this node as down: rejoining with a new generation");
                    let update = foca::Member::new(peer, 0, foca::State::Down);
                    if let Err(e) =
                        self.foca
                            .apply_many(std::iter::once(update), true, &mut self.rt)
                    {
                        debug!(error = %e, "rejoin after down hint");
                    }
                    self.drain_foca();
                    // Introduce the new identity to the node that told us, which is across
                    // whatever cut just healed; gossip carries it to the rest. If we hold that
                    // node down too, tell it, so both sides renew within one round trip.
                    if self.held_down(by) {
                        self.send_down_hint(by);
                    }
                    self.announce(by.addr);
                }
            }
            MetaMsg::Digest(theirs) => {
                let (newer_here, newer_there) = self
                    .meta
                    .lock()
                    .expect("meta lock poisoned")
                    .compare(&theirs);
                self.send_records(from, newer_here, newer_there);
            }
            MetaMsg::Records { records, want } => {
                for r in records {
                    if r.id == self.identity.id {
                        self.refute_own_record(&r);
                        continue;
                    }
                    self.broadcasts.accept(r);
                }
                if !want.is_empty() {
                    let table = self.meta.lock().expect("meta lock poisoned");
                    let send: Vec<NodeMeta> = want
                        .iter()
                        .filter_map(|w| {
                            table
                                .get(w.id)
                                .filter(|m| m.stamp() >= (w.generation, w.version))
                        })
                        .cloned()
                        .collect();
                    drop(table);
                    self.send_records(from, send, Vec::new());
                }
            }
        }
    }

    /// Someone holds a record of this node at least as new as ours (we lost state, or a stale
    /// instance wrote it): jump past it so our own record wins everywhere.
    fn refute_own_record(&mut self, r: &NodeMeta) {
        if r.stamp() >= self.own_meta.stamp() && *r != self.own_meta {
            self.own_meta.generation = self.own_meta.generation.max(r.generation);
            self.own_meta.version = r.version + 1;
            self.publish_own_meta();
        }
    }

    fn meta_hash(&self) -> u64 {
        let digest = self.meta.lock().expect("meta lock poisoned").digest();
        let mut bytes = Vec::with_capacity(digest.len() * 24);
        for e in digest {
            bytes.extend_from_slice(&e.id.0.to_be_bytes());
            bytes.extend_from_slice(&e.generation.to_be_bytes());
            bytes.extend_from_slice(&e.version.to_be_bytes());
        }
        fnv1a64(&[&bytes])
    }

    fn send_digest(&mut self, to: SocketAddr, digest: Vec<DigestEntry>) {
        // A digest too large for one datagram goes in several; each is answered on its own, and
        // the receiver only compares the entries it is given, so nothing is lost by splitting.
        const ENTRY_MAX: usize = 8 + 10 + 10;
        let per_packet = (MAX_PAYLOAD - 16) / ENTRY_MAX;
        for chunk in digest.chunks(per_packet.max(1)) {
            let payload = postcard::to_stdvec(&MetaMsg::Digest(chunk.to_vec())).expect("encode");
            self.push_transmit(Destination::Unicast(to), Channel::Meta, &payload);
        }
    }

    fn send_records(&mut self, to: SocketAddr, records: Vec<NodeMeta>, mut want: Vec<DigestEntry>) {
        // Greedy packing by encoded size; a record never exceeds MAX_META_BYTES so one always fits.
        let mut batch: Vec<NodeMeta> = Vec::new();
        let mut size = 16 + want.len() * 28;
        let mut out: Vec<MetaMsg> = Vec::new();
        for r in records {
            let len = r.encode().len() + 2;
            if !batch.is_empty() && size + len > MAX_PAYLOAD {
                out.push(MetaMsg::Records {
                    records: std::mem::take(&mut batch),
                    want: std::mem::take(&mut want),
                });
                size = 16;
            }
            size += len;
            batch.push(r);
        }
        if !batch.is_empty() || !want.is_empty() {
            out.push(MetaMsg::Records {
                records: batch,
                want,
            });
        }
        for msg in out {
            let payload = postcard::to_stdvec(&msg).expect("encode");
            self.push_transmit(Destination::Unicast(to), Channel::Meta, &payload);
        }
    }

    fn on_beacon_timer(&mut self) {
        if self.leaving || !self.cfg.beacons {
            return;
        }
        let payload = postcard::to_stdvec(&Beacon {
            peer: self.identity,
        })
        .expect("encode");
        self.push_transmit(Destination::Beacon, Channel::Beacon, &payload);
        let next = if self.foca.num_members() == 0 {
            let b = self.beacon_backoff;
            self.beacon_backoff = (b * 2).min(self.timings.beacon_every);
            b
        } else if self.last_failure.is_some_and(|t| self.now < t + HEAL_WATCH) {
            self.jitter(self.timings.beacon_after_failure)
        } else {
            self.jitter(self.timings.beacon_every)
        };
        self.schedule(next, Due::Beacon);
    }

    /// True when foca holds exactly this identity as down.
    fn held_down(&self, peer: Peer) -> bool {
        self.foca
            .iter_membership_state()
            .any(|m| *m.id() == peer && m.state() == foca::State::Down)
    }

    fn send_down_hint(&mut self, peer: Peer) {
        let last = self.hinted_at.get(&peer.addr).copied();
        if last.is_some_and(|t| self.now < t + self.timings.probe_period) {
            return;
        }
        self.hinted_at.insert(peer.addr, self.now);
        let payload = postcard::to_stdvec(&MetaMsg::Down {
            peer,
            by: self.identity,
        })
        .expect("encode");
        self.push_transmit(Destination::Unicast(peer.addr), Channel::Meta, &payload);
    }

    /// A few members held down (not left) are told so, so that a healed partition merges even
    /// without multicast: the other side renews its identity and announces itself again.
    fn hint_down_members(&mut self, max: usize) {
        let table = self.meta.lock().expect("meta lock poisoned");
        let mut down: Vec<Peer> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| *m.id())
            .filter(|p| {
                !table
                    .get(p.id)
                    .is_some_and(|m| m.leaving && m.generation == p.generation)
            })
            .collect();
        drop(table);
        for _ in 0..max {
            if down.is_empty() {
                break;
            }
            let i = self.rng.random_range(0..down.len());
            let peer = down.swap_remove(i);
            self.send_down_hint(peer);
        }
    }

    fn on_seed_timer(&mut self) {
        if self.leaving {
            return;
        }
        let seeds = self.cfg.seeds.clone();
        for seed in seeds {
            if seed == self.identity.addr {
                continue;
            }
            let member = self.foca.iter_members().any(|m| m.id().addr == seed);
            if !member {
                self.announce(seed);
            }
        }
        let next = if self.foca.num_members() > 0 {
            self.timings.seed_every
        } else {
            let b = self.seed_backoff;
            self.seed_backoff = (b * 2).min(self.timings.seed_every);
            b
        };
        self.schedule(next, Due::Seeds);
    }

    fn on_meta_sync_timer(&mut self) {
        if self.leaving {
            return;
        }
        let members: Vec<Peer> = self.foca.iter_members().map(|m| *m.id()).collect();
        if !members.is_empty() {
            let target = members[self.rng.random_range(0..members.len())].addr;
            let payload = postcard::to_stdvec(&MetaMsg::Summary(self.meta_hash())).expect("encode");
            self.push_transmit(Destination::Unicast(target), Channel::Meta, &payload);
        }
        // Members whose record of their current generation never arrived: ask each of them
        // directly (two datagrams instead of the summary exchange's four, which matters under
        // heavy loss), and come back sooner until every record is here.
        let missing: Vec<Peer> = {
            let table = self.meta.lock().expect("meta lock poisoned");
            members
                .into_iter()
                .filter(|p| table.get(p.id).is_none_or(|m| m.generation < p.generation))
                .take(MAX_DIRECT_PULLS)
                .collect()
        };
        for p in &missing {
            let want = vec![DigestEntry {
                id: p.id,
                generation: p.generation,
                version: 0,
            }];
            self.send_records(p.addr, Vec::new(), want);
        }
        let mut every = self.jitter(self.timings.meta_sync_every);
        if !missing.is_empty() {
            every /= 5;
        }
        self.schedule(every, Due::MetaSync);
    }

    fn announce(&mut self, addr: SocketAddr) {
        if addr == self.identity.addr {
            return;
        }
        if let Err(e) = self.foca.announce(Peer::unknown(addr), &mut self.rt) {
            debug!(error = %e, %addr, "announce");
        }
        self.drain_foca();
    }

    /// Moves what foca produced into our queues and reacts to its notifications.
    fn drain_foca(&mut self) {
        let sends = std::mem::take(&mut self.rt.sends);
        for (to, data) in sends {
            self.push_transmit(Destination::Unicast(to.addr), Channel::Swim, &data);
        }
        let timers = std::mem::take(&mut self.rt.timers);
        for (after, timer) in timers {
            self.schedule(after, Due::Foca(timer));
        }
        let notes = std::mem::take(&mut self.rt.notes);
        for note in notes {
            self.on_notification(note);
        }
        let current = *self.foca.identity();
        if current != self.identity {
            self.on_new_identity(current);
        }
    }

    fn member_ref(&self, p: Peer) -> MemberRef {
        let name = self
            .meta
            .lock()
            .expect("meta lock poisoned")
            .get(p.id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        MemberRef {
            id: p.id,
            name,
            addr: p.addr,
            generation: p.generation,
        }
    }

    fn on_notification(&mut self, note: OwnedNotification<Peer>) {
        match &note {
            OwnedNotification::MemberUp(p) => {
                let votes = self.votes_of(p.id);
                self.reach.up(*p, votes);
            }
            OwnedNotification::MemberDown(p) => self.reach.down(*p),
            OwnedNotification::Rename(old, new) => {
                self.reach.down(*old);
                let votes = self.votes_of(new.id);
                self.reach.up(*new, votes);
            }
            _ => {}
        }
        match note {
            OwnedNotification::MemberUp(p) => {
                let member = self.member_ref(p);
                let prev = self.known.insert(
                    p.id,
                    Known {
                        generation: p.generation,
                        state: MemberState::Alive,
                    },
                );
                let event = match prev {
                    None => Some(Event::MemberJoined { member }),
                    Some(k) if k.state == MemberState::Left => Some(Event::MemberJoined { member }),
                    Some(k) if k.state == MemberState::Failed => {
                        Some(Event::MemberRecovered { member })
                    }
                    Some(k) if p.generation > k.generation => {
                        Some(Event::MemberRestarted { member })
                    }
                    Some(_) => None,
                };
                let back = matches!(event, Some(Event::MemberRecovered { .. }));
                if let Some(ev) = event {
                    info!(event = ?ev, "membership");
                    self.events.push_back(ev);
                }
                if back {
                    // A failed member is back: a partition probably healed. Tell every member we
                    // hold down at once instead of waiting for the periodic hints.
                    self.hint_down_members(usize::MAX);
                }
                // Ask for its record right away if we lack it, rather than at the next sync. Only
                // that: a whole digest per new member would make a join cost O(n^2) per node; it
                // asks for ours the same way, and the periodic summary exchange repairs the rest.
                let have = self
                    .meta
                    .lock()
                    .expect("meta lock poisoned")
                    .get(p.id)
                    .is_some_and(|m| m.generation >= p.generation);
                let want = if have {
                    vec![]
                } else {
                    vec![DigestEntry {
                        id: p.id,
                        generation: p.generation,
                        version: 0,
                    }]
                };
                if !want.is_empty() {
                    self.send_records(p.addr, Vec::new(), want);
                }
            }
            OwnedNotification::MemberDown(p) => {
                if self
                    .known
                    .get(&p.id)
                    .is_some_and(|k| k.generation > p.generation)
                {
                    return; // an old incarnation of a node that already came back
                }
                let left = self
                    .meta
                    .lock()
                    .expect("meta lock poisoned")
                    .get(p.id)
                    .is_some_and(|m| m.leaving && m.generation == p.generation);
                let state = if left {
                    MemberState::Left
                } else {
                    MemberState::Failed
                };
                self.known.insert(
                    p.id,
                    Known {
                        generation: p.generation,
                        state,
                    },
                );
                let member = self.member_ref(p);
                let ev = if left {
                    Event::MemberLeft { member }
                } else {
                    Event::MemberFailed { member }
                };
                if !left {
                    self.last_failure = Some(self.now);
                }
                info!(event = ?ev, "membership");
                self.events.push_back(ev);
            }
            OwnedNotification::Rename(old, new) => {
                if old.id == new.id {
                    if let Some(k) = self.known.get_mut(&new.id)
                        && new.generation > k.generation
                    {
                        let was_alive = k.state == MemberState::Alive;
                        k.generation = new.generation;
                        if was_alive {
                            let member = self.member_ref(new);
                            let ev = Event::MemberRestarted { member };
                            info!(event = ?ev, "membership");
                            self.events.push_back(ev);
                        }
                    }
                } else {
                    warn!(old = ?old, new = ?new, "two nodes claim one gossip address");
                }
            }
            OwnedNotification::Idle => {
                info!("no reachable members: looking for the cluster");
                self.beacon_backoff = self.timings.beacon_fast;
                self.seed_backoff = self.timings.seed_retry;
                if !self.leaving {
                    self.reschedule(Due::Seeds, Duration::ZERO);
                    if self.cfg.beacons {
                        self.reschedule(Due::Beacon, Duration::ZERO);
                    }
                }
            }
            OwnedNotification::Active => debug!("connected to the cluster"),
            OwnedNotification::Rejoin(new) => {
                warn!(identity = ?new, "declared down by the cluster: rejoined with a new generation");
            }
            OwnedNotification::Defunct => {
                if !self.left_swim {
                    warn!("foca could not rejoin: identity defunct");
                }
            }
        }
    }

    fn reschedule(&mut self, due: Due, after: Duration) {
        self.timers.retain(|_, d| *d != due);
        self.schedule(after, due);
    }

    fn on_new_identity(&mut self, new: Peer) {
        self.identity = new;
        self.own_meta.generation = new.generation;
        self.own_meta.version = 0;
        self.events.push_back(Event::GenerationChanged {
            generation: new.generation,
        });
        self.publish_own_meta();
    }

    /// Recomputes the quorum view after any input.
    fn after_input(&mut self) {
        // A leaving record that arrives after the down update (reordered or lost and repaired by a
        // digest exchange) turns a reported failure into a leave.
        let fresh = self.broadcasts.take_fresh();
        for id in &fresh {
            let votes = self.votes_of(*id);
            self.reach.set_votes(*id, votes);
        }
        let mut strangers = Vec::new();
        for id in fresh {
            let Some(k) = self.known.get(&id).copied() else {
                strangers.push(id);
                continue;
            };
            if k.state != MemberState::Failed {
                continue;
            }
            let meta = self
                .meta
                .lock()
                .expect("meta lock poisoned")
                .get(id)
                .cloned();
            if let Some(m) = meta
                && m.leaving
                && m.generation == k.generation
            {
                self.known.insert(
                    id,
                    Known {
                        generation: k.generation,
                        state: MemberState::Left,
                    },
                );
                let member = MemberRef {
                    id,
                    name: m.name.clone(),
                    addr: m.gossip_addr,
                    generation: m.generation,
                };
                let ev = Event::MemberLeft { member };
                info!(event = ?ev, "membership: a failure turned out to be a leave");
                self.events.push_back(ev);
            }
        }
        self.introduce_to(strangers);
        let reachable = self.own_meta.votes + self.reach.total();
        let has = self.cfg.quorum.is_met(reachable) && !self.leaving;
        self.quorum.reachable_votes = reachable;
        if has != self.quorum.has_quorum {
            self.quorum.has_quorum = has;
            self.quorum.since = self.now;
            let ev = if has {
                info!(
                    reachable,
                    required = self.quorum.required_votes,
                    "quorum regained"
                );
                Event::QuorumRegained {
                    quorum: self.quorum,
                }
            } else if self.leaving {
                info!("leaving: this node no longer counts towards a quorum");
                Event::QuorumLost {
                    quorum: self.quorum,
                }
            } else {
                warn!(
                    reachable,
                    required = self.quorum.required_votes,
                    "quorum lost"
                );
                Event::QuorumLost {
                    quorum: self.quorum,
                }
            };
            self.events.push_back(ev);
        }
    }

    /// The votes of node `id` by its metadata (1 until its record arrives).
    fn votes_of(&self, id: NodeId) -> u32 {
        let table = self.meta.lock().expect("meta lock poisoned");
        table.get(id).map_or(1, |meta| meta.votes)
    }

    /// Recounts reachable votes from foca's member list and rebuilds the incremental tally if
    /// it drifted (it should not; this is a safety net run every few seconds).
    fn recount_reach(&mut self) {
        let mut members: Vec<(NodeId, u32)> = {
            let table = self.meta.lock().expect("meta lock poisoned");
            self.foca
                .iter_members()
                .map(|m| m.id().id)
                .filter(|id| *id != self.identity.id)
                .map(|id| (id, table.get(id).map_or(1, |meta| meta.votes)))
                .collect()
        };
        members.sort_unstable();
        members.dedup_by_key(|(id, _)| *id);
        let counted: u32 = members.iter().map(|(_, v)| v).sum();
        if counted != self.reach.total() {
            warn!(
                counted,
                tallied = self.reach.total(),
                "reachable votes drifted; recounted"
            );
            let peers: Vec<(Peer, u32)> = {
                let table = self.meta.lock().expect("meta lock poisoned");
                self.foca
                    .iter_members()
                    .map(|m| *m.id())
                    .filter(|p| p.id != self.identity.id)
                    .map(|p| (p, table.get(p.id).map_or(1, |meta| meta.votes)))
                    .collect()
            };
            self.reach.rebuild(peers.into_iter());
        }
    }
}

/// What the packet fuzz target and its corpus replay run on any bytes: the first byte picks a
/// channel, the rest is sealed with the cluster key and fed to a fresh core as a datagram from a
/// peer (twice, to reach code that reacts to a known sender), then the core's timers run. Any
/// panic is a bug: an authenticated peer must not be able to crash a node.
pub fn fuzz_datagram(data: &[u8]) {
    use crate::envelope::Channel;
    let Some((first, payload)) = data.split_first() else {
        return;
    };
    let cfg = MembershipConfig::single("fuzz");
    let sealer = Sealer::new(&cfg.cluster, &cfg.key);
    let me = Peer {
        addr: SocketAddr::from(([10, 0, 0, 1], 7946)),
        id: NodeId(1),
        generation: 1,
    };
    let mut core = Membership::new(cfg, me, 7, Duration::ZERO);
    let channel = Channel::ALL[usize::from(*first) % Channel::ALL.len()];
    let datagram = sealer.seal(channel, [first.wrapping_add(1); 12], payload);
    let from = SocketAddr::from(([10, 0, 0, 2], 7946));
    for step in 1..=2u64 {
        let now = Duration::from_millis(step);
        core.handle_datagram(now, from, &datagram);
        core.handle_datagram(now, from, data);
        core.handle_timeout(now + Duration::from_secs(2));
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
        while core.poll_store_inbound().is_some() {}
        let _ = core.members();
    }
}
