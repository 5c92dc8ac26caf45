//! Replay protection for datagrams: structured nonces and a sliding window per sender generation.
//!
//! Every datagram's 12-byte nonce is a sender *generation* (8 bytes, random, top bit set, drawn
//! when the core starts and again if its counter runs out) followed by a counter (4 bytes) that
//! grows by one per datagram. The nonce is already on the wire and authenticated, so replay
//! protection costs no bytes. A receiver keeps, per generation it has heard, the highest counter
//! and which of the [`WINDOW`] counters below it arrived: a datagram whose counter is in the
//! window and already seen, or below the window, is a replay. UDP may reorder; anything inside
//! the window is accepted once in any order.
//!
//! What it does not cover: a node keeps windows in memory, so after it restarts, a datagram
//! captured before the restart can be delivered to it once (docs/security.md says what that can
//! and cannot do).

/// Counters below the highest seen that are still accepted (reordering tolerance).
pub const WINDOW: u32 = 128;

/// The sending side: hands out a fresh nonce per datagram.
#[derive(Debug, Clone)]
pub struct NonceSeq {
    generation: u64,
    counter: u32,
}

impl NonceSeq {
    /// A sequence starting a new generation drawn from `random`.
    pub fn new(random: u64) -> Self {
        NonceSeq {
            generation: random | 1 << 63,
            counter: 0,
        }
    }

    /// The next nonce; `fresh` is asked for a new generation when the counter runs out.
    pub fn next(&mut self, fresh: impl FnOnce() -> u64) -> [u8; 12] {
        if self.counter == u32::MAX {
            *self = NonceSeq::new(fresh());
        }
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.generation.to_be_bytes());
        n[8..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        n
    }
}

/// One sender generation's window. The 128 bits of `seen` are held as two `u64`s so that the
/// entry is 40 bytes with 8-byte alignment (a `u128` would align it to 16, 48 bytes): every node
/// keeps one per other node, so this is memory per pair of nodes.
#[derive(Debug, Clone, Copy)]
struct Window {
    generation: u64,
    /// When the generation was last heard from (an input sequence number), for eviction.
    used: u64,
    /// Bit i set: counter `top - i` arrived (low half, high half).
    seen: [u64; 2],
    top: u32,
}

impl Window {
    fn seen(&self) -> u128 {
        u128::from(self.seen[0]) | u128::from(self.seen[1]) << 64
    }

    fn set_seen(&mut self, seen: u128) {
        self.seen = [seen as u64, (seen >> 64) as u64];
    }
}

/// The table's hash of a generation.
fn generation_hash(generation: u64) -> u64 {
    crate::envelope::spread64(generation)
}

/// The receiving side: windows per sender generation, bounded in number.
///
/// A hash table: every authenticated datagram looks its sender's window up, and in a tree of one
/// window per member that lookup (a walk through nodes that miss the cache) was 2.1 % of a
/// simulated 1,000-node join (perf, docs/benchmarks.md "fourth pass").
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    windows: hashbrown::HashTable<Window>,
    capacity: usize,
    tick: u64,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` generations (the least recently heard go first).
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            windows: hashbrown::HashTable::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    /// Records the nonce of an authenticated datagram; `false` if it is a replay (or older than
    /// the window), in which case nothing is recorded.
    pub fn accept(&mut self, nonce: &[u8; 12]) -> bool {
        let generation = u64::from_be_bytes(nonce[..8].try_into().expect("8 bytes"));
        let counter = u32::from_be_bytes(nonce[8..].try_into().expect("4 bytes"));
        self.tick += 1;
        let tick = self.tick;
        let hash = generation_hash(generation);
        if let Some(w) = self.windows.find_mut(hash, |w| w.generation == generation) {
            let mut seen = w.seen();
            if counter > w.top {
                let shift = counter - w.top;
                seen = if shift >= 128 { 0 } else { seen << shift };
                seen |= 1;
                w.top = counter;
            } else {
                let d = w.top - counter;
                if d >= WINDOW || seen & (1u128 << d) != 0 {
                    return false;
                }
                seen |= 1u128 << d;
            }
            w.set_seen(seen);
            w.used = tick;
            return true;
        }
        if self.windows.len() >= self.capacity {
            // Forget the generation heard from least recently (a node long gone or restarted).
            if let Some(g) = self
                .windows
                .iter()
                .min_by_key(|w| w.used)
                .map(|w| w.generation)
                && let Ok(entry) = self
                    .windows
                    .find_entry(generation_hash(g), |w| w.generation == g)
            {
                entry.remove();
            }
        }
        self.windows.insert_unique(
            hash,
            Window {
                generation,
                used: tick,
                seen: [1, 0],
                top: counter,
            },
            |w| generation_hash(w.generation),
        );
        true
    }

    /// Generations remembered.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when no generation is remembered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn nonce(generation: u64, counter: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&generation.to_be_bytes());
        n[8..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    #[test]
    fn duplicates_are_refused_and_generations_are_separate() {
        let mut g = ReplayGuard::new(16);
        assert!(g.accept(&nonce(1, 5)));
        assert!(!g.accept(&nonce(1, 5)));
        assert!(g.accept(&nonce(2, 5)));
        assert!(g.accept(&nonce(1, 4)), "reordered inside the window");
        assert!(!g.accept(&nonce(1, 4)));
        assert!(g.accept(&nonce(1, 5 + 200)));
        assert!(!g.accept(&nonce(1, 6)), "below the window");
        assert!(g.accept(&nonce(1, 200 + 5 - WINDOW + 1)));
    }

    #[test]
    fn the_sequence_never_repeats_a_nonce_even_when_the_counter_runs_out() {
        let mut s = NonceSeq::new(7);
        let a = s.next(|| 9);
        assert_eq!(a[0] & 0x80, 0x80, "generations have the top bit set");
        s.counter = u32::MAX;
        let b = s.next(|| 9);
        assert_ne!(a, b);
        assert_eq!(&b[..8], &(9u64 | 1 << 63).to_be_bytes());
        assert_eq!(&b[8..], &[0, 0, 0, 0]);
    }

    #[test]
    fn capacity_evicts_the_least_recently_heard() {
        let mut g = ReplayGuard::new(2);
        assert!(g.accept(&nonce(1, 0)));
        assert!(g.accept(&nonce(2, 0)));
        assert!(g.accept(&nonce(1, 1)));
        assert!(g.accept(&nonce(3, 0))); // evicts generation 2
        assert_eq!(g.len(), 2);
        assert!(!g.accept(&nonce(1, 1)));
        assert!(!g.accept(&nonce(3, 0)));
    }

    /// The guard as it was, a tree of windows by generation: the reference for the hash table.
    struct TreeGuard {
        windows: BTreeMap<u64, (u32, u128, u64)>,
        capacity: usize,
        tick: u64,
    }

    impl TreeGuard {
        fn accept(&mut self, generation: u64, counter: u32) -> bool {
            self.tick += 1;
            if let Some((top, seen, used)) = self.windows.get_mut(&generation) {
                if counter > *top {
                    let shift = counter - *top;
                    *seen = if shift >= 128 { 0 } else { *seen << shift } | 1;
                    *top = counter;
                } else {
                    let d = *top - counter;
                    if d >= WINDOW || *seen & (1u128 << d) != 0 {
                        return false;
                    }
                    *seen |= 1u128 << d;
                }
                *used = self.tick;
                return true;
            }
            if self.windows.len() >= self.capacity
                && let Some((&g, _)) = self.windows.iter().min_by_key(|(_, w)| w.2)
            {
                self.windows.remove(&g);
            }
            self.windows.insert(generation, (counter, 1, self.tick));
            true
        }
    }

    proptest! {
        /// Many generations through a small guard, so that windows are evicted and come back:
        /// the same answers as the tree of windows it replaced, nonce for nonce.
        #[test]
        fn the_table_answers_as_the_tree_did(
            order in proptest::collection::vec((0u64..24, 0u32..300), 1..2_000)
        ) {
            let mut g = ReplayGuard::new(8);
            let mut tree = TreeGuard { windows: BTreeMap::new(), capacity: 8, tick: 0 };
            for (i, (gen_, c)) in order.into_iter().enumerate() {
                // Spread the generations over all 64 bits, top bit set, as senders draw them.
                let generation = gen_.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1 << 63;
                prop_assert_eq!(
                    g.accept(&nonce(generation, c)),
                    tree.accept(generation, c),
                    "nonce {} ({}, {})", i, gen_, c
                );
                prop_assert_eq!(g.len(), tree.windows.len());
            }
        }

        /// Any arrival order: every nonce is accepted at most once, and every nonce that arrives
        /// within the window of the highest seen is accepted the first time.
        #[test]
        fn each_nonce_once_in_any_order(
            order in proptest::collection::vec((0u64..3, 0u32..400), 1..600)
        ) {
            let mut g = ReplayGuard::new(8);
            let mut accepted = std::collections::BTreeSet::new();
            let mut top: BTreeMap<u64, u32> = BTreeMap::new();
            for (gen_, c) in order {
                let first = !accepted.contains(&(gen_, c));
                let t = top.get(&gen_).copied();
                let inside = t.is_none_or(|t| c > t || t - c < WINDOW);
                let ok = g.accept(&nonce(gen_, c));
                if ok {
                    prop_assert!(first, "({gen_}, {c}) accepted twice");
                    accepted.insert((gen_, c));
                    let e = top.entry(gen_).or_insert(c);
                    *e = (*e).max(c);
                } else {
                    prop_assert!(!first || !inside, "({gen_}, {c}) refused though new and inside the window");
                }
            }
        }
    }
}
