//! Errors of strong-key requests, each with a stable code the API and the CLI report.

use serde::Serialize;

/// Why a request failed. In every case but `indeterminate`, nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CoordError {
    /// The request is malformed (empty or oversized key, ...); nothing changed.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// The value is larger than allowed; nothing changed.
    #[error("value of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Phase 1 reached no quorum of acceptors; nothing was applied.
    #[error("no quorum: {reachable_votes} of the {required_votes} required votes reachable")]
    NoQuorum {
        /// Votes this node reaches.
        reachable_votes: u32,
        /// Votes a quorum needs.
        required_votes: u32,
    },
    /// Other proposers kept taking the key with higher ballots until the round timed out;
    /// nothing was applied. Retry.
    #[error("the key is contended: other proposals kept winning; nothing was applied, retry")]
    Contended,
    /// An accept went out but was not confirmed by a quorum in time: the change may or may not
    /// have taken effect. Read the key to find out.
    #[error("the outcome is unknown: the change may or may not have taken effect")]
    Indeterminate,
}

impl CoordError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            CoordError::BadRequest { .. } => "bad_request",
            CoordError::TooLarge { .. } => "too_large",
            CoordError::NoQuorum { .. } => "no_quorum",
            CoordError::Contended => "contended",
            CoordError::Indeterminate => "indeterminate",
        }
    }
}
