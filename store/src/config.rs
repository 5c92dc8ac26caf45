//! The store core's settings.

use crate::request::Consistency;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a minority node does with reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinorityReads {
    /// Refuse with `no_quorum`.
    Refuse,
    /// Serve the local replica, marked stale.
    Stale,
}

/// When a store's writes are on disk, relative to their acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Acknowledged after an fsync (group commit: concurrent writes share one).
    #[default]
    Always,
    /// Acknowledged once written to the file; the file is fsynced every this often.
    Interval(Duration),
    /// Acknowledged once written to the file; fsync is left to the kernel.
    Never,
}

/// Per-store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Consistency when a request does not say.
    pub default_consistency: Consistency,
    /// When its writes count as durable.
    pub fsync: Fsync,
}

/// Settings of the store core.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Votes a quorum needs (the membership rule).
    pub required_votes: u32,
    /// This node's votes.
    pub my_votes: u32,
    /// `datacenters` quorum mode: the configured votes of each datacenter (a quorum is a
    /// majority of them, each with a majority of its votes); `None`: a quorum is
    /// `required_votes`.
    pub datacenters: Option<BTreeMap<String, u32>>,
    /// This node's datacenter.
    pub my_datacenter: String,
    /// How long a quorum round may take before it answers `indeterminate`.
    pub round_timeout: Duration,
    /// How long a quorum round waits for a peer's answer before it asks again (and asks peers
    /// that became reachable since it started). A request lost with a connection that a
    /// partition cut, or never sent to a member the view held failed, would otherwise hold the
    /// round until `round_timeout` (issue 18 measured 1.9 s gaps in namespaces).
    pub round_retry: Duration,
    /// Largest value.
    pub max_value_bytes: usize,
    /// How long tombstones and expired entries are kept before they are collected.
    pub gc_grace: Duration,
    /// Anti-entropy period while some peer is not known to be in sync with this replica.
    pub anti_entropy_every: Duration,
    /// Anti-entropy period once every peer has been found in sync with this replica as it is
    /// now: nothing can differ unless a replica changed, and the one that changed starts rounds
    /// itself, so this round is only a safety net.
    pub anti_entropy_quiet_every: Duration,
    /// Largest sum of value bytes in one anti-entropy message.
    pub sync_chunk_bytes: usize,
    /// Most `(key, version)` pairs in one anti-entropy message.
    pub sync_versions_per_message: usize,
    /// Most bytes of entries pushed in one answer to a catch-up digest that takes pushes in
    /// parts ([`PUSH_PARTS`](crate::msg::PUSH_PARTS)); at least one bucket goes. Below what the
    /// transport queues for one peer, or the rest of a push is dropped.
    pub sync_push_budget_bytes: usize,
    /// Entries a push composes per step of the core: the first batch leaves at once, and the
    /// node handles other inputs between two batches (`push.rs`).
    pub sync_push_batch: usize,
    /// Reads on a node without quorum.
    pub minority_reads: MinorityReads,
    /// The stores that exist, by name.
    pub stores: BTreeMap<String, StoreSettings>,
    /// Whether changes go to a write-ahead log ([`StoreCore::poll_log`]) and acknowledgements
    /// wait for it ([`StoreCore::persisted`]); off, replicas live in memory only.
    pub durable: bool,
}

impl StoreConfig {
    /// A configuration with one store, `default`, at quorum consistency.
    pub fn new(required_votes: u32) -> Self {
        let mut stores = BTreeMap::new();
        stores.insert(
            "default".to_string(),
            StoreSettings {
                default_consistency: Consistency::Quorum,
                fsync: Fsync::Always,
            },
        );
        StoreConfig {
            required_votes,
            my_votes: 1,
            datacenters: None,
            my_datacenter: String::new(),
            round_timeout: Duration::from_secs(2),
            round_retry: Duration::from_millis(100),
            max_value_bytes: crate::limits::DEFAULT_MAX_VALUE_BYTES,
            gc_grace: Duration::from_secs(24 * 3600),
            anti_entropy_every: Duration::from_secs(5),
            anti_entropy_quiet_every: Duration::from_secs(60),
            sync_chunk_bytes: 256 * 1024,
            sync_versions_per_message: 8192,
            sync_push_budget_bytes: 16 << 20,
            sync_push_batch: 8192,
            minority_reads: MinorityReads::Refuse,
            stores,
            durable: false,
        }
    }
}
