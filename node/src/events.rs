//! The node's events: one model for everything an operator or an application may want to hear
//! about, each with a per-node sequence number and the wall time it happened.

use serde_json::{Value, json};

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Grows by one with every event of this node's run (from 1 at each start).
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A member event or a quorum change (see [`membership::Event`]).
    Member(membership::Event),
    /// This node became the cluster leader (`Some(token)`) or stopped being it (`None`).
    Leader(Option<u64>),
    /// This node has caught up with its peers after its start: local reads are fresh.
    CaughtUp,
    /// The store log cannot be written (`Some(why)`), or can again (`None`).
    Storage(Option<String>),
    /// A key of the object store changed in this node's replica.
    KeyChanged {
        /// The store.
        store: String,
        /// The key.
        key: String,
        /// The entry's version.
        version: store::Version,
        /// True for a delete (a tombstone).
        deleted: bool,
    },
}

/// Every event type, by the name the API, the logs and the handlers use.
pub const EVENT_TYPES: &[&str] = &[
    "member_joined",
    "member_left",
    "member_failed",
    "member_recovered",
    "member_restarted",
    "quorum_lost",
    "quorum_regained",
    "generation_changed",
    "leader_elected",
    "leader_stepped_down",
    "caught_up",
    "storage_failed",
    "storage_recovered",
    "key_changed",
];

impl EventKind {
    /// The event's type name (one of [`EVENT_TYPES`]).
    pub fn name(&self) -> &'static str {
        use membership::Event as E;
        match self {
            EventKind::Member(e) => match e {
                E::MemberJoined { .. } => "member_joined",
                E::MemberLeft { .. } => "member_left",
                E::MemberFailed { .. } => "member_failed",
                E::MemberRecovered { .. } => "member_recovered",
                E::MemberRestarted { .. } => "member_restarted",
                E::QuorumLost { .. } => "quorum_lost",
                E::QuorumRegained { .. } => "quorum_regained",
                E::GenerationChanged { .. } => "generation_changed",
            },
            EventKind::Leader(Some(_)) => "leader_elected",
            EventKind::Leader(None) => "leader_stepped_down",
            EventKind::CaughtUp => "caught_up",
            EventKind::Storage(Some(_)) => "storage_failed",
            EventKind::Storage(None) => "storage_recovered",
            EventKind::KeyChanged { .. } => "key_changed",
        }
    }
}

impl NodeEvent {
    /// The event as JSON: `seq`, `time_ms`, `type`, and the fields of its type.
    pub fn to_json(&self) -> Value {
        use membership::Event as E;
        let member = |m: &membership::MemberRef| {
            json!({
                "member": {
                    "id": m.id.to_string(),
                    "name": m.name,
                    "addr": m.addr.to_string(),
                    "generation": m.generation,
                }
            })
        };
        let quorum = |q: &membership::QuorumStatus| {
            json!({
                "quorum": {
                    "has_quorum": q.has_quorum,
                    "reachable_votes": q.reachable_votes,
                    "required_votes": q.required_votes,
                    "total_votes": q.total_votes,
                }
            })
        };
        let mut v = match &self.kind {
            EventKind::Member(e) => match e {
                E::MemberJoined { member: m }
                | E::MemberLeft { member: m }
                | E::MemberFailed { member: m }
                | E::MemberRecovered { member: m }
                | E::MemberRestarted { member: m } => member(m),
                E::QuorumLost { quorum: q } | E::QuorumRegained { quorum: q } => quorum(q),
                E::GenerationChanged { generation } => json!({ "generation": generation }),
            },
            EventKind::Leader(token) => json!({ "fencing_token": token }),
            EventKind::CaughtUp => json!({}),
            EventKind::Storage(why) => json!({ "reason": why }),
            EventKind::KeyChanged {
                store,
                key,
                version,
                deleted,
            } => json!({
                "store": store,
                "key": key,
                "version": version.to_string(),
                "deleted": deleted,
            }),
        };
        if let Value::Object(m) = &mut v {
            m.insert("seq".into(), json!(self.seq));
            m.insert("time_ms".into(), json!(self.time_ms));
            m.insert("type".into(), json!(self.kind.name()));
        }
        v
    }
}
