//! One node's replica of every store: entries by key, with bucketed digests for anti-entropy.
//!
//! Keys hash into [`BUCKETS`] buckets; a bucket's digest is the wrapping sum of a hash of each
//! `(key, version, deleted)` it holds, so it updates in O(1) per write and does not depend on the
//! order writes arrived in. Two replicas compare digests and exchange only differing buckets.
//! Each bucket is split again into [`LEAVES`] leaves with digests of their own, so a periodic
//! round narrows a differing bucket to the leaves that differ before any key is listed.

use crate::entry::{Entry, Version};
use crate::slot::{EntryRef, Slot};
use membership::envelope::fnv1a64;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Digest buckets per store.
pub const BUCKETS: usize = 256;

/// Leaves per bucket. With 1M keys a leaf holds about 61, so a round under sustained writes,
/// where a few dozen keys are in flight, lists a few thousand keys instead of every key of
/// every bucket a write touched (issue 15). The leaf digests cost 128 KiB per store.
pub const LEAVES: usize = 64;

/// The bucket a key belongs to.
pub fn bucket_of(key: &str) -> usize {
    slot_of(key).0
}

/// The bucket a key belongs to, and its leaf within the bucket (one hash for both).
pub fn slot_of(key: &str) -> (usize, usize) {
    let h = fnv1a64(&[key.as_bytes()]);
    (
        (h % BUCKETS as u64) as usize,
        ((h / BUCKETS as u64) % LEAVES as u64) as usize,
    )
}

fn entry_hash(key: &[u8], version: Version, deleted: bool) -> u64 {
    fnv1a64(&[
        key,
        &version.ts.to_be_bytes(),
        &version.node.0.to_be_bytes(),
        &[u8::from(deleted)],
    ])
}

fn slot_hash(s: &Slot) -> u64 {
    entry_hash(s.key_bytes(), s.version(), s.deleted())
}

/// One store's entries and digest.
#[derive(Debug, Clone)]
pub struct StoreMap {
    /// Each key with its entry, packed (see [`Slot`] for why).
    entries: BTreeSet<Slot>,
    /// Per bucket: the sum of its leaves.
    digest: Vec<u64>,
    /// Per leaf, `bucket * LEAVES + leaf`.
    leaves: Vec<u64>,
    /// Entries per bucket.
    counts: Vec<u32>,
    /// Per bucket: what its entries take in a message ([`wire_size`]), so a push can be cut at
    /// a bucket boundary without a scan.
    sizes: Vec<u64>,
}

/// What `(key, entry)` takes in a message: postcard's encoding of the pair, byte for byte.
///
/// Why exact (issue 15): a push in parts is cut at its budget in these bytes. The estimate this
/// replaced (key, value and 64 bytes) over-counted a 13-byte key with a 100-byte value by a
/// quarter, so a wiped node took 12 parts of 1M keys where 9 hold them.
pub fn wire_size(key: &str, entry: &Entry) -> u64 {
    encoded_size(
        key.len(),
        entry.value.as_ref().map(Vec::len),
        entry.version,
        entry.expires_at,
    )
}

fn slot_size(s: &Slot) -> u64 {
    encoded_size(
        s.key_len(),
        s.value().map(<[u8]>::len),
        s.version(),
        s.expires_at(),
    )
}

/// Bytes of a postcard varint of `x`.
fn varint_len(x: u64) -> u64 {
    u64::from((64 - (x | 1).leading_zeros()).div_ceil(7))
}

fn encoded_size(
    key_len: usize,
    value_len: Option<usize>,
    version: Version,
    expires_at: Option<u64>,
) -> u64 {
    let key = varint_len(key_len as u64) + key_len as u64;
    // A node id is 8 fixed bytes on the wire (`NodeId`'s `Serialize`).
    let version = varint_len(version.ts) + 8;
    let value = 1 + value_len.map_or(0, |n| varint_len(n as u64) + n as u64);
    let expiry = 1 + expires_at.map_or(0, varint_len);
    key + version + value + expiry
}

impl Default for StoreMap {
    fn default() -> Self {
        StoreMap {
            entries: BTreeSet::new(),
            digest: vec![0; BUCKETS],
            leaves: vec![0; BUCKETS * LEAVES],
            counts: vec![0; BUCKETS],
            sizes: vec![0; BUCKETS],
        }
    }
}

/// Two stores are equal when they hold the same keys with the same entries.
impl PartialEq for StoreMap {
    fn eq(&self, other: &StoreMap) -> bool {
        self.digest == other.digest
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.same(b))
    }
}

impl Eq for StoreMap {}

impl StoreMap {
    /// Merges `entry` into `key`; returns whether the replica changed.
    pub fn apply(&mut self, key: &str, entry: Entry) -> bool {
        self.apply_ref(key, &entry)
    }

    /// [`apply`](Self::apply) without taking the entry (it is copied into the replica either way).
    ///
    /// The new slot goes in first and the old one comes back out: one search of the tree for a
    /// new key or a newer version (the common cases; a search to look and another to insert were
    /// a third of a catching-up node's time applying entries, perf). An entry that is not newer
    /// puts the old slot back.
    pub fn apply_ref(&mut self, key: &str, entry: &Entry) -> bool {
        let slot = Slot::new(key, entry);
        let (b, place) = (slot.bucket(), slot.place());
        let new = entry_hash(key.as_bytes(), entry.version, entry.value.is_none());
        let size = wire_size(key, entry);
        let change = match self.entries.replace(slot) {
            Some(old) if old.version() >= entry.version => {
                self.entries.replace(old);
                return false;
            }
            Some(old) => {
                self.sizes[b] -= slot_size(&old);
                new.wrapping_sub(slot_hash(&old))
            }
            None => {
                self.counts[b] += 1;
                new
            }
        };
        self.sizes[b] += size;
        self.digest[b] = self.digest[b].wrapping_add(change);
        let leaf = &mut self.leaves[place];
        *leaf = leaf.wrapping_add(change);
        true
    }

    /// The entry of `key`, deleted or expired ones included.
    pub fn get(&self, key: &str) -> Option<EntryRef<'_>> {
        self.entries.get(key.as_bytes()).map(EntryRef::new)
    }

    /// The version held for `key` ([`Version::ZERO`] if none).
    pub fn version(&self, key: &str) -> Version {
        self.entries
            .get(key.as_bytes())
            .map_or(Version::ZERO, Slot::version)
    }

    /// Keys with a visible value at `now_ms`, starting with `prefix`, in order, at most `limit`.
    pub fn list(&self, prefix: &str, limit: usize, now_ms: u64) -> Vec<String> {
        self.range(Some(prefix), None)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.visible(now_ms).is_some())
            .take(limit)
            .map(|(k, _)| k.to_string())
            .collect()
    }

    /// The per-bucket digest.
    pub fn digest(&self) -> &[u64] {
        &self.digest
    }

    /// The leaf digests of bucket `b` (`LEAVES` of them).
    pub fn leaf_digests(&self, b: usize) -> &[u64] {
        &self.leaves[b * LEAVES..(b + 1) * LEAVES]
    }

    /// Entries in bucket `b`.
    pub fn bucket_len(&self, b: usize) -> usize {
        self.counts[b] as usize
    }

    /// What bucket `b`'s entries take in messages ([`wire_size`] summed).
    pub fn bucket_bytes(&self, b: usize) -> u64 {
        self.sizes[b]
    }

    /// One hash of the whole store: equal on two replicas exactly when their buckets are.
    pub fn summary_hash(&self) -> u64 {
        let bytes: Vec<u8> = self.digest.iter().flat_map(|d| d.to_be_bytes()).collect();
        fnv1a64(&[&bytes])
    }

    /// Every entry of one bucket.
    pub fn bucket(&self, b: usize) -> impl Iterator<Item = (&str, EntryRef<'_>)> {
        self.placed((Bound::Unbounded, Bound::Unbounded), move |p| {
            p / LEAVES == b
        })
    }

    /// Entries with keys within `(lo, hi)` whose place, `bucket * LEAVES + leaf`, `keep` accepts,
    /// in key order. Only kept entries are read (see [`Slot`] for why).
    pub fn placed<'a>(
        &'a self,
        (lo, hi): (Bound<&'a str>, Bound<&'a str>),
        keep: impl Fn(usize) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a str, EntryRef<'a>)> {
        let bytes = |b: Bound<&'a str>| b.map(str::as_bytes);
        let (lo, hi) = match (lo, hi) {
            // A backwards range (only a broken peer sends one) is empty, not a panic; so is
            // `(k, k)`, which `BTreeSet::range` would panic on too.
            (Bound::Included(f), Bound::Included(u) | Bound::Excluded(u)) if f > u => {
                (Bound::Included(u), Bound::Excluded(u))
            }
            (Bound::Excluded(f), Bound::Included(u) | Bound::Excluded(u)) if f >= u => {
                (Bound::Included(u), Bound::Excluded(u))
            }
            other => other,
        };
        self.entries
            .range::<[u8], _>((bytes(lo), bytes(hi)))
            .filter(move |s| keep(s.place()))
            .map(|s| (s.key(), EntryRef::new(s)))
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, EntryRef<'_>)> {
        self.entries.iter().map(|s| (s.key(), EntryRef::new(s)))
    }

    /// Entries with keys in `[from, until)`, in key order (`None`: unbounded on that side).
    pub fn range<'a>(
        &'a self,
        from: Option<&'a str>,
        until: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, EntryRef<'a>)> {
        let lo = from.map_or(Bound::Unbounded, Bound::Included);
        let hi = until.map_or(Bound::Unbounded, Bound::Excluded);
        self.placed((lo, hi), |_| true)
    }

    /// Number of entries (deleted and expired ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops tombstones and expired entries dead for longer than `grace_ms` at `now_ms`;
    /// returns how many. Collecting sooner could let an older value come back from a replica that
    /// has not seen the delete yet, hence the grace period (docs/guarantees.md).
    pub fn collect(&mut self, now_ms: u64, grace_ms: u64) -> usize {
        let before = self.entries.len();
        let (digest, leaves, counts, sizes) = (
            &mut self.digest,
            &mut self.leaves,
            &mut self.counts,
            &mut self.sizes,
        );
        self.entries.retain(|s| {
            let dead = EntryRef::new(s)
                .dead_since()
                .is_some_and(|d| now_ms >= d.saturating_add(grace_ms));
            if dead {
                let (b, place) = (s.bucket(), s.place());
                let h = slot_hash(s);
                digest[b] = digest[b].wrapping_sub(h);
                leaves[place] = leaves[place].wrapping_sub(h);
                counts[b] -= 1;
                sizes[b] -= slot_size(s);
            }
            !dead
        });
        before - self.entries.len()
    }
}

/// Every store of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replica {
    stores: BTreeMap<String, StoreMap>,
}

impl Replica {
    /// The store named `name`, created empty if needed.
    pub fn store_mut(&mut self, name: &str) -> &mut StoreMap {
        // Looked up before `entry`, which would allocate the name on every write.
        if !self.stores.contains_key(name) {
            self.stores.insert(name.to_string(), StoreMap::default());
        }
        self.stores.get_mut(name).expect("inserted above")
    }

    /// The store named `name`, if it holds anything.
    pub fn store(&self, name: &str) -> Option<&StoreMap> {
        self.stores.get(name)
    }

    /// Merges an entry.
    pub fn apply(&mut self, store: &str, key: &str, entry: Entry) -> bool {
        self.store_mut(store).apply_ref(key, &entry)
    }

    /// Merges an entry without taking it.
    pub fn apply_ref(&mut self, store: &str, key: &str, entry: &Entry) -> bool {
        self.store_mut(store).apply_ref(key, entry)
    }

    /// Names of stores holding entries.
    pub fn store_names(&self) -> impl Iterator<Item = &String> {
        self.stores.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use membership::NodeId;

    fn e(ts: u64, node: u64, v: Option<&str>) -> Entry {
        Entry {
            version: Version {
                ts: Hlc::pack(ts, 0),
                node: NodeId(node),
            },
            value: v.map(|s| s.as_bytes().to_vec()),
            expires_at: None,
        }
    }

    #[test]
    fn ranges_are_half_open_and_a_backwards_one_is_empty() {
        let mut m = StoreMap::default();
        for k in ["a", "b", "c", "d"] {
            m.apply(k, e(1, 1, Some("v")));
        }
        let keys = |from, until| -> Vec<String> {
            m.range(from, until).map(|(k, _)| k.to_string()).collect()
        };
        assert_eq!(keys(Some("b"), Some("d")), ["b", "c"]);
        assert_eq!(keys(None, Some("b")), ["a"]);
        assert_eq!(keys(Some("c"), None), ["c", "d"]);
        assert!(keys(Some("d"), Some("b")).is_empty());
        assert!(keys(Some("b"), Some("b")).is_empty());
    }

    proptest::proptest! {
        /// `wire_size` is what postcard makes of the pair, byte for byte (the push budget counts it).
        #[test]
        fn wire_size_is_the_encoded_size(
            key in "\\PC{0,40}",
            ts: u64,
            node: u64,
            value in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
            expires_at: Option<u64>,
        ) {
            let entry = Entry { version: Version { ts, node: membership::NodeId(node) }, value, expires_at };
            let real = postcard::to_allocvec(&(key.clone(), entry.clone())).expect("encodes").len();
            proptest::prop_assert_eq!(wire_size(&key, &entry), real as u64);
            let mut m = StoreMap::default();
            m.apply(&key, entry);
            proptest::prop_assert_eq!(m.bucket_bytes(bucket_of(&key)), real as u64);
        }
    }

    /// `placed` keeps exactly the keys whose hashed place it is asked for, within its bounds, and
    /// an empty or backwards range is empty rather than a panic.
    #[test]
    fn placed_keeps_the_keys_of_the_places_asked_within_the_bounds() {
        use Bound::{Excluded, Included, Unbounded};
        let mut m = StoreMap::default();
        for i in 0..500 {
            m.apply(&format!("k{i:03}"), e(1, 1, Some("v")));
        }
        let keys = |b: (Bound<&str>, Bound<&str>), keep: &dyn Fn(usize) -> bool| -> Vec<String> {
            m.placed(b, keep).map(|(k, _)| k.to_string()).collect()
        };
        let odd = |p: usize| (p / LEAVES) % 2 == 1;
        let want: Vec<String> = m
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| bucket_of(k) % 2 == 1)
            .collect();
        assert!(!want.is_empty() && want.len() < 500);
        assert_eq!(keys((Unbounded, Unbounded), &odd), want);
        let (b, l) = slot_of("k123");
        let one = keys((Unbounded, Unbounded), &|p| p == b * LEAVES + l);
        assert!(one.contains(&"k123".to_string()));
        assert!(one.iter().all(|k| slot_of(k) == (b, l)));
        let all = |_| true;
        assert_eq!(
            keys((Excluded("k100"), Excluded("k103")), &all),
            ["k101", "k102"]
        );
        assert_eq!(
            keys((Included("k100"), Included("k101")), &all),
            ["k100", "k101"]
        );
        assert!(keys((Excluded("k100"), Excluded("k100")), &all).is_empty());
        assert!(keys((Included("k300"), Excluded("k100")), &all).is_empty());
        assert!(keys((Excluded("k300"), Included("k100")), &all).is_empty());
    }

    #[test]
    fn newer_wins_and_digest_tracks_content_not_order() {
        let mut a = StoreMap::default();
        let mut b = StoreMap::default();
        assert!(a.apply("k", e(1, 1, Some("x"))));
        assert!(a.apply("k", e(2, 1, Some("y"))));
        assert!(!a.apply("k", e(1, 9, Some("z"))));
        assert!(b.apply("k", e(2, 1, Some("y"))));
        assert!(!b.apply("k", e(1, 1, Some("x"))));
        assert_eq!(a, b);
        assert_eq!(a.get("k").unwrap().value(), Some(&b"y"[..]));
    }

    #[test]
    fn list_by_prefix_skips_deleted() {
        let mut s = StoreMap::default();
        s.apply("a/1", e(1, 1, Some("x")));
        s.apply("a/2", e(1, 1, None));
        s.apply("a/3", e(1, 1, Some("x")));
        s.apply("b/1", e(1, 1, Some("x")));
        assert_eq!(s.list("a/", 10, 0), vec!["a/1", "a/3"]);
        assert_eq!(s.list("a/", 1, 0), vec!["a/1"]);
        assert_eq!(s.list("", 10, 0).len(), 3);
    }

    #[test]
    fn collection_waits_for_the_grace_period() {
        let mut s = StoreMap::default();
        s.apply("gone", e(1000, 1, None));
        s.apply("live", e(1000, 1, Some("x")));
        assert_eq!(s.collect(1500, 1000), 0);
        assert_eq!(s.collect(2000, 1000), 1);
        assert!(s.get("gone").is_none());
        let mut fresh = StoreMap::default();
        fresh.apply("live", e(1000, 1, Some("x")));
        assert_eq!(s.digest(), fresh.digest());
    }

    /// Each bucket's digest is the sum of its leaves', and its count and bytes those of the entries hashed
    /// into it, through inserts, overwrites and collection; a leaf changes only with its own keys.
    #[test]
    fn leaves_add_up_to_their_bucket_and_follow_every_change() {
        let mut s = StoreMap::default();
        let check = |s: &StoreMap| {
            for b in 0..BUCKETS {
                let sum = s
                    .leaf_digests(b)
                    .iter()
                    .fold(0u64, |a, d| a.wrapping_add(*d));
                assert_eq!(sum, s.digest()[b], "bucket {b}");
                let n = s.iter().filter(|(k, _)| bucket_of(k) == b).count();
                assert_eq!(s.bucket_len(b), n, "bucket {b}");
                let bytes: u64 = s.bucket(b).map(|(k, e)| wire_size(k, &e.to_entry())).sum();
                assert_eq!(s.bucket_bytes(b), bytes, "bucket {b}");
            }
        };
        for i in 0..2_000u64 {
            s.apply(&format!("k{i}"), e(1000 + i, 1, Some("x")));
        }
        check(&s);
        let (b, l) = slot_of("k7");
        let before: Vec<u64> = s.leaf_digests(b).to_vec();
        s.apply("k7", e(5000, 2, None));
        let after = s.leaf_digests(b);
        for leaf in 0..LEAVES {
            assert_eq!(before[leaf] != after[leaf], leaf == l, "leaf {leaf}");
        }
        check(&s);
        assert_eq!(s.collect(5000 + 1000, 1000), 1);
        check(&s);
        let mut fresh = StoreMap::default();
        for i in (0..2_000u64).filter(|i| *i != 7) {
            fresh.apply(&format!("k{i}"), e(1000 + i, 1, Some("x")));
        }
        assert_eq!(s, fresh);
    }
}
