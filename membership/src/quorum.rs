//! The quorum rule: how many votes a side needs, fixed by configuration, never by the current view.
//!
//! Deriving the quorum from the members a node currently sees would let both sides of a split
//! believe they are the majority. The rule is therefore a fixed number of votes out of a fixed
//! total, and a node only *reports* whether the votes it can reach meet it. Safety of writes comes
//! from the store's quorum rounds; this view drives reporting and fail-fast.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A fixed quorum: `required` votes out of `total`, or, in `datacenters` mode, a majority of the
/// configured datacenters, each counted when a majority of its configured votes is reachable.
///
/// Why the datacenter rule is safe: take two sides that both meet it. Each holds a majority of
/// the configured datacenters, so some datacenter `d` counts for both; each holds more than half
/// of `d`'s configured votes, so (as long as the nodes of `d` hold no more votes than configured,
/// which the agent checks and warns about) they share a node of `d`. Any two quorums intersect,
/// which is all the store's quorum rounds and CASPaxos need (docs/guarantees.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumRule {
    total: u32,
    required: u32,
    /// `datacenters` mode: the configured votes of each datacenter.
    datacenters: Option<BTreeMap<String, u32>>,
}

/// One datacenter's part in a `datacenters`-mode quorum, as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatacenterReach {
    /// The datacenter.
    pub name: String,
    /// Votes of its members this node reaches (itself included).
    pub reachable: u32,
    /// Votes it needs to count: a strict majority of its configured votes.
    pub required: u32,
    /// Its configured votes.
    pub configured: u32,
    /// Whether it counts towards the quorum.
    pub counted: bool,
}

/// Whether `voters` (datacenter, votes) meet a majority of the datacenters of `table`, each with
/// a majority of its configured votes. Voters of datacenters not in the table count for nothing.
pub fn datacenters_met<'a>(
    table: &BTreeMap<String, u32>,
    voters: impl IntoIterator<Item = (&'a str, u32)>,
) -> bool {
    let mut reach: BTreeMap<&str, u32> = BTreeMap::new();
    for (dc, v) in voters {
        *reach.entry(dc).or_default() += v;
    }
    let counted = table
        .iter()
        .filter(|(dc, votes)| reach.get(dc.as_str()).copied().unwrap_or(0) * 2 > **votes)
        .count();
    counted * 2 > table.len()
}

/// Why a quorum rule is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Total votes must be at least one.
    #[error("the cluster must have at least one vote (got total_votes = 0)")]
    NoVotes,
    /// `datacenters` mode without any datacenter.
    #[error(
        "quorum_mode = \"datacenters\" needs [cluster.datacenter_votes] with at least one datacenter"
    )]
    NoDatacenters,
    /// A datacenter configured with no votes.
    #[error(
        "datacenter {0:?} has 0 votes in [cluster.datacenter_votes]; give it at least 1 or leave it out"
    )]
    DatacenterWithoutVotes(String),
    /// The explicit quorum is zero or more than the total.
    #[error("quorum must be between 1 and the total votes ({total}), got {required}")]
    OutOfRange {
        /// Configured quorum.
        required: u32,
        /// Total votes.
        total: u32,
    },
}

impl QuorumRule {
    /// A strict majority of `total` votes.
    pub fn majority(total: u32) -> Result<Self, QuorumError> {
        if total == 0 {
            return Err(QuorumError::NoVotes);
        }
        Ok(QuorumRule {
            total,
            required: total / 2 + 1,
            datacenters: None,
        })
    }

    /// `datacenters` mode over these datacenters and their configured votes.
    pub fn datacenters(table: BTreeMap<String, u32>) -> Result<Self, QuorumError> {
        if table.is_empty() {
            return Err(QuorumError::NoDatacenters);
        }
        if let Some((dc, _)) = table.iter().find(|(_, v)| **v == 0) {
            return Err(QuorumError::DatacenterWithoutVotes(dc.clone()));
        }
        let total = table.values().sum();
        // The fewest votes any quorum can have: the smallest datacenter majorities.
        let mut majorities: Vec<u32> = table.values().map(|v| v / 2 + 1).collect();
        majorities.sort_unstable();
        let required = majorities[..table.len() / 2 + 1].iter().sum();
        Ok(QuorumRule {
            total,
            required,
            datacenters: Some(table),
        })
    }

    /// The configured datacenters and their votes, in `datacenters` mode.
    pub fn datacenter_votes(&self) -> Option<&BTreeMap<String, u32>> {
        self.datacenters.as_ref()
    }

    /// Whether these voters, (datacenter, votes) each, meet the rule.
    pub fn met_by<'a>(&self, voters: impl IntoIterator<Item = (&'a str, u32)>) -> bool {
        match &self.datacenters {
            Some(table) => datacenters_met(table, voters),
            None => voters.into_iter().map(|(_, v)| v).sum::<u32>() >= self.required,
        }
    }

    /// Each configured datacenter's reach from these voters (`datacenters` mode; empty otherwise).
    pub fn datacenter_reach<'a>(
        &self,
        voters: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Vec<DatacenterReach> {
        let Some(table) = &self.datacenters else {
            return Vec::new();
        };
        let mut reach: BTreeMap<&str, u32> = BTreeMap::new();
        for (dc, v) in voters {
            *reach.entry(dc).or_default() += v;
        }
        table
            .iter()
            .map(|(dc, configured)| {
                let reachable = reach.get(dc.as_str()).copied().unwrap_or(0);
                DatacenterReach {
                    name: dc.clone(),
                    reachable,
                    required: configured / 2 + 1,
                    configured: *configured,
                    counted: reachable * 2 > *configured,
                }
            })
            .collect()
    }

    /// Datacenters a quorum needs in `datacenters` mode.
    pub fn required_datacenters(&self) -> Option<usize> {
        self.datacenters.as_ref().map(|t| t.len() / 2 + 1)
    }

    /// The rule in a few characters, as members publish it to compare theirs:
    /// `REQUIRED/TOTAL`, or `dc:NAME=VOTES,...`.
    pub fn tag(&self) -> String {
        match &self.datacenters {
            None => format!("{}/{}", self.required, self.total),
            Some(t) => {
                let parts: Vec<String> = t.iter().map(|(d, v)| format!("{d}={v}")).collect();
                format!("dc:{}", parts.join(","))
            }
        }
    }

    /// An explicit quorum. It may be below a majority (the operator's choice, and a warning in the
    /// agent's log: two sides could then both hold it) but never zero or above the total.
    pub fn explicit(total: u32, required: u32) -> Result<Self, QuorumError> {
        if total == 0 {
            return Err(QuorumError::NoVotes);
        }
        if required == 0 || required > total {
            return Err(QuorumError::OutOfRange { required, total });
        }
        Ok(QuorumRule {
            total,
            required,
            datacenters: None,
        })
    }

    /// Total votes in the cluster.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Votes a side must reach (in `datacenters` mode, the fewest votes of any quorum: necessary,
    /// not sufficient).
    pub fn required(&self) -> u32 {
        self.required
    }

    /// True when two disjoint sides could both meet the rule.
    pub fn allows_split_brain(&self) -> bool {
        self.datacenters.is_none() && self.required * 2 <= self.total
    }

    /// Whether `reachable` votes meet a `votes`-mode rule (in `datacenters` mode, whether they
    /// could: use [`QuorumRule::met_by`]).
    pub fn is_met(&self, reachable: u32) -> bool {
        reachable >= self.required
    }
}

/// What a node reports about its quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuorumStatus {
    /// Whether the votes this node can reach meet the rule.
    pub has_quorum: bool,
    /// Votes of this node plus every member it currently sees alive or suspect.
    pub reachable_votes: u32,
    /// Votes the rule requires.
    pub required_votes: u32,
    /// Total votes in the cluster.
    pub total_votes: u32,
    /// Core time at which `has_quorum` took its current value.
    pub since: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_is_strict() {
        assert_eq!(QuorumRule::majority(1).unwrap().required(), 1);
        assert_eq!(QuorumRule::majority(4).unwrap().required(), 3);
        assert_eq!(QuorumRule::majority(5).unwrap().required(), 3);
        assert!(!QuorumRule::majority(4).unwrap().allows_split_brain());
        assert_eq!(QuorumRule::majority(0), Err(QuorumError::NoVotes));
    }

    fn dcs(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(d, v)| (d.to_string(), *v)).collect()
    }

    #[test]
    fn a_majority_of_datacenters_each_with_a_majority_of_its_votes() {
        let r = QuorumRule::datacenters(dcs(&[("a", 3), ("b", 1), ("c", 1)])).unwrap();
        assert_eq!((r.total(), r.required()), (5, 2));
        assert!(!r.allows_split_brain());
        assert!(r.met_by([("b", 1), ("c", 1)]), "two small datacenters");
        assert!(
            !r.met_by([("a", 3)]),
            "the big one alone is one datacenter of three"
        );
        assert!(
            !r.met_by([("a", 1), ("b", 1)]),
            "1 of a's 3 votes does not count a"
        );
        assert!(r.met_by([("a", 1), ("a", 1), ("b", 1)]));
        assert!(
            !r.met_by([("x", 9), ("b", 1)]),
            "unknown datacenters count for nothing"
        );
        let reach = r.datacenter_reach([("a", 2), ("c", 1)]);
        assert_eq!(
            reach
                .iter()
                .map(|d| (d.name.as_str(), d.reachable, d.required, d.counted))
                .collect::<Vec<_>>(),
            vec![("a", 2, 2, true), ("b", 0, 1, false), ("c", 1, 1, true)]
        );
        assert_eq!(r.tag(), "dc:a=3,b=1,c=1");
        assert_eq!(
            QuorumRule::datacenters(BTreeMap::new()),
            Err(QuorumError::NoDatacenters)
        );
        assert!(QuorumRule::datacenters(dcs(&[("a", 0)])).is_err());
    }

    proptest::proptest! {
        /// Any two sides that both meet the rule share a voter, whatever the datacenters, their
        /// votes and the sides (nodes of a datacenter holding exactly its configured votes).
        #[test]
        fn any_two_datacenter_quorums_intersect(
            sizes in proptest::collection::vec(1u32..5, 1..6),
            a in proptest::collection::vec(proptest::bool::ANY, 30),
            b in proptest::collection::vec(proptest::bool::ANY, 30),
        ) {
            let table: BTreeMap<String, u32> =
                sizes.iter().enumerate().map(|(i, v)| (format!("d{i}"), *v)).collect();
            let r = QuorumRule::datacenters(table).unwrap();
            // One node of one vote per configured vote.
            let nodes: Vec<String> = sizes
                .iter()
                .enumerate()
                .flat_map(|(i, v)| (0..*v).map(move |_| format!("d{i}")))
                .collect();
            let side = |pick: &[bool]| -> Vec<usize> {
                (0..nodes.len()).filter(|n| pick[*n % pick.len()] ^ (*n >= pick.len())).collect()
            };
            let (sa, sb) = (side(&a), side(&b));
            let met = |s: &[usize]| r.met_by(s.iter().map(|n| (nodes[*n].as_str(), 1)));
            if met(&sa) && met(&sb) {
                proptest::prop_assert!(sa.iter().any(|n| sb.contains(n)), "{sa:?} {sb:?}");
            }
        }
    }

    #[test]
    fn explicit_bounds() {
        assert!(QuorumRule::explicit(5, 0).is_err());
        assert!(QuorumRule::explicit(5, 6).is_err());
        assert!(QuorumRule::explicit(4, 2).unwrap().allows_split_brain());
        let r = QuorumRule::explicit(5, 4).unwrap();
        assert!(!r.is_met(3));
        assert!(r.is_met(4));
    }
}
