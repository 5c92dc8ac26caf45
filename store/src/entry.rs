//! An entry: a last-writer-wins register with tombstones and an optional expiry.
//!
//! Merging two replicas of an entry keeps the one with the greater version. Versions are unique
//! (a hybrid timestamp plus the writer's node id), so the merge is a join: commutative,
//! associative and idempotent, and replicas that saw the same writes in any order agree.

use crate::hlc::Hlc;
use membership::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The order of writes: hybrid timestamp first, writer's node id to break ties.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Hybrid logical timestamp (see [`Hlc`]).
    pub ts: u64,
    /// The node that coordinated the write.
    pub node: NodeId,
}

impl Version {
    /// The smallest version; below every real write.
    pub const ZERO: Version = Version {
        ts: 0,
        node: NodeId(0),
    };
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.ts, self.node)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}@{}",
            Hlc::millis(self.ts),
            self.ts & 0xffff,
            self.node
        )
    }
}

/// Error parsing a version string.
#[derive(Debug, thiserror::Error)]
#[error("a version looks like 0000018c2f3a4b5c-0123456789abcdef, got {0:?}")]
pub struct ParseVersionError(String);

impl FromStr for Version {
    type Err = ParseVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseVersionError(s.to_string());
        let (ts, node) = s.split_once('-').ok_or_else(err)?;
        if ts.len() != 16 {
            return Err(err());
        }
        Ok(Version {
            ts: u64::from_str_radix(ts, 16).map_err(|_| err())?,
            node: node.parse().map_err(|_| err())?,
        })
    }
}

/// One replica's state of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Which write this is.
    pub version: Version,
    /// The value; `None` is a tombstone (a delete).
    ///
    /// Encoded as a byte string: postcard gives a byte string and a `Vec<u8>`'s sequence of
    /// single bytes the same bytes (a length, then the bytes), so messages and log records are
    /// unchanged, but a sequence costs a call per byte each way. Decoding and encoding 100-byte
    /// values that way was about a fifth of a catching-up node's time (perf, docs/benchmarks.md).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Wall-clock milliseconds after which the entry is invisible, if it has a TTL.
    pub expires_at: Option<u64>,
}

impl Entry {
    /// The value, unless deleted or expired at `now_ms`.
    pub fn visible(&self, now_ms: u64) -> Option<&[u8]> {
        visible(self.value.as_deref(), self.expires_at, now_ms)
    }

    /// The join of two replicas of the same key.
    pub fn join<'a>(a: &'a Entry, b: &'a Entry) -> &'a Entry {
        if b.version > a.version { b } else { a }
    }

    /// The wall-clock millisecond from which this entry no longer shows a value (a tombstone
    /// from its write, an expiring entry from its expiry); `None` while it is a live value.
    pub fn dead_since(&self) -> Option<u64> {
        dead_since(self.version, self.value.is_none(), self.expires_at)
    }
}

/// The rule of [`Entry::visible`], for an entry held in any layout.
pub(crate) fn visible(value: Option<&[u8]>, expires_at: Option<u64>, now_ms: u64) -> Option<&[u8]> {
    if expires_at.is_some_and(|e| now_ms >= e) {
        return None;
    }
    value
}

/// The rule of [`Entry::dead_since`], for an entry held in any layout.
pub(crate) fn dead_since(version: Version, deleted: bool, expires_at: Option<u64>) -> Option<u64> {
    if deleted {
        Some(Hlc::millis(version.ts))
    } else {
        expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_text_round_trip() {
        let v = Version {
            ts: Hlc::pack(1_700_000_000_000, 7),
            node: NodeId(0xabc),
        };
        let s = v.to_string();
        assert_eq!(s.parse::<Version>().unwrap(), v);
        assert!("nonsense".parse::<Version>().is_err());
        assert!("12-0000000000000abc".parse::<Version>().is_err());
    }

    #[test]
    fn expiry_and_tombstones_hide_values() {
        let v = Version {
            ts: Hlc::pack(1000, 0),
            node: NodeId(1),
        };
        let live = Entry {
            version: v,
            value: Some(b"x".to_vec()),
            expires_at: Some(2000),
        };
        assert_eq!(live.visible(1999), Some(&b"x"[..]));
        assert_eq!(live.visible(2000), None);
        assert_eq!(live.dead_since(), Some(2000));
        let tomb = Entry {
            version: v,
            value: None,
            expires_at: None,
        };
        assert_eq!(tomb.visible(0), None);
        assert_eq!(tomb.dead_since(), Some(1000));
    }

    /// The entry as builds before the byte-string encoding declared it (a plain `Vec<u8>`).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SequenceEntry {
        version: Version,
        value: Option<Vec<u8>>,
        expires_at: Option<u64>,
    }

    proptest::proptest! {
        /// Encoding the value as a byte string changed no byte: what earlier builds wrote (peers'
        /// messages, log records on disk) decodes to the same entry, and what this build writes
        /// is byte for byte what they wrote, so they read it too.
        #[test]
        fn a_value_encodes_as_the_sequence_of_bytes_it_was(
            ts: u64,
            node: u64,
            value in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)),
            expires_at: Option<u64>,
        ) {
            let version = Version { ts, node: NodeId(node) };
            let old = SequenceEntry { version, value: value.clone(), expires_at };
            let new = Entry { version, value, expires_at };
            let old_bytes = postcard::to_stdvec(&old).unwrap();
            let new_bytes = postcard::to_stdvec(&new).unwrap();
            proptest::prop_assert_eq!(&new_bytes, &old_bytes);
            proptest::prop_assert_eq!(postcard::from_bytes::<Entry>(&old_bytes).unwrap(), new);
            proptest::prop_assert_eq!(postcard::from_bytes::<SequenceEntry>(&new_bytes).unwrap(), old);
        }
    }
}
