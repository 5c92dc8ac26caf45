//! netsim: many Chorus nodes in one process, on a virtual clock and a seeded network.
//!
//! The simulator runs the very cores the agent runs (membership and store), wired the way the
//! agent's driver wires them. Time only moves when the simulator says so; every random draw
//! (latency, loss, each core's own seed, each client's choices) derives from one seed, so a run
//! replays exactly. Faults are injected on purpose: loss, duplication, reordering, one-way and
//! symmetric cuts, bridges, flapping links, crashes, restarts, pauses and clock skew. Client
//! operations are recorded in a history, and checkers judge the history and the final state.

pub mod check;
pub mod check_events;
pub mod check_locks;
pub mod check_strong;
pub mod faults;
pub mod history;
pub mod linearizability;
pub mod net;
pub mod scale;
pub mod scenario;
pub mod sim;
pub mod wan;
pub mod workload;

pub use crate::net::{LinkModel, Network};
pub use crate::sim::{Logged, Seen, Sim, SimConfig, Skew, Traffic, WorldFault};
