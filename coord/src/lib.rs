//! Chorus coordination: compare-and-set registers in a strong keyspace, on CASPaxos.
//!
//! Each strong key is a register of its own with a version that grows by one on every change.
//! A proposer reads and writes it through two quorum rounds of acceptors (prepare, accept),
//! applying a named change function in between; there is no command log and no leader. Locks,
//! sessions and elections are registers too (the fencing token is a lock's term). Like the other
//! cores it is sans-IO: the node feeds it time, peers and messages, and drains its `poll_*`
//! methods; acceptor state reaches the log through the node before any answer that depends on it.

pub mod acceptor;
pub mod ballot;
pub mod config;
pub mod core;
pub mod error;
pub mod fault;
pub mod lock;
pub mod msg;
mod proposer;
pub mod register;
mod sync;

pub use crate::acceptor::AcceptorState;
pub use crate::ballot::Ballot;
pub use crate::config::CoordConfig;
pub use crate::core::{CoordCore, MAX_KEY_BYTES, Request};
pub use crate::error::CoordError;
pub use crate::fault::Fault;
pub use crate::lock::{LockOp, LockOutcome, LockState, acting_window};
pub use crate::msg::{CoordMsg, OpId};
pub use crate::register::{Change, Expect, Outcome, Register};
