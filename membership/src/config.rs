//! Settings of the membership core: timing profile, cluster scope, quorum, discovery.

use crate::keyring::ClusterKey;
use crate::quorum::QuorumRule;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// A timing profile for failure detection and dissemination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One LAN: sub-millisecond RTTs. Tuned to see a dead node everywhere within about 3 s.
    Lan,
    /// Across datacenters: foca's WAN preset (memberlist's DefaultWANConfig).
    Wan,
    /// Every node on one host (development, tests): the fastest timings.
    Local,
}

impl Profile {
    /// Stable lowercase name, as written in config files.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Wan => "wan",
            Profile::Local => "local",
        }
    }
}

/// Every timing the core uses, derived from a profile and the expected cluster size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before probing indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared failed.
    pub suspect_to_down: Duration,
    /// How often pending updates are pushed to a few members.
    pub gossip_every: Duration,
    /// Beacon interval while this node sees no other member (starts here, doubles).
    pub beacon_fast: Duration,
    /// Beacon interval once connected.
    pub beacon_every: Duration,
    /// Beacon interval for a while after a member failed: a failure may be a partition, and
    /// frequent beacons let the halves find each other soon after it heals.
    pub beacon_after_failure: Duration,
    /// How often a random member is asked to compare metadata.
    pub meta_sync_every: Duration,
    /// How often seeds that are not members are re-announced to once connected.
    pub seed_every: Duration,
    /// First retry interval for seeds while isolated (doubles up to `seed_every`).
    pub seed_retry: Duration,
    /// How often failed members are announced to, so a healed split merges without multicast.
    pub announce_down_every: Duration,
    /// How often a random member is announced to, to learn members missed so far.
    pub announce_every: Duration,
}

impl Timings {
    /// The timings of `profile` for a cluster of about `cluster_size` nodes.
    pub fn for_profile(profile: Profile, cluster_size: u32) -> Self {
        // foca's presets scale suspicion with max(1, log10 n); approximate it in integer tenths
        // (log10 n ≈ log2 n / 3.32) so the core has no float in its decisions:
        // n ≤ 15 → 1.0, 100 → 1.8, 1,000 → 2.7, 10,000 → 3.9.
        let log_tenths = (cluster_size.max(1).ilog2() * 1000 / 332).max(10);
        let scale = |d: Duration| d * log_tenths / 10;
        match profile {
            Profile::Lan => Timings {
                // 1 s, as memberlist's LAN preset: each probe costs two datagrams, and at 500 ms
                // they were 80 % of an idle node's bytes (issue 16). A silent member is suspected
                // two probe timeouts after its probe began, not a period later (see
                // `hasten_probe_verdict`), and a killed process at once (`handle_process_gone`).
                probe_period: Duration::from_millis(1000),
                probe_rtt: Duration::from_millis(200),
                suspect_to_down: scale(Duration::from_millis(1000)),
                gossip_every: Duration::from_millis(100),
                beacon_fast: Duration::from_millis(100),
                // 10 s once connected, and metadata compared every 10 s: each was 9 B/s of an
                // idle node's wire budget of 330 (issue 16). Beacons go every 750 ms for five
                // minutes after a failure, and metadata changes are pushed as they happen; these
                // are only the slow paths.
                beacon_every: Duration::from_secs(10),
                beacon_after_failure: Duration::from_millis(750),
                meta_sync_every: Duration::from_secs(10),
                seed_every: Duration::from_secs(10),
                seed_retry: Duration::from_millis(250),
                announce_down_every: Duration::from_secs(5),
                announce_every: Duration::from_secs(30),
            },
            Profile::Wan => Timings {
                probe_period: Duration::from_secs(5),
                probe_rtt: Duration::from_secs(3),
                suspect_to_down: scale(Duration::from_secs(30)),
                gossip_every: Duration::from_millis(500),
                beacon_fast: Duration::from_millis(500),
                beacon_every: Duration::from_secs(10),
                beacon_after_failure: Duration::from_secs(3),
                meta_sync_every: Duration::from_secs(15),
                seed_every: Duration::from_secs(30),
                seed_retry: Duration::from_secs(1),
                announce_down_every: Duration::from_secs(30),
                announce_every: Duration::from_secs(60),
            },
            Profile::Local => Timings {
                probe_period: Duration::from_millis(300),
                probe_rtt: Duration::from_millis(100),
                suspect_to_down: scale(Duration::from_millis(1000)),
                gossip_every: Duration::from_millis(50),
                beacon_fast: Duration::from_millis(50),
                beacon_every: Duration::from_secs(2),
                beacon_after_failure: Duration::from_millis(500),
                meta_sync_every: Duration::from_secs(2),
                seed_every: Duration::from_secs(2),
                seed_retry: Duration::from_millis(100),
                announce_down_every: Duration::from_secs(2),
                announce_every: Duration::from_secs(10),
            },
        }
    }

    /// These timings fitted to links whose round trip may take up to `max_rtt` (datacenters
    /// apart): the direct probe waits for the slowest round trip, the probe period leaves room
    /// for an indirect probe across it, and a suspect has two more round trips to refute.
    ///
    /// foca has one probe timeout for every member, so this is per cluster, not per member;
    /// a LAN member's failure is then seen a little later (docs/datacenters.md has the figures).
    /// LAN timings stand as they are for round trips they already cover.
    pub fn fit_rtt(mut self, max_rtt: Duration) -> Self {
        let margin = Duration::from_millis(50);
        self.probe_rtt = self.probe_rtt.max(max_rtt + margin);
        self.probe_period = self.probe_period.max(self.probe_rtt + max_rtt + 2 * margin);
        self.suspect_to_down += 2 * max_rtt;
        self
    }

    /// The foca configuration these timings give, for a packet budget of `max_packet`.
    pub fn foca_config(
        &self,
        cluster_size: u32,
        max_packet: usize,
        max_queued: usize,
    ) -> foca::Config {
        // ⌊4·log10(n+1)⌋ like foca's presets, in integers, but at least 6: with periodic gossip to
        // three members every tick, foca's 3 for small clusters spends an update in one tick.
        let n = cluster_size.max(1) + 1;
        let digits = n.ilog10() as u8;
        let max_tx = (4 * digits).max(6);
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(3).expect("3 > 0"),
            max_transmissions: NonZeroU8::new(max_tx).expect("max_tx >= 3"),
            suspect_to_down_after: self.suspect_to_down,
            remove_down_after: Some(Duration::from_secs(24 * 3600)),
            max_packet_size: NonZeroUsize::new(max_packet).expect("packet budget > 0"),
            // foca 2.0.0 sends TurnUndead from the suspect-to-down timer even when the suspect has
            // refuted in time (apply_existing_if returns Some on a failed condition), which makes a
            // healthy node renew its identity. Measured in netsim: 66 of 100 seeds of a 9-node
            // cluster at 5 % loss saw such a false down. Down nodes learn of it from gossip instead.
            notify_down_members: false,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: self.announce_every,
                num_members: NonZeroUsize::new(1).expect("1 > 0"),
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: self.announce_down_every,
                num_members: NonZeroUsize::new(2).expect("2 > 0"),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: self.gossip_every,
                num_members: NonZeroUsize::new(3).expect("3 > 0"),
            }),
            max_queued_updates: NonZeroUsize::new(max_queued.max(8)),
        }
    }
}

/// What a node says about itself, before the core stamps it with id and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfDescription {
    /// Human-readable node name.
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// HTTP API address advertised to peers.
    pub api_addr: Option<SocketAddr>,
    /// Operator tags.
    pub tags: BTreeMap<String, String>,
    /// Quorum votes this node holds.
    pub votes: u32,
}

/// Everything the membership core needs to start.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Cluster name: packets of other clusters are dropped.
    pub cluster: String,
    /// Cluster key used to authenticate and encrypt every packet (the keyring's primary).
    pub key: ClusterKey,
    /// Further keys accepted when opening packets (a keyring mid-rotation).
    pub other_keys: Vec<ClusterKey>,
    /// Timing profile.
    pub profile: Profile,
    /// The longest round trip to any member (datacenters apart), when the profile's timings
    /// must be fitted to it (see [`Timings::fit_rtt`]).
    pub max_rtt: Option<Duration>,
    /// Expected cluster size, used to scale dissemination and suspicion.
    pub expected_nodes: u32,
    /// The fixed quorum rule.
    pub quorum: QuorumRule,
    /// This node's metadata.
    pub me: SelfDescription,
    /// Whether to emit multicast beacons (the driver sends them to its group).
    pub beacons: bool,
    /// Resolved seed addresses (the driver re-resolves names and calls `set_seeds`).
    pub seeds: Vec<SocketAddr>,
    /// The most member updates queued for dissemination ([`MAX_QUEUED_UPDATES`] unless a test
    /// wants fewer; at least 8).
    pub max_queued_updates: usize,
}

/// The most member updates a node keeps queued for gossip (foca's `max_queued_updates`, a
/// Chorus patch; vendor/foca/PATCHES.md 8).
///
/// Why 1,024: a message carries about 25 updates and a node sends a few dozen messages a second,
/// each update 12-16 times, so a queue of 1,024 is many seconds of sending; what a join of
/// thousands of members queues beyond that would wait behind it, while it cost 86 bytes per
/// pair of members at the peak of a 3,000-node join in netsim (heaptrack; docs/benchmarks.md,
/// "Membership at scale, seventh pass"). A cluster of fewer than 1,024 members never reaches it.
pub const MAX_QUEUED_UPDATES: usize = 1024;

impl MembershipConfig {
    /// A single-node configuration for `cluster`, handy in tests and as the agent's default.
    pub fn single(cluster: &str) -> Self {
        MembershipConfig {
            cluster: cluster.to_string(),
            key: ClusterKey::insecure_from_name(cluster),
            other_keys: Vec::new(),
            profile: Profile::Lan,
            max_rtt: None,
            expected_nodes: 1,
            quorum: QuorumRule::majority(1).expect("1 vote is valid"),
            me: SelfDescription {
                name: "node".into(),
                datacenter: "dc1".into(),
                api_addr: None,
                tags: BTreeMap::new(),
                votes: 1,
            },
            beacons: false,
            seeds: Vec::new(),
            max_queued_updates: MAX_QUEUED_UPDATES,
        }
    }

    /// The timings of this configuration.
    pub fn timings(&self) -> Timings {
        let t = Timings::for_profile(self.profile, self.expected_nodes);
        match self.max_rtt {
            Some(rtt) => t.fit_rtt(rtt),
            None => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tx_matches_foca_shape() {
        let t = Timings::for_profile(Profile::Lan, 7);
        assert_eq!(
            t.foca_config(7, 1000, MAX_QUEUED_UPDATES)
                .max_transmissions
                .get(),
            6
        );
        assert_eq!(
            t.foca_config(100, 1000, MAX_QUEUED_UPDATES)
                .max_transmissions
                .get(),
            8
        );
        assert_eq!(
            t.foca_config(1000, 1000, MAX_QUEUED_UPDATES)
                .max_transmissions
                .get(),
            12
        );
    }

    #[test]
    fn fitted_timings_cover_the_slowest_round_trip_and_leave_lan_ones_alone() {
        let lan = Timings::for_profile(Profile::Lan, 5);
        assert_eq!(
            lan.clone().fit_rtt(Duration::from_millis(20)).probe_rtt,
            lan.probe_rtt
        );
        let f = lan.clone().fit_rtt(Duration::from_millis(300));
        assert_eq!(f.probe_rtt, Duration::from_millis(350));
        assert!(f.probe_period >= f.probe_rtt + Duration::from_millis(300));
        assert_eq!(
            f.suspect_to_down,
            lan.suspect_to_down + Duration::from_millis(600)
        );
        // foca needs the probe period above the probe timeout.
        assert!(
            f.foca_config(5, 1000, MAX_QUEUED_UPDATES).probe_period
                > f.foca_config(5, 1000, MAX_QUEUED_UPDATES).probe_rtt
        );
    }

    #[test]
    fn suspicion_scales_with_size() {
        let small = Timings::for_profile(Profile::Lan, 5).suspect_to_down;
        let big = Timings::for_profile(Profile::Lan, 500).suspect_to_down;
        assert!(big > small);
    }
}
