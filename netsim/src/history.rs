//! Client operations as the checkers see them: what was asked, of which node, when, and how it
//! ended.

use std::time::Duration;
use store::{Consistency, Version};

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Write this value (every value written in a run is unique).
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
    /// Read the key.
    Get,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No answer yet.
    Pending,
    /// A write took effect with this version.
    Written(Version),
    /// A read returned this value (`None`: not found).
    Read(Option<Vec<u8>>),
    /// A definite failure: the operation did not take effect (`no_quorum`, `bad_request`, or the
    /// node was down when the client called).
    Failed(String),
    /// The operation may or may not have taken effect (round timeout, or the coordinator crashed
    /// while it was in flight).
    Indeterminate(String),
}

impl Outcome {
    /// True for an acknowledged write or a successful read.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Written(_) | Outcome::Read(_))
    }

    /// True when a write with this outcome may have taken effect.
    pub fn may_have_taken_effect(&self) -> bool {
        matches!(
            self,
            Outcome::Written(_) | Outcome::Indeterminate(_) | Outcome::Pending
        )
    }
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// Which simulated client.
    pub client: usize,
    /// The node it asked (the coordinator).
    pub node: usize,
    /// Key.
    pub key: String,
    /// What it asked.
    pub kind: OpKind,
    /// Quorum or local.
    pub consistency: Consistency,
    /// When it was called.
    pub invoked: Duration,
    /// When it answered (`None` while pending).
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
}

impl OpRecord {
    /// True for puts and deletes.
    pub fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Get)
    }
}

/// Every operation of a run, in invocation order.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The operations on the object store.
    pub ops: Vec<OpRecord>,
    /// The operations on the strong keyspace.
    pub strong: Vec<StrongOp>,
    /// Every lock grant a lock client got, and how long it acted on it.
    pub grants: Vec<Grant>,
}

/// A lock client acting as holder: from the answer to its acquire or renew until it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The owner (one per lock client).
    pub owner: String,
    /// The node it asked.
    pub node: usize,
    /// The fencing token.
    pub term: u64,
    /// When it asked (global time).
    pub invoked: Duration,
    /// When the grant came back: it acts from here (global time).
    pub from: Duration,
    /// When it stops acting (global time): its deadline, or when it released.
    pub until: Duration,
}

/// How a strong-keyspace operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrongOutcome {
    /// No answer yet.
    Pending,
    /// The proposal completed: the register as read, a write's new version, or a condition that
    /// did not hold.
    Done(coord::Outcome),
    /// A definite failure: nothing was applied (`no_quorum`, `contended`, `bad_request`, or the
    /// node was down when the client called).
    Failed(String),
    /// The change may or may not have taken effect.
    Indeterminate(String),
}

/// One client operation on the strong keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrongOp {
    /// Which simulated client.
    pub client: usize,
    /// The node it asked (the proposer).
    pub node: usize,
    /// Key.
    pub key: String,
    /// What it asked.
    pub change: coord::Change,
    /// When it was called.
    pub invoked: Duration,
    /// When it answered (`None` while pending).
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: StrongOutcome,
}

impl History {
    /// Counts of (ok, failed, indeterminate, pending) operations.
    pub fn tally(&self) -> (usize, usize, usize, usize) {
        let mut t = (0, 0, 0, 0);
        for o in &self.ops {
            match o.outcome {
                Outcome::Written(_) | Outcome::Read(_) => t.0 += 1,
                Outcome::Failed(_) => t.1 += 1,
                Outcome::Indeterminate(_) => t.2 += 1,
                Outcome::Pending => t.3 += 1,
            }
        }
        for o in &self.strong {
            match o.outcome {
                StrongOutcome::Done(_) => t.0 += 1,
                StrongOutcome::Failed(_) => t.1 += 1,
                StrongOutcome::Indeterminate(_) => t.2 += 1,
                StrongOutcome::Pending => t.3 += 1,
            }
        }
        t
    }

    /// The operation that wrote `value`, if any.
    pub fn writer_of(&self, value: &[u8]) -> Option<usize> {
        self.ops
            .iter()
            .position(|o| matches!(&o.kind, OpKind::Put(v) if v == value))
    }
}
