//! What goes into a node and what comes out: every driver executes these and nothing else.

use crate::events::NodeEvent;
use membership::{NodeId, Transmit};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use store::wal::Record;
use store::{Reply, Request, StoreError, StoreMsg};

/// A message between nodes on the stream transport, for one of the cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// For the store cores.
    Store(StoreMsg),
    /// For the coordination cores.
    Coord(coord::CoordMsg),
    /// A cluster-wide keyring operation or its answer.
    Keyring(crate::keyring::KeyringMsg),
}

/// Something that happened to the node. The typed `handle_*` methods of [`crate::Node`] take the
/// same inputs one by one; this form lets a test record what a driver fed a node and replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A datagram arrived on the gossip or the beacon socket.
    Datagram {
        /// Sender's address.
        from: SocketAddr,
        /// The sealed bytes.
        bytes: Vec<u8>,
    },
    /// A store message arrived on the stream transport (already authenticated).
    Frame {
        /// Sending node.
        from: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// The stream transport found the process at this gossip address gone: its connection
    /// closed and a new one was refused (see `Membership::handle_process_gone`).
    ProcessGone(SocketAddr),
    /// The time [`crate::Node::poll_timeout`] named has come.
    Timeout,
    /// A client asked for something; its answer is an [`Output::Reply`] with the same token.
    Request {
        /// The driver's name for this request.
        token: u64,
        /// What it asks.
        req: Request,
    },
    /// A client asked something of the strong keyspace; its answer is an
    /// [`Output::StrongReply`] with the same token.
    StrongRequest {
        /// The driver's name for this request.
        token: u64,
        /// What it asks.
        req: coord::Request,
    },
    /// The log is written through `written` and synced through `synced` (sequence numbers).
    Persisted {
        /// Last record written to the file.
        written: u64,
        /// Last record known to be on stable storage.
        synced: u64,
    },
    /// The log cannot be written (`Some(why)`), or can again (`None`).
    LogHealth(Option<String>),
    /// Leave the cluster gracefully.
    Leave,
    /// The seed addresses, resolved again.
    Seeds(Vec<SocketAddr>),
    /// Announce this node to `addr` now (a seed at start, an operator's join).
    Announce(SocketAddr),
    /// Change the keyring on every live member; the answer is an [`Output::KeyringReply`] with
    /// the same token.
    Keyring {
        /// The driver's name for this request.
        token: u64,
        /// The change.
        op: membership::KeyringOp,
    },
}

/// Something the driver must do. Drain [`crate::Node::poll_output`] after every input and
/// execute each in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a sealed datagram.
    Datagram(Transmit),
    /// Send a store message to a peer over the stream transport.
    Frame {
        /// The peer's gossip address (the stream transport listens on the same port).
        to: SocketAddr,
        /// The peer.
        peer: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// Drop the stream connections to these addresses (the peer went away or restarted); frames
    /// queued on them may be lost, which the store's rounds tolerate.
    CloseStreams(Vec<SocketAddr>),
    /// Append these records to the write-ahead log, in order, then report with
    /// [`Input::Persisted`].
    AppendLog(Vec<Record>),
    /// Write this snapshot of the whole replica, which covers every record through `through`,
    /// then drop the log records it covers. Appends that follow go after it.
    WriteSnapshot {
        /// Last sequence number the snapshot covers.
        through: u64,
        /// Every entry held, tombstones included.
        records: Vec<Record>,
    },
    /// Answer a client.
    Reply {
        /// The token of its [`Input::Request`].
        token: u64,
        /// The answer.
        result: Result<Reply, StoreError>,
    },
    /// Answer a client of the strong keyspace.
    StrongReply {
        /// The token of its [`Input::StrongRequest`].
        token: u64,
        /// The answer.
        result: Result<coord::Outcome, coord::CoordError>,
    },
    /// Report an event (log it, hand it to subscribers and handlers).
    Event(NodeEvent),
    /// Persist this generation with the node's identity, so the next start uses a higher one.
    PersistGeneration(u64),
    /// Persist the catch-up marker: this node may have lost writes it acknowledged and must not
    /// vote until it has caught up, also across a crash before then. Executed before anything
    /// else the node asks; a driver that cannot persist it must stop the node.
    MarkCatchingUp,
    /// The node has caught up with its peers: local reads are fresh. Remove the catch-up marker.
    CaughtUp,
    /// The keyring changed: persist these keys, the primary first, so a restart keeps them.
    PersistKeyring(Vec<membership::ClusterKey>),
    /// Answer a keyring operation: which nodes did it, or why this node refused it (then nothing
    /// changed anywhere).
    KeyringReply {
        /// The token of its [`Input::Keyring`].
        token: u64,
        /// The answer.
        result: Result<crate::keyring::KeyringReport, membership::KeyringError>,
    },
}
