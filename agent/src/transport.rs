//! The stream transport for store traffic: TCP on the gossip port, one connection per peer.
//!
//! Values can be far larger than a datagram, so replica traffic goes over TCP. Each frame is a
//! big-endian `u32` length followed by a sealed envelope (the same AEAD and cluster scoping as the
//! datagrams), whose payload names the sending node and carries one store message. A frame that
//! fails to open is dropped and counted, and the connection closed. Sending never blocks the core:
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

/// One peer's queue: the sender and the bytes currently waiting in it.
struct PeerQueue {
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// What travels inside a sealed frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct Frame {
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
    /// Frames dropped because they failed to open or decode.
    pub frames_rejected: AtomicU64,
    /// Messages dropped because a peer's queue was full or it could not be reached.
    pub send_dropped: AtomicU64,
}

/// Sends store messages to peers by address.
pub struct Outbound {
    me: NodeId,
    sealer: Arc<Sealer>,
    peers: BTreeMap<SocketAddr, PeerQueue>,
    stats: Arc<TransportStats>,
}

impl Outbound {
    /// An outbound side for node `me`.
    pub fn new(me: NodeId, sealer: Arc<Sealer>, stats: Arc<TransportStats>) -> Self {
        Outbound {
            me,
            sealer,
            peers: BTreeMap::new(),
            stats,
        }
    }

    /// Queues `msg` for the peer at `addr`, connecting if needed. Never blocks.
    pub fn send(&mut self, addr: SocketAddr, msg: PeerMsg) {
        let payload = postcard::to_stdvec(&Frame { from: self.me, msg })
            .expect("encoding a frame cannot fail");
        let mut nonce = [0u8; 12];
        if rand::rngs::SysRng.try_fill_bytes(&mut nonce).is_err() {
            warn!("no OS randomness for a frame nonce; dropping the message");
            return;
        }
        let sealed = self.sealer.seal(Channel::Store, nonce, &payload);
        let q = self.peers.entry(addr).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let queued = Arc::new(AtomicUsize::new(0));
            tokio::spawn(peer_writer(addr, rx, queued.clone(), self.stats.clone()));
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

/// Drains one peer's queue onto a TCP connection, reconnecting with a short backoff.
async fn peer_writer(
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    stats: Arc<TransportStats>,
) {
    let taken = |f: Vec<u8>| {
        queued.fetch_sub(f.len(), Ordering::Relaxed);
        f
    };
    let mut backoff = Duration::from_millis(50);
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
        let stream =
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                _ => {
                    // Unreachable: drop what is queued (the protocol copes) and retry on the next message.
                    stats
                        .send_dropped
                        .fetch_add(1 + rx.len() as u64, Ordering::Relaxed);
                    while let Ok(f) = rx.try_recv() {
                        taken(f);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
        backoff = Duration::from_millis(50);
        let _ = stream.set_nodelay(true);
        let mut w = BufWriter::new(stream);
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if write_frame(&mut w, &frame).await.is_err() {
                carry = Some(frame);
                continue 'outer;
            }
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            // Batch whatever else is queued into the same flush.
            next = match rx.try_recv() {
                Ok(f) => Some(taken(f)),
                Err(_) => {
                    if w.flush().await.is_err() {
                        continue 'outer;
                    }
                    match rx.recv().await {
                        Some(f) => Some(taken(f)),
                        None => break 'outer,
                    }
                }
            };
        }
    }
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
    stream: TcpStream,
    peer: SocketAddr,
    sealer: Arc<Sealer>,
    tx: mpsc::Sender<Frame>,
    stats: Arc<TransportStats>,
) {
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
            stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.resize(n, 0);
        if r.read_exact(&mut buf).await.is_err() {
            return;
        }
        let frame = match sealer.open_frame(&buf, MAX_FRAME) {
            Ok(o) if o.channel == Channel::Store => {
                postcard::from_bytes::<Frame>(&o.payload).map_err(|_| DropReason::Malformed)
            }
            Ok(_) => Err(DropReason::BadChannel),
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
                debug!(%peer, %reason, "store frame rejected; closing the connection");
                stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::ClusterKey;
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
        let mut out = Outbound::new(NodeId(1), sealer, stats.clone());
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
        let mut out = Outbound::new(NodeId(9), sealer, stats.clone());
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
        let mut out = Outbound::new(NodeId(9), wrong, Arc::new(TransportStats::default()));
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
