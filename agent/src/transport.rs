//! The stream transport for store traffic: TCP on the gossip port, one connection per peer.
//!
//! Values can be far larger than a datagram, so replica traffic goes over TCP. Each frame is a
//! big-endian `u32` length followed by a sealed envelope (the same AEAD, keyring and cluster
//! scoping as the datagrams), whose payload names the sending node and carries one store message.
//! A frame that fails to open is dropped and counted, and the connection closed.
//!
//! Replays: the accepting side opens every connection by sending a random 8-byte *challenge*;
//! every frame on it carries that challenge and its sequence number on the connection (0, 1, 2,
//! ...) inside the sealed payload. A frame captured from any other connection names another
//! challenge, and one duplicated or reordered within a connection has the wrong sequence number:
//! both are dropped as `replay` and the connection closed. This holds across restarts of either
//! side (a challenge is never reused), so an acknowledgement can only ever be counted on the
//! connection, and so for the operation, it was sent for. It costs the sender one read of 8 bytes
//! per connection and 9-11 bytes per frame. Sending never blocks the core:
//! each peer has a bounded queue drained by its own task, which connects on demand; when a queue
//! is full or the peer unreachable, messages are dropped, which the store protocol tolerates
//! (quorum rounds time out as `indeterminate`, anti-entropy repairs what pushes missed).

use membership::{Channel, DropReason, NodeId, Sealer};
use node::PeerMsg;
use rand::TryRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
#[cfg(test)]
use store::StoreMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Largest frame accepted: a maximal value plus keys and headers, with room to spare.
pub const MAX_FRAME: usize = 8 << 20;
/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Bytes queued per peer before new messages are dropped: a slow or unreachable peer must not
/// make the agent hold gigabytes of anti-entropy chunks.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;

/// Bytes of the challenge that opens a connection.
pub const CHALLENGE: usize = 8;

/// One peer's queue: the sender and the bytes currently waiting in it.
struct PeerQueue {
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// What travels inside a sealed frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct Frame {
    /// The challenge of the connection it was sent on.
    pub conn: [u8; CHALLENGE],
    /// Its sequence number on that connection.
    pub seq: u64,
    /// The sending node.
    pub from: NodeId,
    /// The message.
    pub msg: PeerMsg,
}

/// Counters of the transport, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames sent.
    pub frames_sent: AtomicU64,
    /// Frames received and opened.
    pub frames_received: AtomicU64,
    /// Frames dropped because they failed to open or decode, or were replays.
    pub frames_rejected: AtomicU64,
    /// The same by reason, in the order of [`DropReason::ALL`].
    pub rejected_by: [AtomicU64; DropReason::ALL.len()],
    /// Messages dropped because a peer's queue was full or it could not be reached.
    pub send_dropped: AtomicU64,
    /// Connections replaced because they were stalled in retransmission.
    pub reconnects_stalled: AtomicU64,
}

impl TransportStats {
    fn reject(&self, reason: DropReason) {
        self.frames_rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.rejected_by[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames rejected, by reason.
    pub fn rejected_by_reason(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .zip(&self.rejected_by)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Sends store messages to peers by address.
pub struct Outbound {
    me: NodeId,
    sealer: Arc<Sealer>,
    peers: BTreeMap<SocketAddr, PeerQueue>,
    stats: Arc<TransportStats>,
    connect_timeout: Duration,
    gone_tx: mpsc::UnboundedSender<SocketAddr>,
    gone_rx: Option<mpsc::UnboundedReceiver<SocketAddr>>,
}

/// How long a connection attempt may take on a LAN before it is given up (and the messages
/// queued for it dropped; quorum rounds ask again). Linux retransmits a lost SYN only after 1 s,
/// then 3 s: an attempt started while a partition cut the link would otherwise hold the peer's
/// queue for a second or more after the link is back (issue 18).
pub const LAN_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// The same over WAN links, where a round trip alone may take 100-300 ms.
pub const WAN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pauses between failed connection attempts to a peer, doubling from the shortest to the
/// longest (attempts are only made when there is something to send). Short, because a healed
/// link waits for the next attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

impl Outbound {
    /// An outbound side for node `me`; connection attempts are given up after
    /// `connect_timeout`.
    pub fn new(
        me: NodeId,
        sealer: Arc<Sealer>,
        stats: Arc<TransportStats>,
        connect_timeout: Duration,
    ) -> Self {
        let (gone_tx, gone_rx) = mpsc::unbounded_channel();
        Outbound {
            me,
            sealer,
            peers: BTreeMap::new(),
            stats,
            connect_timeout,
            gone_tx,
            gone_rx: Some(gone_rx),
        }
    }

    /// The addresses of peers whose process the writers found gone: a connection to it closed
    /// (or could not be made) and a new one was refused, so nothing listens on its port. Taken
    /// once, by the driver.
    pub fn gone_reports(&mut self) -> Option<mpsc::UnboundedReceiver<SocketAddr>> {
        self.gone_rx.take()
    }

    /// Queues `msg` for the peer at `addr`, connecting if needed. Never blocks. The message is
    /// encoded here and sealed by the peer's writer, which knows the connection it goes on.
    pub fn send(&mut self, addr: SocketAddr, msg: PeerMsg) {
        // The tail of a `Frame`: postcard encodes a struct as its fields one after another, so
        // the writer puts the connection's challenge and sequence number in front.
        let sealed = postcard::to_stdvec(&(self.me, msg)).expect("encoding a frame cannot fail");
        let q = self.peers.entry(addr).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let queued = Arc::new(AtomicUsize::new(0));
            tokio::spawn(peer_writer(
                addr,
                rx,
                queued.clone(),
                self.sealer.clone(),
                self.stats.clone(),
                self.connect_timeout,
                self.gone_tx.clone(),
            ));
            PeerQueue { tx, queued }
        });
        let len = sealed.len();
        if q.queued.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.queued.fetch_add(len, Ordering::Relaxed);
        if q.tx.try_send(sealed).is_err() {
            q.queued.fetch_sub(len, Ordering::Relaxed);
            self.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
            if q.tx.is_closed() {
                self.peers.remove(&addr);
            }
        }
    }

    /// Forgets peers that are no longer members (their writer tasks end).
    pub fn retain(&mut self, live: impl Fn(&SocketAddr) -> bool) {
        self.peers.retain(|a, _| live(a));
    }
}

/// Whether the kernel is retransmitting on this connection after a retransmission timeout: data
/// is unacknowledged and at least one RTO fired (not a fast retransmit). After a partition, such a
/// connection resends only when its backed-off timer fires (200 ms, 400 ms, ... 1.6 s and more),
/// while a new connection gets through at once; issue 18 measured 0.3-1.5 s stalls from it.
fn stalled(fd: std::os::fd::RawFd) -> bool {
    tcp_info(fd).is_some_and(|i| stalled_info(&i))
}

fn stalled_info(info: &libc::tcp_info) -> bool {
    info.tcpi_unacked > 0 && (info.tcpi_retransmits > 0 || info.tcpi_backoff > 0)
}

/// The kernel's `TCP_INFO` of a connection, `None` if it cannot be had.
fn tcp_info(fd: std::os::fd::RawFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it, and the
    // descriptor belongs to a TCP socket that the caller keeps open for the call.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (r == 0).then_some(info)
    }
}

/// `tcpi_state` of an established connection (Linux's `include/net/tcp_states.h`; the libc
/// crate names it only for other systems).
const TCP_ESTABLISHED: u8 = 1;

/// What a writer finds of its connection when a message arrives after an idle wait.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Open,
    /// The peer's FIN or RST arrived (see [`peer_closed`] for why that matters).
    Closed,
    /// See [`stalled`].
    Stalled,
}

/// One `TCP_INFO` query for both checks a writer makes before writing after an idle wait: the
/// connection's state (a FIN or RST received moves it out of `ESTABLISHED` at once, so this asks
/// the kernel just as the peek of [`peer_closed`] does) and its retransmissions. One system call
/// per frame sent after a pause instead of two (a peek and a query), on the path of every quorum
/// round with few requests in flight (issue 15).
fn health(fd: std::os::fd::RawFd) -> Health {
    match tcp_info(fd) {
        Some(i) if stalled_info(&i) => Health::Stalled,
        Some(i) if i.tcpi_state == TCP_ESTABLISHED => Health::Open,
        _ => Health::Closed,
    }
}

/// Whether the peer closed this connection: the accepting side never writes after its challenge,
/// so anything readable is its FIN or RST. A process that died (`kill -9`, a restart) closes its
/// connections, but a write into such a connection still succeeds once and is lost without an
/// error: a restarted node's first catch-up round waited 15 s for an answer lost that way
/// (issue 15). An idle writer calls this when the connection turns readable; before writing after
/// an idle wait it asks the kernel's connection state instead ([`health`]), which also tells a
/// stall, in one call.
///
/// The kernel is asked (a peek), not tokio's cached readiness, which can lag behind it: a FIN that
/// arrived together with the next message to send was missed that way, and the message went into
/// the dead connection.
fn peer_closed(stream: &TcpStream) -> bool {
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    let mut probe = [0u8; 1];
    // SAFETY: `probe` is a valid 1-byte buffer and `fd` an open socket the caller keeps open for
    // the call; MSG_PEEK leaves any byte where it is and MSG_DONTWAIT never blocks.
    let r = unsafe {
        libc::recv(
            fd,
            probe.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r >= 0 {
        return true; // EOF (0), or bytes the protocol never sends
    }
    if std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
        return true;
    }
    // Nothing there: clear tokio's readiness too, so that `readable()` waits for the next event.
    match stream.try_read(&mut probe) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// How often a write that waits (the socket's send buffer is full) checks whether the
/// connection is stalled.
const STALL_CHECK: Duration = Duration::from_millis(50);

/// Why a connection was given up.
enum Broken {
    Io,
    Stalled,
}

/// Runs a write on the connection `fd`, giving up if the connection stalls meanwhile: a write
/// into a full send buffer of a connection a partition cut would otherwise wait for the kernel's
/// backed-off retransmission, however long the link has been back.
async fn guarded(
    fd: std::os::fd::RawFd,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), Broken> {
    tokio::pin!(write);
    loop {
        match tokio::time::timeout(STALL_CHECK, &mut write).await {
            Ok(r) => return r.map_err(|_| Broken::Io),
            Err(_) if stalled(fd) => return Err(Broken::Stalled),
            Err(_) => {}
        }
    }
}

/// Drops a connection at once (RST) rather than leaving the kernel to deliver what it holds:
/// whatever was queued on a stalled connection is stale, and rounds ask again.
fn abort(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Drains one peer's queue onto a TCP connection, reconnecting with a short backoff. A connection
/// found stalled (see [`stalled`]) when there is something new to send is replaced by a new one.
async fn peer_writer(
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    sealer: Arc<Sealer>,
    stats: Arc<TransportStats>,
    connect_timeout: Duration,
    gone: mpsc::UnboundedSender<SocketAddr>,
) {
    let taken = |f: Vec<u8>| {
        queued.fetch_sub(f.len(), Ordering::Relaxed);
        f
    };
    let mut backoff = MIN_BACKOFF;
    // A frame whose write failed on a connection that turned out dead (the peer restarted) is
    // sent again on the next connection rather than dropped.
    let mut carry: Option<Vec<u8>> = None;
    'outer: loop {
        let first = match carry.take() {
            Some(f) => f,
            None => match rx.recv().await {
                Some(f) => taken(f),
                None => break,
            },
        };
        // Messages queued before this attempt go if it fails; those queued during it get the
        // next attempt (a partition may heal meanwhile, and quorum rounds ask again anyway).
        let older = rx.len();
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut s = TcpStream::connect(addr).await?;
            let mut challenge = [0u8; CHALLENGE];
            s.read_exact(&mut challenge).await?;
            std::io::Result::Ok((s, challenge))
        })
        .await;
        let (stream, challenge) = match connected {
            Ok(Ok(s)) => s,
            failed => {
                if matches!(&failed, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused)
                {
                    let _ = gone.send(addr);
                }
                stats
                    .send_dropped
                    .fetch_add(1 + older as u64, Ordering::Relaxed);
                for _ in 0..older {
                    match rx.try_recv() {
                        Ok(f) => drop(taken(f)),
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        let _ = stream.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let mut w = BufWriter::new(stream);
        let give_up = |w: &BufWriter<TcpStream>, why: Broken| {
            if let Broken::Stalled = why {
                debug!(%addr, "store connection stalled in retransmission; reconnecting");
                stats.reconnects_stalled.fetch_add(1, Ordering::Relaxed);
                abort(w.get_ref());
            }
        };
        // Nonces: 8 random bytes drawn once per connection, then the frame's sequence number.
        // A frame's nonce need only never repeat under the key; a random draw per frame (a
        // getrandom call each) was 2 % of an agent's CPU under quorum writes (issue 15).
        let mut prefix = [0u8; 8];
        if rand::rngs::SysRng.try_fill_bytes(&mut prefix).is_err() {
            warn!("no OS randomness for frame nonces; the connection waits");
            carry = Some(first);
            tokio::time::sleep(backoff).await;
            continue 'outer;
        }
        let mut next = Some(first);
        let mut seq = 0u64;
        while let Some(frame) = next.take() {
            let Some(sealed) = seal_frame(&sealer, challenge, seq, prefix, &frame) else {
                // 2^32 frames on one connection: a new one draws a new prefix.
                carry = Some(frame);
                continue 'outer;
            };
            seq += 1;
            if let Err(why) = guarded(fd, write_frame(&mut w, &sealed)).await {
                give_up(&w, why);
                carry = Some(frame);
                continue 'outer;
            }
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            // Batch whatever else is queued into the same flush.
            next = match rx.try_recv() {
                Ok(f) => Some(taken(f)),
                Err(_) => {
                    if let Err(why) = guarded(fd, w.flush()).await {
                        give_up(&w, why);
                        continue 'outer;
                    }
                    // While idle, watch the connection: the peer never writes after its
                    // challenge, so anything readable is its FIN or RST. A process that dies
                    // closes its connections at once, and a new one is then refused: that tells
                    // membership before any probe could (issue 16).
                    let idle = loop {
                        tokio::select! {
                            f = rx.recv() => break Some(f),
                            r = w.get_ref().readable() => {
                                // A spurious wake-up reads nothing (WouldBlock) and waits again.
                                if r.is_err() || peer_closed(w.get_ref()) {
                                    break None;
                                }
                            }
                        }
                    };
                    let Some(idle) = idle else {
                        drop(w);
                        if process_gone(addr, connect_timeout).await {
                            debug!(%addr, "store connection closed and a new one refused: the process is gone");
                            let _ = gone.send(addr);
                        }
                        continue 'outer;
                    };
                    let Some(f) = idle else { break 'outer };
                    match health(fd) {
                        Health::Stalled => {
                            give_up(&w, Broken::Stalled);
                            carry = Some(taken(f));
                            continue 'outer;
                        }
                        Health::Closed => {
                            debug!(%addr, "store connection closed by the peer (it restarted?); reconnecting");
                            carry = Some(taken(f));
                            continue 'outer;
                        }
                        Health::Open => Some(taken(f)),
                    }
                }
            };
        }
    }
}

/// Whether a connection to `addr` is refused: nothing listens on its port.
async fn process_gone(addr: SocketAddr, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Seals the encoded tail of a frame for the connection `challenge` as its `seq`th frame, with
/// the nonce `prefix` then `seq`; `None` once `seq` no longer fits the nonce's 4 bytes.
fn seal_frame(
    sealer: &Sealer,
    challenge: [u8; CHALLENGE],
    seq: u64,
    prefix: [u8; 8],
    tail: &[u8],
) -> Option<Vec<u8>> {
    let counter = u32::try_from(seq).ok()?;
    let mut payload = postcard::to_stdvec(&(challenge, seq)).expect("encoding cannot fail");
    payload.extend_from_slice(tail);
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&prefix);
    nonce[8..].copy_from_slice(&counter.to_be_bytes());
    Some(sealer.seal(Channel::Store, nonce, &payload))
}

async fn write_frame(w: &mut BufWriter<TcpStream>, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(&(frame.len() as u32).to_be_bytes()).await?;
    w.write_all(frame).await
}

/// Accepts store connections and forwards every opened frame to `tx`.
pub async fn serve(
    listener: TcpListener,
    sealer: Arc<Sealer>,
    tx: mpsc::Sender<Frame>,
    stats: Arc<TransportStats>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "store transport accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A sender that replaced a stalled connection may never close the old one cleanly (its
        // RST can be lost in the partition): keepalive ends such a reader within six minutes.
        // Not sooner: each probe and its answer are two segments of 66 bytes, and with a
        // connection from every peer, probes every 30 s were 60 of an idle node's 614 B/s on
        // the wire (issue 16). A reader left over meanwhile holds a socket, nothing more.
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(300))
                .with_interval(Duration::from_secs(10))
                .with_retries(3),
        );
        tokio::spawn(read_frames(
            stream,
            peer,
            sealer.clone(),
            tx.clone(),
            stats.clone(),
        ));
    }
}

async fn read_frames(
    mut stream: TcpStream,
    peer: SocketAddr,
    sealer: Arc<Sealer>,
    tx: mpsc::Sender<Frame>,
    stats: Arc<TransportStats>,
) {
    let mut challenge = [0u8; CHALLENGE];
    if rand::rngs::SysRng.try_fill_bytes(&mut challenge).is_err() {
        warn!(%peer, "no OS randomness for a connection challenge; closing the connection");
        return;
    }
    if stream.write_all(&challenge).await.is_err() {
        return;
    }
    let mut expected = 0u64;
    let mut r = BufReader::new(stream);
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    loop {
        if r.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            debug!(%peer, n, "store frame too large; closing the connection");
            stats.reject(DropReason::Oversize);
            return;
        }
        buf.resize(n, 0);
        if r.read_exact(&mut buf).await.is_err() {
            return;
        }
        let frame = match open(&sealer, &buf, challenge, expected) {
            Ok(f) => {
                expected += 1;
                Ok(f)
            }
            Err(e) => Err(e),
        };
        match frame {
            Ok(f) => {
                stats.frames_received.fetch_add(1, Ordering::Relaxed);
                if tx.send(f).await.is_err() {
                    return;
                }
            }
            Err(reason) => {
                if reason == DropReason::Replay {
                    // Only a holder of a cluster key can produce an authentic frame: a replay
                    // is an attack or a broken network device, and worth a warning.
                    warn!(%peer, "dropped a replayed store frame (another connection's, or out of sequence); closing the connection");
                } else {
                    debug!(%peer, %reason, "store frame rejected; closing the connection");
                }
                stats.reject(reason);
                return;
            }
        }
    }
}

/// Opens one frame of the connection `challenge`, which must be its `expected`th.
pub fn open(
    sealer: &Sealer,
    sealed: &[u8],
    challenge: [u8; CHALLENGE],
    expected: u64,
) -> Result<Frame, DropReason> {
    let o = sealer.open_frame(sealed, MAX_FRAME)?;
    if o.channel != Channel::Store {
        return Err(DropReason::BadChannel);
    }
    let f = postcard::from_bytes::<Frame>(&o.payload).map_err(|_| DropReason::Malformed)?;
    if f.conn != challenge || f.seq != expected {
        return Err(DropReason::Replay);
    }
    Ok(f)
}

/// What the `store_frame` fuzz target and its corpus replay run on any bytes: the first 8 bytes
/// are a connection's challenge and the 9th the sequence number expected; the rest is a frame's
/// payload, sealed with the cluster key and opened as the reader does, and the input itself is
/// opened as a raw sealed frame too. A keyring operation that decodes is applied to a ring. Any
/// panic is a bug: an authenticated peer must not be able to crash a node.
pub fn fuzz_frame(data: &[u8]) {
    use membership::{ClusterKey, Keyring};
    if data.len() < 9 {
        return;
    }
    let sealer = Sealer::new("fuzz", &ClusterKey::new([7; 32]));
    let challenge: [u8; CHALLENGE] = data[..8].try_into().expect("8 bytes");
    let expected = u64::from(data[8]);
    let _ = open(&sealer, data, challenge, expected);
    let sealed = sealer.seal(Channel::Store, [9; 12], &data[9..]);
    if let Ok(Frame {
        msg: PeerMsg::Keyring(node::KeyringMsg::Apply { op, .. }),
        ..
    }) = open(&sealer, &sealed, challenge, expected)
    {
        let mut ring = Keyring::new(ClusterKey::new([1; 32]), []);
        let _ = ring.apply(&op);
        let _ = ring.list();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::ClusterKey;

    fn corpus() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/store_frame")
    }

    /// Inputs of the fuzz target: real frames of every kind the transport carries.
    fn seeds() -> Vec<Vec<u8>> {
        use membership::KeyringOp;
        let msgs = vec![
            PeerMsg::Store(StoreMsg::WriteAck { op: 42 }),
            PeerMsg::Store(StoreMsg::ReadReq {
                op: 7,
                store: "default".into(),
                key: "k".into(),
            }),
            PeerMsg::Keyring(node::KeyringMsg::Apply {
                req: 1 << 32 | 1,
                op: KeyringOp::Install(ClusterKey::new([3; 32])),
            }),
            PeerMsg::Keyring(node::KeyringMsg::Apply {
                req: 2,
                op: KeyringOp::Use(ClusterKey::new([1; 32]).id()),
            }),
            PeerMsg::Keyring(node::KeyringMsg::Apply {
                req: 3,
                op: KeyringOp::Remove(ClusterKey::new([1; 32]).id()),
            }),
            PeerMsg::Keyring(node::KeyringMsg::Applied {
                req: 3,
                result: Err(membership::KeyringError::RemovePrimary(
                    ClusterKey::new([1; 32]).id(),
                )),
            }),
        ];
        let mut out = Vec::new();
        for (seq, msg) in msgs.into_iter().enumerate() {
            let challenge = [seq as u8 + 1; CHALLENGE];
            let mut input = challenge.to_vec();
            input.push(seq as u8);
            input.extend(postcard::to_stdvec(&(challenge, seq as u64, NodeId(5), msg)).unwrap());
            out.push(input);
        }
        out.push(vec![0; 9]);
        out.push(vec![0xff; 40]);
        out
    }

    #[test]
    fn the_store_frame_corpus_replays_cleanly() {
        let dir = corpus();
        let seeds = seeds();
        if std::env::var_os("CHORUS_WRITE_CORPUS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
            }
        }
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/store_frame exists") {
            fuzz_frame(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 8, "the corpus holds only {n} inputs");
        // The seeds are real frames: each opens as the reader would open it.
        let sealer = Sealer::new("fuzz", &ClusterKey::new([7; 32]));
        for s in &seeds[..6] {
            let challenge: [u8; CHALLENGE] = s[..8].try_into().unwrap();
            let sealed = sealer.seal(Channel::Store, [9; 12], &s[9..]);
            assert!(open(&sealer, &sealed, challenge, u64::from(s[8])).is_ok());
            assert_eq!(
                open(&sealer, &sealed, [0; CHALLENGE], u64::from(s[8])).err(),
                Some(DropReason::Replay),
                "another connection's challenge"
            );
            assert_eq!(
                open(&sealer, &sealed, challenge, u64::from(s[8]) + 1).err(),
                Some(DropReason::Replay),
                "out of sequence"
            );
            fuzz_frame(s);
        }
    }

    #[tokio::test]
    async fn a_connection_whose_peer_went_away_is_seen_closed_before_the_next_write() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        assert!(!peer_closed(&client), "a live, quiet connection is open");
        assert_eq!(health(fd), Health::Open);
        // The peer's process dies: its kernel closes the connection.
        drop(server);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !peer_closed(&client) || health(fd) != Health::Closed {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the close was not seen"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A peer restarts on the same address between two messages: the first message after the
    /// restart reaches the new process (without the closed-connection check it went into the
    /// old process's connection and was lost, which held a restarted node's catch-up 15 s and
    /// more).
    #[tokio::test]
    async fn the_first_message_after_a_peer_restarts_reaches_the_new_process() {
        let sealer = Arc::new(Sealer::new("t", &ClusterKey::new([1; 32])));
        // The old process, by hand: accept, challenge, read one frame, then die.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = Outbound::new(
            NodeId(9),
            sealer.clone(),
            Arc::new(TransportStats::default()),
            LAN_CONNECT_TIMEOUT,
        );
        out.send(addr, PeerMsg::Store(StoreMsg::WriteAck { op: 1 }));
        let (conn, buf) = accept_one(&listener).await;
        let f = open(&sealer, &buf, [7; CHALLENGE], 0).unwrap();
        assert_eq!(f.msg, PeerMsg::Store(StoreMsg::WriteAck { op: 1 }));
        drop(conn);
        drop(listener);
        let stats = Arc::new(TransportStats::default());
        let listener = TcpListener::bind(addr).await.unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(serve(listener, sealer, tx, stats));
        // The close reached the sender's socket with `drop` (loopback delivers the FIN at once),
        // as it does long before a restarted peer is asked anything.
        out.send(addr, PeerMsg::Store(StoreMsg::WriteAck { op: 2 }));
        let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the message after the restart was lost")
            .unwrap();
        assert_eq!(f.msg, PeerMsg::Store(StoreMsg::WriteAck { op: 2 }));
    }

    /// Accepts one connection by hand on `listener` (an old process, or one about to die),
    /// sends the challenge `[7; 8]` and reads one sealed frame.
    async fn accept_one(listener: &TcpListener) -> (TcpStream, Vec<u8>) {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(&[7; CHALLENGE]).await.unwrap();
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut buf).await.unwrap();
        (conn, buf)
    }

    /// A peer's process dies: its connection closes and its port refuses a new one, and the
    /// writer reports it at once, with no message waiting to be sent. A peer that closed the
    /// connection but still listens (it restarted) is not reported.
    #[tokio::test]
    async fn a_peer_whose_process_died_is_reported_gone_and_one_that_restarted_is_not() {
        let sealer = Arc::new(Sealer::new("t", &ClusterKey::new([1; 32])));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = Outbound::new(
            NodeId(9),
            sealer,
            Arc::new(TransportStats::default()),
            LAN_CONNECT_TIMEOUT,
        );
        let mut gone = out.gone_reports().expect("taken once");
        assert!(out.gone_reports().is_none());
        // Restarted: the connection closes, the port still listens.
        out.send(addr, PeerMsg::Store(StoreMsg::WriteAck { op: 1 }));
        let (conn, _) = accept_one(&listener).await;
        drop(conn);
        // The writer's check connects (and is accepted): nothing is reported.
        let (probe, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the writer checks the port once the connection closed")
            .unwrap();
        drop(probe);
        assert!(gone.try_recv().is_err(), "a listening peer reported gone");
        // Died: the next connection closes and the port refuses.
        out.send(addr, PeerMsg::Store(StoreMsg::WriteAck { op: 2 }));
        let (conn, _) = accept_one(&listener).await;
        drop(listener);
        drop(conn);
        let reported = tokio::time::timeout(Duration::from_secs(5), gone.recv())
            .await
            .expect("a dead peer was not reported gone");
        assert_eq!(reported, Some(addr));
    }

    #[test]
    fn frame_nonces_differ_within_a_connection_and_run_out_at_2_pow_32() {
        let sealer = Sealer::new("t", &ClusterKey::new([1; 32]));
        let nonce = |f: &[u8]| sealer.open_frame(f, MAX_FRAME).expect("opens").nonce;
        let a = seal_frame(&sealer, [0; CHALLENGE], 0, [7; 8], b"x").unwrap();
        let b = seal_frame(&sealer, [0; CHALLENGE], 1, [7; 8], b"x").unwrap();
        assert_ne!(nonce(&a), nonce(&b));
        assert!(seal_frame(&sealer, [0; CHALLENGE], u64::from(u32::MAX), [7; 8], b"x").is_some());
        assert!(seal_frame(&sealer, [0; CHALLENGE], 1 << 32, [7; 8], b"x").is_none());
    }

    #[test]
    fn a_frame_costs_its_challenge_and_sequence_number_more() {
        let sealer = Sealer::new("t", &ClusterKey::new([1; 32]));
        let tail = postcard::to_stdvec(&(NodeId(1), PeerMsg::Store(StoreMsg::WriteAck { op: 42 })))
            .unwrap();
        let plain = sealer.seal(Channel::Store, [0; 12], &tail).len();
        for (seq, extra) in [(0u64, 9), (127, 9), (128, 10), (16_383, 10), (16_384, 11)] {
            let framed = seal_frame(&sealer, [0; CHALLENGE], seq, [0; 8], &tail)
                .unwrap()
                .len();
            assert_eq!(framed - plain, extra, "seq {seq}");
        }
    }
    use store::{Entry, Version};

    fn big_message(i: usize) -> PeerMsg {
        let entry = Entry {
            version: Version::ZERO,
            value: Some(vec![7; 1 << 20]),
            expires_at: None,
        };
        PeerMsg::Store(StoreMsg::Entries {
            store: "default".into(),
            entries: vec![(format!("k{i}"), entry)],
        })
    }

    #[tokio::test]
    async fn a_stuck_peer_costs_at_most_the_byte_budget() {
        // A peer that accepts connections but never reads.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(TransportStats::default());
        let sealer = Arc::new(Sealer::new("t", &ClusterKey::new([1; 32])));
        let mut out = Outbound::new(NodeId(1), sealer, stats.clone(), LAN_CONNECT_TIMEOUT);
        for i in 0..48 {
            out.send(addr, big_message(i));
        }
        let queued = out.peers[&addr].queued.load(Ordering::Relaxed);
        assert!(queued <= MAX_QUEUED_BYTES, "{queued} bytes queued");
        assert!(
            stats.send_dropped.load(Ordering::Relaxed) >= 48 - 32,
            "nothing was dropped"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn frames_round_trip_between_two_nodes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sealer = Arc::new(Sealer::new("t", &ClusterKey::new([1; 32])));
        let stats = Arc::new(TransportStats::default());
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(serve(listener, sealer.clone(), tx, stats.clone()));
        let mut out = Outbound::new(NodeId(9), sealer, stats.clone(), LAN_CONNECT_TIMEOUT);
        out.send(addr, PeerMsg::Store(StoreMsg::WriteAck { op: 42 }));
        let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.from, NodeId(9));
        assert_eq!(f.msg, PeerMsg::Store(StoreMsg::WriteAck { op: 42 }));
    }

    #[tokio::test]
    async fn a_frame_under_another_key_is_rejected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(TransportStats::default());
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(serve(
            listener,
            Arc::new(Sealer::new("t", &ClusterKey::new([1; 32]))),
            tx,
            stats.clone(),
        ));
        let wrong = Arc::new(Sealer::new("t", &ClusterKey::new([2; 32])));
        let mut out = Outbound::new(
            NodeId(9),
            wrong,
            Arc::new(TransportStats::default()),
            LAN_CONNECT_TIMEOUT,
        );
        out.send(addr, PeerMsg::Store(StoreMsg::WriteAck { op: 1 }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stats.frames_rejected.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the forged frame was not rejected"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rx.try_recv().is_err());
    }
}
