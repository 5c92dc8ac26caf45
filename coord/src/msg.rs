//! Messages between coordination cores.

use crate::acceptor::AcceptorState;
use crate::ballot::Ballot;
use crate::register::Register;
use serde::{Deserialize, Serialize};

/// Identifies a proposal until its reply.
pub type OpId = u64;

/// Messages between proposers and acceptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordMsg {
    /// Phase 1: "promise me `ballot` for `key`".
    Prepare {
        /// The proposer's operation.
        op: OpId,
        /// The key.
        key: String,
        /// The ballot.
        ballot: Ballot,
    },
    /// Phase 1 granted.
    Promise {
        /// The proposer's operation.
        op: OpId,
        /// The ballot promised.
        ballot: Ballot,
        /// What the acceptor accepted last, and at which ballot.
        accepted: Ballot,
        /// The register accepted last.
        register: Register,
        /// How long ago, by the acceptor's monotonic clock, it accepted a change of the
        /// register, in microseconds (`None`: never, or not since it started).
        age_us: Option<u64>,
    },
    /// Phase 2: "accept `register` at `ballot`".
    Accept {
        /// The proposer's operation.
        op: OpId,
        /// The key.
        key: String,
        /// The ballot.
        ballot: Ballot,
        /// The register after the change.
        register: Register,
    },
    /// Phase 2 granted.
    Accepted {
        /// The proposer's operation.
        op: OpId,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// A prepare or accept refused.
    Reject {
        /// The proposer's operation.
        op: OpId,
        /// The ballot refused.
        ballot: Ballot,
        /// The highest ballot the acceptor has seen.
        seen: Ballot,
    },
    /// An acceptor that lost its state asks for every key's state.
    SyncRequest {
        /// The round (answers to an older one are ignored).
        round: u64,
    },
    /// Every key's acceptor state (an answer to [`CoordMsg::SyncRequest`]).
    SyncState {
        /// The round asked.
        round: u64,
        /// The states.
        states: Vec<(String, AcceptorState)>,
    },
}
