//! Agent configuration: a TOML file, overridden by `CHORUS_*` environment variables, overridden by
//! command-line flags. Every value is validated at start, and an error names the key at fault.
//!
//! `file` is the file's layout; `layers` applies the one rule (flag, else environment, else file)
//! to any key; `sections` resolves and validates each section; this file holds the result and
//! builds each core's configuration from it, in one place.

mod file;
mod layers;
mod sections;
#[cfg(test)]
mod tests;

pub use self::file::*;
pub use self::sections::{parse_addr, parse_key};
use membership::{ClusterKey, MembershipConfig, Profile, QuorumRule, SelfDescription};
use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Default gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default HTTP API port.
pub const DEFAULT_API_PORT: u16 = 7947;
/// Default multicast discovery group.
pub const DEFAULT_MULTICAST_GROUP: &str = "239.255.79.46:7948";

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// What the TOML parser said (it names the key and line).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `cluster.quorum`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Values given on the command line; each wins over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--name`
    pub name: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--bind`
    pub bind: Option<String>,
    /// `--advertise`
    pub advertise: Option<String>,
    /// `--api`
    pub api: Option<String>,
    /// `--seed` (repeatable)
    pub seeds: Vec<String>,
    /// `--expected-nodes`
    pub expected_nodes: Option<u32>,
    /// `--cluster`
    pub cluster: Option<String>,
    /// `--profile`
    pub profile: Option<String>,
    /// `--multicast` / `--no-multicast`
    pub multicast: Option<bool>,
}

/// Multicast discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multicast {
    /// Group address and port.
    pub group: SocketAddrV4,
    /// Outgoing interface: an interface name or an IPv4 address; `None` lets the routing table
    /// decide (which needs a multicast route).
    pub interface: Option<String>,
    /// IP TTL of beacons (1 keeps them on the local link).
    pub ttl: u32,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name.
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// Data directory (node identity, later the store).
    pub data_dir: PathBuf,
    /// Operator tags.
    pub tags: BTreeMap<String, String>,
    /// Votes of this node.
    pub votes: u32,
    /// Gossip socket address.
    pub gossip_bind: SocketAddr,
    /// Address peers reach us at; `None` means "derive from bind or the route to the group".
    pub gossip_advertise: Option<SocketAddr>,
    /// Timing profile.
    pub profile: Profile,
    /// The longest round trip to any member, when timings must be fitted to it.
    pub max_rtt: Option<std::time::Duration>,
    /// Multicast discovery, if on.
    pub multicast: Option<Multicast>,
    /// Seed addresses as written (`host:port`), re-resolved periodically.
    pub seeds: Vec<String>,
    /// Cluster name.
    pub cluster: String,
    /// Cluster key.
    pub key: ClusterKey,
    /// Further cluster keys accepted (`cluster.keys`): they seed the keyring with the key.
    pub other_keys: Vec<ClusterKey>,
    /// False when no key was configured and the insecure name-derived key is used.
    pub key_configured: bool,
    /// Expected cluster size.
    pub expected_nodes: u32,
    /// The quorum rule.
    pub quorum: QuorumRule,
    /// HTTP API address.
    pub api_bind: SocketAddr,
    /// API tokens (none: the API is open).
    pub api_tokens: Vec<crate::auth::Token>,
    /// TLS certificate chain and private key files for the API.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// Log filter (tracing-subscriber syntax).
    pub log_level: String,
    /// Log lines as JSON objects (for log shippers) rather than text.
    pub log_json: bool,
    /// Campaign for the cluster leader with this lease and lock delay (`None`: not a candidate).
    pub leader: Option<node::LeaderConfig>,
    /// Commands run on events.
    pub handlers: Vec<crate::handlers::Handler>,
    /// Largest value a store accepts.
    pub max_value_bytes: usize,
    /// Reads on a node without quorum.
    pub minority_reads: store::MinorityReads,
    /// How long a quorum round may take.
    pub round_timeout: std::time::Duration,
    /// Anti-entropy period.
    pub anti_entropy_interval: std::time::Duration,
    /// How long tombstones are kept.
    pub tombstone_grace: std::time::Duration,
    /// Fewest log records between two snapshots (a snapshot also waits for twice the live
    /// entries).
    pub snapshot_min_records: usize,
    /// The stores, with their default consistency and fsync policy (`default` always exists).
    pub stores: BTreeMap<String, store::StoreSettings>,
}

impl Config {
    /// The configuration keys whose values differ in `new`, by the names the file uses (the key's
    /// value itself is never shown).
    pub fn changed_keys(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! diff {
            ($($field:ident => $key:literal),* $(,)?) => {
                $(if format!("{:?}", self.$field) != format!("{:?}", new.$field) {
                    out.push($key);
                })*
            };
        }
        diff!(
            name => "node.name",
            datacenter => "node.datacenter",
            data_dir => "node.data_dir",
            tags => "node.tags",
            votes => "node.votes",
            gossip_bind => "gossip.bind",
            gossip_advertise => "gossip.advertise",
            profile => "gossip.profile",
            max_rtt => "gossip.max_rtt",
            multicast => "discovery.multicast",
            seeds => "discovery.seeds",
            cluster => "cluster.name",
            expected_nodes => "cluster.expected_nodes",
            quorum => "cluster.quorum",
            api_bind => "api.bind",
            log_level => "log.level",
            log_json => "log.format",
            leader => "leader",
            handlers => "handlers",
            max_value_bytes => "store.max_value_bytes",
            minority_reads => "store.minority_reads",
            round_timeout => "store.round_timeout",
            anti_entropy_interval => "store.anti_entropy_interval",
            tombstone_grace => "store.tombstone_grace",
            snapshot_min_records => "store.snapshot_min_records",
            stores => "stores",
        );
        if self.key != new.key {
            out.push("cluster.key");
        }
        if self.other_keys != new.other_keys {
            out.push("cluster.keys");
        }
        if self.api_tokens != new.api_tokens {
            out.push("api.tokens");
        }
        if self.api_tls.is_some() != new.api_tls.is_some() {
            out.push("api.tls_cert");
        }
        out
    }
}

/// The keys a SIGHUP applies to a running agent; every other change needs a restart.
pub const RELOADABLE: &[&str] = &["discovery.seeds", "handlers", "log.level", "api.tokens"];

/// Where environment values come from; a trait so tests need not touch the process environment.
pub trait Env {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Config {
    /// Loads `path` (if any), applies the environment and `overrides`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Env,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse_file(p, &text)?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file, env, overrides)
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Merges file, environment and flags (flags win) and validates every value.
    pub fn resolve(file: FileConfig, env: &dyn Env, o: &Overrides) -> Result<Config, ConfigError> {
        sections::resolve(file, &layers::Layers::new(env), o)
    }

    /// The membership core's configuration: this node as described here, reachable for API
    /// calls at `api_addr`, with multicast beacons when `beacons`.
    pub fn membership_config(&self, api_addr: SocketAddr, beacons: bool) -> MembershipConfig {
        MembershipConfig {
            cluster: self.cluster.clone(),
            key: self.key.clone(),
            other_keys: self.other_keys.clone(),
            profile: self.profile,
            max_rtt: self.max_rtt,
            expected_nodes: self.expected_nodes,
            quorum: self.quorum.clone(),
            me: SelfDescription {
                name: self.name.clone(),
                datacenter: self.datacenter.clone(),
                api_addr: Some(api_addr),
                // The quorum rule rides in metadata so that members can compare theirs.
                tags: {
                    let mut t = self.tags.clone();
                    t.insert(node::QUORUM_TAG.to_string(), node::quorum_tag(&self.quorum));
                    t
                },
                votes: self.votes,
            },
            beacons,
            seeds: Vec::new(),
            max_queued_updates: membership::MAX_QUEUED_UPDATES,
        }
    }

    /// How long a store connection attempt may take: a round trip and some, over the slowest
    /// link (a LAN's 100 ms would refuse every connection across a 150 ms link).
    pub fn connect_timeout(&self) -> std::time::Duration {
        let base = match self.profile {
            membership::Profile::Wan => crate::transport::WAN_CONNECT_TIMEOUT,
            _ => crate::transport::LAN_CONNECT_TIMEOUT,
        };
        self.max_rtt.map_or(base, |rtt| base.max(rtt * 4))
    }

    /// The store core's configuration: durable, with every store and its settings.
    pub fn store_config(&self) -> store::StoreConfig {
        let mut c = store::StoreConfig::new(self.quorum.required());
        c.my_votes = self.votes;
        c.datacenters = self.quorum.datacenter_votes().cloned();
        c.my_datacenter = self.datacenter.clone();
        c.round_timeout = self.round_timeout;
        // Half of what the transport queues for one peer: a catch-up push in parts must fit
        // beside the peer's other traffic, or its tail is dropped.
        c.sync_push_budget_bytes = crate::transport::MAX_QUEUED_BYTES / 2;
        // A lost request is asked again after about ten LAN round trips under load; over WAN
        // links a round trip alone can take 100-300 ms.
        c.round_retry = match self.profile {
            membership::Profile::Wan => std::time::Duration::from_secs(1),
            _ => std::time::Duration::from_millis(100),
        };
        // Asking again before an answer can be back only adds load: wait two round trips.
        if let Some(rtt) = self.max_rtt {
            c.round_retry = c.round_retry.max(rtt * 2);
        }
        c.max_value_bytes = self.max_value_bytes;
        c.gc_grace = self.tombstone_grace;
        c.anti_entropy_every = self.anti_entropy_interval;
        c.minority_reads = self.minority_reads;
        c.stores = self.stores.clone();
        c.durable = true;
        c
    }
}
