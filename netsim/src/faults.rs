//! Deliberate defects of the cores, by the names `--fault` takes: injected into every node of
//! a run to show that a checker catches the guarantee they break.

/// One deliberate defect of one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyFault {
    /// A store core defect.
    Store(store::Fault),
    /// A membership core defect.
    Membership(membership::Fault),
    /// A coordination core defect.
    Coord(coord::Fault),
}

/// Every defect `--fault` can inject, by name.
pub const FAULTS: &[(&str, AnyFault)] = &[
    (
        "store:ack-without-storing",
        AnyFault::Store(store::Fault::AckWithoutStoring),
    ),
    (
        "store:quorum-of-one",
        AnyFault::Store(store::Fault::QuorumOfOne),
    ),
    (
        "store:read-local-only",
        AnyFault::Store(store::Fault::ReadLocalOnly),
    ),
    (
        "store:no-anti-entropy",
        AnyFault::Store(store::Fault::NoAntiEntropy),
    ),
    (
        "store:ack-before-durable",
        AnyFault::Store(store::Fault::AckBeforeDurable),
    ),
    (
        "store:skip-catch-up",
        AnyFault::Store(store::Fault::SkipCatchUp),
    ),
    (
        "store:vote-while-catching-up",
        AnyFault::Store(store::Fault::VoteWhileCatchingUp),
    ),
    (
        "store:snapshot-drops-keys",
        AnyFault::Store(store::Fault::SnapshotDropsKeys),
    ),
    (
        "store:skip-learn-phase",
        AnyFault::Store(store::Fault::SkipLearnPhase),
    ),
    ("store:ask-once", AnyFault::Store(store::Fault::AskOnce)),
    (
        "store:count-votes-not-datacenters",
        AnyFault::Store(store::Fault::CountVotesNotDatacenters),
    ),
    (
        "membership:deaf-to-metadata",
        AnyFault::Membership(membership::Fault::DeafToMetadata),
    ),
    (
        "membership:ignore-down-peers",
        AnyFault::Membership(membership::Fault::IgnoreDownPeers),
    ),
    (
        "membership:hasty-failure-detector",
        AnyFault::Membership(membership::Fault::HastyFailureDetector),
    ),
    (
        "membership:silent-failures",
        AnyFault::Membership(membership::Fault::SilentFailures),
    ),
    (
        "coord:skip-promise",
        AnyFault::Coord(coord::Fault::SkipPromise),
    ),
    (
        "coord:reuse-ballots",
        AnyFault::Coord(coord::Fault::ReuseBallots),
    ),
    (
        "coord:reply-before-durable",
        AnyFault::Coord(coord::Fault::ReplyBeforeDurable),
    ),
];

/// Deliberate defects to inject into every node (to show that checkers catch them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Membership defects.
    pub membership: Vec<membership::Fault>,
    /// Store defects.
    pub store: Vec<store::Fault>,
    /// Coordination defects.
    pub coord: Vec<coord::Fault>,
}

impl Faults {
    /// Adds one defect.
    pub fn add(&mut self, f: AnyFault) {
        match f {
            AnyFault::Store(f) => self.store.push(f),
            AnyFault::Membership(f) => self.membership.push(f),
            AnyFault::Coord(f) => self.coord.push(f),
        }
    }

    /// The names of the defects held, as `--fault` takes them.
    pub fn names(&self) -> Vec<&'static str> {
        FAULTS
            .iter()
            .filter(|(_, f)| match f {
                AnyFault::Store(f) => self.store.contains(f),
                AnyFault::Membership(f) => self.membership.contains(f),
                AnyFault::Coord(f) => self.coord.contains(f),
            })
            .map(|(n, _)| *n)
            .collect()
    }
}
