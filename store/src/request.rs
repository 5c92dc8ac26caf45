//! Client requests and their answers: checked, given their consistency, and started.

use crate::config::MinorityReads;
use crate::config::StoreSettings;
use crate::core::StoreCore;
use crate::entry::Version;
use crate::limits::{StoreError, check_key, check_store_name, check_value};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a request trades safety for latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Quorum rounds: linearizable per key inside the majority.
    Quorum,
    /// Local read or write, replicated in the background; writes still need the quorum view.
    Local,
}

impl Consistency {
    /// The name the API, the CLI and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Quorum => "quorum",
            Consistency::Local => "local",
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;

    /// `quorum` or `local`; anything else is refused with what to write instead.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quorum" => Ok(Consistency::Quorum),
            "local" => Ok(Consistency::Local),
            other => Err(format!("{other:?} is not one of quorum, local")),
        }
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Write a value.
    Put {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Time to live.
        ttl: Option<Duration>,
        /// Consistency; the store's default when `None`.
        consistency: Option<Consistency>,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Consistency; the store's default when `None`.
        consistency: Option<Consistency>,
    },
    /// Read a key.
    Get {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Consistency; the store's default when `None`.
        consistency: Option<Consistency>,
    },
    /// List keys by prefix (served from the local replica).
    List {
        /// Store name.
        store: String,
        /// Key prefix.
        prefix: String,
        /// Most keys to return.
        limit: usize,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The write (or delete) took effect with this version.
    Written {
        /// Version of the write.
        version: Version,
    },
    /// The value read and its version.
    Value {
        /// Value bytes.
        value: Vec<u8>,
        /// Its version.
        version: Version,
        /// True when served by a node without quorum (`minority_reads = stale`).
        stale: bool,
    },
    /// Keys, in order.
    Keys {
        /// The keys.
        keys: Vec<String>,
        /// True when served by a node without quorum.
        stale: bool,
    },
}

/// Identifies a request until its reply.
pub type OpId = u64;

impl StoreCore {
    pub(crate) fn check_store(&self, store: &str) -> Result<&StoreSettings, StoreError> {
        check_store_name(store)?;
        self.cfg
            .stores
            .get(store)
            .ok_or_else(|| StoreError::NotFound {
                message: format!("no store named {store:?} is configured"),
            })
    }

    /// Checks the store and key of a request and picks its consistency (the store's default
    /// unless the request names one).
    pub(crate) fn resolve(
        &self,
        store: &str,
        key: &str,
        c: Option<Consistency>,
    ) -> Result<Consistency, StoreError> {
        let default = self.check_store(store)?.default_consistency;
        check_key(key)?;
        Ok(c.unwrap_or(default))
    }

    /// Starts a client request; its answer comes out of [`StoreCore::poll_reply`] with the
    /// returned id (at once for local operations and errors).
    pub fn request(&mut self, now: Duration, wall_ms: u64, req: Request) -> OpId {
        self.advance(now, wall_ms);
        let op = self.next_op;
        self.next_op += 1;
        if let Err(e) = self.start(op, req) {
            self.replies.push_back((op, Err(e)));
        }
        op
    }

    pub(crate) fn start(&mut self, op: OpId, req: Request) -> Result<(), StoreError> {
        match req {
            Request::Put {
                store,
                key,
                value,
                ttl,
                consistency,
            } => {
                let c = self.resolve(&store, &key, consistency)?;
                check_value(value.len(), self.cfg.max_value_bytes)?;
                if ttl.is_some_and(|t| t.is_zero()) {
                    return Err(StoreError::BadRequest {
                        message: "ttl must be positive".into(),
                    });
                }
                self.write(op, store, key, Some(value), ttl, c)
            }
            Request::Delete {
                store,
                key,
                consistency,
            } => {
                let c = self.resolve(&store, &key, consistency)?;
                self.write(op, store, key, None, None, c)
            }
            Request::Get {
                store,
                key,
                consistency,
            } => {
                let c = self.resolve(&store, &key, consistency)?;
                self.read(op, store, key, c)
            }
            Request::List {
                store,
                prefix,
                limit,
            } => {
                self.check_store(&store)?;
                let minority = !self.view_quorum;
                if minority && self.cfg.minority_reads == MinorityReads::Refuse {
                    return Err(self.no_quorum());
                }
                let stale = minority || self.catch_up.is_some();
                let keys = self
                    .replica
                    .store(&store)
                    .map(|s| s.list(&prefix, limit, self.wall_ms))
                    .unwrap_or_default();
                self.replies
                    .push_back((op, Ok(Reply::Keys { keys, stale })));
                Ok(())
            }
        }
    }
}

pub(crate) fn not_found(store: &str, key: &str) -> StoreError {
    StoreError::NotFound {
        message: format!("no key {key:?} in store {store:?}"),
    }
}
