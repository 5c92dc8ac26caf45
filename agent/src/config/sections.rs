//! Each section of the configuration resolved (flag, else environment, else file, else default)
//! and validated; an error names the key.

use super::layers::{Layers, boolean, list, text, whole};
use super::{
    Config, ConfigError, DEFAULT_API_PORT, DEFAULT_GOSSIP_PORT, DEFAULT_MULTICAST_GROUP,
    FileConfig, Multicast, Overrides, invalid,
};
use base64::Engine;
use membership::{ClusterKey, Profile, QuorumRule};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration.
pub(super) fn resolve(
    file: FileConfig,
    l: &Layers<'_>,
    o: &Overrides,
) -> Result<Config, ConfigError> {
    let FileConfig {
        node,
        gossip,
        discovery,
        cluster,
        api,
        log,
        store: store_section,
        stores: store_decls,
        leader,
        handlers,
    } = file;
    let node = resolve_node(node, l, o)?;
    let gossip = resolve_gossip(gossip, l, o)?;
    let (multicast, seeds) = resolve_discovery(discovery, l, o)?;
    let cluster = resolve_cluster(cluster, l, o, node.votes, &node.datacenter)?;
    let api_bind = l
        .get("api.bind", "CHORUS_API_BIND", o.api.clone(), api.bind, text)?
        .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_API_PORT}"));
    let api_bind = parse_addr("api.bind", &api_bind, DEFAULT_API_PORT)?;
    let api_tokens = resolve_tokens(api.tokens, l)?;
    let api_tls = match (api.tls_cert, api.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (Some(_), None) => {
            return Err(invalid(
                "api.tls_key",
                "api.tls_cert is set: give the private key file too",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "api.tls_cert",
                "api.tls_key is set: give the certificate chain file too",
            ));
        }
    };
    let log_level = l
        .get("log.level", "CHORUS_LOG", None, log.level, text)?
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&log_level)
        .map_err(|e| invalid("log.level", format!("{log_level:?}: {e}")))?;
    let log_json = match l
        .get("log.format", "CHORUS_LOG_FORMAT", None, log.format, text)?
        .as_deref()
        .unwrap_or("text")
    {
        "text" => false,
        "json" => true,
        other => {
            return Err(invalid(
                "log.format",
                format!("{other:?} is not one of text, json"),
            ));
        }
    };
    let store = resolve_store(store_section, store_decls, l)?;
    let candidate = l
        .get(
            "leader.candidate",
            "CHORUS_LEADER_CANDIDATE",
            None,
            leader.candidate,
            boolean,
        )?
        .unwrap_or(false);
    let leader_ttl = duration("leader.ttl", leader.ttl, "10s")?;
    let lock_delay = leader.lock_delay.unwrap_or_else(|| "2s".into());
    let lock_delay = if lock_delay.trim() == "0" || lock_delay.trim() == "0s" {
        Duration::ZERO
    } else {
        duration("leader.lock_delay", Some(lock_delay), "2s")?
    };
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&leader_ttl) {
        return Err(invalid(
            "leader.ttl",
            format!("{leader_ttl:?} is not in 1s..=1h"),
        ));
    }
    if lock_delay > Duration::from_secs(3600) {
        return Err(invalid(
            "leader.lock_delay",
            format!("{lock_delay:?} is over 1h"),
        ));
    }
    let leader = candidate.then_some(node::LeaderConfig {
        ttl: leader_ttl,
        lock_delay,
    });
    let handlers = handlers
        .into_iter()
        .enumerate()
        .map(|(i, h)| crate::handlers::Handler::from_decl(i, h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config {
        name: node.name,
        datacenter: node.datacenter,
        data_dir: node.data_dir,
        tags: node.tags,
        votes: node.votes,
        gossip_bind: gossip.bind,
        gossip_advertise: gossip.advertise,
        profile: gossip.profile,
        max_rtt: gossip.max_rtt,
        multicast,
        seeds,
        cluster: cluster.name,
        key: cluster.key,
        other_keys: cluster.other_keys,
        key_configured: cluster.key_configured,
        expected_nodes: cluster.expected_nodes,
        quorum: cluster.quorum,
        api_bind,
        api_tokens,
        api_tls,
        log_level,
        log_json,
        leader,
        handlers,
        max_value_bytes: store.max_value_bytes,
        minority_reads: store.minority_reads,
        round_timeout: store.round_timeout,
        anti_entropy_interval: store.anti_entropy_interval,
        tombstone_grace: store.tombstone_grace,
        snapshot_min_records: store.snapshot_min_records,
        stores: store.stores,
    })
}

struct Node {
    name: String,
    datacenter: String,
    data_dir: PathBuf,
    tags: BTreeMap<String, String>,
    votes: u32,
}

fn resolve_node(f: super::NodeSection, l: &Layers<'_>, o: &Overrides) -> Result<Node, ConfigError> {
    let name = l
        .get(
            "node.name",
            "CHORUS_NODE_NAME",
            o.name.clone(),
            f.name,
            text,
        )?
        .unwrap_or_else(default_node_name);
    validate_label("node.name", &name, 64)?;
    let datacenter = l
        .get(
            "node.datacenter",
            "CHORUS_NODE_DATACENTER",
            None,
            f.datacenter,
            text,
        )?
        .unwrap_or_else(|| "dc1".into());
    validate_label("node.datacenter", &datacenter, 64)?;
    let data_dir = l
        .get(
            "node.data_dir",
            "CHORUS_NODE_DATA_DIR",
            o.data_dir.clone(),
            f.data_dir,
            |v| Ok(PathBuf::from(v)),
        )?
        .unwrap_or_else(|| PathBuf::from("chorus-data"));
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("node.data_dir", "must not be empty"));
    }
    let tags = f.tags.unwrap_or_default();
    for (k, v) in &tags {
        if k.starts_with("chorus.") {
            return Err(invalid(
                "node.tags",
                format!("tag {k:?}: keys starting with \"chorus.\" are the agent's own"),
            ));
        }
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
    let votes = l
        .get("node.votes", "CHORUS_NODE_VOTES", None, f.votes, whole)?
        .unwrap_or(1);
    Ok(Node {
        name,
        datacenter,
        data_dir,
        tags,
        votes,
    })
}

struct Gossip {
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    profile: Profile,
    max_rtt: Option<Duration>,
}

fn resolve_gossip(
    f: super::GossipSection,
    l: &Layers<'_>,
    o: &Overrides,
) -> Result<Gossip, ConfigError> {
    let bind = l
        .get(
            "gossip.bind",
            "CHORUS_GOSSIP_BIND",
            o.bind.clone(),
            f.bind,
            text,
        )?
        .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_GOSSIP_PORT}"));
    let bind = parse_addr("gossip.bind", &bind, DEFAULT_GOSSIP_PORT)?;
    let advertise = l
        .get(
            "gossip.advertise",
            "CHORUS_GOSSIP_ADVERTISE",
            o.advertise.clone(),
            f.advertise,
            text,
        )?
        .map(|v| parse_addr("gossip.advertise", &v, bind.port()))
        .transpose()?;
    if let Some(a) = advertise
        && a.ip().is_unspecified()
    {
        return Err(invalid(
            "gossip.advertise",
            format!("{a} is not an address peers can reach"),
        ));
    }
    let profile = l
        .get(
            "gossip.profile",
            "CHORUS_GOSSIP_PROFILE",
            o.profile.clone(),
            f.profile,
            text,
        )?
        .unwrap_or_else(|| "lan".into());
    let profile = match profile.as_str() {
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
    let max_rtt = match l.get(
        "gossip.max_rtt",
        "CHORUS_GOSSIP_MAX_RTT",
        None,
        f.max_rtt,
        text,
    )? {
        None => None,
        Some(v) => {
            let d = duration("gossip.max_rtt", Some(v), "0s")?;
            if d > Duration::from_secs(5) {
                return Err(invalid(
                    "gossip.max_rtt",
                    format!("{d:?} is over 5s; use gossip.profile = \"wan\" for such links"),
                ));
            }
            Some(d)
        }
    };
    Ok(Gossip {
        bind,
        advertise,
        profile,
        max_rtt,
    })
}

fn resolve_discovery(
    f: super::DiscoverySection,
    l: &Layers<'_>,
    o: &Overrides,
) -> Result<(Option<Multicast>, Vec<String>), ConfigError> {
    let on = l
        .get(
            "discovery.multicast",
            "CHORUS_DISCOVERY_MULTICAST",
            o.multicast,
            f.multicast,
            boolean,
        )?
        .unwrap_or(false);
    let group = l
        .get(
            "discovery.multicast_group",
            "CHORUS_DISCOVERY_MULTICAST_GROUP",
            None,
            f.multicast_group,
            text,
        )?
        .unwrap_or_else(|| DEFAULT_MULTICAST_GROUP.into());
    let group = match parse_addr("discovery.multicast_group", &group, 7948)? {
        SocketAddr::V4(g) if g.ip().is_multicast() => g,
        other => {
            return Err(invalid(
                "discovery.multicast_group",
                format!("{other} is not an IPv4 multicast address (224.0.0.0/4)"),
            ));
        }
    };
    let interface = l.get(
        "discovery.multicast_interface",
        "CHORUS_DISCOVERY_MULTICAST_INTERFACE",
        None,
        f.multicast_interface,
        text,
    )?;
    if let Some(i) = &interface
        && i.trim().is_empty()
    {
        return Err(invalid(
            "discovery.multicast_interface",
            "must be an interface name or an IPv4 address",
        ));
    }
    let ttl = f.multicast_ttl.unwrap_or(1);
    if ttl == 0 || ttl > 255 {
        return Err(invalid(
            "discovery.multicast_ttl",
            format!("{ttl} is not in 1..=255"),
        ));
    }
    let multicast = on.then_some(Multicast {
        group,
        interface,
        ttl,
    });
    let flag = (!o.seeds.is_empty()).then(|| o.seeds.clone());
    let seeds = l
        .get(
            "discovery.seeds",
            "CHORUS_DISCOVERY_SEEDS",
            flag,
            f.seeds,
            list,
        )?
        .unwrap_or_default();
    for s in &seeds {
        validate_seed(s)?;
    }
    Ok((multicast, seeds))
}

/// `[[api.tokens]]`: each read from its file or systemd credential now.
fn resolve_tokens(
    decls: Vec<super::TokenDecl>,
    l: &Layers<'_>,
) -> Result<Vec<crate::auth::Token>, ConfigError> {
    use crate::auth::{Role, Token, read_token};
    let mut out = Vec::new();
    for (i, d) in decls.into_iter().enumerate() {
        let key = format!("api.tokens[{i}]");
        let role = match d.role.as_deref() {
            Some("read") => Role::Read,
            Some("write") => Role::Write,
            Some(other) => {
                return Err(invalid(
                    &format!("{key}.role"),
                    format!("{other:?} is not one of read, write"),
                ));
            }
            None => return Err(invalid(&format!("{key}.role"), "missing: read or write")),
        };
        let path = match (d.file, d.credential) {
            (Some(f), None) => PathBuf::from(f),
            (None, Some(name)) => match l.var("CREDENTIALS_DIRECTORY") {
                Some(dir) => PathBuf::from(dir).join(name),
                None => {
                    return Err(invalid(
                        &format!("{key}.credential"),
                        format!(
                            "{name:?} names a systemd credential, but $CREDENTIALS_DIRECTORY is not set \
                             (add LoadCredential={name}:/path/to/token to the unit, or use file =)"
                        ),
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    &key,
                    "give exactly one of file = \"PATH\" or credential = \"NAME\"",
                ));
            }
        };
        let secret = read_token(&path).map_err(|why| invalid(&key, why))?;
        if out.iter().any(|t: &Token| t.secret == secret) {
            return Err(invalid(
                &key,
                format!("{} holds the same token as another entry", path.display()),
            ));
        }
        out.push(Token {
            role,
            secret,
            source: path.display().to_string(),
        });
    }
    Ok(out)
}

struct Cluster {
    name: String,
    key: ClusterKey,
    other_keys: Vec<ClusterKey>,
    key_configured: bool,
    expected_nodes: u32,
    quorum: QuorumRule,
}

fn resolve_cluster(
    f: super::ClusterSection,
    l: &Layers<'_>,
    o: &Overrides,
    votes: u32,
    datacenter: &str,
) -> Result<Cluster, ConfigError> {
    let name = l
        .get(
            "cluster.name",
            "CHORUS_CLUSTER_NAME",
            o.cluster.clone(),
            f.name,
            text,
        )?
        .unwrap_or_else(|| "chorus".into());
    validate_label("cluster.name", &name, 64)?;
    let from_file = match f.key_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| invalid("cluster.key_file", format!("reading {path}: {e}")))?,
        ),
        None => None,
    };
    let given = l.get("cluster.key", "CHORUS_CLUSTER_KEY", None, f.key, text)?;
    let (key, key_configured) = match (given, from_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "cluster.key_file",
                "cluster.key is set too: give the key one way",
            ));
        }
        (Some(k), None) => (parse_key("cluster.key", &k)?, true),
        (None, Some(k)) => (parse_key("cluster.key_file", &k)?, true),
        (None, None) => (ClusterKey::insecure_from_name(&name), false),
    };
    let mut other_keys = Vec::new();
    for (i, k) in l
        .get("cluster.keys", "CHORUS_CLUSTER_KEYS", None, f.keys, list)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let k = parse_key(&format!("cluster.keys[{i}]"), k)?;
        if k != key && !other_keys.contains(&k) {
            other_keys.push(k);
        }
    }
    if other_keys.len() >= membership::keyring::MAX_KEYS {
        return Err(invalid(
            "cluster.keys",
            format!(
                "a keyring holds at most {} keys",
                membership::keyring::MAX_KEYS
            ),
        ));
    }
    let expected_nodes = l
        .get(
            "cluster.expected_nodes",
            "CHORUS_CLUSTER_EXPECTED_NODES",
            o.expected_nodes,
            f.expected_nodes,
            whole,
        )?
        .unwrap_or(1);
    if expected_nodes == 0 {
        return Err(invalid("cluster.expected_nodes", "must be at least 1"));
    }
    let mode = l
        .get(
            "cluster.quorum_mode",
            "CHORUS_CLUSTER_QUORUM_MODE",
            None,
            f.quorum_mode,
            text,
        )?
        .unwrap_or_else(|| "votes".into());
    let explicit_quorum = l.get(
        "cluster.quorum",
        "CHORUS_CLUSTER_QUORUM",
        None,
        f.quorum,
        whole,
    )?;
    let quorum = match mode.as_str() {
        "votes" => {
            if f.datacenter_votes.is_some() {
                return Err(invalid(
                    "cluster.datacenter_votes",
                    "is only used with cluster.quorum_mode = \"datacenters\"",
                ));
            }
            let total_votes = f.total_votes.unwrap_or(expected_nodes);
            let quorum = match explicit_quorum {
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
            quorum
        }
        "datacenters" => {
            if explicit_quorum.is_some() || f.total_votes.is_some() {
                return Err(invalid(
                    "cluster.quorum_mode",
                    "\"datacenters\" counts a majority of datacenters: leave cluster.quorum and \
                     cluster.total_votes out and give [cluster.datacenter_votes]",
                ));
            }
            let table = f.datacenter_votes.unwrap_or_default();
            for dc in table.keys() {
                validate_label(&format!("cluster.datacenter_votes.{dc}"), dc, 64)?;
            }
            let rule = QuorumRule::datacenters(table.clone())
                .map_err(|e| invalid("cluster.datacenter_votes", e.to_string()))?;
            let Some(dc_votes) = table.get(datacenter) else {
                let names: Vec<&str> = table.keys().map(String::as_str).collect();
                return Err(invalid(
                    "node.datacenter",
                    format!(
                        "{datacenter:?} is not one of the datacenters in cluster.datacenter_votes ({})",
                        names.join(", ")
                    ),
                ));
            };
            if votes > *dc_votes {
                return Err(invalid(
                    "node.votes",
                    format!(
                        "{votes} is more than datacenter {datacenter:?} has in cluster.datacenter_votes ({dc_votes})"
                    ),
                ));
            }
            rule
        }
        other => {
            return Err(invalid(
                "cluster.quorum_mode",
                format!("{other:?} is not one of votes, datacenters"),
            ));
        }
    };
    Ok(Cluster {
        name,
        key,
        other_keys,
        key_configured,
        expected_nodes,
        quorum,
    })
}

struct Store {
    max_value_bytes: usize,
    minority_reads: store::MinorityReads,
    round_timeout: Duration,
    anti_entropy_interval: Duration,
    tombstone_grace: Duration,
    snapshot_min_records: usize,
    stores: BTreeMap<String, store::StoreSettings>,
}

fn resolve_store(
    f: super::StoreSection,
    decls: BTreeMap<String, super::StoreDecl>,
    l: &Layers<'_>,
) -> Result<Store, ConfigError> {
    let max_value_bytes = f
        .max_value_bytes
        .unwrap_or(store::limits::DEFAULT_MAX_VALUE_BYTES);
    if max_value_bytes == 0 || max_value_bytes > 4 << 20 {
        return Err(invalid(
            "store.max_value_bytes",
            format!("{max_value_bytes} is not in 1..=4194304 (4 MiB)"),
        ));
    }
    let minority_reads = match f.minority_reads.as_deref().unwrap_or("refuse") {
        "refuse" => store::MinorityReads::Refuse,
        "stale" => store::MinorityReads::Stale,
        other => {
            return Err(invalid(
                "store.minority_reads",
                format!("{other:?} is not one of refuse, stale"),
            ));
        }
    };
    let round_timeout = duration("store.round_timeout", f.round_timeout, "2s")?;
    let anti_entropy_interval =
        duration("store.anti_entropy_interval", f.anti_entropy_interval, "5s")?;
    let tombstone_grace = duration("store.tombstone_grace", f.tombstone_grace, "24h")?;
    let snapshot_min_records = f.snapshot_min_records.unwrap_or(100_000);
    if snapshot_min_records == 0 {
        return Err(invalid(
            "store.snapshot_min_records",
            "0 would snapshot after every write; use at least 1 (default 100000)".to_string(),
        ));
    }
    let fsync = l
        .get("store.fsync", "CHORUS_STORE_FSYNC", None, f.fsync, text)?
        .unwrap_or_else(|| "always".into());
    let fsync = parse_fsync("store.fsync", &fsync)?;
    let mut stores = BTreeMap::new();
    stores.insert(
        "default".to_string(),
        store::StoreSettings {
            default_consistency: store::Consistency::Quorum,
            fsync,
        },
    );
    for (name, decl) in decls {
        let key = format!("stores.{name}");
        store::limits::check_store_name(&name).map_err(|e| invalid(&key, e.to_string()))?;
        let c = decl
            .consistency
            .as_deref()
            .unwrap_or("quorum")
            .parse::<store::Consistency>()
            .map_err(|why| invalid(&format!("{key}.consistency"), why))?;
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
    Ok(Store {
        max_value_bytes,
        minority_reads,
        round_timeout,
        anti_entropy_interval,
        tombstone_grace,
        snapshot_min_records,
        stores,
    })
}

/// A positive duration such as `2s` or `500ms`, `default` when unset.
fn duration(key: &str, v: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_string());
    let d = humantime::parse_duration(&v)
        .map_err(|e| invalid(key, format!("{v:?}: {e} (write e.g. \"2s\" or \"500ms\")")))?;
    if d.is_zero() {
        return Err(invalid(key, "must be positive"));
    }
    Ok(d)
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

/// A cluster key as `chorus keygen` prints it (base64 of 32 bytes); errors name `what`.
pub fn parse_key(what: &str, k: &str) -> Result<ClusterKey, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(k.trim())
        .map_err(|e| invalid(what, format!("not valid base64: {e}")))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| invalid(what, format!("must decode to 32 bytes, got {}", b.len())))?;
    Ok(ClusterKey::new(arr))
}
