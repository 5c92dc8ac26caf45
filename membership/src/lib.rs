//! Chorus membership: who is in the cluster, as a sans-IO state machine.
//!
//! foca runs SWIM (probes, suspicion, dissemination) and is the only failure detector. Around it
//! this crate adds what Chorus needs: a persisted node identity with a generation, an
//! authenticated and encrypted envelope for every datagram, discovery beacons and seeds, per-node
//! metadata that converges (broadcast plus digest pull), left-versus-failed reporting, and a quorum
//! view computed from a fixed rule. Nothing here reads a clock, opens a socket or spawns a thread.

pub mod config;
pub mod core;
mod discovery;
pub mod envelope;
mod fault;
pub mod harness;
pub mod identity;
pub mod keyring;
pub mod meta;
mod meta_sync;
pub mod queue;
pub mod quorum;
mod reach;
pub mod replay;
pub mod report;
mod suspicion;
mod swim;

pub use crate::config::{MAX_QUEUED_UPDATES, MembershipConfig, Profile, SelfDescription, Timings};
pub use crate::core::{Destination, Membership, Stats, Transmit};
pub use crate::envelope::{Channel, DropReason, Opened, Sealer};
pub use crate::fault::Fault;
#[cfg(feature = "testing")]
pub use crate::fault::fuzz_datagram;
pub use crate::identity::{NodeId, Peer};
pub use crate::keyring::{ClusterKey, KeyId, KeyInfo, Keyring, KeyringError, KeyringOp};
pub use crate::meta::NodeMeta;
pub use crate::quorum::{DatacenterReach, QuorumRule, QuorumStatus, datacenters_met};
pub use crate::report::{Event, MemberRef, MemberState, MemberView};
