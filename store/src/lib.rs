//! Chorus object store: named stores of keys to byte values, replicated with quorum rounds.
//!
//! Each entry is a last-writer-wins register ordered by a hybrid-logical-clock version, deletes are
//! tombstones, and merging replicas is a join. The quorum protocol (ABD over the join), replica
//! traffic and anti-entropy live in [`core::StoreCore`], a sans-IO state machine like the
//! membership core: it never reads a clock, opens a socket or spawns a thread.

mod anti_entropy;
mod catch_up;
pub mod config;
mod coordinator;
pub mod core;
pub mod entry;
mod fault;
pub mod hlc;
pub mod limits;
mod log_gate;
pub mod msg;
mod push;
pub mod replica;
pub mod request;
mod slot;
pub mod wal;

pub use crate::anti_entropy::SyncStats;
pub use crate::catch_up::CatchUpStatus;
pub use crate::config::{Fsync, MinorityReads, StoreConfig, StoreSettings};
pub use crate::core::StoreCore;
pub use crate::entry::{Entry, Version};
pub use crate::fault::Fault;
#[cfg(feature = "testing")]
pub use crate::fault::fuzz_messages;
pub use crate::limits::StoreError;
pub use crate::msg::StoreMsg;
pub use crate::replica::{Replica, StoreMap};
pub use crate::request::{Consistency, OpId, Reply, Request};
pub use crate::slot::EntryRef;
