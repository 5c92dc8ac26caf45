//! The face of the membership core: its state, its inputs (`handle_datagram`, `handle_timeout`,
//! `leave`) and its outputs (`poll_transmit`, `poll_event`, `poll_timeout`).
//!
//! The jobs live in their own files: the foca adapter (`swim`), discovery by beacons and seeds
//! (`discovery`), metadata exchange (`meta_sync`), suspicion and down hints (`suspicion`), and
//! the member list, events and quorum view (`report`).
//!
//! It never touches a socket, a clock or a thread. The driver feeds it datagrams and the current
//! time, fires it when [`Membership::poll_timeout`] says, and drains [`Membership::poll_transmit`]
//! and [`Membership::poll_event`] after every call. The agent drives it with tokio and UDP; netsim
//! drives many of them with a virtual clock. Given the same seed and inputs it produces the same
//! outputs: every collection it iterates is ordered and every random choice comes from its seed.

use crate::config::{MembershipConfig, Timings};
use crate::envelope::{Channel, DropReason, MAX_PAYLOAD, Sealer};
use crate::identity::{NodeId, Peer};
use crate::keyring::Keyring;
use crate::meta::{MetaBroadcasts, MetaMsg, NodeMeta, SharedMeta};
use crate::quorum::QuorumStatus;
use crate::reach::Reach;
use crate::replay::{NonceSeq, ReplayGuard};
use crate::report::{Event, MemberState, RECOUNT_EVERY_PROBES};
use crate::swim::Collect;
use foca::{Foca, PostcardCodec, Timer};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

pub(crate) type SwimCore = Foca<Peer, PostcardCodec, Xoshiro256PlusPlus, MetaBroadcasts>;

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

/// Generations of senders whose replay windows a core keeps, at least (more in large clusters:
/// four per expected member).
const MIN_REPLAY_GENERATIONS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    Foca(Timer<Peer>),
    Beacon,
    Seeds,
    MetaSync,
    /// Members whose record is still missing are asked for it directly (see
    /// [`Membership::on_pull_missing_timer`]).
    PullMissing,
    DownHints,
    /// Members held suspect are told so again (see [`Membership::hint_suspects`]).
    SuspectHints,
    LeaveSwim,
    /// A member this node suspected because its process is gone (see
    /// [`Membership::handle_process_gone`]) is declared down unless it refuted.
    SuspectDown(Peer, u16),
}

/// What was last reported of a member: its generation and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) generation: u64,
    pub(crate) state: MemberState,
}

/// How often a misconfigured source (wrong key, other cluster, other protocol version) is warned
/// about.
pub(crate) const MISCONFIG_WARN_EVERY: Duration = Duration::from_secs(60);

/// The membership core of one node.
pub struct Membership {
    pub(crate) foca: SwimCore,
    pub(crate) rt: Collect,
    pub(crate) identity: Peer,
    pub(crate) cfg: MembershipConfig,
    pub(crate) timings: Timings,
    pub(crate) sealer: Arc<Sealer>,
    /// Nonces of the datagrams this node seals.
    pub(crate) nonces: NonceSeq,
    /// Nonces of the datagrams it opened, per sender generation.
    pub(crate) replay: ReplayGuard,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) now: Duration,
    pub(crate) timers: BTreeMap<(Duration, u64), Due>,
    pub(crate) seq: u64,
    pub(crate) meta: SharedMeta,
    pub(crate) broadcasts: MetaBroadcasts,
    pub(crate) own_meta: NodeMeta,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: Stats,
    pub(crate) quorum: QuorumStatus,
    pub(crate) beacon_backoff: Duration,
    /// Since when each seed that is not a member has been announced to without an answer, and
    /// whether that was warned about.
    pub(crate) silent_seeds: BTreeMap<SocketAddr, (Duration, bool)>,
    /// When discovery last heard a beacon from another node (start time until then), and whether
    /// hearing none was warned about.
    pub(crate) beacon_heard: (Duration, bool),
    pub(crate) seed_backoff: Duration,
    pub(crate) announced_at: BTreeMap<SocketAddr, Duration>,
    /// Misconfiguration warnings given, by source and reason: when, and how many drops since.
    pub(crate) misconfig_warned: BTreeMap<(SocketAddr, DropReason), (Duration, u64)>,
    pub(crate) hinted_at: BTreeMap<SocketAddr, Duration>,
    /// While a SWIM datagram is handled: the records of members it made known that we lack,
    /// asked of its sender in one request when it is done (see `swim::on_member_up`).
    pub(crate) pull_batch: Option<Vec<crate::meta::DigestEntry>>,
    /// Members whose records were asked for since the last [`Due::PullMissing`], which is
    /// scheduled whenever this is not empty (see `meta_sync::expect_record`).
    pub(crate) awaited: Vec<Peer>,
    pub(crate) leaving: bool,
    pub(crate) left_swim: bool,
    pub(crate) last_failure: Option<Duration>,
    pub(crate) ignore_down_peers: bool,
    pub(crate) silent_failures: bool,
    pub(crate) suspect_since: BTreeMap<Peer, (u16, Duration)>,
    /// Members suspected because their process was found gone, and when.
    pub(crate) gone_suspected: BTreeMap<Peer, Duration>,
    /// Each member's reported state (last event) and the reachable votes, kept incrementally
    /// (a recount costs O(n)); one map, since it is memory per pair of members.
    pub(crate) reach: Reach,
    pub(crate) probes: u64,
    /// Nodes whose metadata arrived but whom SWIM has not shown us, waiting for an announce.
    pub(crate) strangers: BTreeSet<NodeId>,
    /// Start of the current introduction window and announces sent in it.
    pub(crate) introduced: (Duration, usize),
    /// Nodes whose metadata record arrived or changed, for [`Membership::poll_described`].
    pub(crate) described: VecDeque<NodeId>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// The metadata table. It is shared with foca's broadcast handler, which foca calls while the
    /// core is inside foca, so it sits behind a lock; this is the one place that takes it.
    pub(crate) fn table(&self) -> std::sync::MutexGuard<'_, crate::meta::MetaTable> {
        self.meta.lock().expect("meta lock poisoned")
    }

    /// Starts a node as `identity` at core time `now`; every random choice derives from `seed`.
    pub fn new(cfg: MembershipConfig, identity: Peer, seed: u64, now: Duration) -> Self {
        let timings = cfg.timings();
        let ring = Keyring::new(cfg.key.clone(), cfg.other_keys.iter().cloned());
        let sealer = Arc::new(Sealer::with_ring(&cfg.cluster, ring));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6368_6f72_7573_0001);
        let nonces = NonceSeq::new(rng.next_u64());
        let replay = ReplayGuard::new(MIN_REPLAY_GENERATIONS.max(4 * cfg.expected_nodes as usize));
        let meta = SharedMeta::default();
        let broadcasts = MetaBroadcasts::new(meta.clone());
        let foca_cfg = timings.foca_config(cfg.expected_nodes, MAX_PAYLOAD, cfg.max_queued_updates);
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
        let has = cfg
            .quorum
            .met_by([(cfg.me.datacenter.as_str(), cfg.me.votes)]);
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
            silent_seeds: BTreeMap::new(),
            beacon_heard: (now, false),
            seed_backoff: timings.seed_retry,
            timings,
            sealer,
            nonces,
            replay,
            rng,
            now,
            timers: BTreeMap::new(),
            seq: 0,
            meta,
            broadcasts,
            own_meta,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            quorum,
            announced_at: BTreeMap::new(),
            misconfig_warned: BTreeMap::new(),
            hinted_at: BTreeMap::new(),
            pull_batch: None,
            awaited: Vec::new(),
            leaving: false,
            left_swim: false,
            last_failure: None,
            ignore_down_peers: false,
            silent_failures: false,
            suspect_since: BTreeMap::new(),
            gone_suspected: BTreeMap::new(),
            reach: Reach::default(),
            probes: 0,
            strangers: BTreeSet::new(),
            introduced: (Duration::ZERO, 0),
            described: VecDeque::new(),
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

    /// This node's current identity (its generation can grow while running).
    pub fn identity(&self) -> Peer {
        self.identity
    }

    /// The configuration the core runs with.
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// The sealer with this node's keyring: the stream transport seals and opens with the same
    /// one, so a keyring operation changes both at once.
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// The current quorum view.
    pub fn quorum(&self) -> QuorumStatus {
        self.quorum
    }

    /// Packet counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Member updates dropped from the gossip queue, in all, to keep it within
    /// [`MembershipConfig::max_queued_updates`] (only a join of more members than that at once
    /// gets there).
    pub fn updates_shed(&self) -> u64 {
        self.foca.updates_shed()
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
        crate::queue::pop_front_or_shrink(&mut self.transmits)
    }

    /// The next event to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = crate::queue::pop_front_or_shrink(&mut self.events);
        if self.silent_failures && matches!(ev, Some(Event::MemberFailed { .. })) {
            return self.poll_event();
        }
        ev
    }

    /// Feeds a datagram that arrived from `from` on the gossip or the beacon socket.
    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddr, datagram: &[u8]) {
        self.advance(now);
        if self.ignore_down_peers && self.holds_down(from) {
            return;
        }
        match self.sealer.open(datagram) {
            Err(reason) => self.drop_packet(reason, from),
            // Only after authentication: a forger must not be able to fill the windows.
            Ok(opened) if !self.replay.accept(&opened.nonce) => {
                self.drop_packet(DropReason::Replay, from)
            }
            Ok(opened) => {
                *self.stats.recv_packets.entry(opened.channel).or_default() += 1;
                *self.stats.recv_bytes.entry(opened.channel).or_default() += datagram.len() as u64;
                match opened.channel {
                    Channel::Swim => {
                        self.pull_batch = Some(Vec::new());
                        self.on_swim(from, &opened.payload);
                        let want = self.pull_batch.take().unwrap_or_default();
                        if !want.is_empty() {
                            self.send_records(from, Vec::new(), want);
                        }
                    }
                    Channel::Beacon => self.on_beacon(from, &opened.payload),
                    Channel::Meta => self.on_meta(from, &opened.payload),
                    // Store traffic rides the stream transport; a datagram on its channel is
                    // misdirected (a peer of another build, or a forgery with the right key).
                    Channel::Store => {
                        debug!(%from, "store-channel datagram: the store speaks over TCP; dropped");
                        self.drop_packet(DropReason::BadChannel, from);
                    }
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
                    let indirect = matches!(timer, Timer::SendIndirectProbe { .. });
                    if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                        debug!(error = %e, "foca timer");
                    }
                    if indirect && !self.rt.sends.is_empty() {
                        self.hasten_probe_verdict();
                    }
                    self.drain_foca();
                    if probe {
                        if !self.left_swim {
                            let suspects = self.suspects();
                            self.hint_suspects(&suspects);
                            if !suspects.is_empty()
                                && !self.timers.values().any(|d| *d == Due::SuspectHints)
                            {
                                self.schedule(self.timings.probe_rtt, Due::SuspectHints);
                            }
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
                Due::PullMissing => self.on_pull_missing_timer(),
                Due::DownHints => {
                    if !self.leaving {
                        self.hint_down_members(3);
                        let every = self.jitter(self.timings.announce_down_every);
                        self.schedule(every, Due::DownHints);
                    }
                }
                Due::SuspectDown(peer, incarnation) => {
                    self.declare_down_if_still(peer, incarnation)
                }
                Due::SuspectHints => {
                    // Between probe ticks too: a suspect has one suspicion timeout to refute,
                    // and a hint lost (or sent while it was cut off) would otherwise be
                    // repeated only a probe period later (netsim: 1 of 300 seeds of a healed
                    // one-way cut reported failed with a 1 s period).
                    let suspects = self.suspects();
                    if !suspects.is_empty() && !self.left_swim {
                        self.hint_suspects(&suspects);
                        self.schedule(self.timings.probe_rtt, Due::SuspectHints);
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

    /// Marks failed member `id` as left on every node now, instead of after its 24 hours as
    /// failed (`chorus force-leave`): publishes its last metadata record with `leaving` set and a
    /// newer version, pushed to every member and broadcast, exactly as its own graceful leave
    /// would have. A member that is not failed is refused (it would refute the record at once,
    /// and an operator who meant another node should hear so). If the node comes back, its own
    /// newer record wins. Errors say why, and change nothing.
    pub fn force_leave(&mut self, now: Duration, id: NodeId) -> Result<(), String> {
        self.advance(now);
        let Some(m) = self
            .members()
            .into_iter()
            .find(|m| m.id == id && !m.is_self)
        else {
            return Err(format!("{id} is not a member this node knows"));
        };
        if m.state != MemberState::Failed {
            return Err(format!(
                "{} ({id}) is {}, not failed: only a failed member can be forced to leave \
                 (a running one leaves with `chorus leave` there)",
                m.name,
                m.state.name()
            ));
        }
        let Some(mut record) = self.table().get(id).map(|m| m.to_meta()) else {
            return Err(format!("no metadata record of {id} to mark"));
        };
        record.leaving = true;
        record.version += 1;
        self.broadcasts.accept(record.clone());
        let msg = MetaMsg::Records {
            records: vec![record.clone()],
            want: vec![],
        };
        let payload = postcard::to_stdvec(&msg).expect("encode meta");
        let targets: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in targets {
            self.push_transmit(Destination::Unicast(addr), Channel::Meta, &payload);
        }
        if let Err(e) = self.foca.add_broadcast(&record.encode()) {
            warn!(error = %e, "add_broadcast");
        }
        self.drain_foca();
        self.after_input();
        Ok(())
    }

    /// True once the leave has been announced to the SWIM layer.
    pub fn has_left(&self) -> bool {
        self.left_swim
    }

    pub(crate) fn advance(&mut self, now: Duration) {
        // A driver whose clock stepped back must not make timers fire early or late: time only
        // moves forward inside the core.
        if now > self.now {
            self.now = now;
        }
    }

    /// `d` scaled by a random factor in [0.75, 1.25): nodes started together would otherwise keep
    /// their periodic timers in phase, and a heal would wait for the next common tick.
    pub(crate) fn jitter(&mut self, d: Duration) -> Duration {
        d * self.rng.random_range(750u32..1250) / 1000
    }

    pub(crate) fn schedule(&mut self, after: Duration, due: Due) {
        self.seq += 1;
        self.timers.insert((self.now + after, self.seq), due);
    }

    pub(crate) fn drop_packet(&mut self, reason: DropReason, from: SocketAddr) {
        *self.stats.dropped.entry(reason).or_default() += 1;
        let hint = match reason {
            DropReason::BadAuth => {
                "every node needs the same cluster.key (the output of one `chorus keygen`, copied)"
            }
            DropReason::WrongCluster => "every node needs the same cluster.name",
            DropReason::BadVersion => {
                "that node runs a Chorus that speaks another protocol version"
            }
            _ => {
                debug!(%from, %reason, "dropped datagram");
                return;
            }
        };
        // Loud but not a flood: one WARN per source and reason a minute, with the count since.
        let now = self.now;
        let key = (from, reason);
        match self.misconfig_warned.get_mut(&key) {
            Some((at, since)) if now < *at + MISCONFIG_WARN_EVERY => *since += 1,
            Some((at, since)) => {
                warn!(%from, %reason, dropped_since_last_warning = *since + 1, "dropped a datagram: {hint}");
                (*at, *since) = (now, 0);
            }
            None => {
                if self.misconfig_warned.len() >= 1024 {
                    self.misconfig_warned.clear(); // a scan of many sources: forget, stay bounded
                }
                warn!(%from, %reason, "dropped a datagram: {hint}");
                self.misconfig_warned.insert(key, (now, 0));
            }
        }
    }

    pub(crate) fn push_transmit(&mut self, to: Destination, channel: Channel, payload: &[u8]) {
        let rng = &mut self.rng;
        let nonce = self.nonces.next(|| rng.next_u64());
        let bytes = self.sealer.seal(channel, nonce, payload);
        *self.stats.sent_packets.entry(channel).or_default() += 1;
        *self.stats.sent_bytes.entry(channel).or_default() += bytes.len() as u64;
        self.transmits.push_back(Transmit { to, channel, bytes });
    }

    pub(crate) fn reschedule(&mut self, due: Due, after: Duration) {
        self.timers.retain(|_, d| *d != due);
        self.schedule(after, due);
    }
}
