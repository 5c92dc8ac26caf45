//! Agent configuration: a TOML file, overridden by `CHORUS_*` environment variables, overridden by
//! command-line flags. Every value is validated at start, and an error names the key at fault.

use base64::Engine;
use membership::{ClusterKey, Profile, QuorumRule};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
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
    /// `cluster.expected_nodes`
    pub expected_nodes: Option<u32>,
    /// `cluster.quorum`
    pub quorum: Option<u32>,
    /// `cluster.total_votes`
    pub total_votes: Option<u32>,
}

/// `[api]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// `api.bind`
    pub bind: Option<String>,
}

/// `[log]` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `log.level`
    pub level: Option<String>,
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
    /// Multicast discovery, if on.
    pub multicast: Option<Multicast>,
    /// Seed addresses as written (`host:port`), re-resolved periodically.
    pub seeds: Vec<String>,
    /// Cluster name.
    pub cluster: String,
    /// Cluster key.
    pub key: ClusterKey,
    /// False when no key was configured and the insecure name-derived key is used.
    pub key_configured: bool,
    /// Expected cluster size.
    pub expected_nodes: u32,
    /// The quorum rule.
    pub quorum: QuorumRule,
    /// HTTP API address.
    pub api_bind: SocketAddr,
    /// Log filter (tracing-subscriber syntax).
    pub log_level: String,
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

/// Parses an fsync policy: `always`, `never`, or an interval (`100ms`, `1s`).
fn parse_fsync(key: &str, v: &str) -> Result<store::Fsync, ConfigError> {
    match v {
        "always" => Ok(store::Fsync::Always),
        "never" => Ok(store::Fsync::Never),
        other => match humantime::parse_duration(other) {
            Ok(d) if !d.is_zero() => Ok(store::Fsync::Interval(d)),
            _ => Err(invalid(
                key,
                format!("{other:?} is not always, never, or an interval such as 100ms"),
            )),
        },
    }
}

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
        let pick =
            |flag: &Option<String>, var: &str, file: &Option<String>| -> Option<(String, String)> {
                if let Some(v) = flag {
                    return Some((v.clone(), format!("flag for {var}")));
                }
                if let Some(v) = env.get(var) {
                    return Some((v, var.to_string()));
                }
                file.clone().map(|v| (v, "config file".to_string()))
            };
        let env_u32 = |var: &str, key: &str| -> Result<Option<u32>, ConfigError> {
            env.get(var)
                .map(|v| {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| invalid(key, format!("{var}={v:?} is not a whole number")))
                })
                .transpose()
        };
        let env_bool = |var: &str, key: &str| -> Result<Option<bool>, ConfigError> {
            env.get(var)
                .map(|v| match v.trim() {
                    "1" | "true" | "on" | "yes" => Ok(true),
                    "0" | "false" | "off" | "no" => Ok(false),
                    other => Err(invalid(
                        key,
                        format!("{var}={other:?} is not a boolean (true/false)"),
                    )),
                })
                .transpose()
        };

        let name = pick(&o.name, "CHORUS_NODE_NAME", &file.node.name)
            .map(|(v, _)| v)
            .unwrap_or_else(default_node_name);
        validate_label("node.name", &name, 64)?;
        let datacenter = env
            .get("CHORUS_NODE_DATACENTER")
            .or(file.node.datacenter)
            .unwrap_or_else(|| "dc1".into());
        validate_label("node.datacenter", &datacenter, 64)?;
        let data_dir = o
            .data_dir
            .clone()
            .or_else(|| env.get("CHORUS_NODE_DATA_DIR").map(PathBuf::from))
            .or(file.node.data_dir)
            .unwrap_or_else(|| PathBuf::from("chorus-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "must not be empty"));
        }
        let tags = file.node.tags.unwrap_or_default();
        for (k, v) in &tags {
            if k.is_empty() || k.len() > 64 || v.len() > 256 {
                return Err(invalid(
                    "node.tags",
                    format!("tag {k:?}: keys are 1-64 bytes, values at most 256"),
                ));
            }
        }
        let tag_bytes: usize = tags.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        if tag_bytes > 600 {
            return Err(invalid(
                "node.tags",
                format!(
                    "tags take {tag_bytes} bytes; the limit is 600 so that a node's metadata fits one packet"
                ),
            ));
        }
        let votes = env_u32("CHORUS_NODE_VOTES", "node.votes")?
            .or(file.node.votes)
            .unwrap_or(1);

        let (bind_s, _) = pick(&o.bind, "CHORUS_GOSSIP_BIND", &file.gossip.bind)
            .unwrap_or_else(|| (format!("127.0.0.1:{DEFAULT_GOSSIP_PORT}"), "default".into()));
        let gossip_bind = parse_addr("gossip.bind", &bind_s, DEFAULT_GOSSIP_PORT)?;
        let gossip_advertise = pick(
            &o.advertise,
            "CHORUS_GOSSIP_ADVERTISE",
            &file.gossip.advertise,
        )
        .map(|(v, _)| parse_addr("gossip.advertise", &v, gossip_bind.port()))
        .transpose()?;
        if let Some(a) = gossip_advertise
            && a.ip().is_unspecified()
        {
            return Err(invalid(
                "gossip.advertise",
                format!("{a} is not an address peers can reach"),
            ));
        }
        let profile_s = pick(&o.profile, "CHORUS_GOSSIP_PROFILE", &file.gossip.profile)
            .map(|(v, _)| v)
            .unwrap_or_else(|| "lan".into());
        let profile = match profile_s.as_str() {
            "lan" => Profile::Lan,
            "wan" => Profile::Wan,
            "local" => Profile::Local,
            other => {
                return Err(invalid(
                    "gossip.profile",
                    format!("{other:?} is not one of lan, wan, local"),
                ));
            }
        };

        let multicast_on = o
            .multicast
            .or(env_bool(
                "CHORUS_DISCOVERY_MULTICAST",
                "discovery.multicast",
            )?)
            .or(file.discovery.multicast)
            .unwrap_or(false);
        let group_s = env
            .get("CHORUS_DISCOVERY_MULTICAST_GROUP")
            .or(file.discovery.multicast_group)
            .unwrap_or_else(|| DEFAULT_MULTICAST_GROUP.into());
        let group = match parse_addr("discovery.multicast_group", &group_s, 7948)? {
            SocketAddr::V4(g) if g.ip().is_multicast() => g,
            other => {
                return Err(invalid(
                    "discovery.multicast_group",
                    format!("{other} is not an IPv4 multicast address (224.0.0.0/4)"),
                ));
            }
        };
        let interface = env
            .get("CHORUS_DISCOVERY_MULTICAST_INTERFACE")
            .or(file.discovery.multicast_interface);
        if let Some(i) = &interface
            && i.trim().is_empty()
        {
            return Err(invalid(
                "discovery.multicast_interface",
                "must be an interface name or an IPv4 address",
            ));
        }
        let ttl = file.discovery.multicast_ttl.unwrap_or(1);
        if ttl == 0 || ttl > 255 {
            return Err(invalid(
                "discovery.multicast_ttl",
                format!("{ttl} is not in 1..=255"),
            ));
        }
        let multicast = multicast_on.then_some(Multicast {
            group,
            interface,
            ttl,
        });

        let mut seeds: Vec<String> = if !o.seeds.is_empty() {
            o.seeds.clone()
        } else if let Some(v) = env.get("CHORUS_DISCOVERY_SEEDS") {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            file.discovery.seeds.unwrap_or_default()
        };
        for s in &mut seeds {
            validate_seed(s)?;
        }

        let cluster = pick(&o.cluster, "CHORUS_CLUSTER_NAME", &file.cluster.name)
            .map(|(v, _)| v)
            .unwrap_or_else(|| "chorus".into());
        validate_label("cluster.name", &cluster, 64)?;
        let key_s = env.get("CHORUS_CLUSTER_KEY").or(file.cluster.key);
        let (key, key_configured) = match key_s {
            Some(k) => (parse_key(&k)?, true),
            None => (ClusterKey::insecure_from_name(&cluster), false),
        };

        let expected_nodes = o
            .expected_nodes
            .or(env_u32(
                "CHORUS_CLUSTER_EXPECTED_NODES",
                "cluster.expected_nodes",
            )?)
            .or(file.cluster.expected_nodes)
            .unwrap_or(1);
        if expected_nodes == 0 {
            return Err(invalid("cluster.expected_nodes", "must be at least 1"));
        }
        let total_votes = file.cluster.total_votes.unwrap_or(expected_nodes);
        let quorum_n = env_u32("CHORUS_CLUSTER_QUORUM", "cluster.quorum")?.or(file.cluster.quorum);
        let quorum = match quorum_n {
            Some(q) => QuorumRule::explicit(total_votes, q)
                .map_err(|e| invalid("cluster.quorum", e.to_string()))?,
            None => QuorumRule::majority(total_votes)
                .map_err(|e| invalid("cluster.total_votes", e.to_string()))?,
        };
        if votes > total_votes {
            return Err(invalid(
                "node.votes",
                format!("{votes} is more than the cluster's total votes ({total_votes})"),
            ));
        }

        let api_s = pick(&o.api, "CHORUS_API_BIND", &file.api.bind)
            .map(|(v, _)| v)
            .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_API_PORT}"));
        let api_bind = parse_addr("api.bind", &api_s, DEFAULT_API_PORT)?;

        let log_level = env
            .get("CHORUS_LOG")
            .or(file.log.level)
            .unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| invalid("log.level", format!("{log_level:?}: {e}")))?;

        let duration = |key: &str,
                        v: Option<String>,
                        default: &str|
         -> Result<std::time::Duration, ConfigError> {
            let v = v.unwrap_or_else(|| default.to_string());
            let d = humantime::parse_duration(&v).map_err(|e| {
                invalid(key, format!("{v:?}: {e} (write e.g. \"2s\" or \"500ms\")"))
            })?;
            if d.is_zero() {
                return Err(invalid(key, "must be positive"));
            }
            Ok(d)
        };
        let max_value_bytes = file
            .store
            .max_value_bytes
            .unwrap_or(store::limits::DEFAULT_MAX_VALUE_BYTES);
        if max_value_bytes == 0 || max_value_bytes > 4 << 20 {
            return Err(invalid(
                "store.max_value_bytes",
                format!("{max_value_bytes} is not in 1..=4194304 (4 MiB)"),
            ));
        }
        let minority_reads = match file.store.minority_reads.as_deref().unwrap_or("refuse") {
            "refuse" => store::MinorityReads::Refuse,
            "stale" => store::MinorityReads::Stale,
            other => {
                return Err(invalid(
                    "store.minority_reads",
                    format!("{other:?} is not one of refuse, stale"),
                ));
            }
        };
        let round_timeout = duration("store.round_timeout", file.store.round_timeout, "2s")?;
        let anti_entropy_interval = duration(
            "store.anti_entropy_interval",
            file.store.anti_entropy_interval,
            "5s",
        )?;
        let tombstone_grace = duration("store.tombstone_grace", file.store.tombstone_grace, "24h")?;
        let snapshot_min_records = file.store.snapshot_min_records.unwrap_or(100_000);
        if snapshot_min_records == 0 {
            return Err(invalid(
                "store.snapshot_min_records",
                "0 would snapshot after every write; use at least 1 (default 100000)".to_string(),
            ));
        }
        let fsync_s = env.get("CHORUS_STORE_FSYNC").or(file.store.fsync);
        let fsync = parse_fsync("store.fsync", fsync_s.as_deref().unwrap_or("always"))?;
        let mut stores = BTreeMap::new();
        stores.insert(
            "default".to_string(),
            store::StoreSettings {
                default_consistency: store::Consistency::Quorum,
                fsync,
            },
        );
        for (name, decl) in file.stores {
            let key = format!("stores.{name}");
            store::limits::check_store_name(&name).map_err(|e| invalid(&key, e.to_string()))?;
            let c = match decl.consistency.as_deref().unwrap_or("quorum") {
                "quorum" => store::Consistency::Quorum,
                "local" => store::Consistency::Local,
                other => {
                    return Err(invalid(
                        &format!("{key}.consistency"),
                        format!("{other:?} is not one of quorum, local"),
                    ));
                }
            };
            let f = match decl.fsync.as_deref() {
                Some(v) => parse_fsync(&format!("{key}.fsync"), v)?,
                None => fsync,
            };
            stores.insert(
                name,
                store::StoreSettings {
                    default_consistency: c,
                    fsync: f,
                },
            );
        }

        Ok(Config {
            name,
            datacenter,
            data_dir,
            tags,
            votes,
            gossip_bind,
            gossip_advertise,
            profile,
            multicast,
            seeds,
            cluster,
            key,
            key_configured,
            expected_nodes,
            quorum,
            api_bind,
            log_level,
            max_value_bytes,
            minority_reads,
            round_timeout,
            anti_entropy_interval,
            tombstone_grace,
            snapshot_min_records,
            stores,
        })
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .unwrap_or_else(|| "node".into())
}

fn validate_label(key: &str, v: &str, max: usize) -> Result<(), ConfigError> {
    if v.is_empty() || v.len() > max {
        return Err(invalid(key, format!("{v:?} must be 1 to {max} bytes")));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            key,
            format!("{v:?} may only hold letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Parses `ip:port`, `ip` (default port), or `:port` (all interfaces).
pub fn parse_addr(key: &str, v: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let v = v.trim();
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    if let Some(port) = v.strip_prefix(':')
        && let Ok(p) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
    }
    Err(invalid(
        key,
        format!("{v:?} is not an address like 10.0.0.1:7946"),
    ))
}

fn validate_seed(s: &str) -> Result<(), ConfigError> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(invalid(
            "discovery.seeds",
            format!("{s:?} is not host:port"),
        )),
    }
}

fn parse_key(k: &str) -> Result<ClusterKey, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(k.trim())
        .map_err(|e| invalid("cluster.key", format!("not valid base64: {e}")))?;
    let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        invalid(
            "cluster.key",
            format!("must decode to 32 bytes, got {}", b.len()),
        )
    })?;
    Ok(ClusterKey::new(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let f = Config::parse_file(Path::new("test.toml"), text)?;
        Config::resolve(f, &env(&[]), &Overrides::default())
    }

    fn err_key(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid-value error, got {other:?}"),
        }
    }

    #[test]
    fn bare_defaults_are_a_single_loopback_node() {
        let c = Config::resolve(FileConfig::default(), &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.expected_nodes, 1);
        assert_eq!(c.quorum.required(), 1);
        assert!(c.gossip_bind.ip().is_loopback());
        assert!(c.api_bind.ip().is_loopback());
        assert!(c.multicast.is_none());
        assert!(!c.key_configured);
        assert_eq!(c.data_dir, PathBuf::from("chorus-data"));
    }

    #[test]
    fn full_file_parses() {
        let c = from_toml(
            r#"
            [node]
            name = "web-1"
            datacenter = "fra"
            tags = { role = "web" }
            [gossip]
            bind = "0.0.0.0:7000"
            advertise = "10.1.2.3"
            profile = "wan"
            [discovery]
            multicast = true
            multicast_group = "239.1.2.3:9999"
            multicast_interface = "eth0"
            seeds = ["10.0.0.2:7946", "db.example:7946"]
            [cluster]
            name = "prod"
            key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            expected_nodes = 5
            [api]
            bind = "127.0.0.1:9000"
            "#,
        )
        .unwrap();
        assert_eq!(c.name, "web-1");
        assert_eq!(c.gossip_advertise, Some("10.1.2.3:7000".parse().unwrap()));
        assert_eq!(c.profile, Profile::Wan);
        assert_eq!(
            c.multicast.as_ref().unwrap().group,
            "239.1.2.3:9999".parse().unwrap()
        );
        assert_eq!(c.quorum.required(), 3);
        assert!(c.key_configured);
        assert_eq!(c.seeds.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err_key(from_toml("[cluster]\nexpected_nodes = 0")),
            "cluster.expected_nodes"
        );
        assert_eq!(
            err_key(from_toml("[cluster]\nexpected_nodes = 3\nquorum = 4")),
            "cluster.quorum"
        );
        assert_eq!(
            err_key(from_toml("[cluster]\nkey = \"short\"")),
            "cluster.key"
        );
        assert_eq!(
            err_key(from_toml("[cluster]\nkey = \"AAEC\"")),
            "cluster.key"
        );
        assert_eq!(
            err_key(from_toml("[gossip]\nbind = \"nonsense\"")),
            "gossip.bind"
        );
        assert_eq!(
            err_key(from_toml("[gossip]\nprofile = \"fast\"")),
            "gossip.profile"
        );
        assert_eq!(
            err_key(from_toml("[discovery]\nmulticast_group = \"10.0.0.1:1\"")),
            "discovery.multicast_group"
        );
        assert_eq!(
            err_key(from_toml("[discovery]\nseeds = [\"nohost\"]")),
            "discovery.seeds"
        );
        assert_eq!(
            err_key(from_toml("[node]\nname = \"has space\"")),
            "node.name"
        );
        assert_eq!(err_key(from_toml("[api]\nbind = \"x\"")), "api.bind");
        assert_eq!(err_key(from_toml("[log]\nlevel = \"[[[\"")), "log.level");
        assert_eq!(
            err_key(from_toml("[store]\nminority_reads = \"maybe\"")),
            "store.minority_reads"
        );
        assert_eq!(
            err_key(from_toml("[store]\nround_timeout = \"soon\"")),
            "store.round_timeout"
        );
        assert_eq!(
            err_key(from_toml("[store]\nmax_value_bytes = 0")),
            "store.max_value_bytes"
        );
        assert_eq!(
            err_key(from_toml("[store]\nsnapshot_min_records = 0")),
            "store.snapshot_min_records"
        );
        assert_eq!(
            err_key(from_toml("[stores.Bad]\nconsistency = \"quorum\"")),
            "stores.Bad"
        );
        assert_eq!(
            err_key(from_toml("[stores.fast]\nconsistency = \"eventual\"")),
            "stores.fast.consistency"
        );
    }

    #[test]
    fn tags_must_fit_one_packet() {
        let ok = from_toml("[node]\ntags = { role = \"web\", rack = \"r1\" }").unwrap();
        assert_eq!(ok.tags.len(), 2);
        let big = format!(
            "[node]\ntags = {{ a = \"{}\", b = \"{}\", c = \"{}\" }}",
            "x".repeat(250),
            "y".repeat(250),
            "z".repeat(250)
        );
        assert_eq!(err_key(from_toml(&big)), "node.tags");
        let long_value = format!("[node]\ntags = {{ a = \"{}\" }}", "x".repeat(257));
        assert_eq!(err_key(from_toml(&long_value)), "node.tags");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_rejected_with_the_key() {
        let e = from_toml("[cluster]\nexpected_nodez = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected_nodez"), "{e}");
        let e = from_toml("[cluster]\nexpected_nodes = \"three\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected_nodes"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let f = Config::parse_file(
            Path::new("t"),
            "[cluster]\nexpected_nodes = 3\n[node]\nname = \"file\"",
        )
        .unwrap();
        let e = env(&[
            ("CHORUS_CLUSTER_EXPECTED_NODES", "5"),
            ("CHORUS_NODE_NAME", "env"),
        ]);
        let c = Config::resolve(f, &e, &Overrides::default()).unwrap();
        assert_eq!((c.expected_nodes, c.name.as_str()), (5, "env"));
        let f = Config::parse_file(Path::new("t"), "[cluster]\nexpected_nodes = 3").unwrap();
        let o = Overrides {
            expected_nodes: Some(7),
            name: Some("flag".into()),
            ..Default::default()
        };
        let c = Config::resolve(f, &e, &o).unwrap();
        assert_eq!((c.expected_nodes, c.name.as_str()), (7, "flag"));
        let bad = env(&[("CHORUS_CLUSTER_EXPECTED_NODES", "many")]);
        assert_eq!(
            err_key(Config::resolve(
                FileConfig::default(),
                &bad,
                &Overrides::default()
            )),
            "cluster.expected_nodes"
        );
    }
}
