//! The node: the membership and store cores, and the rules between them and the driver.
//!
//! After every input the node moves what its cores produced into one output queue, in a fixed
//! order: datagrams, events, the store's view of membership (with the streams to close and the
//! held messages it releases), log records and snapshots, store messages, replies, and the end of
//! a catch-up. The cores never call back into the node.

use crate::events::{EventKind, NodeEvent};
use crate::held_joins::HeldJoins;
use crate::hold::{Hold, HoldStats};
use crate::io::{Input, Output, PeerMsg};
use crate::keyring::{Fanouts, KeyringMsg};
use crate::leader::{Campaign, LeaderConfig, Leadership};
use crate::recover::Recovered;
use crate::snapshot::SnapshotPolicy;
use crate::strong::{self, StrongLog};
use crate::view::StoreView;
use coord::{CoordConfig, CoordCore};
use membership::{Event, Membership, MembershipConfig, Peer};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use store::{OpId, Request, StoreConfig, StoreCore};
use tracing::debug;

/// How a node is built.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The membership core's settings.
    pub membership: MembershipConfig,
    /// The store core's settings; `None` runs membership alone (large simulations).
    pub store: Option<StoreConfig>,
    /// Fewest log records between two snapshots.
    pub snapshot_min_records: usize,
    /// Deliberate defects, injected before the node starts (simulation tests only: a checker
    /// that never fails proves nothing).
    faults: Faults,
    /// Campaign for the cluster leader with these settings (`None`: not a candidate).
    pub leader: Option<LeaderConfig>,
}

impl NodeConfig {
    /// A node of these cores' settings, with snapshots at least `snapshot_min_records` apart.
    pub fn new(
        membership: MembershipConfig,
        store: Option<StoreConfig>,
        snapshot_min_records: usize,
    ) -> Self {
        NodeConfig {
            membership,
            store,
            snapshot_min_records,
            faults: Faults::default(),
            leader: None,
        }
    }

    /// The same node with deliberate defects in its cores.
    #[cfg(feature = "testing")]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// Deliberate defects of each core (see [`membership::Fault`], [`store::Fault`] and
/// [`coord::Fault`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Membership defects.
    pub membership: Vec<membership::Fault>,
    /// Store defects.
    pub store: Vec<store::Fault>,
    /// Coordination defects.
    pub coord: Vec<coord::Fault>,
}

/// One node: every core of it, composed here and nowhere else.
#[derive(Debug)]
pub struct Node {
    membership: Membership,
    store: Option<StoreCore>,
    /// The coordination core: runs beside a store, whose log carries its acceptor state.
    coord: Option<CoordCore>,
    strong_log: StrongLog,
    /// Coordination operation to the driver's token.
    strong_tokens: BTreeMap<coord::OpId, u64>,
    campaign: Option<Campaign>,
    /// The sequence number of the last event.
    event_seq: u64,
    /// Joins of members whose metadata (and so name) has not arrived yet: reported once the
    /// name arrives or [`crate::held_joins::NAME_WAIT`] passes, whichever is first.
    unnamed: HeldJoins,
    /// Pairs of members found sharing a name, warned about once each.
    duplicate_names: std::collections::BTreeSet<(String, membership::NodeId, membership::NodeId)>,
    /// Members found with another quorum rule, warned about once per rule they published.
    quorum_disagreements: std::collections::BTreeSet<(membership::NodeId, String)>,
    /// Datacenters found holding more votes than configured (or not configured), warned about
    /// once per datacenter and vote count.
    datacenter_overflows: std::collections::BTreeSet<(String, u32)>,
    /// The leadership last reported as an event.
    reported_leading: Option<u64>,
    now: Duration,
    wall_ms: u64,
    outputs: VecDeque<Output>,
    /// The view the store was last given.
    view: StoreView,
    view_dirty: bool,
    hold: Hold,
    snapshots: SnapshotPolicy,
    /// Store operation to the driver's token.
    tokens: BTreeMap<OpId, u64>,
    catching_up: bool,
    /// Keyring operations waiting for members' answers.
    keyring: Fanouts,
}

impl Node {
    /// Builds the node as `identity` from what its disk held, at core time `now` (monotonic) and
    /// wall time `wall_ms` (Unix milliseconds, for versions and TTLs); every random choice
    /// derives from `seed`.
    pub fn recover(
        cfg: NodeConfig,
        identity: Peer,
        seed: u64,
        now: Duration,
        wall_ms: u64,
        disk: Recovered,
    ) -> Node {
        let lost = disk.lost_writes();
        #[cfg_attr(not(feature = "testing"), allow(unused_mut))]
        let mut membership = Membership::new(cfg.membership, identity, seed, now);
        #[cfg(feature = "testing")]
        for f in &cfg.faults.membership {
            membership.inject_fault(*f);
        }
        let faults = cfg.faults;
        // The coordination core shares the store's quorum, timeouts, limits and log.
        let ccfg = cfg.store.as_ref().map(|s| CoordConfig {
            required_votes: s.required_votes,
            my_votes: s.my_votes,
            datacenters: s.datacenters.clone(),
            my_datacenter: s.my_datacenter.clone(),
            round_timeout: s.round_timeout,
            max_value_bytes: s.max_value_bytes,
            durable: s.durable,
            ..CoordConfig::new(s.required_votes)
        });
        let coord = ccfg.map(|c| {
            let seed = seed.rotate_left(31);
            #[cfg_attr(not(feature = "testing"), allow(unused_mut))]
            let mut core = CoordCore::new(identity.id, identity.generation, c, seed, now);
            #[cfg(feature = "testing")]
            for f in &faults.coord {
                core.inject_fault(*f);
            }
            let whole = strong::restore(&mut core, &disk.records);
            core.begin(lost || !whole);
            core
        });
        let store = cfg.store.map(|scfg| {
            let mut s = StoreCore::new(identity.id, scfg, seed.rotate_left(17), now, wall_ms);
            // Operation names unique across restarts (2^40 operations per run).
            s.number_ops_from(identity.generation << 40 | 1);
            #[cfg(feature = "testing")]
            for f in &faults.store {
                s.inject_fault(*f);
            }
            s.restore(disk.records);
            s.begin_catch_up(lost);
            s
        });
        #[cfg(not(feature = "testing"))]
        let _ = &faults;
        let mut node = Node {
            membership,
            coord,
            strong_log: StrongLog::default(),
            strong_tokens: BTreeMap::new(),
            campaign: None,
            event_seq: 0,
            unnamed: HeldJoins::default(),
            duplicate_names: std::collections::BTreeSet::new(),
            quorum_disagreements: std::collections::BTreeSet::new(),
            datacenter_overflows: std::collections::BTreeSet::new(),
            reported_leading: None,
            catching_up: store.is_some(),
            store,
            now,
            wall_ms,
            outputs: VecDeque::new(),
            view: StoreView::default(),
            view_dirty: true,
            hold: Hold::default(),
            snapshots: SnapshotPolicy::new(cfg.snapshot_min_records),
            tokens: BTreeMap::new(),
            keyring: Fanouts::new(identity.generation),
        };
        if let Some(lcfg) = cfg.leader.filter(|_| node.coord.is_some()) {
            let owner = format!("{}/{}", node.membership.config().me.name, identity.id);
            node.campaign = Some(Campaign::new(lcfg, owner, now, seed));
        }
        if lost && node.store.is_some() {
            node.outputs.push_back(Output::MarkCatchingUp);
        }
        node.collect();
        node
    }

    /// Feeds one input at core time `now` and wall time `wall_ms`.
    pub fn handle(&mut self, now: Duration, wall_ms: u64, input: Input) {
        match input {
            Input::Datagram { from, bytes } => self.handle_datagram(now, wall_ms, from, &bytes),
            Input::Frame { from, msg } => self.handle_frame(now, wall_ms, from, msg),
            Input::ProcessGone(addr) => self.handle_process_gone(now, wall_ms, addr),
            Input::Timeout => self.handle_timeout(now, wall_ms),
            Input::Request { token, req } => self.handle_request(now, wall_ms, token, req),
            Input::StrongRequest { token, req } => {
                self.handle_strong_request(now, wall_ms, token, req)
            }
            Input::Persisted { written, synced } => {
                self.handle_persisted(now, wall_ms, written, synced)
            }
            Input::LogHealth(why) => self.handle_log_health(now, wall_ms, why),
            Input::Leave => self.leave(now, wall_ms),
            Input::Seeds(seeds) => self.set_seeds(seeds),
            Input::Announce(addr) => self.announce_to(now, wall_ms, addr),
            Input::Keyring { token, op } => self.handle_keyring(now, wall_ms, token, op),
        }
    }

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Duration, wall_ms: u64, from: SocketAddr, bytes: &[u8]) {
        self.advance(now, wall_ms);
        self.membership.handle_datagram(self.now, from, bytes);
        self.collect();
    }

    /// The stream transport found the process at gossip address `addr` gone (a connection to it
    /// closed, a new one refused): membership suspects it at once.
    pub fn handle_process_gone(&mut self, now: Duration, wall_ms: u64, addr: SocketAddr) {
        self.advance(now, wall_ms);
        self.membership.handle_process_gone(self.now, addr);
        self.collect();
    }

    /// A message arrived from peer `from` on the stream transport.
    pub fn handle_frame(
        &mut self,
        now: Duration,
        wall_ms: u64,
        from: membership::NodeId,
        msg: PeerMsg,
    ) {
        self.advance(now, wall_ms);
        match msg {
            PeerMsg::Store(m) => {
                if let Some(s) = self.store.as_mut() {
                    s.handle_message(self.now, self.wall_ms, from, m);
                }
            }
            PeerMsg::Coord(m) => {
                if let Some(c) = self.coord.as_mut() {
                    c.handle_message(self.now, from, m);
                }
            }
            PeerMsg::Keyring(KeyringMsg::Apply { req, op }) => {
                let result = self.apply_keyring(&op);
                tracing::info!(op = ?op, from = %from, ?result, "keyring operation from a peer");
                let msg = PeerMsg::Keyring(KeyringMsg::Applied { req, result });
                match self.membership.members().into_iter().find(|m| m.id == from) {
                    Some(m) => self.outputs.push_back(Output::Frame {
                        to: m.gossip_addr,
                        peer: from,
                        msg,
                    }),
                    None => {
                        debug!(%from, "keyring operation from a node not a member: not answered")
                    }
                }
            }
            PeerMsg::Keyring(KeyringMsg::Applied { req, result }) => {
                if let Some((token, report)) = self.keyring.answered(from, req, result) {
                    self.outputs.push_back(Output::KeyringReply {
                        token,
                        result: Ok(report),
                    });
                }
            }
        }
        self.collect();
    }

    /// Applies a keyring operation to this node's ring, asking for it to be persisted if it
    /// changed.
    fn apply_keyring(
        &mut self,
        op: &membership::KeyringOp,
    ) -> Result<bool, membership::KeyringError> {
        let sealer = self.membership.sealer();
        let changed = sealer.apply(op)?;
        if changed {
            self.outputs
                .push_back(Output::PersistKeyring(sealer.keyring().keys()));
        }
        Ok(changed)
    }

    /// A keyring operation for the whole cluster: applied here, then sent to every live member;
    /// the report comes out as [`Output::KeyringReply`] with `token` once every member answered
    /// or [`crate::keyring::ANSWER_WAIT`] passed. Refused here (nothing changed anywhere) when
    /// this node refuses it.
    pub fn handle_keyring(
        &mut self,
        now: Duration,
        wall_ms: u64,
        token: u64,
        op: membership::KeyringOp,
    ) {
        self.advance(now, wall_ms);
        let local = match self.apply_keyring(&op) {
            Err(e) => {
                self.outputs.push_back(Output::KeyringReply {
                    token,
                    result: Err(e),
                });
                self.collect();
                return;
            }
            Ok(changed) => changed,
        };
        tracing::info!(op = ?op, changed = local, "keyring operation started here");
        let members = self.membership.members();
        let me = members
            .iter()
            .find(|m| m.is_self)
            .map(|m| (m.id, m.name.clone()))
            .expect("the member list has this node");
        let targets: Vec<_> = members
            .into_iter()
            .filter(|m| {
                !m.is_self
                    && matches!(
                        m.state,
                        membership::MemberState::Alive | membership::MemberState::Suspect
                    )
            })
            .collect();
        let names = targets.iter().map(|m| (m.id, m.name.clone())).collect();
        match self
            .keyring
            .start(token, &op, me, Ok(local), names, self.now)
        {
            Err((token, report)) => self.outputs.push_back(Output::KeyringReply {
                token,
                result: Ok(report),
            }),
            Ok(req) => {
                for m in targets {
                    self.outputs.push_back(Output::Frame {
                        to: m.gossip_addr,
                        peer: m.id,
                        msg: PeerMsg::Keyring(KeyringMsg::Apply {
                            req,
                            op: op.clone(),
                        }),
                    });
                }
            }
        }
        self.collect();
    }

    /// Fires whatever is due by `now`.
    pub fn handle_timeout(&mut self, now: Duration, wall_ms: u64) {
        self.advance(now, wall_ms);
        let now = self.now;
        if self.membership.poll_timeout().is_some_and(|t| t <= now) {
            self.membership.handle_timeout(now);
        }
        if let Some(s) = self.store.as_mut()
            && s.poll_timeout().is_some_and(|t| t <= now)
        {
            s.handle_timeout(now, self.wall_ms);
        }
        if let Some(c) = self.coord.as_mut()
            && c.poll_timeout().is_some_and(|t| t <= now)
        {
            c.handle_timeout(now);
        }
        if let (Some(camp), Some(c)) = (self.campaign.as_mut(), self.coord.as_mut()) {
            camp.tick(c, now);
        }
        self.hold.expire(now);
        for (token, report) in self.keyring.expire(now) {
            self.outputs.push_back(Output::KeyringReply {
                token,
                result: Ok(report),
            });
        }
        self.collect();
    }

    /// A request on the strong keyspace; its answer comes out as [`Output::StrongReply`] with
    /// `token`. A node without a store (and so without a log for acceptors) refuses it.
    pub fn handle_strong_request(
        &mut self,
        now: Duration,
        wall_ms: u64,
        token: u64,
        req: coord::Request,
    ) {
        self.advance(now, wall_ms);
        match self.coord.as_mut() {
            Some(c) => {
                let op = c.request(self.now, req);
                self.strong_tokens.insert(op, token);
            }
            None => self.outputs.push_back(Output::StrongReply {
                token,
                result: Err(coord::CoordError::BadRequest {
                    message: "this node runs no store, so no strong keyspace".into(),
                }),
            }),
        }
        self.collect();
    }

    /// A client request; its answer comes out as [`Output::Reply`] with `token`. A node without
    /// a store answers at once that there is none.
    pub fn handle_request(&mut self, now: Duration, wall_ms: u64, token: u64, req: Request) {
        self.advance(now, wall_ms);
        match self.store.as_mut() {
            Some(s) => {
                let op = s.request(self.now, self.wall_ms, req);
                self.tokens.insert(op, token);
            }
            None => self.outputs.push_back(Output::Reply {
                token,
                result: Err(store::StoreError::NotFound {
                    message: "this node runs no store".into(),
                }),
            }),
        }
        self.collect();
    }

    /// The log is written through `written` and synced through `synced`.
    pub fn handle_persisted(&mut self, now: Duration, wall_ms: u64, written: u64, synced: u64) {
        self.advance(now, wall_ms);
        if let Some(s) = self.store.as_mut() {
            s.persisted(self.now, self.wall_ms, written, synced);
        }
        self.collect();
    }

    /// The log cannot be written (`Some(why)`) or can again (`None`).
    pub fn handle_log_health(&mut self, now: Duration, wall_ms: u64, why: Option<String>) {
        self.advance(now, wall_ms);
        if let Some(s) = self.store.as_mut()
            && s.log_failure().map(str::to_string) != why
        {
            s.set_log_failure(why.clone());
            self.emit(EventKind::Storage(why));
        }
        self.collect();
    }

    /// Starts a graceful leave.
    pub fn leave(&mut self, now: Duration, wall_ms: u64) {
        self.advance(now, wall_ms);
        self.membership.leave(self.now);
        self.collect();
    }

    /// Replaces the seed addresses.
    pub fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        self.membership.set_seeds(seeds);
    }

    /// Announces this node to `addr` now.
    pub fn announce_to(&mut self, now: Duration, wall_ms: u64, addr: SocketAddr) {
        self.advance(now, wall_ms);
        self.membership.announce_to(self.now, addr);
        self.collect();
    }

    /// Whether a core has work it does a batch per step (a store push being composed): the
    /// driver then calls [`Node::handle_timeout`] every turn, even while inputs keep arriving.
    pub fn has_queued_work(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.pushing())
    }

    /// The earliest core time at which [`Node::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.membership.poll_timeout(),
            self.store.as_ref().and_then(|s| s.poll_timeout()),
            self.coord.as_ref().and_then(|c| c.poll_timeout()),
            self.campaign.as_ref().and_then(|c| c.next_deadline()),
            self.hold.next_expiry(),
            self.keyring.next_deadline(),
            self.unnamed.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        membership::queue::pop_front_or_shrink(&mut self.outputs)
    }

    /// The membership core (for reports).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The membership core, to break it on purpose in simulation tests.
    pub fn membership_mut(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// The store core, when the node runs one.
    pub fn store(&self) -> Option<&StoreCore> {
        self.store.as_ref()
    }

    /// The store core, to break it on purpose in simulation tests.
    pub fn store_mut(&mut self) -> Option<&mut StoreCore> {
        self.store.as_mut()
    }

    /// This node's leadership as of its last input, while it is the cluster leader (a candidate
    /// only). To answer someone asking, use [`Node::leading_at`].
    pub fn leading(&self) -> Option<Leadership> {
        self.leading_at(self.now)
    }

    /// This node's leadership at `now`. A process that stalled (a pause, swapping, a debugger)
    /// and is asked before its next input would otherwise report a lease that ran out while it
    /// stood still: netsim's `pauses` scenario caught exactly that once nodes took several inputs
    /// before flushing, as the agent's driver does.
    pub fn leading_at(&self, now: Duration) -> Option<Leadership> {
        let now = now.max(self.now);
        self.campaign.as_ref().and_then(|c| c.leading(now))
    }

    /// True when this node campaigns for the cluster leader.
    pub fn is_candidate(&self) -> bool {
        self.campaign.is_some()
    }

    /// The coordination core, when the node runs one.
    pub fn coord(&self) -> Option<&CoordCore> {
        self.coord.as_ref()
    }

    /// What the hold for peers without an address did so far.
    pub fn hold_stats(&self) -> HoldStats {
        self.hold.stats()
    }

    /// Requests waiting for their answer.
    pub fn pending_requests(&self) -> usize {
        self.tokens.len()
    }

    /// Warns (once per pair) when a member that joined, came back or restarted shares
    /// its name with another live member, this node included: names are how operators and events
    /// tell nodes apart, and a copied configuration is the usual cause.
    fn check_duplicate_name(&mut self, ev: &Event) {
        let Some(m) = ev.member() else { return };
        if m.name.is_empty()
            || !matches!(
                ev,
                Event::MemberJoined { .. }
                    | Event::MemberRecovered { .. }
                    | Event::MemberRestarted { .. }
            )
        {
            return;
        }
        // Lookups, not the member list: this runs for every join, and building the list is
        // O(n), which made a simulated 1,000-node join crawl.
        let me = self.membership.identity().id;
        let mine = self.membership.tag_of(me, crate::QUORUM_TAG);
        let theirs = self.membership.tag_of(m.id, crate::QUORUM_TAG);
        if let (Some(mine), Some(theirs)) = (mine, theirs)
            && mine != theirs
            && self.quorum_disagreements.insert((m.id, theirs.clone()))
        {
            tracing::warn!(name = %m.name, id = %m.id, addr = %m.addr, theirs = %theirs, ours = %mine,
                "a member counts quorum differently (required/total votes): give every node the same \
                 cluster.expected_nodes, cluster.total_votes and cluster.quorum (docs/operations.md)");
        }
        if self.membership.config().quorum.datacenter_votes().is_some() {
            let members = self.membership.members();
            self.check_datacenter_votes(&members);
        }
        for (other, addr, is_self) in self.membership.live_named(&m.name) {
            if other == m.id {
                continue;
            }
            let pair = (m.name.clone(), m.id.min(other), m.id.max(other));
            if self.duplicate_names.insert(pair) {
                tracing::warn!(name = %m.name, id = %m.id, addr = %m.addr, other_id = %other,
                    other_addr = %addr, this_node = is_self,
                    "two members share the name {:?}: give every node its own node.name", m.name);
            }
        }
    }

    /// In `datacenters` quorum mode, warns (once per datacenter and count) when the members of a
    /// datacenter hold more votes than the configuration gives it, or a member's datacenter is not
    /// configured: two sides could then both count a datacenter (docs/datacenters.md).
    fn check_datacenter_votes(&mut self, members: &[membership::MemberView]) {
        let Some(table) = self.membership.config().quorum.datacenter_votes().cloned() else {
            return;
        };
        for (dc, votes, configured) in datacenter_overflows(&table, members) {
            if !self.datacenter_overflows.insert((dc.clone(), votes)) {
                continue;
            }
            match configured {
                Some(configured) => tracing::warn!(datacenter = %dc, votes, configured,
                    "the members of a datacenter hold more votes than cluster.datacenter_votes gives it: \
                     two sides could both count it; give it its real votes on every node"),
                None => tracing::warn!(datacenter = %dc, votes,
                    "members are in a datacenter that cluster.datacenter_votes does not list: \
                     their votes count for nothing"),
            }
        }
    }

    /// Queues an event with the next sequence number.
    fn emit(&mut self, kind: EventKind) {
        if let EventKind::Member(ev) = &kind {
            let ev = ev.clone();
            self.check_duplicate_name(&ev);
        }
        self.event_seq += 1;
        self.outputs.push_back(Output::Event(NodeEvent {
            seq: self.event_seq,
            time_ms: self.wall_ms,
            kind,
        }));
    }

    /// Queues a member event, with the member's name when its metadata has arrived. A join
    /// seen before the joiner's metadata is held until the name comes (see `unnamed`); any later
    /// event of that member releases the held join first, so a member's events keep their order.
    fn emit_member(&mut self, mut ev: Event) {
        self.name_member(&mut ev);
        if let Some(m) = ev.member() {
            let (id, unnamed) = (m.id, m.name.is_empty());
            if let Some(held) = self.unnamed.release(id) {
                self.emit_held(held);
            }
            if unnamed && let Event::MemberJoined { member } = &ev {
                self.unnamed.hold(member, self.now);
                return;
            }
        }
        self.emit(EventKind::Member(ev));
    }

    /// Queues a held join now, naming the member if its name is known by now.
    fn emit_held(&mut self, mut ev: Event) {
        self.name_member(&mut ev);
        self.emit(EventKind::Member(ev));
    }

    /// Fills in the member's name from its metadata, when the event lacks it and it is known.
    fn name_member(&self, ev: &mut Event) {
        if let Some(m) = ev.member_mut()
            && m.name.is_empty()
            && let Some(name) = self.membership.name_of(m.id)
        {
            m.name = name;
        }
    }

    fn advance(&mut self, now: Duration, wall_ms: u64) {
        self.now = self.now.max(now);
        self.wall_ms = self.wall_ms.max(wall_ms);
    }

    /// Moves what the cores produced into the output queue.
    fn collect(&mut self) {
        while let Some(tx) = self.membership.poll_transmit() {
            self.outputs.push_back(Output::Datagram(tx));
        }
        while let Some(ev) = self.membership.poll_event() {
            self.view_dirty = true;
            if let Event::GenerationChanged { generation } = ev {
                self.outputs
                    .push_back(Output::PersistGeneration(generation));
            }
            self.emit_member(ev);
        }
        while let Some(id) = self.membership.poll_described() {
            if let Some(held) = self.unnamed.release(id) {
                self.emit_held(held);
            }
            // A member's datacenter arrives with its record, and a `datacenters`-mode quorum
            // counts a member only in its datacenter: the store's view must learn it.
            if self.view.dcs.get(&id) != self.membership.datacenter_of(id).as_ref()
                && id != self.membership.identity().id
            {
                self.view_dirty = true;
            }
        }
        for held in self.unnamed.take_late(self.now) {
            self.emit_held(held);
        }
        if self.store.is_none() {
            return;
        }
        if self.view_dirty {
            self.view_dirty = false;
            self.sync_store_view();
        }
        self.collect_store();
    }

    /// Tells the store which peers membership holds reachable and the quorum view; drops the
    /// streams of peers gone or restarted, and sends what was held for peers now reachable.
    fn sync_store_view(&mut self) {
        let view = StoreView::of(&self.membership);
        let close = view.streams_to_close(&self.view);
        if !close.is_empty() {
            self.outputs.push_back(Output::CloseStreams(close));
        }
        self.hold.expire(self.now);
        for (peer, to, msg) in self.hold.routable(&view.addrs) {
            self.outputs.push_back(Output::Frame { to, peer, msg });
        }
        let s = self.store.as_mut().expect("checked by the caller");
        s.set_datacenters(view.dcs.clone());
        s.set_view(view.peers.clone(), view.has_quorum, view.reachable_votes);
        s.set_failed_peers(view.failed.clone());
        if let Some(c) = self.coord.as_mut() {
            c.set_datacenters(view.dcs.clone());
            c.set_view(view.peers.clone(), view.has_quorum, view.reachable_votes);
        }
        self.view = view;
    }

    fn collect_store(&mut self) {
        let Some(s) = self.store.as_mut() else { return };
        if let Some(c) = self.coord.as_mut() {
            self.strong_log.release(s, c);
            self.strong_log.issue(s, c);
        }
        let mut records = Vec::new();
        while let Some(r) = s.poll_log() {
            records.push(r);
        }
        if !records.is_empty() {
            for r in records.iter().filter(|r| r.store != strong::LOG_NAME) {
                let kind = EventKind::KeyChanged {
                    store: r.store.clone(),
                    key: r.key.clone(),
                    version: r.entry.version,
                    deleted: r.entry.value.is_none(),
                };
                self.event_seq += 1;
                self.outputs.push_back(Output::Event(NodeEvent {
                    seq: self.event_seq,
                    time_ms: self.wall_ms,
                    kind,
                }));
            }
            let n = records.len();
            self.outputs.push_back(Output::AppendLog(records));
            let strong = self.coord.as_ref().map_or(0, |c| c.len());
            if self.snapshots.appended(n, s.entries() + strong) {
                let (through, mut records) = s.snapshot();
                if let Some(c) = self.coord.as_ref() {
                    records.extend(strong::snapshot(c, through));
                }
                self.outputs
                    .push_back(Output::WriteSnapshot { through, records });
            }
        }
        let mut sends = Vec::new();
        while let Some((peer, msg)) = s.poll_send() {
            sends.push((peer, PeerMsg::Store(msg)));
        }
        if let Some(c) = self.coord.as_mut() {
            while let Some((peer, msg)) = c.poll_send() {
                sends.push((peer, PeerMsg::Coord(msg)));
            }
            while let Some((op, result)) = c.poll_reply() {
                if let Some(camp) = self.campaign.as_mut().filter(|camp| camp.owns(op)) {
                    camp.answered(result, self.now);
                    continue;
                }
                if let Some(token) = self.strong_tokens.remove(&op) {
                    self.outputs
                        .push_back(Output::StrongReply { token, result });
                }
            }
        }
        for (peer, msg) in sends {
            let failed = match msg {
                PeerMsg::Store(_) => self.view.failed_addrs.get(&peer),
                _ => None,
            };
            match self.view.addrs.get(&peer).or(failed) {
                Some(to) => self.outputs.push_back(Output::Frame { to: *to, peer, msg }),
                None => {
                    debug!(%peer, "message for a node not reachable yet: held");
                    self.hold.hold(peer, msg, self.now);
                }
            }
        }
        let s = self.store.as_mut().expect("checked above");
        while let Some((op, result)) = s.poll_reply() {
            if let Some(token) = self.tokens.remove(&op) {
                self.outputs.push_back(Output::Reply { token, result });
            }
        }
        if self.catching_up && s.catching_up().is_none() {
            self.catching_up = false;
            self.outputs.push_back(Output::CaughtUp);
            self.emit(EventKind::CaughtUp);
        }
        let leading = self.leading().map(|l| l.token);
        if leading != self.reported_leading {
            self.reported_leading = leading;
            self.emit(EventKind::Leader(leading));
        }
    }
}

/// The datacenters whose members (not left) hold more votes than `table` gives them, or that
/// `table` does not list: (datacenter, votes held, configured votes if listed).
fn datacenter_overflows(
    table: &BTreeMap<String, u32>,
    members: &[membership::MemberView],
) -> Vec<(String, u32, Option<u32>)> {
    let mut by_dc: BTreeMap<String, u32> = BTreeMap::new();
    for m in members
        .iter()
        .filter(|m| m.state != membership::MemberState::Left && !m.datacenter.is_empty())
    {
        *by_dc.entry(m.datacenter.clone()).or_default() += m.votes;
    }
    by_dc
        .into_iter()
        .filter_map(|(dc, votes)| match table.get(&dc) {
            Some(c) if votes <= *c => None,
            configured => Some((dc, votes, configured.copied())),
        })
        .collect()
}

#[cfg(test)]
mod datacenter_tests {
    use super::*;
    use membership::{MemberState, MemberView, NodeId};

    fn member(id: u64, dc: &str, votes: u32, state: MemberState) -> MemberView {
        MemberView {
            id: NodeId(id),
            name: format!("n{id}"),
            state,
            datacenter: dc.into(),
            gossip_addr: std::net::SocketAddr::from(([10, 0, 0, id as u8], 7946)),
            api_addr: None,
            generation: 1,
            tags: BTreeMap::new(),
            votes,
            is_self: id == 1,
        }
    }

    #[test]
    fn a_datacenter_holding_more_votes_than_configured_or_unlisted_is_found() {
        let table: BTreeMap<String, u32> = [("a".to_string(), 2), ("b".to_string(), 1)].into();
        let ok = [
            member(1, "a", 1, MemberState::Alive),
            member(2, "a", 1, MemberState::Failed),
            member(3, "b", 1, MemberState::Alive),
            member(4, "b", 1, MemberState::Left),
        ];
        assert!(
            datacenter_overflows(&table, &ok).is_empty(),
            "left members do not count"
        );
        let mut over = ok.to_vec();
        over.push(member(5, "a", 1, MemberState::Suspect));
        over.push(member(6, "c", 2, MemberState::Alive));
        assert_eq!(
            datacenter_overflows(&table, &over),
            vec![("a".to_string(), 3, Some(2)), ("c".to_string(), 2, None)]
        );
    }
}
