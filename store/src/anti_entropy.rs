//! Anti-entropy: bucket digests exchanged with a peer, then the versions of the buckets that
//! differ, so each side pushes what the other lacks and fetches what it lacks itself; only
//! differing entries travel.
//!
//! A periodic round narrows further: for a differing bucket that holds more than
//! [`LEAF_MIN`] keys, the digest's receiver answers with the bucket's leaf digests
//! ([`StoreMsg::Leaves`]) and the digest's sender lists only the keys of the leaves that differ
//! ([`StoreMsg::LeafVersions`]). Catch-up rounds list whole buckets: a node that catches up
//! expects most buckets to differ, and its round counts the versions it was sent (see
//! `catch_up.rs`).

use crate::catch_up::key_hash;
use crate::core::StoreCore;
use crate::entry::{Entry, Version};
use crate::limits::check_store_name;
use crate::msg::{PUSH_EMPTY, PUSH_PARTS, StoreMsg};
use crate::replica::{BUCKETS, LEAVES, wire_size};
use membership::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// A differing bucket with more keys than this is narrowed to its differing leaves in a
/// periodic round; a smaller one is listed whole, which costs less than its leaf digests
/// (`LEAVES` x 8 bytes, against about 30 bytes per key listed).
pub const LEAF_MIN: usize = 16;

/// Which keys a versions message speaks for: a set of places (`bucket * LEAVES + leaf`), whole
/// buckets or single leaves, tested against the place each entry keeps beside its pointer.
#[derive(Debug)]
pub(crate) struct Cover(Vec<bool>);

impl Cover {
    pub(crate) fn buckets(set: impl IntoIterator<Item = usize>) -> Cover {
        let mut places = vec![false; BUCKETS * LEAVES];
        for b in set {
            places[b * LEAVES..(b + 1) * LEAVES].fill(true);
        }
        Cover(places)
    }

    fn leaves(set: impl IntoIterator<Item = usize>) -> Cover {
        let mut places = vec![false; BUCKETS * LEAVES];
        for p in set {
            places[p] = true;
        }
        Cover(places)
    }

    pub(crate) fn covers_place(&self, place: usize) -> bool {
        self.0[place]
    }
}

/// What anti-entropy has done on this node, for metrics: repairs show replicas that had drifted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Digests sent (each begins a round with one peer; catch-up rounds included).
    pub rounds: u64,
    /// Entries sent to peers that lacked them or held older versions.
    pub entries_sent: u64,
    /// `(key, version)` pairs listed to peers so they could compare (versions messages).
    pub versions_sent: u64,
    /// Leaf digests sent to narrow a differing bucket.
    pub leaves_sent: u64,
    /// Bytes of those entries (keys and values).
    pub bytes_sent: u64,
    /// Entries received by anti-entropy that changed this replica (a key it lacked or held older).
    pub keys_repaired: u64,
}

impl StoreCore {
    /// What anti-entropy has done so far (see [`SyncStats`]).
    pub fn sync_stats(&self) -> SyncStats {
        self.sync_stats
    }

    pub(crate) fn send_digest(&mut self, to: NodeId, round: u64) {
        self.sync_stats.rounds += 1;
        let stores = self
            .replica
            .store_names()
            .map(|n| {
                (
                    n.clone(),
                    self.replica
                        .store(n)
                        .map(|s| s.digest().to_vec())
                        .unwrap_or_default(),
                )
            })
            .collect();
        self.outbox
            .push_back((to, StoreMsg::Digest { stores, round }));
    }

    /// A fingerprint of this replica's digests: equal replicas have equal fingerprints, and a
    /// store whose digest is all zeros counts as absent, as [`StoreCore::on_digest`] compares.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut h = crc32fast::Hasher::new();
        let mut h2 = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
        for name in self.replica.store_names() {
            let Some(s) = self.replica.store(name) else {
                continue;
            };
            if s.digest().iter().all(|d| *d == 0) {
                continue;
            }
            for part in [name.as_bytes(), &[0xff]] {
                h.update(part);
                h2.update(part);
            }
            for d in s.digest() {
                h.update(&d.to_be_bytes());
                h2.update(&d.to_le_bytes());
            }
        }
        (u64::from(h.finalize()) << 32) | u64::from(h2.finalize())
    }

    /// Answers a digest with our versions of the buckets that differ (or, for buckets the peer
    /// holds nothing of, the entries themselves, queued: `push.rs`); returns how many `(key,
    /// version)` pairs went out, whether every bucket of every store was equal, and whether some
    /// empty buckets were left for another round (only when the round carries [`PUSH_PARTS`]).
    pub(crate) fn on_digest(
        &mut self,
        from: NodeId,
        theirs: Vec<(String, Vec<u64>)>,
        round: u64,
    ) -> (u64, bool, bool) {
        let mut sent = 0;
        let mut equal = true;
        let mut partial = false;
        let mut pushed_any = false;
        // Bytes of entries this answer may still push, when the round takes pushes in parts.
        let mut budget = (round != 0 && round & PUSH_PARTS != 0)
            .then_some(self.cfg.sync_push_budget_bytes as u64);
        let theirs: BTreeMap<String, Vec<u64>> = theirs.into_iter().collect();
        let mut names: BTreeSet<String> = self.replica.store_names().cloned().collect();
        names.extend(
            theirs
                .keys()
                .filter(|n| check_store_name(n).is_ok())
                .cloned(),
        );
        for name in names {
            let mine = self
                .replica
                .store(&name)
                .map(|s| s.digest().to_vec())
                .unwrap_or_else(|| vec![0; BUCKETS]);
            let other = theirs
                .get(&name)
                .cloned()
                .unwrap_or_else(|| vec![0; BUCKETS]);
            let differ: Vec<usize> = (0..BUCKETS)
                .filter(|b| mine.get(*b) != other.get(*b))
                .collect();
            if differ.is_empty() {
                continue;
            }
            equal = false;
            // Buckets the peer holds nothing of (a wiped or new node): push their entries at
            // once, rather than list versions for the peer to fetch every one of them back
            // (two more passes, and every key sent twice more, on a wiped node's catch-up). In
            // a catch-up round only when its digest says the sender counts such entries.
            let (empty, differ): (Vec<usize>, Vec<usize>) = if round == 0 || round & PUSH_EMPTY != 0
            {
                differ.into_iter().partition(|b| other.get(*b) == Some(&0))
            } else {
                (vec![], differ)
            };
            let mut push: BTreeSet<usize> = empty.into_iter().collect();
            if let (Some(left), Some(s)) = (budget.as_mut(), self.replica.store(&name)) {
                // Whole buckets, in order, while the budget lasts (and at least one per answer,
                // so that a huge bucket still goes); the rest wait for the next round.
                let mut kept = BTreeSet::new();
                for b in push {
                    let size = s.bucket_bytes(b);
                    if size > *left && (pushed_any || !kept.is_empty()) {
                        partial = true;
                        *left = 0;
                        continue;
                    }
                    *left = left.saturating_sub(size);
                    kept.insert(b);
                }
                push = kept;
            }
            if !push.is_empty() {
                pushed_any = true;
                self.queue_push(from, &name, &push, round);
            }
            if differ.is_empty() {
                continue;
            }
            // In a periodic round, big buckets are narrowed to their leaves first.
            let (narrow, differ): (Vec<usize>, Vec<usize>) = differ.into_iter().partition(|b| {
                round == 0
                    && !self.faults.contains(&crate::fault::Fault::WholeBuckets)
                    && self
                        .replica
                        .store(&name)
                        .is_some_and(|s| s.bucket_len(*b) > LEAF_MIN)
            });
            if !narrow.is_empty() {
                let s = self
                    .replica
                    .store(&name)
                    .expect("narrowed buckets hold keys");
                // Bounded messages: 32 buckets of leaf digests are about 16 KiB.
                for part in narrow.chunks(32) {
                    let leaves: Vec<(u16, Vec<u64>)> = part
                        .iter()
                        .map(|b| (*b as u16, s.leaf_digests(*b).to_vec()))
                        .collect();
                    self.sync_stats.leaves_sent += (leaves.len() * LEAVES) as u64;
                    let msg = StoreMsg::Leaves {
                        store: name.clone(),
                        leaves,
                    };
                    self.outbox.push_back((from, msg));
                }
            }
            if differ.is_empty() {
                continue;
            }
            // Send our versions of those buckets; the peer works out which entries go which way.
            let cover = Cover::buckets(differ.iter().copied());
            let versions = self.versions_covered(&name, &cover);
            let buckets: Vec<u16> = differ.iter().map(|b| *b as u16).collect();
            sent += versions.len() as u64;
            self.sync_stats.versions_sent += versions.len() as u64;
            for (lo, hi, chunk) in chunk_versions(versions, self.cfg.sync_versions_per_message) {
                let msg = StoreMsg::Versions {
                    store: name.clone(),
                    buckets: buckets.clone(),
                    versions: chunk,
                    from: lo,
                    until: hi,
                    round,
                };
                self.outbox.push_back((from, msg));
            }
        }
        (sent, equal, partial)
    }

    /// Our `(key, version)` of every key of `store` that `cover` covers, in key order.
    fn versions_covered(&self, store: &str, cover: &Cover) -> Vec<(String, Version)> {
        self.replica
            .store(store)
            .map(|s| {
                s.placed((Bound::Unbounded, Bound::Unbounded), |p| {
                    cover.covers_place(p)
                })
                .map(|(k, e)| (k.to_string(), e.version()))
                .collect()
            })
            .unwrap_or_default()
    }

    /// Answers the leaf digests of buckets that differ with our versions of the leaves that
    /// differ (a periodic round's second step; see the module's doc).
    pub(crate) fn on_leaves(&mut self, from: NodeId, store: String, leaves: Vec<(u16, Vec<u64>)>) {
        if check_store_name(&store).is_err() {
            return;
        }
        let zeros = vec![0; LEAVES];
        let mut differ = BTreeSet::new();
        for (b, theirs) in leaves {
            let b = b as usize;
            if b >= BUCKETS || theirs.len() != LEAVES {
                tracing::debug!(%from, bucket = b, len = theirs.len(), "malformed leaf digests ignored");
                continue;
            }
            let mine = self
                .replica
                .store(&store)
                .map_or(&zeros[..], |s| s.leaf_digests(b));
            differ.extend(
                (0..LEAVES)
                    .filter(|l| mine[*l] != theirs[*l])
                    .map(|l| b * LEAVES + l),
            );
        }
        if differ.is_empty() {
            return;
        }
        let leaves: Vec<u16> = differ.iter().map(|l| *l as u16).collect();
        let versions = self.versions_covered(&store, &Cover::leaves(differ.iter().copied()));
        self.sync_stats.versions_sent += versions.len() as u64;
        for (lo, hi, chunk) in chunk_versions(versions, self.cfg.sync_versions_per_message) {
            let msg = StoreMsg::LeafVersions {
                store: store.clone(),
                leaves: leaves.clone(),
                versions: chunk,
                from: lo,
                until: hi,
            };
            self.outbox.push_back((from, msg));
        }
    }

    /// A versions message: whole buckets (`buckets`) or leaves (`leaves`).
    pub(crate) fn on_versions(
        &mut self,
        from: NodeId,
        store: String,
        (buckets, leaves): (Vec<u16>, Vec<u16>),
        versions: Vec<(String, Version)>,
        range: (Option<String>, Option<String>),
        round: u64,
    ) {
        if check_store_name(&store).is_err() {
            return;
        }
        let listed = versions.len() as u64;
        let theirs: BTreeMap<String, Version> = versions.into_iter().collect();
        let cover = if leaves.is_empty() {
            Cover::buckets(buckets.iter().map(|b| *b as usize % BUCKETS))
        } else {
            Cover::leaves(leaves.iter().map(|l| *l as usize % (BUCKETS * LEAVES)))
        };
        let mut push = Vec::new();
        let mut fetch = Vec::new();
        if let Some(s) = self.replica.store(&store) {
            // Only keys inside this message's range: the rest is another message's business.
            let lo = range.0.as_deref().map_or(Bound::Unbounded, Bound::Included);
            let hi = range.1.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            for (k, e) in s.placed((lo, hi), |p| cover.covers_place(p)) {
                match theirs.get(k) {
                    Some(v) if *v >= e.version() => {}
                    _ => push.push((k.to_string(), e.to_entry())),
                }
            }
        }
        for (k, v) in &theirs {
            let mine = self
                .replica
                .store(&store)
                .map_or(Version::ZERO, |s| s.version(k));
            if mine < *v {
                fetch.push(k.clone());
            }
        }
        // In our catch-up round with this peer, note what this message owes us; its fetches
        // go out a window at a time ([`StoreCore::pump_fetches`]).
        if let Some(r) = self
            .catch_up
            .as_mut()
            .and_then(|c| c.round.as_mut())
            .filter(|r| r.peer == from && r.id == round && round != 0)
        {
            r.versions_seen += listed;
            for k in &fetch {
                r.pending.insert(key_hash(&store, k), theirs[k]);
            }
            if !fetch.is_empty() {
                // Split into messages as it goes out.
                r.to_fetch.push_back((store.clone(), fetch));
            }
            self.send_entries(from, &store, push);
            self.pump_fetches();
            return;
        }
        self.send_entries(from, &store, push);
        for keys in fetch.chunks(self.cfg.sync_versions_per_message.max(1)) {
            self.outbox.push_back((
                from,
                StoreMsg::Fetch {
                    store: store.clone(),
                    keys: keys.to_vec(),
                },
            ));
        }
    }

    /// Sends entries in chunks of bounded size.
    pub(crate) fn send_entries(&mut self, to: NodeId, store: &str, entries: Vec<(String, Entry)>) {
        self.send_entries_for(to, store, entries, None);
    }

    /// Sends entries in chunks of bounded size: as [`StoreMsg::Entries`], or as
    /// [`StoreMsg::RoundEntries`] of catch-up round `round`.
    pub(crate) fn send_entries_for(
        &mut self,
        to: NodeId,
        store: &str,
        entries: Vec<(String, Entry)>,
        round: Option<u64>,
    ) {
        let msg = |entries| match round {
            None => StoreMsg::Entries {
                store: store.into(),
                entries,
            },
            Some(round) => StoreMsg::RoundEntries {
                store: store.into(),
                round,
                entries,
            },
        };
        let mut chunk: Vec<(String, Entry)> = Vec::new();
        let mut bytes = 0usize;
        for (k, e) in entries {
            let size = wire_size(&k, &e) as usize;
            self.sync_stats.entries_sent += 1;
            self.sync_stats.bytes_sent +=
                (k.len() + e.value.as_ref().map_or(0, |v| v.len())) as u64;
            if !chunk.is_empty() && bytes + size > self.cfg.sync_chunk_bytes {
                self.outbox.push_back((to, msg(std::mem::take(&mut chunk))));
                bytes = 0;
            }
            bytes += size;
            chunk.push((k, e));
        }
        if !chunk.is_empty() {
            self.outbox.push_back((to, msg(chunk)));
        }
    }
}

/// Splits a key-ordered version list into messages, each with the key range it speaks for:
/// `[first key of this chunk, first key of the next)`, unbounded below for the first and above for
/// the last, so that together they cover every key, also keys only the receiver holds.
type VersionChunk = (Option<String>, Option<String>, Vec<(String, Version)>);

fn chunk_versions(versions: Vec<(String, Version)>, per: usize) -> Vec<VersionChunk> {
    let chunks: Vec<Vec<(String, Version)>> =
        versions.chunks(per.max(1)).map(|c| c.to_vec()).collect();
    if chunks.is_empty() {
        return vec![(None, None, Vec::new())];
    }
    let starts: Vec<String> = chunks.iter().map(|c| c[0].0.clone()).collect();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let lo = (i > 0).then(|| starts[i].clone());
            let hi = starts.get(i + 1).cloned();
            (lo, hi, c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_chunks_cover_every_key() {
        let v = |k: &str| (k.to_string(), Version::ZERO);
        let chunks = chunk_versions(vec![v("b"), v("d"), v("f"), v("h"), v("j")], 2);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[0].0.clone(), chunks[0].1.clone()),
            (None, Some("f".to_string()))
        );
        assert_eq!(
            (chunks[1].0.clone(), chunks[1].1.clone()),
            (Some("f".to_string()), Some("j".to_string()))
        );
        assert_eq!(
            (chunks[2].0.clone(), chunks[2].1.clone()),
            (Some("j".to_string()), None)
        );
        assert_eq!(chunk_versions(vec![], 2), vec![(None, None, vec![])]);
    }
}
