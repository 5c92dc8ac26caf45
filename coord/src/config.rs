//! The coordination core's settings.

use std::collections::BTreeMap;
use std::time::Duration;

/// Settings of the coordination core.
#[derive(Debug, Clone)]
pub struct CoordConfig {
    /// Votes a quorum needs: the configured quorum, never one derived from the membership view.
    pub required_votes: u32,
    /// This node's votes.
    pub my_votes: u32,
    /// `datacenters` quorum mode: the configured votes of each datacenter (as the store's).
    pub datacenters: Option<BTreeMap<String, u32>>,
    /// This node's datacenter.
    pub my_datacenter: String,
    /// How long a proposal may take before it answers `no_quorum` (nothing was applied) or
    /// `indeterminate` (an accept went out and may have been chosen).
    pub round_timeout: Duration,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Whether acceptor state goes to the log ([`crate::CoordCore::poll_persist`]) and answers
    /// wait for it ([`crate::CoordCore::persisted`]); off, acceptors live in memory only.
    pub durable: bool,
    /// The bound on any node's clock-rate error, in parts per million: a lock holder acts for
    /// its lease shortened by it (see [`crate::acting_window`]).
    pub lease_rho_ppm: u32,
    /// The time a lock holder needs to stop acting; its window ends this much early.
    pub lease_margin: Duration,
}

impl CoordConfig {
    /// Defaults for a cluster whose quorum is `required_votes`.
    pub fn new(required_votes: u32) -> Self {
        CoordConfig {
            required_votes,
            my_votes: 1,
            datacenters: None,
            my_datacenter: String::new(),
            round_timeout: Duration::from_secs(2),
            max_value_bytes: 1 << 20,
            durable: false,
            lease_rho_ppm: 10_000,
            lease_margin: Duration::from_millis(200),
        }
    }
}
