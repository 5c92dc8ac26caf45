//! One replica's entry of one key, packed into a single allocation.
//!
//! Why (issue 15, memory per key): a `BTreeMap<String, Entry>` spent about 173 bytes above key
//! and value per key at 1M keys of 14-byte keys and 100-byte values (RSS of a lone map; the agent
//! under writes 230-267 above the value): 80-byte elements in B-tree nodes about two-thirds
//! full, a 24-byte `String` header plus a 32-byte heap block for the key, and a `Vec` header plus a
//! second heap block for the value. A slot is one boxed byte string (a small header, the key, the
//! value), so the tree holds a pointer (and the key's digest place, see [`Slot`]) per key and
//! the heap one block.
//!
//! Layout: `flags` (1 byte: tombstone, has expiry), the key's length (2 bytes, keys are at most
//! [`MAX_KEY_BYTES`](crate::limits::MAX_KEY_BYTES)), the version's timestamp and node (8 + 8),
//! the expiry (8, only when set), the key, the value (the rest; nothing for a tombstone).
//! Slots order and compare by key alone, which is what lets the tree find one by `&[u8]`.

use crate::entry::{Entry, Version};
use crate::replica::{LEAVES, slot_of};
use membership::NodeId;
use std::borrow::Borrow;
use std::cmp::Ordering;

const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 2;
const FIXED: usize = 1 + 2 + 8 + 8;

/// One key and its entry in one allocation, and beside the pointer the key's place in the digest
/// (`bucket * LEAVES + leaf`).
///
/// Why the place sits in the tree and not in the allocation (issue 15, a wiped node's catch-up):
/// a peer pushing some buckets, or listing the versions of some leaves, walks every key and keeps
/// those in them. Reading each key to hash it was a cache miss per key, 26-41 % of the pushing
/// agent's time at 300,000 keys (perf); the place next to the pointer is read with the tree's own
/// nodes, and only kept keys are loaded. It costs the tree 8 bytes per key (24-byte elements).
#[derive(Clone)]
pub(crate) struct Slot {
    bytes: Box<[u8]>,
    place: u16,
}

impl Slot {
    /// Packs `key` and `entry`. Keys longer than `u16::MAX` bytes are refused before they reach a
    /// replica ([`check_key`](crate::limits)), so the length always fits.
    pub(crate) fn new(key: &str, entry: &Entry) -> Slot {
        let klen = u16::try_from(key.len()).expect("keys are at most MAX_KEY_BYTES long");
        let value = entry.value.as_deref().unwrap_or_default();
        let extra = if entry.expires_at.is_some() { 8 } else { 0 };
        let mut b = Vec::with_capacity(FIXED + extra + key.len() + value.len());
        let mut flags = 0;
        if entry.value.is_none() {
            flags |= TOMBSTONE;
        }
        if entry.expires_at.is_some() {
            flags |= EXPIRES;
        }
        b.push(flags);
        b.extend_from_slice(&klen.to_le_bytes());
        b.extend_from_slice(&entry.version.ts.to_le_bytes());
        b.extend_from_slice(&entry.version.node.0.to_le_bytes());
        if let Some(e) = entry.expires_at {
            b.extend_from_slice(&e.to_le_bytes());
        }
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(value);
        let (bucket, leaf) = slot_of(key);
        let place = u16::try_from(bucket * LEAVES + leaf).expect("BUCKETS * LEAVES fits u16");
        Slot {
            bytes: b.into_boxed_slice(),
            place,
        }
    }

    /// The key's digest bucket.
    pub(crate) fn bucket(&self) -> usize {
        self.place as usize / LEAVES
    }

    /// The key's leaf over all buckets: `bucket * LEAVES + leaf`.
    pub(crate) fn place(&self) -> usize {
        self.place as usize
    }

    fn flags(&self) -> u8 {
        self.bytes[0]
    }

    fn key_start(&self) -> usize {
        FIXED + if self.flags() & EXPIRES != 0 { 8 } else { 0 }
    }

    pub(crate) fn key_len(&self) -> usize {
        u16::from_le_bytes([self.bytes[1], self.bytes[2]]) as usize
    }

    pub(crate) fn key_bytes(&self) -> &[u8] {
        let s = self.key_start();
        &self.bytes[s..s + self.key_len()]
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }

    /// The key. Slots are only built from `&str`, so the bytes are UTF-8.
    pub(crate) fn key(&self) -> &str {
        std::str::from_utf8(self.key_bytes()).expect("slot keys are built from str")
    }

    /// Which write this is.
    pub(crate) fn version(&self) -> Version {
        Version {
            ts: self.u64_at(3),
            node: NodeId(self.u64_at(11)),
        }
    }

    /// True for a tombstone (a delete).
    pub(crate) fn deleted(&self) -> bool {
        self.flags() & TOMBSTONE != 0
    }

    /// Wall-clock milliseconds after which the entry is invisible, if it has a TTL.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        (self.flags() & EXPIRES != 0).then(|| self.u64_at(FIXED))
    }

    /// The value; `None` for a tombstone.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        (!self.deleted()).then(|| &self.bytes[self.key_start() + self.key_len()..])
    }

    /// The same bytes: key, version, value and expiry all equal.
    pub(crate) fn same(&self, other: &Slot) -> bool {
        self.bytes == other.bytes
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {:?}", self.key(), EntryRef::new(self))
    }
}

impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        self.key_bytes()
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.key_bytes() == other.key_bytes()
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Slot) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    /// By key bytes, which is `str`'s order too.
    fn cmp(&self, other: &Slot) -> Ordering {
        self.key_bytes().cmp(other.key_bytes())
    }
}

/// A borrowed view of one replica's entry of one key.
#[derive(Clone, Copy)]
pub struct EntryRef<'a>(&'a Slot);

impl<'a> EntryRef<'a> {
    pub(crate) fn new(slot: &'a Slot) -> Self {
        EntryRef(slot)
    }

    /// Which write this is.
    pub fn version(&self) -> Version {
        self.0.version()
    }

    /// The value; `None` is a tombstone (a delete).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.0.value()
    }

    /// True for a tombstone.
    pub fn deleted(&self) -> bool {
        self.0.deleted()
    }

    /// Wall-clock milliseconds after which the entry is invisible, if it has a TTL.
    pub fn expires_at(&self) -> Option<u64> {
        self.0.expires_at()
    }

    /// The value, unless deleted or expired at `now_ms` (as [`Entry::visible`]).
    pub fn visible(&self, now_ms: u64) -> Option<&'a [u8]> {
        crate::entry::visible(self.value(), self.expires_at(), now_ms)
    }

    /// The wall-clock millisecond from which this entry no longer shows a value (as
    /// [`Entry::dead_since`]).
    pub fn dead_since(&self) -> Option<u64> {
        crate::entry::dead_since(self.version(), self.deleted(), self.expires_at())
    }

    /// An owned copy, for messages, log records and replies.
    pub fn to_entry(&self) -> Entry {
        Entry {
            version: self.version(),
            value: self.value().map(<[u8]>::to_vec),
            expires_at: self.expires_at(),
        }
    }
}

impl std::fmt::Debug for EntryRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_entry().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever goes in comes out: key, version, value or tombstone, expiry.
        #[test]
        fn a_slot_gives_back_what_it_was_built_from(
            key in "\\PC{0,40}",
            ts: u64,
            node: u64,
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            expires_at: Option<u64>,
        ) {
            let entry = Entry { version: Version { ts, node: NodeId(node) }, value, expires_at };
            let slot = Slot::new(&key, &entry);
            prop_assert_eq!(slot.key(), key.as_str());
            let (b, l) = slot_of(&key);
            prop_assert_eq!((slot.bucket(), slot.place()), (b, b * LEAVES + l));
            let back = EntryRef::new(&slot).to_entry();
            prop_assert_eq!(back, entry);
        }

        /// Slots order as their keys do as strings.
        #[test]
        fn slots_order_as_their_keys(a in "\\PC{0,12}", b in "\\PC{0,12}", ea: Option<u64>) {
            let e = |x: Option<u64>| Entry { version: Version::ZERO, value: None, expires_at: x };
            let (sa, sb) = (Slot::new(&a, &e(ea)), Slot::new(&b, &e(None)));
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
        }
    }
}
