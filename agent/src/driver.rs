//! The tokio driver: one task owns the membership and store cores and feeds them sockets, time
//! and commands.
//!
//! Everything the protocol decides happens in the core; this loop only moves bytes and time. One
//! task and one timer (the core's earliest deadline) means timers fire in deadline order, which
//! foca needs (spawning a task per timer reorders them under load, foca issue #26).

use crate::node_file::NodeFile;
use crate::transport::{Frame, Outbound, TransportStats};
use membership::{
    Channel, Destination, DropReason, Event, MemberState, MemberView, Membership, NodeId, Peer,
    QuorumStatus, Stats,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::view::StoreView;
use store::{OpId, Reply, Request, StoreCore, StoreError};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// The core's clock: Unix time, advanced by a monotonic clock so it never steps back.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    unix_at_start: Duration,
}

impl Clock {
    /// A clock anchored now.
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            unix_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// Core time: Unix time as a duration.
    pub fn now(&self) -> Duration {
        self.unix_at_start + self.start.elapsed()
    }

    /// The monotonic instant of a core time.
    pub fn instant(&self, t: Duration) -> Instant {
        self.start + t.saturating_sub(self.unix_at_start)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/v1/status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This node.
    pub node: MemberView,
    /// Cluster name.
    pub cluster: String,
    /// Quorum view.
    pub quorum: QuorumStatus,
    /// Member counts by state (this node included).
    pub members: BTreeMap<MemberState, usize>,
    /// Names (or ids) of members this node can reach.
    pub reachable: Vec<String>,
    /// Names (or ids) of members it cannot (failed; left members are not listed).
    pub unreachable: Vec<String>,
    /// True once a graceful leave started.
    pub leaving: bool,
    /// Per store: entries held (tombstones included) and a hash of the replica's digest; two
    /// replicas hold the same data exactly when their hashes agree.
    pub stores: BTreeMap<String, (usize, u64)>,
    /// Where the catch-up after start stands; `None` once local reads are fresh.
    pub catch_up: Option<store::CatchUpStatus>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone)]
pub struct MetricsReport {
    /// Packet counters.
    pub stats: Stats,
    /// Members by state.
    pub members: BTreeMap<MemberState, usize>,
    /// Quorum view.
    pub quorum: QuorumStatus,
    /// Send errors (the kernel refused a datagram).
    pub send_errors: u64,
    /// Store transport: frames sent, received, rejected, and messages dropped before sending.
    pub store_frames: [u64; 4],
    /// Store: entries held over all stores (tombstones included) and operations in flight.
    pub store_entries: u64,
    /// Quorum operations waiting for answers.
    pub store_in_flight: u64,
}

/// Requests to the driver task.
#[derive(Debug)]
pub enum Command {
    /// Report status.
    Status(oneshot::Sender<StatusReport>),
    /// List members.
    Members(oneshot::Sender<Vec<MemberView>>),
    /// Report counters.
    Metrics(oneshot::Sender<MetricsReport>),
    /// Leave gracefully and stop.
    Leave,
    /// Replace the seed list (a reload).
    SetSeeds(Vec<String>),
    /// A key/value request.
    Kv(Request, oneshot::Sender<Result<Reply, StoreError>>),
    /// The whole replica, for a backup.
    Snapshot(oneshot::Sender<Backup>),
}

/// The whole replica as log records, for `chorus snapshot save`.
#[derive(Debug)]
pub struct Backup {
    /// Every entry of every store, tombstones included.
    pub records: Vec<store::wal::Record>,
    /// The node was still catching up: the backup may lack recent writes.
    pub catching_up: bool,
}

/// A cloneable handle to the driver task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

/// The driver stopped (it is shutting down or crashed).
#[derive(Debug, thiserror::Error)]
#[error("the agent's membership task is not running")]
pub struct Gone;

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Gone> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    /// Current status.
    pub async fn status(&self) -> Result<StatusReport, Gone> {
        self.ask(Command::Status).await
    }

    /// The whole replica, for a backup.
    pub async fn snapshot(&self) -> Result<Backup, Gone> {
        self.ask(Command::Snapshot).await
    }

    /// Current member list.
    pub async fn members(&self) -> Result<Vec<MemberView>, Gone> {
        self.ask(Command::Members).await
    }

    /// Current counters.
    pub async fn metrics(&self) -> Result<MetricsReport, Gone> {
        self.ask(Command::Metrics).await
    }

    /// Starts a graceful leave; the driver stops once the leave has spread.
    pub async fn leave(&self) -> Result<(), Gone> {
        self.tx.send(Command::Leave).await.map_err(|_| Gone)
    }

    /// Runs a key/value request.
    pub async fn kv(&self, req: Request) -> Result<Result<Reply, StoreError>, Gone> {
        self.ask(|tx| Command::Kv(req, tx)).await
    }

    /// Replaces the seed list.
    pub async fn set_seeds(&self, seeds: Vec<String>) -> Result<(), Gone> {
        self.tx
            .send(Command::SetSeeds(seeds))
            .await
            .map_err(|_| Gone)
    }

    /// Subscribes to membership and quorum events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Everything the driver task owns.
pub struct Driver {
    core: Membership,
    clock: Clock,
    gossip: UdpSocket,
    beacon: Option<(UdpSocket, SocketAddrV4)>,
    seeds: Vec<String>,
    node_file: NodeFile,
    cmds: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    send_errors: u64,
    store: StoreCore,
    outbound: Outbound,
    frames: mpsc::Receiver<Frame>,
    pending: BTreeMap<OpId, oneshot::Sender<Result<Reply, StoreError>>>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    view_dirty: bool,
    transport_stats: Arc<TransportStats>,
    log: crate::wal_file::Writer,
    log_reports: mpsc::UnboundedReceiver<crate::wal_file::Report>,
    logged_since_snapshot: usize,
    peer_generations: BTreeMap<NodeId, u64>,
    log_dir: std::path::PathBuf,
    catching_up: bool,
    snapshot_min_records: usize,
    unrouted: Unrouted,
}

/// Store messages for peers membership does not list as reachable yet, kept a short while.
///
/// A node that restarts sees its peers, and asks them for things, before their membership has
/// taken it back from `failed`; their answers would otherwise be dropped and its requests and
/// catch-up rounds would wait for a timeout.
#[derive(Debug, Default)]
struct Unrouted {
    held: BTreeMap<NodeId, std::collections::VecDeque<(Instant, store::StoreMsg)>>,
}

impl Unrouted {
    /// How long a message waits for its peer's address.
    const WAIT: Duration = Duration::from_secs(10);
    /// Most messages held per peer (the oldest go first).
    const PER_PEER: usize = 128;

    /// Holds `msg` for `to`; returns how many messages were dropped to make room or for age.
    fn hold(&mut self, to: NodeId, msg: store::StoreMsg, now: Instant) -> u64 {
        let q = self.held.entry(to).or_default();
        q.push_back((now, msg));
        let mut dropped = 0;
        while q.len() > Self::PER_PEER {
            q.pop_front();
            dropped += 1;
        }
        dropped + self.expire(now)
    }

    /// Drops what waited too long; returns how many.
    fn expire(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        self.held.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Self::WAIT)
            {
                q.pop_front();
                dropped += 1;
            }
            !q.is_empty()
        });
        dropped
    }

    /// The held messages for peers that now have an address.
    fn routable(
        &mut self,
        addrs: &BTreeMap<NodeId, SocketAddr>,
    ) -> Vec<(SocketAddr, store::StoreMsg)> {
        let ready: Vec<NodeId> = self
            .held
            .keys()
            .filter(|id| addrs.contains_key(id))
            .copied()
            .collect();
        let mut out = Vec::new();
        for id in ready {
            let addr = addrs[&id];
            out.extend(
                self.held
                    .remove(&id)
                    .into_iter()
                    .flatten()
                    .map(|(_, m)| (addr, m)),
            );
        }
        out
    }
}

/// The store half of the driver: the core, the stream transport and its inbound frames.
pub struct StorePart {
    /// The store core.
    pub core: StoreCore,
    /// Outbound side of the transport.
    pub outbound: Outbound,
    /// Frames from the transport's readers.
    pub frames: mpsc::Receiver<Frame>,
    /// Transport counters.
    pub stats: Arc<TransportStats>,
    /// The store log's writer.
    pub log: crate::wal_file::Writer,
    /// How far the log is on disk, from the writer.
    pub log_reports: mpsc::UnboundedReceiver<crate::wal_file::Report>,
    /// The log's directory (where the lost-writes marker lives).
    pub log_dir: std::path::PathBuf,
    /// Fewest log records between two snapshots.
    pub snapshot_min_records: usize,
}

/// How often seed names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

impl Driver {
    /// A driver and the handle to talk to it.
    pub fn new(
        core: Membership,
        clock: Clock,
        gossip: UdpSocket,
        beacon: Option<(UdpSocket, SocketAddrV4)>,
        seeds: Vec<String>,
        node_file: NodeFile,
        store: StorePart,
    ) -> (Driver, Handle) {
        let (tx, cmds) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let handle = Handle {
            tx,
            events: events.clone(),
        };
        let catching_up = store.core.catching_up().is_some();
        let driver = Driver {
            core,
            clock,
            gossip,
            beacon,
            seeds,
            node_file,
            cmds,
            events,
            send_errors: 0,
            store: store.core,
            outbound: store.outbound,
            frames: store.frames,
            pending: BTreeMap::new(),
            addrs: BTreeMap::new(),
            view_dirty: true,
            transport_stats: store.stats,
            log: store.log,
            log_reports: store.log_reports,
            logged_since_snapshot: 0,
            peer_generations: BTreeMap::new(),
            catching_up,
            log_dir: store.log_dir,
            snapshot_min_records: store.snapshot_min_records,
            unrouted: Unrouted::default(),
        };
        (driver, handle)
    }

    fn wall_ms(&self) -> u64 {
        self.clock.now().as_millis() as u64
    }

    /// Runs until a graceful leave has completed (or every handle is dropped).
    pub async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let mut bbuf = vec![0u8; 65_536];
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<Vec<SocketAddr>>(4);
        let mut resolver = spawn_resolver(self.seeds.clone(), resolved_tx.clone());
        let mut first_resolution = true;
        let mut leave_deadline: Option<Instant> = None;
        let mut stop_at: Option<Instant> = None;
        self.flush().await;
        loop {
            if let Some(t) = stop_at
                && Instant::now() >= t
            {
                info!("left the cluster; stopping");
                break;
            }
            let next = match (self.core.poll_timeout(), self.store.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(|t| self.clock.instant(t));
            let wake = match (next, stop_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                cmd = self.cmds.recv() => match cmd {
                    None => break,
                    Some(Command::Leave) => {
                        if !self.core.is_leaving() {
                            info!("leaving the cluster");
                            self.core.leave(self.clock.now());
                            leave_deadline = Some(Instant::now() + Duration::from_secs(5));
                        }
                    }
                    Some(Command::SetSeeds(seeds)) => {
                        resolver.abort();
                        self.seeds = seeds.clone();
                        first_resolution = true;
                        resolver = spawn_resolver(seeds, resolved_tx.clone());
                    }
                    Some(Command::Status(tx)) => { let _ = tx.send(self.status()); }
                    Some(Command::Members(tx)) => { let _ = tx.send(self.core.members()); }
                    Some(Command::Snapshot(tx)) => {
                        let (_, records) = self.store.snapshot();
                        let catching_up = self.store.catching_up().is_some();
                        let _ = tx.send(Backup { records, catching_up });
                    }
                    Some(Command::Kv(req, tx)) => {
                        let op = self.store.request(self.clock.now(), self.wall_ms(), req);
                        self.pending.insert(op, tx);
                    }
                    Some(Command::Metrics(tx)) => {
                        let _ = tx.send(MetricsReport {
                            stats: self.core.stats().clone(),
                            members: self.core.member_counts(),
                            quorum: self.core.quorum(),
                            send_errors: self.send_errors,
                            store_frames: {
                                let t = &self.transport_stats;
                                let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                                [get(&t.frames_sent), get(&t.frames_received), get(&t.frames_rejected), get(&t.send_dropped)]
                            },
                            store_entries: self
                                .store
                                .replica()
                                .store_names()
                                .filter_map(|n| self.store.replica().store(n))
                                .map(|s| s.len() as u64)
                                .sum(),
                            store_in_flight: self.store.in_flight() as u64,
                        });
                    }
                },
                r = self.gossip.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.core.handle_datagram(self.clock.now(), from, &buf[..n]),
                    Err(e) => debug!(error = %e, "gossip recv"),
                },
                r = recv_beacon(&self.beacon, &mut bbuf) => match r {
                    Ok((n, from)) => self.core.handle_datagram(self.clock.now(), from, &bbuf[..n]),
                    Err(e) => debug!(error = %e, "beacon recv"),
                },
                Some(frame) = self.frames.recv() => {
                    let (now, wall) = (self.clock.now(), self.wall_ms());
                    self.store.handle_message(now, wall, frame.from, frame.msg);
                }
                Some(report) = self.log_reports.recv() => {
                    let (now, wall) = (self.clock.now(), self.wall_ms());
                    match report {
                        crate::wal_file::Report::Durable(written, synced) => {
                            if self.store.log_failure().is_some() {
                                info!("store log writable again");
                                self.store.set_log_failure(None);
                            }
                            self.store.persisted(now, wall, written, synced);
                        }
                        crate::wal_file::Report::Failed(why) => {
                            self.store.set_log_failure(Some(why));
                        }
                    }
                }
                Some(addrs) = resolved_rx.recv() => {
                    self.core.set_seeds(addrs.clone());
                    if first_resolution {
                        first_resolution = false;
                        for a in addrs {
                            self.core.announce_to(self.clock.now(), a);
                        }
                    }
                }
                _ = sleep_until(wake) => {
                    let (now, wall) = (self.clock.now(), self.wall_ms());
                    self.core.handle_timeout(now);
                    self.store.handle_timeout(now, wall);
                }
            }
            self.flush().await;
            if stop_at.is_none()
                && self.core.is_leaving()
                && (self.core.has_left() || leave_deadline.is_some_and(|d| Instant::now() >= d))
            {
                // Keep gossiping a little so the leave reaches everyone, then stop.
                stop_at = Some(Instant::now() + self.core.config().timings().probe_period * 2);
            }
        }
        resolver.abort();
    }

    fn status(&self) -> StatusReport {
        let members = self.core.members();
        let label = |m: &MemberView| {
            if m.name.is_empty() {
                m.id.to_string()
            } else {
                m.name.clone()
            }
        };
        let reachable = members
            .iter()
            .filter(|m| !m.is_self && matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(label)
            .collect();
        let unreachable = members
            .iter()
            .filter(|m| m.state == MemberState::Failed)
            .map(label)
            .collect();
        let node = members
            .iter()
            .find(|m| m.is_self)
            .cloned()
            .expect("the core always lists itself");
        let stores = self
            .store
            .config()
            .stores
            .keys()
            .map(|n| {
                let summary = self
                    .store
                    .replica()
                    .store(n)
                    .map_or((0, 0), |s| (s.len(), s.summary_hash()));
                (n.clone(), summary)
            })
            .collect();
        StatusReport {
            node,
            cluster: self.core.config().cluster.clone(),
            quorum: self.core.quorum(),
            members: self.core.member_counts(),
            reachable,
            unreachable,
            leaving: self.core.is_leaving(),
            stores,
            catch_up: self.store.catching_up(),
        }
    }

    async fn flush(&mut self) {
        while let Some(tx) = self.core.poll_transmit() {
            let res = match tx.to {
                Destination::Unicast(addr) => self.gossip.send_to(&tx.bytes, addr).await,
                Destination::Beacon => match &self.beacon {
                    Some((sock, group)) => sock.send_to(&tx.bytes, SocketAddr::V4(*group)).await,
                    None => continue,
                },
            };
            if let Err(e) = res {
                self.send_errors += 1;
                // Unreachable peers are normal during failures: keep this at debug, but say
                // clearly when multicast itself cannot be sent.
                if tx.channel == Channel::Beacon {
                    warn!(error = %e, "cannot send a multicast beacon (is there a multicast route?); seeds still work");
                } else {
                    debug!(error = %e, to = ?tx.to, "send failed");
                }
            }
        }
        while let Some(ev) = self.core.poll_event() {
            self.view_dirty = true;
            if let Event::GenerationChanged { generation } = ev
                && let Err(e) = self.node_file.store(generation)
            {
                error!(error = %e, "cannot persist the new generation; a restart may collide with it");
            }
            let _ = self.events.send(ev);
        }
        if self.view_dirty {
            self.view_dirty = false;
            self.sync_store_view();
        }
        let mut records = Vec::new();
        while let Some(r) = self.store.poll_log() {
            records.push(r);
        }
        if !records.is_empty() {
            self.logged_since_snapshot += records.len();
            self.log.append(records);
            // Bound the disk: once the log holds twice the live entries (and at least
            // `snapshot_min_records`), write the replica as a snapshot and drop the segments.
            let live = self.store.entries();
            if self.logged_since_snapshot >= self.snapshot_min_records.max(2 * live) {
                let (through, all) = self.store.snapshot();
                self.log.snapshot(through, all);
                self.logged_since_snapshot = 0;
            }
        }
        while let Some((to, msg)) = self.store.poll_send() {
            match self.addrs.get(&to) {
                Some(addr) => self.outbound.send(*addr, msg),
                None => {
                    debug!(peer = %to, "store message for a node not reachable yet: held");
                    let dropped = self.unrouted.hold(to, msg, Instant::now());
                    self.transport_stats
                        .send_dropped
                        .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        while let Some((op, reply)) = self.store.poll_reply() {
            if let Some(tx) = self.pending.remove(&op) {
                let _ = tx.send(reply);
            }
        }
        if self.catching_up && self.store.catching_up().is_none() {
            self.catching_up = false;
            info!("caught up with peers: local reads are fresh");
            if let Err(e) = crate::wal_file::clear_lost(&self.log_dir) {
                error!(error = %e, dir = %self.log_dir.display(),
                    "cannot remove the catch-up marker; the next start will catch up again");
            }
        }
    }

    /// Tells the store which peers membership holds reachable (alive or suspect) and where they
    /// are, and the quorum view; called whenever membership reported a change.
    fn sync_store_view(&mut self) {
        let view = StoreView::of(&self.core);
        // A peer that restarted (a new generation) gets a new connection: frames written to the
        // old one after the process died would be lost without an error.
        let restarted: std::collections::BTreeSet<SocketAddr> = view
            .generations
            .iter()
            .filter(|(id, g)| self.peer_generations.get(id).is_some_and(|old| old != *g))
            .filter_map(|(id, _)| view.addrs.get(id).copied())
            .collect();
        self.peer_generations = view.generations.clone();
        let live: std::collections::BTreeSet<SocketAddr> = view.addrs.values().copied().collect();
        self.outbound
            .retain(|a| live.contains(a) && !restarted.contains(a));
        self.addrs = view.addrs;
        let expired = self.unrouted.expire(Instant::now());
        self.transport_stats
            .send_dropped
            .fetch_add(expired, std::sync::atomic::Ordering::Relaxed);
        for (addr, msg) in self.unrouted.routable(&self.addrs) {
            self.outbound.send(addr, msg);
        }
        self.store
            .set_view(view.peers, view.has_quorum, view.reachable_votes);
    }
}

async fn recv_beacon(
    beacon: &Option<(UdpSocket, SocketAddrV4)>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match beacon {
        Some((s, _)) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn spawn_resolver(
    seeds: Vec<String>,
    tx: mpsc::Sender<Vec<SocketAddr>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if seeds.is_empty() {
            return;
        }
        loop {
            let mut out = Vec::new();
            for s in &seeds {
                match tokio::net::lookup_host(s.as_str()).await {
                    Ok(addrs) => out.extend(addrs),
                    Err(e) => warn!(seed = %s, error = %e, "cannot resolve seed"),
                }
            }
            out.sort();
            out.dedup();
            if tx.send(out).await.is_err() {
                return;
            }
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    })
}

/// The identity this run gossips as.
pub fn identity(node_file: &NodeFile, advertise: SocketAddr) -> Peer {
    Peer {
        addr: advertise,
        id: node_file.id(),
        generation: node_file.generation(),
    }
}

/// All drop reasons with their current counts, zeros included.
pub fn drops_by_reason(stats: &Stats) -> Vec<(DropReason, u64)> {
    DropReason::ALL
        .iter()
        .map(|r| (*r, stats.dropped.get(r).copied().unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(op: u64) -> store::StoreMsg {
        store::StoreMsg::WriteAck { op }
    }

    #[test]
    fn messages_for_an_unreachable_peer_wait_for_its_address_and_no_longer() {
        let (a, b) = (NodeId(1), NodeId(2));
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let t0 = Instant::now();
        let mut u = Unrouted::default();
        assert_eq!(u.hold(a, msg(1), t0), 0);
        assert_eq!(u.hold(a, msg(2), t0), 0);
        assert_eq!(u.hold(b, msg(3), t0), 0);
        let none = u.routable(&BTreeMap::new());
        assert!(none.is_empty(), "no address yet");
        let ready = u.routable(&[(a, addr)].into());
        assert_eq!(
            ready,
            vec![(addr, msg(1)), (addr, msg(2))],
            "in order, once"
        );
        assert!(u.routable(&[(a, addr)].into()).is_empty());
        // b's message is too old by the time anything else happens.
        let later = t0 + Unrouted::WAIT + Duration::from_millis(1);
        assert_eq!(u.hold(a, msg(4), later), 1, "b's expired");
        // A peer that never comes back costs at most PER_PEER messages.
        let dropped: u64 = (0..Unrouted::PER_PEER as u64 + 10)
            .map(|i| u.hold(b, msg(i), later))
            .sum();
        assert_eq!(dropped, 10);
        assert_eq!(u.held[&b].len(), Unrouted::PER_PEER);
    }
}
