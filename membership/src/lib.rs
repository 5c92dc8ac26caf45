//! Chorus membership: who is in the cluster, as a sans-IO state machine.
//!
//! foca runs SWIM (probes, suspicion, dissemination) and is the only failure detector. Around it
//! this crate adds what Chorus needs: a persisted node identity with a generation, an
//! authenticated and encrypted envelope for every datagram, discovery beacons and seeds, per-node
//! metadata that converges (broadcast plus digest pull), left-versus-failed reporting, and a quorum
//! view computed from a fixed rule. Nothing here reads a clock, opens a socket or spawns a thread.

pub mod config;
pub mod core;
pub mod envelope;
pub mod identity;
pub mod meta;
pub mod quorum;
mod reach;

pub use crate::config::{MembershipConfig, Profile, SelfDescription, Timings};
pub use crate::core::{
    Destination, Event, Fault, MemberRef, MemberState, MemberView, Membership, Stats, Transmit,
};
pub use crate::envelope::{Channel, ClusterKey, DropReason, Sealer};
pub use crate::identity::{NodeId, Peer};
pub use crate::meta::NodeMeta;
pub use crate::quorum::{QuorumRule, QuorumStatus};
