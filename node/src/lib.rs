//! One Chorus node as one sans-IO state machine.
//!
//! The membership core and the store core are composed here and nowhere else: the agent (tokio,
//! sockets, files), netsim (a virtual clock, a simulated network and disks) and tests all feed a
//! [`Node`] the same typed inputs and execute the same typed [`Output`]s. Every rule about how
//! the cores talk to each other and to the outside (which peers the store may use, when to take a
//! snapshot, when a node that may have lost writes has caught up, how long a store message waits
//! for a peer's address) lives in this crate, so the simulator tests exactly what production runs.
//!
//! Like the cores, a node never reads a clock, opens a socket or spawns a thread: time comes in
//! with every input, and randomness from the seed it was built with.

pub mod events;
mod held_joins;
mod hold;
mod io;
pub mod keyring;
pub mod leader;
mod node;
mod recover;
mod snapshot;
mod strong;
pub mod view;

pub use crate::events::{EVENT_TYPES, EventKind, NodeEvent};
pub use crate::hold::HoldStats;
pub use crate::io::{Input, Output, PeerMsg};
pub use crate::keyring::{KeyringMsg, KeyringReport, NodeOutcome, Outcome};
pub use crate::leader::{LEADER_LOCK, LeaderConfig, Leadership};
pub use crate::node::{Faults, Node, NodeConfig};
pub use crate::recover::Recovered;

/// The metadata tag in which every node publishes its quorum rule, `REQUIRED/TOTAL` votes, so that
/// members that disagree are found (a configuration changed on some nodes only).
pub const QUORUM_TAG: &str = "chorus.quorum";

/// The value of [`QUORUM_TAG`] for `rule`.
pub fn quorum_tag(rule: &membership::QuorumRule) -> String {
    rule.tag()
}
