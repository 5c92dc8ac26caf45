//! The configuration file's layout: every key optional, unknown keys refused.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The file layout, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[node]`
    #[serde(default)]
    pub node: NodeSection,
    /// `[gossip]`
    #[serde(default)]
    pub gossip: GossipSection,
    /// `[discovery]`
    #[serde(default)]
    pub discovery: DiscoverySection,
    /// `[cluster]`
    #[serde(default)]
    pub cluster: ClusterSection,
    /// `[api]`
    #[serde(default)]
    pub api: ApiSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[store]`
    #[serde(default)]
    pub store: StoreSection,
    /// `[stores.NAME]`
    #[serde(default)]
    pub stores: BTreeMap<String, StoreDecl>,
    /// `[leader]`
    #[serde(default)]
    pub leader: LeaderSection,
    /// `[[handlers]]`
    #[serde(default)]
    pub handlers: Vec<HandlerDecl>,
}

/// One `[[handlers]]` entry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerDecl {
    /// `handlers[N].events`: the event types it runs for (`["*"]`: every type but key changes).
    pub events: Vec<String>,
    /// `handlers[N].command`: the program and its arguments.
    pub command: Vec<String>,
    /// `handlers[N].timeout`
    pub timeout: Option<String>,
}

/// `[leader]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderSection {
    /// `leader.candidate`
    pub candidate: Option<bool>,
    /// `leader.ttl`
    pub ttl: Option<String>,
    /// `leader.lock_delay`
    pub lock_delay: Option<String>,
}

/// `[store]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `store.max_value_bytes`
    pub max_value_bytes: Option<usize>,
    /// `store.minority_reads`
    pub minority_reads: Option<String>,
    /// `store.round_timeout` (e.g. "2s")
    pub round_timeout: Option<String>,
    /// `store.anti_entropy_interval` (e.g. "5s")
    pub anti_entropy_interval: Option<String>,
    /// `store.tombstone_grace` (e.g. "24h")
    pub tombstone_grace: Option<String>,
    /// `store.fsync`: `always`, `never`, or an interval such as `100ms` (every store's default)
    pub fsync: Option<String>,
    /// `store.snapshot_min_records`: fewest log records between two snapshots
    pub snapshot_min_records: Option<usize>,
}

/// `[stores.NAME]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreDecl {
    /// `stores.NAME.consistency`: `quorum` or `local`.
    pub consistency: Option<String>,
    /// `stores.NAME.fsync`: `always`, `never`, or an interval such as `100ms`.
    pub fsync: Option<String>,
}

/// `[node]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// `node.name`
    pub name: Option<String>,
    /// `node.datacenter`
    pub datacenter: Option<String>,
    /// `node.data_dir`
    pub data_dir: Option<PathBuf>,
    /// `node.tags`
    pub tags: Option<BTreeMap<String, String>>,
    /// `node.votes`
    pub votes: Option<u32>,
}

/// `[gossip]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSection {
    /// `gossip.bind`
    pub bind: Option<String>,
    /// `gossip.advertise`
    pub advertise: Option<String>,
    /// `gossip.profile`
    pub profile: Option<String>,
    /// `gossip.max_rtt`
    pub max_rtt: Option<String>,
}

/// `[discovery]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// `discovery.multicast`
    pub multicast: Option<bool>,
    /// `discovery.multicast_group`
    pub multicast_group: Option<String>,
    /// `discovery.multicast_interface`
    pub multicast_interface: Option<String>,
    /// `discovery.multicast_ttl`
    pub multicast_ttl: Option<u32>,
    /// `discovery.seeds`
    pub seeds: Option<Vec<String>>,
}

/// `[cluster]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `cluster.name`
    pub name: Option<String>,
    /// `cluster.key`
    pub key: Option<String>,
    /// `cluster.key_file`
    pub key_file: Option<String>,
    /// `cluster.keys`
    pub keys: Option<Vec<String>>,
    /// `cluster.expected_nodes`
    pub expected_nodes: Option<u32>,
    /// `cluster.quorum`
    pub quorum: Option<u32>,
    /// `cluster.total_votes`
    pub total_votes: Option<u32>,
    /// `cluster.quorum_mode`
    pub quorum_mode: Option<String>,
    /// `[cluster.datacenter_votes]`
    pub datacenter_votes: Option<std::collections::BTreeMap<String, u32>>,
}

/// `[api]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// `api.bind`
    pub bind: Option<String>,
    /// `[[api.tokens]]`
    #[serde(default)]
    pub tokens: Vec<TokenDecl>,
    /// `api.tls_cert`
    pub tls_cert: Option<String>,
    /// `api.tls_key`
    pub tls_key: Option<String>,
}

/// One `[[api.tokens]]` entry: a role and where its secret is read from (never the file itself,
/// so the configuration can be world-readable and the secret not).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDecl {
    /// `read` or `write`.
    pub role: Option<String>,
    /// A file holding the token.
    pub file: Option<String>,
    /// A systemd credential name (`LoadCredential=NAME:...`), read from `$CREDENTIALS_DIRECTORY`.
    pub credential: Option<String>,
}

/// `[log]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `log.level`
    pub level: Option<String>,
    /// `log.format`
    pub format: Option<String>,
}
