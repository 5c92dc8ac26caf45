//! The value each strong key holds, and the named changes a proposer applies to it.

use crate::lock::{LockOp, LockOutcome, LockState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A strong key's register: a value (or none) and the number of changes made to it. The version
/// grows by exactly one on every successful change, so it names one value of the key forever (a
/// compare-and-set names the version it expects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Changes made so far (0: never written).
    pub version: u64,
    /// The value; `None` when never written or deleted.
    ///
    /// A byte string to postcard: the same bytes as the `Vec<u8>` sequence earlier builds wrote
    /// (in messages and in the log), without a call per byte (as the store's `Entry`).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The highest fencing token of each lock that a fenced write of this key carried: a write
    /// with a lower one comes from a holder that has been superseded, and is refused.
    pub fences: BTreeMap<String, u64>,
}

/// What a write expects of the register before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Whatever it holds.
    Any,
    /// It holds a value at this version (`If-Match`).
    Version(u64),
    /// It holds no value (`If-None-Match: *`).
    Absent,
}

impl Expect {
    fn holds(self, r: &Register) -> bool {
        match self {
            Expect::Any => true,
            Expect::Version(v) => r.value.is_some() && r.version == v,
            Expect::Absent => r.value.is_none(),
        }
    }
}

/// A named change function. The proposer applies it to the value with the highest accepted
/// ballot among a quorum of promises, then writes the result back (also when nothing changed:
/// a read or a failed compare-and-set is written back too, or it would not be linearizable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Read the register.
    Read,
    /// Set a value.
    Put {
        /// The new value.
        value: Vec<u8>,
        /// The condition.
        expect: Expect,
    },
    /// Remove the value (the register keeps its version: a tombstone).
    Delete {
        /// The condition.
        expect: Expect,
    },
    /// A change to a lock held in the register (see [`crate::lock`]).
    Lock(LockOp),
    /// `change`, made by the holder of `lock` at fencing token `token`: refused when a write of
    /// this key already carried a higher token of that lock.
    Fenced {
        /// The lock.
        lock: String,
        /// The holder's fencing token.
        token: u64,
        /// The change.
        change: Box<Change>,
    },
}

impl Change {
    /// Whether the change only reads: its accept writes back the register it found, so running
    /// it again can apply nothing twice (see the proposer).
    pub fn is_read(&self) -> bool {
        matches!(self, Change::Read | Change::Lock(LockOp::Inspect))
    }
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The register as read.
    Value(Register),
    /// The change applied; the register now has this version.
    Written {
        /// The new version.
        version: u64,
    },
    /// The condition did not hold; nothing changed. The register as it is.
    Conflict(Register),
    /// A delete of a key that holds no value; nothing changed.
    Absent(Register),
    /// What a lock change did.
    Lock(LockOutcome),
    /// A fenced change refused: a write of this key already carried fencing token `seen` of
    /// `lock`, higher than `token`. Nothing changed.
    StaleToken {
        /// The lock.
        lock: String,
        /// The token the write carried.
        token: u64,
        /// The highest token seen.
        seen: u64,
    },
}

impl Change {
    /// The register after the change, and what to tell the client; `age` is the smallest age of
    /// the register's last change over the quorum of promises (locks judge expiry by it).
    pub fn apply(&self, r: &Register, age: Option<Duration>) -> (Register, Outcome) {
        match self {
            Change::Fenced {
                lock,
                token,
                change,
            } => {
                let seen = r.fences.get(lock).copied().unwrap_or(0);
                if seen > *token {
                    let out = Outcome::StaleToken {
                        lock: lock.clone(),
                        token: *token,
                        seen,
                    };
                    return (r.clone(), out);
                }
                let (mut next, out) = change.apply(r, age);
                if matches!(out, Outcome::Written { .. }) {
                    next.fences.insert(lock.clone(), *token);
                }
                (next, out)
            }
            Change::Lock(op) => {
                let cur: LockState = r
                    .value
                    .as_deref()
                    .and_then(|v| postcard::from_bytes(v).ok())
                    .unwrap_or_default();
                let (next, outcome) = op.apply(&cur, age);
                let reg = match next {
                    // Every change of a lock makes a new version, so the acceptors restart the
                    // lease's clock; an unchanged lock is written back as it was and does not.
                    Some(s) => Register {
                        version: r.version + 1,
                        value: Some(postcard::to_stdvec(&s).expect("encoding a lock cannot fail")),
                        fences: r.fences.clone(),
                    },
                    None => r.clone(),
                };
                (reg, Outcome::Lock(outcome))
            }
            Change::Read => (r.clone(), Outcome::Value(r.clone())),
            Change::Put { value, expect } => {
                if !expect.holds(r) {
                    return (r.clone(), Outcome::Conflict(r.clone()));
                }
                let next = Register {
                    version: r.version + 1,
                    value: Some(value.clone()),
                    fences: r.fences.clone(),
                };
                let version = next.version;
                (next, Outcome::Written { version })
            }
            Change::Delete { expect } => {
                if !expect.holds(r) {
                    return (r.clone(), Outcome::Conflict(r.clone()));
                }
                if r.value.is_none() {
                    return (r.clone(), Outcome::Absent(r.clone()));
                }
                let next = Register {
                    version: r.version + 1,
                    value: None,
                    fences: r.fences.clone(),
                };
                let version = next.version;
                (next, Outcome::Written { version })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register as builds before the byte-string encoding declared it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SequenceRegister {
        version: u64,
        value: Option<Vec<u8>>,
        fences: BTreeMap<String, u64>,
    }

    proptest::proptest! {
        /// The byte-string encoding changed no byte: earlier builds' messages and log records
        /// decode to the same register, and they read what this build writes.
        #[test]
        fn a_value_encodes_as_the_sequence_of_bytes_it_was(
            version: u64,
            value in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
            fences in proptest::collection::btree_map("[a-z]{0,6}", proptest::prelude::any::<u64>(), 0..3),
        ) {
            let old = SequenceRegister { version, value: value.clone(), fences: fences.clone() };
            let new = Register { version, value, fences };
            let old_bytes = postcard::to_stdvec(&old).unwrap();
            let new_bytes = postcard::to_stdvec(&new).unwrap();
            proptest::prop_assert_eq!(&new_bytes, &old_bytes);
            proptest::prop_assert_eq!(postcard::from_bytes::<Register>(&old_bytes).unwrap(), new);
            proptest::prop_assert_eq!(postcard::from_bytes::<SequenceRegister>(&new_bytes).unwrap(), old);
        }
    }

    fn reg(version: u64, value: Option<&str>) -> Register {
        Register {
            version,
            value: value.map(|v| v.as_bytes().to_vec()),
            ..Register::default()
        }
    }

    fn put(v: &str, expect: Expect) -> Change {
        Change::Put {
            value: v.as_bytes().to_vec(),
            expect,
        }
    }

    #[test]
    fn a_change_grows_the_version_by_one_and_a_failed_condition_changes_nothing() {
        let empty = Register::default();
        assert_eq!(
            put("a", Expect::Absent).apply(&empty, None).0,
            reg(1, Some("a"))
        );
        assert_eq!(
            put("b", Expect::Version(1)).apply(&reg(1, Some("a")), None),
            (reg(2, Some("b")), Outcome::Written { version: 2 })
        );
        let held = reg(2, Some("b"));
        assert_eq!(
            put("c", Expect::Version(1)).apply(&held, None),
            (held.clone(), Outcome::Conflict(held.clone())),
            "a stale version"
        );
        assert_eq!(
            put("c", Expect::Absent).apply(&held, None).1,
            Outcome::Conflict(held.clone())
        );
        assert_eq!(
            put("c", Expect::Version(0)).apply(&empty, None).1,
            Outcome::Conflict(empty.clone()),
            "compare-and-set on a missing key"
        );
        let gone = Change::Delete {
            expect: Expect::Any,
        }
        .apply(&held, None);
        assert_eq!(gone, (reg(3, None), Outcome::Written { version: 3 }));
        assert_eq!(
            Change::Delete {
                expect: Expect::Any
            }
            .apply(&gone.0, None)
            .1,
            Outcome::Absent(gone.0.clone())
        );
        assert_eq!(
            put("d", Expect::Absent).apply(&gone.0, None).0,
            reg(4, Some("d")),
            "a deleted key can be created again, and its version keeps growing"
        );
        assert_eq!(
            Change::Read.apply(&held, None),
            (held.clone(), Outcome::Value(held))
        );
    }

    #[test]
    fn a_fenced_write_with_an_older_token_is_refused_and_changes_nothing() {
        let fenced = |token, v: &str| Change::Fenced {
            lock: "job".into(),
            token,
            change: Box::new(put(v, Expect::Any)),
        };
        let (r, out) = fenced(2, "b").apply(&Register::default(), None);
        assert_eq!(out, Outcome::Written { version: 1 });
        assert_eq!(r.fences.get("job"), Some(&2));
        let (same, out) = fenced(1, "stale").apply(&r, None);
        assert_eq!(
            out,
            Outcome::StaleToken {
                lock: "job".into(),
                token: 1,
                seen: 2
            }
        );
        assert_eq!(same, r, "nothing changed");
        let (r3, out) = fenced(3, "c").apply(&r, None);
        assert_eq!(out, Outcome::Written { version: 2 });
        assert_eq!(r3.fences.get("job"), Some(&3));
        // An unfenced write keeps the fences for the next fenced one.
        let (r4, _) = put("d", Expect::Any).apply(&r3, None);
        assert_eq!(
            fenced(2, "late").apply(&r4, None).1,
            Outcome::StaleToken {
                lock: "job".into(),
                token: 2,
                seen: 3
            }
        );
    }
}
