//! Keyring operations applied cluster-wide: this node applies the change, sends it to every live
//! member over the stream transport, and reports which nodes did it.
//!
//! Like `serf keys` and `consul keyring`, an operation is fanned out once and not retried: a
//! member that was down or cut off is reported `no_answer`, and the operator repeats the
//! (idempotent) operation once it is back, before the next step of a rotation. Each node persists
//! its ring when it changes, so a restart keeps it.

use membership::{KeyId, KeyringError, KeyringOp, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long an operation waits for members' answers. A member answers as soon as the message
/// arrives (one round trip, milliseconds on a LAN, well under a second across datacenters).
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// A keyring message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringMsg {
    /// Apply this operation and answer.
    Apply {
        /// The asking node's name for the operation.
        req: u64,
        /// The change.
        op: KeyringOp,
    },
    /// The answer: whether the ring changed, or why the operation was refused.
    Applied {
        /// The operation answered.
        req: u64,
        /// The outcome on the answering node.
        result: Result<bool, KeyringError>,
    },
}

/// What one node did with an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "error")]
pub enum Outcome {
    /// Its ring changed.
    Done,
    /// Its ring already was so (a repeated operation).
    Unchanged,
    /// It refused, saying why; its ring did not change.
    Refused(String),
    /// No answer within [`ANSWER_WAIT`] (down, cut off, or the message was lost).
    NoAnswer,
}

impl Outcome {
    fn of(result: Result<bool, KeyringError>) -> Self {
        match result {
            Ok(true) => Outcome::Done,
            Ok(false) => Outcome::Unchanged,
            Err(e) => Outcome::Refused(e.to_string()),
        }
    }

    /// True when the node's ring is now as the operation asked.
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Done | Outcome::Unchanged)
    }
}

/// One node's part of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeOutcome {
    /// The node.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it did.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Which nodes did a keyring operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyringReport {
    /// `install`, `use` or `remove`.
    pub op: &'static str,
    /// The key operated on.
    pub key: String,
    /// True when every node asked (this one included) did it.
    pub complete: bool,
    /// Every node asked, this one first.
    pub nodes: Vec<NodeOutcome>,
}

struct Pending {
    token: u64,
    op: &'static str,
    key: KeyId,
    until: Duration,
    waiting: BTreeMap<NodeId, String>,
    done: Vec<NodeOutcome>,
}

impl Pending {
    fn report(mut self) -> (u64, KeyringReport) {
        for (id, name) in std::mem::take(&mut self.waiting) {
            self.done.push(NodeOutcome {
                id: id.to_string(),
                name,
                outcome: Outcome::NoAnswer,
            });
        }
        let complete = self.done.iter().all(|n| n.outcome.ok());
        let report = KeyringReport {
            op: self.op,
            key: self.key.to_string(),
            complete,
            nodes: self.done,
        };
        (self.token, report)
    }
}

/// Operations waiting for members' answers.
#[derive(Default)]
pub(crate) struct Fanouts {
    base: u64,
    next: u64,
    pending: BTreeMap<u64, Pending>,
}

impl std::fmt::Debug for Fanouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanouts")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Fanouts {
    /// Operation names start at `generation << 32`: an answer meant for an earlier run of this
    /// node never matches one of this run.
    pub(crate) fn new(generation: u64) -> Self {
        Fanouts {
            base: generation << 32,
            next: 0,
            pending: BTreeMap::new(),
        }
    }

    /// Starts an operation this node applied with `local`, asking `targets`. Returns the
    /// operation's name, or the finished report at once when there is nobody to ask.
    pub(crate) fn start(
        &mut self,
        token: u64,
        op: &KeyringOp,
        me: (NodeId, String),
        local: Result<bool, KeyringError>,
        targets: BTreeMap<NodeId, String>,
        now: Duration,
    ) -> Result<u64, (u64, KeyringReport)> {
        self.next += 1;
        let req = self.base | (self.next & 0xffff_ffff);
        let p = Pending {
            token,
            op: op.name(),
            key: op.key_id(),
            until: now + ANSWER_WAIT,
            waiting: targets,
            done: vec![NodeOutcome {
                id: me.0.to_string(),
                name: me.1,
                outcome: Outcome::of(local),
            }],
        };
        if p.waiting.is_empty() {
            return Err(p.report());
        }
        self.pending.insert(req, p);
        Ok(req)
    }

    /// `from` answered `req`; the report when that was the last answer awaited.
    pub(crate) fn answered(
        &mut self,
        from: NodeId,
        req: u64,
        result: Result<bool, KeyringError>,
    ) -> Option<(u64, KeyringReport)> {
        let p = self.pending.get_mut(&req)?;
        let name = p.waiting.remove(&from)?;
        p.done.push(NodeOutcome {
            id: from.to_string(),
            name,
            outcome: Outcome::of(result),
        });
        if p.waiting.is_empty() {
            return self.pending.remove(&req).map(Pending::report);
        }
        None
    }

    /// Reports of operations whose wait ended by `now`.
    pub(crate) fn expire(&mut self, now: Duration) -> Vec<(u64, KeyringReport)> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(r, _)| *r)
            .collect();
        due.into_iter()
            .filter_map(|r| self.pending.remove(&r).map(Pending::report))
            .collect()
    }

    /// When the next wait ends.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.pending.values().map(|p| p.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::ClusterKey;

    #[test]
    fn a_report_lists_every_node_and_is_complete_only_when_all_did_it() {
        let mut f = Fanouts::new(3);
        let op = KeyringOp::Install(ClusterKey::new([1; 32]));
        let targets: BTreeMap<_, _> = [(NodeId(2), "b".into()), (NodeId(3), "c".into())].into();
        let req = f
            .start(
                7,
                &op,
                (NodeId(1), "a".into()),
                Ok(true),
                targets,
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(req >> 32, 3);
        assert!(f.answered(NodeId(9), req, Ok(true)).is_none(), "not asked");
        assert!(f.answered(NodeId(2), req, Ok(false)).is_none());
        assert!(f.answered(NodeId(2), req, Ok(true)).is_none(), "twice");
        assert_eq!(f.next_deadline(), Some(ANSWER_WAIT));
        assert!(f.expire(ANSWER_WAIT / 2).is_empty());
        let (token, r) = f.expire(ANSWER_WAIT).pop().unwrap();
        assert_eq!(token, 7);
        assert!(!r.complete);
        let outcomes: Vec<_> = r.nodes.iter().map(|n| n.outcome.clone()).collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Done, Outcome::Unchanged, Outcome::NoAnswer]
        );
        let req = f
            .start(
                8,
                &op,
                (NodeId(1), "a".into()),
                Ok(false),
                [(NodeId(2), "b".into())].into(),
                Duration::ZERO,
            )
            .unwrap();
        let (_, r) = f.answered(NodeId(2), req, Ok(true)).unwrap();
        assert!(r.complete);
        let (_, alone) = f
            .start(
                9,
                &op,
                (NodeId(1), "a".into()),
                Ok(true),
                BTreeMap::new(),
                Duration::ZERO,
            )
            .unwrap_err();
        assert!(alone.complete && alone.nodes.len() == 1);
    }
}
