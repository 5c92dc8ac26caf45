//! The tokio driver: one task owns the node and feeds it sockets, time and commands, and
//! executes its outputs.
//!
//! Everything the protocol decides happens in the node; this loop only moves bytes and time. One
//! task and one timer (the core's earliest deadline) means timers fire in deadline order, which
//! foca needs (spawning a task per timer reorders them under load, foca issue #26).

use crate::node_file::NodeFile;
use crate::transport::{Frame, Outbound, TransportStats};
use anyhow::Context;
use membership::{
    Channel, Destination, DropReason, MemberState, MemberView, Peer, QuorumStatus, Stats,
};
use node::{Node, Output};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{Reply, Request, StoreError};
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
    /// Whether this node campaigns for the cluster leader.
    pub leader_candidate: bool,
    /// This node's fencing token while it is the cluster leader.
    pub leading: Option<u64>,
    /// Live members whose published quorum rule (`REQUIRED/TOTAL`) differs from this node's.
    pub disagreeing: Vec<(String, String)>,
    /// In `datacenters` quorum mode, each configured datacenter as this node reaches it.
    pub datacenters: Option<Vec<membership::DatacenterReach>>,
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
    /// Store connections replaced because they stalled in retransmission.
    pub store_reconnects_stalled: u64,
    /// Store frames rejected, by reason.
    pub store_rejected_by: Vec<(DropReason, u64)>,
    /// This node's keys: datagrams and frames opened under each, primary first.
    pub keys: Vec<membership::KeyInfo>,
    /// Store: entries held over all stores (tombstones included) and operations in flight.
    pub store_entries: u64,
    /// Quorum operations waiting for answers.
    pub store_in_flight: u64,
    /// Events emitted, by type.
    pub events: BTreeMap<&'static str, u64>,
    /// Live event subscribers (streams, watches, blocking reads and the handler runner).
    pub subscribers: u64,
    /// Entries per store (tombstones included).
    pub entries_by_store: BTreeMap<String, u64>,
    /// Whether this node is catching up after a start.
    pub catching_up: bool,
    /// Whether this node leads the cluster.
    pub leading: bool,
    /// Whether the store log cannot be written (the node takes no writes until it can).
    pub storage_failed: bool,
    /// What anti-entropy has done.
    pub sync: store::SyncStats,
}

/// A key/value request waiting for its reply: where to send it, when it came, read or write.
type PendingKv = (
    oneshot::Sender<Result<Reply, StoreError>>,
    Instant,
    &'static str,
);

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
    /// Announce this node to these addresses now (`chorus join`).
    Join(Vec<SocketAddr>),
    /// Mark the failed member with this name (or id) left now (`chorus force-leave`).
    ForceLeave(String, oneshot::Sender<Result<String, String>>),
    /// A key/value request.
    Kv(Request, oneshot::Sender<Result<Reply, StoreError>>),
    /// A request on the strong keyspace.
    Strong(coord::Request, oneshot::Sender<StrongResult>),
    /// The whole replica, for a backup.
    Snapshot(oneshot::Sender<Backup>),
    /// The buffered events after a sequence number.
    Events(u64, oneshot::Sender<crate::events::Backlog>),
    /// A cluster-wide keyring operation.
    Keyring(membership::KeyringOp, oneshot::Sender<KeyringResult>),
    /// This node's keyring.
    KeyringList(oneshot::Sender<Vec<membership::KeyInfo>>),
}

/// The answer to a keyring operation.
pub type KeyringResult = Result<node::KeyringReport, membership::KeyringError>;

/// The answer to a strong-keyspace request.
pub type StrongResult = Result<coord::Outcome, coord::CoordError>;

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
    events: broadcast::Sender<Arc<crate::events::Shared>>,
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

    /// Resolves once the driver has stopped (after a graceful leave, or a crash).
    pub async fn stopped(&self) {
        self.tx.closed().await
    }

    /// Starts a graceful leave; the driver stops once the leave has spread.
    pub async fn leave(&self) -> Result<(), Gone> {
        self.tx.send(Command::Leave).await.map_err(|_| Gone)
    }

    /// Runs a key/value request.
    pub async fn kv(&self, req: Request) -> Result<Result<Reply, StoreError>, Gone> {
        self.ask(|tx| Command::Kv(req, tx)).await
    }

    /// Runs a request on the strong keyspace.
    pub async fn strong(&self, req: coord::Request) -> Result<StrongResult, Gone> {
        self.ask(|tx| Command::Strong(req, tx)).await
    }

    /// Replaces the seed list.
    pub async fn set_seeds(&self, seeds: Vec<String>) -> Result<(), Gone> {
        self.tx
            .send(Command::SetSeeds(seeds))
            .await
            .map_err(|_| Gone)
    }

    /// Announces this node to `addrs` now, as to a seed (`POST /v1/join`).
    pub async fn join(&self, addrs: Vec<SocketAddr>) -> Result<(), Gone> {
        self.tx.send(Command::Join(addrs)).await.map_err(|_| Gone)
    }

    /// Marks the failed member named (or with the id) `who` left on every node now; its id, or
    /// why not.
    pub async fn force_leave(&self, who: String) -> Result<Result<String, String>, Gone> {
        self.ask(|tx| Command::ForceLeave(who, tx)).await
    }

    /// Runs a keyring operation on every live member.
    pub async fn keyring(&self, op: membership::KeyringOp) -> Result<KeyringResult, Gone> {
        self.ask(|tx| Command::Keyring(op, tx)).await
    }

    /// This node's keyring, primary first, with packets opened per key.
    pub async fn keyring_list(&self) -> Result<Vec<membership::KeyInfo>, Gone> {
        self.ask(Command::KeyringList).await
    }

    /// Subscribes to events as they happen (each as JSON, with its `seq`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<crate::events::Shared>> {
        self.events.subscribe()
    }

    /// The buffered events after `since`.
    pub async fn events_since(&self, since: u64) -> Result<crate::events::Backlog, Gone> {
        self.ask(|tx| Command::Events(since, tx)).await
    }
}

/// The store's half of the outside world: the stream transport and the log on disk.
pub struct StoreIo {
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
    /// The log's directory (where the catch-up marker lives).
    pub log_dir: std::path::PathBuf,
    /// The data directory (where the keyring is persisted).
    pub data_dir: std::path::PathBuf,
}

/// Everything the driver task owns: the node, and the sockets, files and timers that execute
/// its outputs. Every protocol rule is the node's; this only moves bytes and time.
pub struct Driver {
    node: Node,
    clock: Clock,
    gossip: UdpSocket,
    beacon: Option<(UdpSocket, SocketAddrV4)>,
    seeds: Vec<String>,
    node_file: NodeFile,
    cmds: mpsc::Receiver<Command>,
    events: broadcast::Sender<Arc<crate::events::Shared>>,
    send_errors: u64,
    io: StoreIo,
    /// Key/value requests waiting for their reply.
    pending: BTreeMap<u64, PendingKv>,
    pending_strong: BTreeMap<u64, oneshot::Sender<StrongResult>>,
    pending_keyring: BTreeMap<u64, oneshot::Sender<KeyringResult>>,
    next_token: u64,
    event_log: crate::events::EventLog,
    /// Log records of the outputs being executed, written once the rest have gone.
    log_batch: Vec<store::wal::Record>,
    events_by_type: BTreeMap<&'static str, u64>,
}

/// How often seed names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Most inputs already queued that the driver takes before executing the node's outputs (see
/// the end of [`Driver::run`]'s loop). Bounded so that timers and sockets are still served.
const DRAIN_MAX: usize = 64;

/// What the driver's loop keeps besides the driver: the seed resolver and the leave's deadline.
struct RunState {
    resolver: tokio::task::JoinHandle<()>,
    resolved_tx: mpsc::Sender<Vec<SocketAddr>>,
    first_resolution: bool,
    leave_deadline: Option<Instant>,
}

impl Driver {
    /// A driver and the handle to talk to it.
    pub fn new(
        node: Node,
        clock: Clock,
        gossip: UdpSocket,
        beacon: Option<(UdpSocket, SocketAddrV4)>,
        seeds: Vec<String>,
        node_file: NodeFile,
        io: StoreIo,
    ) -> (Driver, Handle) {
        let (tx, cmds) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(4096);
        let handle = Handle {
            tx,
            events: events.clone(),
        };
        let driver = Driver {
            node,
            clock,
            gossip,
            beacon,
            seeds,
            node_file,
            cmds,
            events,
            send_errors: 0,
            io,
            pending: BTreeMap::new(),
            pending_strong: BTreeMap::new(),
            pending_keyring: BTreeMap::new(),
            event_log: crate::events::EventLog::default(),
            log_batch: Vec::new(),
            events_by_type: BTreeMap::new(),
            next_token: 1,
        };
        (driver, handle)
    }

    fn wall_ms(&self) -> u64 {
        self.clock.now().as_millis() as u64
    }

    /// Executes what the node asked for at start; fails when the catch-up marker cannot be
    /// persisted (a node that may have lost writes must not forget it across a crash).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.flush().await
    }

    /// Runs until a graceful leave has completed (or every handle is dropped).
    pub async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let mut bbuf = vec![0u8; 65_536];
        let mut gone = self
            .io
            .outbound
            .gone_reports()
            .expect("the driver runs once");
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<Vec<SocketAddr>>(4);
        let mut ctl = RunState {
            resolver: spawn_resolver(self.seeds.clone(), resolved_tx.clone()),
            resolved_tx,
            first_resolution: true,
            leave_deadline: None,
        };
        let mut stop_at: Option<Instant> = None;
        loop {
            if let Some(t) = stop_at
                && Instant::now() >= t
            {
                info!("left the cluster; stopping");
                break;
            }
            let next = self.node.poll_timeout().map(|t| self.clock.instant(t));
            let wake = match (next, stop_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                cmd = self.cmds.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.on_command(cmd, &mut ctl),
                },
                r = self.gossip.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.node.handle_datagram(self.clock.now(), self.wall_ms(), from, &buf[..n]),
                    Err(e) => debug!(error = %e, "gossip recv"),
                },
                r = recv_beacon(&self.beacon, &mut bbuf) => match r {
                    Ok((n, from)) => self.node.handle_datagram(self.clock.now(), self.wall_ms(), from, &bbuf[..n]),
                    Err(e) => debug!(error = %e, "beacon recv"),
                },
                Some(frame) = self.io.frames.recv() => {
                    self.node.handle_frame(self.clock.now(), self.wall_ms(), frame.from, frame.msg);
                }
                Some(report) = self.io.log_reports.recv() => self.on_log_report(report),
                Some(addr) = gone.recv() => {
                    self.node.handle_process_gone(self.clock.now(), self.wall_ms(), addr);
                }
                Some(addrs) = resolved_rx.recv() => {
                    self.node.set_seeds(addrs.clone());
                    if ctl.first_resolution {
                        ctl.first_resolution = false;
                        for a in addrs {
                            self.node.announce_to(self.clock.now(), self.wall_ms(), a);
                        }
                    }
                }
                _ = sleep_until(wake) => {
                    self.node.handle_timeout(self.clock.now(), self.wall_ms());
                }
            }
            // Under load many inputs are ready at once. Taking those already queued (a bounded
            // number) before flushing lets their outputs leave together: one log append, one
            // wake-up of each peer's writer and one write, instead of one each per request.
            for _ in 0..DRAIN_MAX {
                if let Ok(frame) = self.io.frames.try_recv() {
                    self.node
                        .handle_frame(self.clock.now(), self.wall_ms(), frame.from, frame.msg);
                } else if let Ok(report) = self.io.log_reports.try_recv() {
                    self.on_log_report(report);
                } else if let Ok(cmd) = self.cmds.try_recv() {
                    self.on_command(cmd, &mut ctl);
                } else {
                    break;
                }
            }
            // The select above prefers every input to the timer, so a push composed a batch per
            // step would wait while inputs keep arriving: its next batch goes every turn. (Only
            // that: running every due timer each turn cost about 9 % of quorum writes at 32
            // clients, wrk bench alternated; docs/benchmarks.md.)
            if self.node.has_queued_work() {
                self.node.handle_timeout(self.clock.now(), self.wall_ms());
            }
            if let Err(e) = self.flush().await {
                error!(error = %e, "stopping the node");
                break;
            }
            let m = self.node.membership();
            if stop_at.is_none()
                && m.is_leaving()
                && (m.has_left() || ctl.leave_deadline.is_some_and(|d| Instant::now() >= d))
            {
                // Keep gossiping a little so the leave reaches everyone, then stop.
                stop_at = Some(Instant::now() + m.config().timings().probe_period * 2);
            }
        }
        ctl.resolver.abort();
    }

    /// Handles one command from the API or the CLI.
    fn on_command(&mut self, cmd: Command, ctl: &mut RunState) {
        match cmd {
            Command::Leave => {
                if !self.node.membership().is_leaving() {
                    info!("leaving the cluster");
                    self.node.leave(self.clock.now(), self.wall_ms());
                    ctl.leave_deadline = Some(Instant::now() + Duration::from_secs(5));
                }
            }
            Command::SetSeeds(seeds) => {
                ctl.resolver.abort();
                self.seeds = seeds.clone();
                ctl.first_resolution = true;
                ctl.resolver = spawn_resolver(seeds, ctl.resolved_tx.clone());
            }
            Command::Join(addrs) => {
                for a in addrs {
                    info!(addr = %a, "joining through an address (chorus join)");
                    self.node.announce_to(self.clock.now(), self.wall_ms(), a);
                }
            }
            Command::ForceLeave(who, tx) => {
                let _ = tx.send(self.force_leave(&who));
            }
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Members(tx) => {
                let _ = tx.send(self.node.membership().members());
            }
            Command::Snapshot(tx) => {
                let store = self.node.store().expect("the agent runs a store");
                let (_, records) = store.snapshot();
                let catching_up = store.catching_up().is_some();
                let _ = tx.send(Backup {
                    records,
                    catching_up,
                });
            }
            Command::Kv(req, tx) => {
                let token = self.next_token;
                self.next_token += 1;
                let op = if matches!(req, Request::Get { .. }) {
                    "read"
                } else {
                    "write"
                };
                self.pending.insert(token, (tx, Instant::now(), op));
                self.node
                    .handle_request(self.clock.now(), self.wall_ms(), token, req);
            }
            Command::Strong(req, tx) => {
                let token = self.next_token;
                self.next_token += 1;
                self.pending_strong.insert(token, tx);
                self.node
                    .handle_strong_request(self.clock.now(), self.wall_ms(), token, req);
            }
            Command::Events(since, tx) => {
                let _ = tx.send(self.event_log.since(since));
            }
            Command::Keyring(op, tx) => {
                let token = self.next_token;
                self.next_token += 1;
                self.pending_keyring.insert(token, tx);
                self.node
                    .handle_keyring(self.clock.now(), self.wall_ms(), token, op);
            }
            Command::KeyringList(tx) => {
                let _ = tx.send(self.node.membership().sealer().keyring().list());
            }
            Command::Metrics(tx) => {
                let _ = tx.send(self.metrics());
            }
        }
    }

    /// Handles a report of the log writer: how far the log is written and synced, or why not.
    fn on_log_report(&mut self, report: crate::wal_file::Report) {
        match report {
            crate::wal_file::Report::Durable(written, synced) => {
                if self.node.store().is_some_and(|s| s.log_failure().is_some()) {
                    self.node
                        .handle_log_health(self.clock.now(), self.wall_ms(), None);
                }
                self.node
                    .handle_persisted(self.clock.now(), self.wall_ms(), written, synced);
            }
            crate::wal_file::Report::Failed(why) => {
                self.node
                    .handle_log_health(self.clock.now(), self.wall_ms(), Some(why));
            }
        }
    }

    /// Marks the failed member named (or with the id) `who` left; its id, or why not.
    fn force_leave(&mut self, who: &str) -> Result<String, String> {
        let matches: Vec<MemberView> = self
            .node
            .membership()
            .members()
            .into_iter()
            .filter(|m| !m.is_self && (m.name == who || m.id.to_string() == who))
            .collect();
        // Of several members with that name (a node replaced under its old name), the failed one.
        let target = match matches.as_slice() {
            [] => return Err(format!("no member named {who:?}")),
            [one] => one.clone(),
            many => match many
                .iter()
                .filter(|m| m.state == MemberState::Failed)
                .collect::<Vec<_>>()
                .as_slice()
            {
                [one] => (*one).clone(),
                _ => {
                    return Err(format!(
                        "{} members are named {who:?}: give the id (chorus members)",
                        many.len()
                    ));
                }
            },
        };
        let now = self.clock.now();
        self.node.membership_mut().force_leave(now, target.id)?;
        info!(name = %target.name, id = %target.id, "forced a failed member to leave");
        Ok(target.id.to_string())
    }

    fn metrics(&self) -> MetricsReport {
        let m = self.node.membership();
        let store = self.node.store().expect("the agent runs a store");
        let t = &self.io.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        MetricsReport {
            stats: m.stats().clone(),
            members: m.member_counts(),
            quorum: m.quorum(),
            send_errors: self.send_errors,
            store_frames: [
                get(&t.frames_sent),
                get(&t.frames_received),
                get(&t.frames_rejected),
                get(&t.send_dropped) + self.node.hold_stats().dropped,
            ],
            store_reconnects_stalled: get(&t.reconnects_stalled),
            store_rejected_by: t.rejected_by_reason(),
            keys: m.sealer().keyring().list(),
            store_entries: store.entries() as u64,
            store_in_flight: store.in_flight() as u64,
            events: self.events_by_type.clone(),
            subscribers: self.events.receiver_count() as u64,
            entries_by_store: store
                .config()
                .stores
                .keys()
                .map(|n| {
                    let len = store.replica().store(n).map_or(0, |s| s.len());
                    (n.clone(), len as u64)
                })
                .collect(),
            catching_up: store.catching_up().is_some(),
            leading: self.node.leading_at(self.clock.now()).is_some(),
            storage_failed: store.log_failure().is_some(),
            sync: store.sync_stats(),
        }
    }

    fn status(&self) -> StatusReport {
        let core = self.node.membership();
        let store = self.node.store().expect("the agent runs a store");
        let members = core.members();
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
        let stores = store
            .config()
            .stores
            .keys()
            .map(|n| {
                let summary = store
                    .replica()
                    .store(n)
                    .map_or((0, 0), |s| (s.len(), s.summary_hash()));
                (n.clone(), summary)
            })
            .collect();
        StatusReport {
            node,
            cluster: core.config().cluster.clone(),
            quorum: core.quorum(),
            members: core.member_counts(),
            reachable,
            unreachable,
            leaving: core.is_leaving(),
            stores,
            catch_up: store.catching_up(),
            leader_candidate: self.node.is_candidate(),
            leading: self.node.leading_at(self.clock.now()).map(|l| l.token),
            datacenters: core
                .config()
                .quorum
                .datacenter_votes()
                .map(|_| core.datacenter_reach()),
            disagreeing: {
                let members = core.members();
                let mine = node::quorum_tag(&core.config().quorum);
                members
                    .iter()
                    .filter(|m| {
                        !m.is_self && matches!(m.state, MemberState::Alive | MemberState::Suspect)
                    })
                    .filter_map(|m| {
                        let theirs = m.tags.get(node::QUORUM_TAG)?;
                        (*theirs != mine).then(|| (m.name.clone(), theirs.clone()))
                    })
                    .collect()
            },
        }
    }

    /// Executes the node's outputs. The log records among them go to the disk last, after the
    /// frames and replies: written in this thread when nothing else waits (see
    /// [`crate::wal_file::Writer::write_inline`]), whose report is handled at once and its
    /// outputs executed in turn, else handed to the log's thread.
    async fn flush(&mut self) -> anyhow::Result<()> {
        loop {
            let frames = self.execute_outputs().await?;
            if self.log_batch.is_empty() {
                return Ok(());
            }
            let records = std::mem::take(&mut self.log_batch);
            if !self.lightly_loaded() {
                self.io.log.append(records);
                return Ok(());
            }
            if frames > 0 {
                // The peers' writer tasks were woken with those frames and wait for this, the
                // runtime's only thread: let them write before it waits for the disk (a
                // coordinator's store round otherwise reached one peer an fsync late; bpftrace,
                // docs/benchmarks.md).
                tokio::task::yield_now().await;
                if !self.lightly_loaded() {
                    self.io.log.append(records);
                    return Ok(());
                }
            }
            match self.io.log.write_inline(records) {
                Ok(report) => self.on_log_report(report),
                Err(records) => {
                    self.io.log.append(records);
                    return Ok(());
                }
            }
        }
    }

    /// Whether the log's next batch may be written in this thread: at most one request of this
    /// node's own in flight and no input waiting. With more, the thread's fsync overlaps the
    /// driver's next step (at 32 clients, writing here cost 16 % of the rate:
    /// docs/benchmarks.md).
    fn lightly_loaded(&self) -> bool {
        self.pending.len() + self.pending_strong.len() <= 1
            && self.io.frames.is_empty()
            && self.cmds.is_empty()
    }

    /// Executes every output the node has, in order, but log records, which it gathers in
    /// `log_batch`; returns how many frames it queued for peers.
    async fn execute_outputs(&mut self) -> anyhow::Result<usize> {
        let mut frames = 0;
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Datagram(tx) => self.send_datagram(tx).await,
                Output::Frame { to, msg, .. } => {
                    frames += 1;
                    self.io.outbound.send(to, msg)
                }
                Output::CloseStreams(addrs) => self.io.outbound.retain(|a| !addrs.contains(a)),
                Output::AppendLog(records) => self.log_batch.extend(records),
                Output::WriteSnapshot { through, records } => {
                    // After the records it covers.
                    if !self.log_batch.is_empty() {
                        self.io.log.append(std::mem::take(&mut self.log_batch));
                    }
                    self.io.log.snapshot(through, records)
                }
                Output::Reply { token, result } => {
                    if let Some((tx, since, op)) = self.pending.remove(&token) {
                        let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
                        crate::api_metrics::observe_store(op, outcome, since.elapsed());
                        let _ = tx.send(result);
                    }
                }
                Output::StrongReply { token, result } => {
                    if let Some(tx) = self.pending_strong.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Output::Event(ev) => {
                    crate::events::log(&ev);
                    *self.events_by_type.entry(ev.kind.name()).or_default() += 1;
                    let v = crate::events::Shared::new(ev);
                    self.event_log.push(v.clone());
                    let _ = self.events.send(v);
                }
                Output::PersistGeneration(generation) => {
                    if let Err(e) = self.node_file.store(generation) {
                        error!(error = %e, "cannot persist the new generation; a restart may collide with it");
                    }
                }
                Output::MarkCatchingUp => {
                    let dir = &self.io.log_dir;
                    crate::wal_file::mark_lost(dir).with_context(|| {
                        format!("writing the catch-up marker in {}", dir.display())
                    })?;
                    warn!(
                        marker = %dir.join(crate::wal_file::LOST_MARKER).display(),
                        "this node may have lost acknowledged writes: it takes no part in quorum votes until \
                         peers holding a quorum of votes have brought it up to date"
                    );
                }
                Output::PersistKeyring(keys) => {
                    match crate::keyring_file::store(&self.io.data_dir, &keys) {
                        Ok(()) => info!(
                            primary = %keys[0].id(),
                            keys = keys.len(),
                            "keyring changed and persisted"
                        ),
                        Err(e) => {
                            error!(error = %e, file = %crate::keyring_file::path(&self.io.data_dir).display(),
                            "cannot persist the keyring: it is in effect now, but a restart would \
                             start from the previous one")
                        }
                    }
                }
                Output::KeyringReply { token, result } => {
                    if let Some(tx) = self.pending_keyring.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Output::CaughtUp => {
                    if let Err(e) = crate::wal_file::clear_lost(&self.io.log_dir) {
                        error!(error = %e, dir = %self.io.log_dir.display(),
                            "cannot remove the catch-up marker; the next start will catch up again");
                    }
                }
            }
        }
        Ok(frames)
    }

    async fn send_datagram(&mut self, tx: membership::Transmit) {
        let res = match tx.to {
            Destination::Unicast(addr) => self.gossip.send_to(&tx.bytes, addr).await,
            Destination::Beacon => match &self.beacon {
                Some((sock, group)) => sock.send_to(&tx.bytes, SocketAddr::V4(*group)).await,
                None => return,
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
