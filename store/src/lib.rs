//! Chorus object store: named stores of keys to byte values, replicated with quorum rounds.
//!
//! Each entry is a last-writer-wins register ordered by a hybrid-logical-clock version, deletes are
//! tombstones, and merging replicas is a join. The quorum protocol (ABD over the join), replica
//! traffic and anti-entropy live in [`core::StoreCore`], a sans-IO state machine like the
//! membership core: it never reads a clock, opens a socket or spawns a thread.

pub mod core;
pub mod entry;
pub mod hlc;
pub mod limits;
pub mod replica;
pub mod wal;

pub use crate::core::{
    CatchUpStatus, Consistency, Fault, Fsync, MinorityReads, OpId, Reply, Request, StoreConfig,
    StoreCore, StoreMsg, StoreSettings,
};
pub use crate::entry::{Entry, Version};
pub use crate::limits::StoreError;
pub use crate::replica::{Replica, StoreMap};
