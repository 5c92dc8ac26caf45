//! The node: the membership and store cores, and the rules between them and the driver.
//!
//! After every input the node moves what its cores produced into one output queue, in a fixed
//! order: datagrams, events, the store's view of membership (with the streams to close and the
//! held messages it releases), log records and snapshots, store messages, replies, and the end of
//! a catch-up. The cores never call back into the node.

use crate::hold::{Hold, HoldStats};
use crate::io::{Input, Output};
use crate::recover::Recovered;
use crate::snapshot::SnapshotPolicy;
use crate::view::StoreView;
use membership::{Event, Membership, MembershipConfig, Peer};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use store::{OpId, Request, StoreConfig, StoreCore, StoreMsg};
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
        }
    }

    /// The same node with deliberate defects in its cores.
    #[cfg(feature = "testing")]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// Deliberate defects of each core (see [`membership::Fault`] and [`store::Fault`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Membership defects.
    pub membership: Vec<membership::Fault>,
    /// Store defects.
    pub store: Vec<store::Fault>,
}

/// One node: every core of it, composed here and nowhere else.
#[derive(Debug)]
pub struct Node {
    membership: Membership,
    store: Option<StoreCore>,
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
        let faults = cfg.faults.store;
        let store = cfg.store.map(|scfg| {
            let mut s = StoreCore::new(identity.id, scfg, seed.rotate_left(17), now, wall_ms);
            #[cfg(feature = "testing")]
            for f in &faults {
                s.inject_fault(*f);
            }
            #[cfg(not(feature = "testing"))]
            let _ = &faults;
            s.restore(disk.records);
            s.begin_catch_up(lost);
            s
        });
        let mut node = Node {
            membership,
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
        };
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
            Input::Timeout => self.handle_timeout(now, wall_ms),
            Input::Request { token, req } => self.handle_request(now, wall_ms, token, req),
            Input::Persisted { written, synced } => {
                self.handle_persisted(now, wall_ms, written, synced)
            }
            Input::LogHealth(why) => self.handle_log_health(now, wall_ms, why),
            Input::Leave => self.leave(now, wall_ms),
            Input::Seeds(seeds) => self.set_seeds(seeds),
            Input::Announce(addr) => self.announce_to(now, wall_ms, addr),
        }
    }

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Duration, wall_ms: u64, from: SocketAddr, bytes: &[u8]) {
        self.advance(now, wall_ms);
        self.membership.handle_datagram(self.now, from, bytes);
        self.collect();
    }

    /// A store message arrived from peer `from`.
    pub fn handle_frame(
        &mut self,
        now: Duration,
        wall_ms: u64,
        from: membership::NodeId,
        msg: StoreMsg,
    ) {
        self.advance(now, wall_ms);
        if let Some(s) = self.store.as_mut() {
            s.handle_message(self.now, self.wall_ms, from, msg);
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
        self.hold.expire(now);
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
        if let Some(s) = self.store.as_mut() {
            s.set_log_failure(why);
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

    /// The earliest core time at which [`Node::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.membership.poll_timeout(),
            self.store.as_ref().and_then(|s| s.poll_timeout()),
            self.hold.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
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

    /// What the hold for peers without an address did so far.
    pub fn hold_stats(&self) -> HoldStats {
        self.hold.stats()
    }

    /// Requests waiting for their answer.
    pub fn pending_requests(&self) -> usize {
        self.tokens.len()
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
            self.outputs.push_back(Output::Event(ev));
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
        s.set_view(view.peers.clone(), view.has_quorum, view.reachable_votes);
        self.view = view;
    }

    fn collect_store(&mut self) {
        let Some(s) = self.store.as_mut() else { return };
        let mut records = Vec::new();
        while let Some(r) = s.poll_log() {
            records.push(r);
        }
        if !records.is_empty() {
            let n = records.len();
            self.outputs.push_back(Output::AppendLog(records));
            if self.snapshots.appended(n, s.entries()) {
                let (through, records) = s.snapshot();
                self.outputs
                    .push_back(Output::WriteSnapshot { through, records });
            }
        }
        while let Some((peer, msg)) = s.poll_send() {
            match self.view.addrs.get(&peer) {
                Some(to) => self.outputs.push_back(Output::Frame { to: *to, peer, msg }),
                None => {
                    debug!(%peer, "store message for a node not reachable yet: held");
                    self.hold.hold(peer, msg, self.now);
                }
            }
        }
        while let Some((op, result)) = s.poll_reply() {
            if let Some(token) = self.tokens.remove(&op) {
                self.outputs.push_back(Output::Reply { token, result });
            }
        }
        if self.catching_up && s.catching_up().is_none() {
            self.catching_up = false;
            self.outputs.push_back(Output::CaughtUp);
        }
    }
}
