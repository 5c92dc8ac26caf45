/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
use alloc::vec::Vec;
use core::cmp::Ordering;

use bytes::BufMut;

/// A type capable of decoding a (associated) broadcast from a buffer
/// and deciding whether to keep disseminating it for other members
/// of the cluster (when it's new information) or to discard it (when
/// its outdated/stale).
pub trait BroadcastHandler<T> {
    /// A unique identifier for the broadcasts this handler manages
    ///
    /// It should be able to compare itself against an arbitrary number
    /// of other [`Self::Key`] instances and decide wether it
    /// replaces it or not so conflicting/stale information isn't
    /// disseminated.
    type Key: Invalidates;

    /// The error type that `receive_item` may emit. Will be wrapped
    /// by [`crate::Error::CustomBroadcast`].
    type Error: core::error::Error + Send + Sync + 'static;

    /// Decodes a [`Self::Key`] from a buffer and either discards
    /// it or tells Foca to persist and disseminate it.
    ///
    /// `Sender` is `None` when you're adding broadcast data directly,
    /// via [`crate::Foca::add_broadcast`], otherwise it will be the
    /// address of the member that sent the data. Notice that Foca
    /// doesn't track the origin of packets- if you need it you
    /// have to add it to the data you're broadcasting.
    ///
    /// When you receive a broadcast you have to decide whether it's
    /// new information that needs to be disseminated (`Ok(Some(...))`)
    /// or not (`Ok(None)`).
    ///
    /// Always yielding `Some(...)` is wrong because Foca will never
    /// know when to stop sending this information to other members.
    ///
    /// Example: Assume your custom broadcast is a simple Set-Key-Value
    /// operation. When you receive it you should check if your map
    /// contains the Key-Value pair; If it didn't, you yield
    /// `Some`, otherwise the operation is stale, so you yield `None`.
    ///
    /// The `data` parameter is the exact data provided to
    /// [`crate::Foca::add_broadcast`]. When Foca receives N custom
    /// broadcasts at once, this gets called N times.
    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&T>,
    ) -> Result<Option<Self::Key>, Self::Error>;

    // Chorus patch: a hint, before the items of one message are received,
    // with every item's data in the order `receive_item` will get them.
    // A handler that looks each item up in a large table can touch all
    // those places first: the lookups do not depend on each other, so the
    // processor overlaps their cache misses, which one at a time it cannot.
    // It must not change what `receive_item` then decides. Does nothing by
    // default.
    /// Called once per message with the data of each custom broadcast it
    /// carries, before [`Self::receive_item`] is called for each of them.
    /// Only a hint: the default does nothing.
    fn warm<'a>(&mut self, _items: impl Iterator<Item = &'a [u8]>) {}

    /// Decides whether Foca should add broadcast data to the message
    /// it's about to send to active member `T`.
    ///
    /// Normally when Foca sends a message it always tries to include
    /// custom broadcasts alongside the information it actually
    /// cares about; This allows implementations to override this
    /// logic with something else.
    ///
    /// Example: You are running a heterogeneous cluster and some nodes
    /// are always very busy and you'd rather they never have to deal
    /// with the extra cpu/bandwidth cost of receiving/sending
    /// your custom broadcasts.
    ///
    /// Returning `true` tells Foca to proceed as it would normally,
    /// including broadcasts in the messages it sends when it can.
    ///
    /// Returning `false` tells Foca to not include such broadcasts
    /// in the message. It does *not* prevent the message from being
    /// sent, just keeps Foca from attaching extra data to them.
    fn should_add_broadcast_data(&self, _member: &T) -> bool {
        true
    }
}

/// A type that's able to look at another and decide wether it's
/// newer/fresher (i.e. invalidates) than it.
///
/// As you send/receive broadcasts, Foca will hold them for a while
/// as it disseminates the data to other cluster members. This trait
/// helps with replacing data that hasn't been fully disseminated
/// yet but you already know it's stale.
///
/// Example: Assume a versioned broadcast like `{key,version,...}`;
/// After you receive `{K, 0, ...}` and keep it, Foca will be
/// disseminating it. Soon after you receive `{K, 1, ...}` which
/// is a newer version for this broadcast. This trait enables
/// Foca to immediately stop disseminating the previous version,
/// even if it hasn't sent it to everyone it can yet.
pub trait Invalidates {
    /// When `item.invalidates(&other)` it means that Foca will
    /// keep `item` and discard `other` from its dissemination
    /// backlog.
    fn invalidates(&self, other: &Self) -> bool;

    /// Chorus patch: a hash of what invalidation compares, such that
    /// `a.invalidates(b)` implies that both give the same answer (both
    /// `None`, or equal hashes); `None` (the default) when there is none.
    /// With it, queuing an item skips the scan of the queue for what it
    /// replaces when no queued item shares its hash (see
    /// `Broadcasts::filter`).
    fn invalidation_hash(&self) -> Option<u64> {
        None
    }
}

impl Invalidates for &[u8] {
    fn invalidates(&self, other: &Self) -> bool {
        self.eq(other)
    }
}

pub(crate) struct Broadcasts<V, const N: usize = INLINE> {
    // Chorus patch: the heaps order small handles (`Handle`, 8 bytes),
    // and the items and their data sit in `slots`. The heaps held the
    // whole entry (56 bytes with a member address), and every pop moved
    // entries down a path of log n levels through memory that misses the
    // cache: popping was 8 % of a simulated 1,000-node join, and reading
    // each entry's separately allocated data another 6 % (perf, see
    // docs/benchmarks.md). A handle compares exactly as the entry did, so
    // the heaps make the same moves and send the same bytes in the same
    // order (`the_handles_send_what_the_entries_sent`).
    flip: alloc::collections::BinaryHeap<Handle>,
    flop: alloc::collections::BinaryHeap<Handle>,
    // Chorus patch: each queued entry's item and data, where its handle
    // points; `None` in the places listed in `free`.
    slots: Vec<Option<Slot<V, N>>>,
    free: Vec<u32>,
    // Chorus patch: no entry's data is shorter than this (usize::MAX
    // when there are none). `fill` popped every entry of the heap once
    // the buffer was nearly full, looking for one small enough to fit,
    // and pushed them all back: O(n log n) per message for n queued
    // broadcasts, which a 1,000-node join keeps near 1,000. It now
    // stops as soon as the room left is below this bound.
    min_len: usize,
    // Chorus patch: how many queued items have each invalidation hash,
    // counted in 2^k slots (a counting filter; a slot that reached
    // u16::MAX stays there, so it only ever says "maybe"). Queuing an
    // item scanned the whole queue for what it replaces: O(n) per
    // update, n^3 over a join of n nodes, 23.5 % of a 3,000-node join
    // in netsim (perf). A slot at zero means nothing queued can be
    // replaced, and the scan is skipped. 2 bytes per slot, at least
    // 4 slots per queued item.
    filter: Vec<u16>,
    // Chorus patch: the low 32 bits of the invalidation hash of the item in
    // each slot (0 when it has none; stale in free slots), beside `slots`.
    // When the filter says an item may replace a queued one, the scan for
    // it read every queued entry's slot, each a cache miss in a simulation
    // of many nodes: 8.5 % of a 10,000-node join and 3 % of a 3,000-node
    // one (perf), nearly always to find nothing (the filter's false
    // positives). It reads these 4 bytes a slot, in order, and only a slot
    // whose hash matches; the heap is touched only when something is
    // replaced, with the same `retain` as before, so it ends the same.
    hashes: Vec<u32>,
}

const fn slot(len: usize, hash: u64) -> usize {
    (hash as usize) & (len - 1)
}

impl<T> Broadcasts<T>
where
    T: Invalidates,
{
    pub(crate) fn new() -> Self {
        Self::keeping_inline()
    }
}

impl<T, const N: usize> Broadcasts<T, N>
where
    T: Invalidates,
{
    // Chorus patch: a queue that keeps data of up to `N` bytes in place
    // (`Data`).
    pub(crate) fn keeping_inline() -> Self {
        Self {
            flip: Default::default(),
            flop: Default::default(),
            slots: Vec::new(),
            free: Vec::new(),
            min_len: usize::MAX,
            filter: Vec::new(),
            hashes: Vec::new(),
        }
    }

    // Chorus patch: the filter rebuilt from the queue with `slots` slots.
    fn refilter(&mut self, slots: usize) {
        debug_assert!(slots.is_power_of_two());
        self.filter.clear();
        self.filter.resize(slots, 0);
        for node in self.slots.iter().flatten() {
            if let Some(h) = node.item.invalidation_hash() {
                let c = &mut self.filter[slot(slots, h)];
                *c = c.saturating_add(1);
            }
        }
    }

    // Chorus patch: an entry left the queue.
    fn unfilter(filter: &mut [u16], item: &T) {
        if let Some(h) = item.invalidation_hash()
            && !filter.is_empty()
        {
            let c = &mut filter[slot(filter.len(), h)];
            if *c != u16::MAX {
                *c -= 1;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.flip.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.flip.is_empty()
    }

    pub(crate) fn add_or_replace(&mut self, item: T, data: Vec<u8>, max_tx: usize) {
        debug_assert!(max_tx > 0);
        let hash = item.invalidation_hash();
        // Chorus patch: scan only when something queued may be replaced.
        let may_replace = match hash {
            Some(h) if !self.filter.is_empty() => self.filter[slot(self.filter.len(), h)] != 0,
            _ => !self.flip.is_empty(),
        };
        if may_replace {
            if let Some(h) = hash {
                self.replace_hashed(&item, h as u32);
            } else {
                let Self {
                    flip,
                    slots,
                    free,
                    filter,
                    ..
                } = self;
                flip.retain(|handle| {
                    let at = handle.at as usize;
                    let held = slots[at].as_ref().expect("a queued handle has its slot");
                    let keep = !item.invalidates(&held.item);
                    if !keep {
                        Self::unfilter(filter, &held.item);
                        slots[at] = None;
                        free.push(handle.at);
                    }
                    keep
                });
            }
        }
        if (self.flip.len() + 1) * 4 > self.filter.len() {
            self.refilter(((self.flip.len() + 1) * 8).next_power_of_two().max(64));
        }
        if let Some(h) = hash {
            let at = slot(self.filter.len(), h);
            let c = &mut self.filter[at];
            *c = c.saturating_add(1);
        }
        self.min_len = self.min_len.min(data.len());
        let key = Handle::key(max_tx, data.len());
        let held = Slot {
            item,
            data: Data::new(data),
        };
        let hash32 = hash.map_or(0, |h| h as u32);
        let at = if let Some(at) = self.free.pop() {
            self.slots[at as usize] = Some(held);
            self.hashes[at as usize] = hash32;
            at
        } else {
            self.slots.push(Some(held));
            self.hashes.push(hash32);
            u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 queued broadcasts")
        };
        self.flip.push(Handle { key, at });
    }

    // Chorus patch: drops what `item`, whose invalidation hash has the
    // low bits `hash32`, replaces (see `hashes`).
    fn replace_hashed(&mut self, item: &T, hash32: u32) {
        let mut gone: Vec<u32> = Vec::new();
        for (at, h) in self.hashes.iter().enumerate() {
            if *h == hash32
                && let Some(held) = &self.slots[at]
                && item.invalidates(&held.item)
            {
                gone.push(u32::try_from(at).expect("fewer than 2^32 queued broadcasts"));
            }
        }
        if gone.is_empty() {
            return;
        }
        for at in &gone {
            let held = self.slots[*at as usize]
                .take()
                .expect("a matching slot holds an item");
            Self::unfilter(&mut self.filter, &held.item);
            self.free.push(*at);
        }
        self.flip.retain(|handle| !gone.contains(&handle.at));
    }

    // Chorus patch (see `Config::max_queued_updates`): with `cap` entries
    // queued (called after each addition, so never more), drops the
    // entries with the fewest remaining transmissions (ties: the
    // shortest) until `cap - cap / 8` are left, never one whose item
    // `protected` says to keep. Dropping an eighth at a time makes it
    // O(1) per queued entry, amortised: a selection and a heap rebuild
    // over `cap` entries every `cap / 8` additions. Shedding at `cap`
    // rather than past it keeps the heap's and the slots' room at `cap`
    // for a power of two: one more entry doubled both (heaptrack of a
    // 2,000-node join: 65 bytes per pair of members with room for 2,048
    // entries on every node).
    pub(crate) fn shed(&mut self, cap: usize, protected: impl Fn(&T) -> bool) -> usize {
        if self.flip.len() < cap {
            return 0;
        }
        let keep = cap - cap / 8;
        let mut handles = core::mem::take(&mut self.flip).into_vec();
        // The `keep` largest keys first, then the rest.
        handles.select_nth_unstable_by(keep, |a, b| b.cmp(a));
        let mut kept = keep;
        let mut dropped = 0;
        for i in keep..handles.len() {
            let handle = handles[i];
            let at = handle.at as usize;
            let held = self.slots[at]
                .as_ref()
                .expect("a queued handle has its slot");
            if protected(&held.item) {
                handles.swap(kept, i);
                kept += 1;
                continue;
            }
            let held = self.slots[at].take().expect("a queued handle has its slot");
            Self::unfilter(&mut self.filter, &held.item);
            self.free.push(handle.at);
            dropped += 1;
        }
        handles.truncate(kept);
        self.flip = alloc::collections::BinaryHeap::from(handles);
        self.refresh_min_len();
        self.release_spare();
        dropped
    }

    // An entry left the heap: the bound may have grown.
    fn refresh_min_len(&mut self) {
        self.min_len = self
            .flip
            .iter()
            .map(|handle| handle.len())
            .min()
            .unwrap_or(usize::MAX);
    }

    // Chorus patch: a queue's buffers never shrank. A join queues about
    // one update per member on every node, so each node's `flip` (and
    // `flop`, which `append` may leave holding the old `flip`'s buffer)
    // kept room for n entries long after they were sent: in heaptrack of
    // `netsim scale --nodes 1000`, those idle capacities were 113 of the
    // 489 bytes of peak heap per pair of members, while the queues held
    // almost nothing. `flop` only ever holds what one fill pops, so it
    // keeps room for `KEEP`; `flip` and the slots halve when a quarter
    // full (amortised O(1), as the growth).
    fn release_spare(&mut self) {
        const KEEP: usize = 64;
        if self.flop.capacity() > KEEP {
            self.flop.shrink_to(KEEP);
        }
        let len = self.flip.len();
        if self.flip.capacity() > KEEP && self.flip.capacity() / 4 > len {
            self.flip.shrink_to((len * 2).max(KEEP));
        }
        if self.slots.capacity() > KEEP && self.slots.capacity() / 4 > len {
            self.compact((len * 2).max(KEEP));
        }
        if self.filter.len() > 64 && self.filter.len() > 16 * len {
            self.refilter((len * 8).next_power_of_two().max(64));
            self.filter.shrink_to_fit();
        }
    }

    // Chorus patch: the queued entries moved to the front of a slot list
    // with room for `room`, the handles pointed at their new places. The
    // handles keep their positions in the heap: `From<Vec>` on a vector
    // that is already a heap moves nothing, since a parent that is not
    // less than its larger child stays put.
    fn compact(&mut self, room: usize) {
        let mut handles = core::mem::take(&mut self.flip).into_vec();
        let mut slots = Vec::with_capacity(room.max(handles.len()));
        let mut hashes = Vec::with_capacity(room.max(handles.len()));
        for handle in handles.iter_mut() {
            slots.push(self.slots[handle.at as usize].take());
            hashes.push(self.hashes[handle.at as usize]);
            handle.at = u32::try_from(slots.len() - 1).expect("fewer than 2^32 queued");
        }
        self.slots = slots;
        self.hashes = hashes;
        self.free.clear();
        self.free.shrink_to(room / 4);
        self.flip = alloc::collections::BinaryHeap::from(handles);
    }

    // Chorus patch: the entry behind a handle, sent once more: its slot
    // is emptied when that was its last transmission (true then).
    fn sent(&mut self, handle: &mut Handle) -> bool {
        handle.key -= 1 << 16;
        if handle.remaining_tx() > 0 {
            return false;
        }
        let held = self.slots[handle.at as usize]
            .take()
            .expect("a queued handle has its slot");
        Self::unfilter(&mut self.filter, &held.item);
        self.free.push(handle.at);
        true
    }

    pub(crate) fn fill(&mut self, mut buffer: impl BufMut, max_items: usize) -> usize {
        if self.flip.is_empty() {
            return 0;
        }
        debug_assert!(self.flop.is_empty());

        let mut num_taken = 0;
        let mut remaining = max_items;

        let mut dropped = false;
        while buffer.has_remaining_mut() && remaining > 0 && buffer.remaining_mut() >= self.min_len
        {
            let Some(mut handle) = self.flip.pop() else {
                break;
            };
            debug_assert!(handle.remaining_tx() > 0);

            let data = self.slots[handle.at as usize]
                .as_ref()
                .expect("a queued handle has its slot")
                .data
                .as_slice();
            if buffer.remaining_mut() >= data.len() {
                num_taken += 1;
                remaining -= 1;

                buffer.put_slice(data);
                if self.sent(&mut handle) {
                    dropped = true;
                    continue;
                }
            }
            self.flop.push(handle);
        }

        self.flip.append(&mut self.flop);
        if dropped {
            self.refresh_min_len();
        }
        self.release_spare();

        num_taken
    }

    pub(crate) fn fill_with_len_prefix(
        &mut self,
        mut buffer: impl BufMut,
        max_items: usize,
    ) -> usize {
        if self.flip.is_empty() {
            return 0;
        }
        debug_assert!(self.flop.is_empty());

        let mut num_taken = 0;
        let mut remaining = max_items;

        let mut dropped = false;
        while buffer.has_remaining_mut()
            && remaining > 0
            && buffer.remaining_mut() >= self.min_len.saturating_add(2)
        {
            let Some(mut handle) = self.flip.pop() else {
                break;
            };
            debug_assert!(handle.remaining_tx() > 0);

            let data = self.slots[handle.at as usize]
                .as_ref()
                .expect("a queued handle has its slot")
                .data
                .as_slice();
            if buffer.remaining_mut() >= data.len() + 2 {
                num_taken += 1;
                remaining -= 1;

                debug_assert!(u16::try_from(data.len()).is_ok());
                buffer.put_u16(data.len() as u16);
                buffer.put_slice(data);
                if self.sent(&mut handle) {
                    dropped = true;
                    continue;
                }
            }
            self.flop.push(handle);
        }

        self.flip.append(&mut self.flop);
        if dropped {
            self.refresh_min_len();
        }
        self.release_spare();

        num_taken
    }
}

// Chorus patch: what the heaps order. `key` packs an entry's remaining
// transmissions (high 16 bits; foca's limit is a u8) over its data's
// length (low 16 bits, saturated: data longer than 65,535 bytes fits no
// datagram), so comparing keys compares (remaining_tx, data length) as
// foca's `Entry` did; ties stay unordered ("sorting is unstable").
#[derive(Debug, Clone, Copy)]
struct Handle {
    key: u32,
    at: u32,
}

impl Handle {
    fn key(remaining_tx: usize, len: usize) -> u32 {
        debug_assert!(u16::try_from(remaining_tx).is_ok());
        (remaining_tx.min(0xFFFF) as u32) << 16 | len.min(0xFFFF) as u32
    }

    const fn remaining_tx(&self) -> usize {
        (self.key >> 16) as usize
    }

    // The data's length, 65,535 for anything longer: a lower bound.
    const fn len(&self) -> usize {
        (self.key & 0xFFFF) as usize
    }
}

impl PartialEq for Handle {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Handle {}

impl PartialOrd for Handle {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Handle {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

#[derive(Debug, Clone)]
struct Slot<T, const N: usize> {
    item: T,
    data: Data<N>,
}

// Chorus patch: a queued entry's data, in place when at most `N` bytes
// (`N` < 256). A member update (18 bytes with an IPv4 address in Chorus)
// was a separate allocation, read once per transmission from wherever the
// allocator had put it: a cache miss per entry sent. With the default, 32
// bytes either way.
pub(crate) const INLINE: usize = 30;

#[derive(Debug, Clone)]
enum Data<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    // Exact size (the encoder's buffer doubled as it grew).
    Boxed(alloc::boxed::Box<[u8]>),
}

impl<const N: usize> Data<N> {
    fn new(data: Vec<u8>) -> Self {
        const { assert!(N < 256) };
        if data.len() <= N {
            let mut bytes = [0; N];
            bytes[..data.len()].copy_from_slice(&data);
            Data::Inline {
                len: data.len() as u8,
                bytes,
            }
        } else {
            Data::Boxed(data.into_boxed_slice())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Data::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Data::Boxed(data) => data,
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    impl<T: Invalidates, const N: usize> Broadcasts<T, N> {
        // Every queued entry: its item, remaining transmissions and data.
        fn queued(&self) -> impl Iterator<Item = (&T, usize, Vec<u8>)> {
            self.flip.iter().map(|handle| {
                let held = self.slots[handle.at as usize].as_ref().unwrap();
                (
                    &held.item,
                    handle.remaining_tx(),
                    held.data.as_slice().to_vec(),
                )
            })
        }

        // Queued without looking for what it replaces.
        fn push_unscanned(&mut self, item: T, data: Vec<u8>, tx: usize) {
            self.min_len = self.min_len.min(data.len());
            let key = Handle::key(tx, data.len());
            self.hashes
                .push(item.invalidation_hash().map_or(0, |h| h as u32));
            self.slots.push(Some(Slot {
                item,
                data: Data::new(data),
            }));
            let at = (self.slots.len() - 1) as u32;
            self.flip.push(Handle { key, at });
        }
    }

    struct Key(&'static str);

    impl Invalidates for Key {
        fn invalidates(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    #[test]
    fn piggyback_behaviour() {
        let max_tx = 5;
        let mut piggyback = Broadcasts::new();

        assert!(piggyback.is_empty(), "Piggyback starts empty");

        piggyback.add_or_replace(Key("AA"), b"AAabc".to_vec(), max_tx);

        assert_eq!(1, piggyback.len());

        piggyback.add_or_replace(Key("AA"), b"AAcba".to_vec(), max_tx);

        assert_eq!(
            1,
            piggyback.len(),
            "add_or_replace with same key should replace"
        );

        let mut buf = Vec::new();

        for _i in 0..max_tx {
            buf.clear();
            let num_items = piggyback.fill(&mut buf, usize::MAX);
            assert_eq!(1, num_items);
            assert_eq!(
                b"AAcba",
                &buf[..],
                "Should transmit an item at most max_tx times"
            );
        }

        assert!(
            piggyback.is_empty(),
            "Should remove item after being used max_tx times"
        );
    }

    #[test]
    fn fill_does_nothing_if_buffer_full() {
        let mut piggyback = Broadcasts::new();
        piggyback.add_or_replace(Key("a "), b"a super long value".to_vec(), 1);

        let buf = bytes::BytesMut::new();
        let mut limited = buf.limit(5);

        let num_items = piggyback.fill(&mut limited, usize::MAX);

        assert_eq!(0, num_items);
        assert_eq!(5, limited.remaining_mut());
        assert_eq!(1, piggyback.len());
    }

    // Chorus patch: filling stops once no entry can fit, but an entry
    // small enough for the room left is still found wherever it sits in
    // the heap, and the bound follows entries that leave.
    #[test]
    fn fill_stops_early_but_still_finds_the_smallest_entry() {
        let mut piggyback = Broadcasts::new();
        piggyback.add_or_replace(Key("l1"), b"l1-long-value".to_vec(), 5);
        piggyback.add_or_replace(Key("l2"), b"l2-long-value".to_vec(), 5);
        piggyback.add_or_replace(Key("s1"), b"s1".to_vec(), 1);

        // Room for one long entry and the short one (which sorts last).
        let mut limited = bytes::BytesMut::new().limit(16);
        assert_eq!(2, piggyback.fill(&mut limited, usize::MAX));
        assert_eq!(b"s1", &limited.get_ref()[13..]);
        assert_eq!(2, piggyback.len(), "the short entry was sent its only time");

        // Only long entries are left: a buffer shorter than them stops at once
        // and loses nothing.
        let mut limited = bytes::BytesMut::new().limit(12);
        assert_eq!(0, piggyback.fill(&mut limited, usize::MAX));
        assert_eq!(2, piggyback.len());
        let mut limited = bytes::BytesMut::new().limit(12);
        assert_eq!(0, piggyback.fill_with_len_prefix(&mut limited, usize::MAX));
        let mut buf = Vec::new();
        assert_eq!(2, piggyback.fill(&mut buf, usize::MAX));
    }

    #[test]
    fn piggyback_consumes_largest_first() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("00"), b"00hi".to_vec(), max_tx);
        piggyback.add_or_replace(Key("01"), b"01hello".to_vec(), max_tx);
        piggyback.add_or_replace(Key("02"), b"02hey".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, usize::MAX);

        assert_eq!(3, num_items);
        assert_eq!(b"01hello02hey00hi", &buf[..]);
    }

    #[test]
    fn highest_max_tx_is_consumed_first() {
        let mut piggyback = Broadcasts::new();

        // 3 items, same byte size, distinct max_tx
        piggyback.add_or_replace(Key("10"), b"100".to_vec(), 1);
        piggyback.add_or_replace(Key("20"), b"200".to_vec(), 2);
        piggyback.add_or_replace(Key("30"), b"300".to_vec(), 3);

        let mut buf = Vec::new();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200100", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300", &buf[..]);

        assert_eq!(0, piggyback.len());
    }

    #[test]
    fn piggyback_respects_limit() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("fo"), b"foo".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"bar".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"baz".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = piggyback.fill(&mut buf, 2);
        assert_eq!(2, num_items);
    }

    // Chorus patch: queues whose items hash (with collisions: 40 keys in
    // 5 hashes) behave exactly as queues of the same items without a
    // hash, which are always scanned: same bytes sent, same entries
    // queued, the filter counts every queued item and each queued item's
    // slot has its hash. Shown to fail with the decrement on a sent
    // entry's last transmission removed, and with the hashes of slots
    // reused from `free` left as they were.
    #[test]
    fn the_invalidation_filter_changes_nothing_but_the_scans() {
        use alloc::vec;
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        struct Hashed(u8);
        impl Invalidates for Hashed {
            fn invalidates(&self, other: &Self) -> bool {
                self.0 == other.0
            }
            fn invalidation_hash(&self) -> Option<u64> {
                Some(u64::from(self.0 % 5))
            }
        }
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        struct Plain(u8);
        impl Invalidates for Plain {
            fn invalidates(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }
        for seed in 1..=20u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut hashed = Broadcasts::new();
            let mut plain = Broadcasts::new();
            for op in 0..5_000u32 {
                if next(10) < 7 {
                    let key = next(40) as u8;
                    let data = vec![op as u8; 1 + next(30) as usize];
                    let tx = 1 + next(4) as usize;
                    hashed.add_or_replace(Hashed(key), data.clone(), tx);
                    plain.add_or_replace(Plain(key), data, tx);
                } else {
                    let room = 20 + next(200) as usize;
                    let (mut a, mut b) = (vec![0u8; room], vec![0u8; room]);
                    let na = hashed.fill(&mut a[..], usize::MAX);
                    let nb = plain.fill(&mut b[..], usize::MAX);
                    assert_eq!((na, &a), (nb, &b), "seed {seed}, op {op}: sent differently");
                }
                let mut ha: Vec<_> = hashed
                    .queued()
                    .map(|(item, tx, data)| (item.0, tx, data))
                    .collect();
                let mut pa: Vec<_> = plain
                    .queued()
                    .map(|(item, tx, data)| (item.0, tx, data))
                    .collect();
                ha.sort();
                pa.sort();
                assert_eq!(ha, pa, "seed {seed}, op {op}: queued differently");
                for handle in hashed.flip.iter() {
                    let held = hashed.slots[handle.at as usize].as_ref().unwrap();
                    assert_eq!(
                        hashed.hashes[handle.at as usize],
                        held.item.invalidation_hash().unwrap() as u32,
                        "seed {seed}, op {op}: a slot's hash"
                    );
                }
                let mut counts = vec![0u16; hashed.filter.len()];
                for (item, _, _) in hashed.queued() {
                    let at = slot(counts.len(), item.invalidation_hash().unwrap());
                    counts[at] += 1;
                }
                assert_eq!(counts, hashed.filter, "seed {seed}, op {op}: filter off");
            }
        }
    }

    // Chorus patch 8: `shed` keeps a queue within its limit by dropping
    // the entries with the fewest remaining transmissions, never a
    // protected one, and leaves the filter and the length bound true to
    // what stays queued. Random adds, fills and sheds, checked against
    // the queue's contents before each shed. Shown to fail with the
    // selection keeping the smallest keys, and with the protected
    // entries dropped like the others.
    #[test]
    fn shedding_drops_the_entries_sent_most_and_keeps_the_protected() {
        use alloc::vec;
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        struct Hashed(u8);
        impl Invalidates for Hashed {
            fn invalidates(&self, other: &Self) -> bool {
                self.0 == other.0
            }
            fn invalidation_hash(&self) -> Option<u64> {
                Some(u64::from(self.0 % 7))
            }
        }
        let protected = |h: &Hashed| h.0 < 3;
        let mut sheds = 0;
        for seed in 1..=20u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let cap = 8 + next(40) as usize;
            let mut q = Broadcasts::new();
            for op in 0..3_000u32 {
                if next(10) < 8 {
                    let key = next(200) as u8;
                    let data = vec![op as u8; 1 + next(40) as usize];
                    q.add_or_replace(Hashed(key), data, 1 + next(6) as usize);
                } else {
                    let mut buf = vec![0u8; 20 + next(120) as usize];
                    q.fill(&mut buf[..], usize::MAX);
                }
                let before: Vec<(u8, usize, Vec<u8>)> =
                    q.queued().map(|(i, tx, d)| (i.0, tx, d)).collect();
                let dropped = q.shed(cap, protected);
                let after: Vec<(u8, usize, Vec<u8>)> =
                    q.queued().map(|(i, tx, d)| (i.0, tx, d)).collect();
                assert_eq!(before.len(), after.len() + dropped, "seed {seed}, op {op}");
                // Within the limit after every addition, unless the
                // protected entries alone take it past.
                let unprotected = after.iter().filter(|e| !protected(&Hashed(e.0))).count();
                assert!(
                    after.len() <= cap || unprotected <= cap - cap / 8,
                    "seed {seed}, op {op}: {} queued, over the limit",
                    after.len()
                );
                if before.len() < cap {
                    assert_eq!(dropped, 0, "seed {seed}, op {op}: shed within the limit");
                    continue;
                }
                sheds += 1;
                let guarded = before.iter().filter(|e| protected(&Hashed(e.0))).count();
                // An eighth of the limit below it, plus the protected
                // entries that ranked among the dropped.
                let keep = cap - cap / 8;
                assert!(
                    after.len() >= keep && after.len() <= keep + guarded,
                    "seed {seed}, op {op}: kept {} of {} ({guarded} protected)",
                    after.len(),
                    before.len()
                );
                // Every protected entry stays.
                for e in before.iter().filter(|e| protected(&Hashed(e.0))) {
                    assert!(after.contains(e), "seed {seed}, op {op}: dropped {e:?}");
                }
                // No unprotected entry dropped outranks one kept.
                let key = |e: &(u8, usize, Vec<u8>)| (e.1, e.2.len());
                let gone: Vec<_> = before.iter().filter(|e| !after.contains(e)).collect();
                let lowest_kept = after
                    .iter()
                    .filter(|e| !protected(&Hashed(e.0)))
                    .map(key)
                    .min();
                for g in &gone {
                    assert!(!protected(&Hashed(g.0)));
                    if let Some(low) = lowest_kept {
                        assert!(key(g) <= low, "seed {seed}, op {op}: dropped {g:?}");
                    }
                }
                let mut counts = vec![0u16; q.filter.len()];
                let slots = counts.len();
                for (item, _, _) in q.queued() {
                    counts[slot(slots, item.invalidation_hash().unwrap())] += 1;
                }
                assert_eq!(counts, q.filter, "seed {seed}, op {op}: filter off");
                let min = after.iter().map(|e| e.2.len()).min().unwrap_or(usize::MAX);
                assert!(
                    q.min_len <= min,
                    "seed {seed}, op {op}: length bound too high"
                );
            }
        }
        assert!(sheds > 100, "only {sheds} sheds: the test tests little");
    }

    // Chorus patch: the queue of handles sends what foca's queue of
    // whole entries sent (the reference below is that code, with the
    // early stop of patch 2), byte for byte and in the same order,
    // through growth, replacement, draining and the slots' compaction,
    // with data both in place and boxed. Shown to fail with `compact`
    // putting the handles back in another order, and with the key's
    // two halves swapped.
    #[test]
    fn the_handles_send_what_the_entries_sent() {
        use alloc::collections::BinaryHeap;
        use alloc::vec;

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        struct Id(u8);
        impl Invalidates for Id {
            fn invalidates(&self, other: &Self) -> bool {
                self.0 == other.0
            }
            fn invalidation_hash(&self) -> Option<u64> {
                Some(u64::from(self.0))
            }
        }

        struct RefEntry {
            remaining_tx: usize,
            data: Vec<u8>,
            item: Id,
        }
        impl PartialEq for RefEntry {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other).is_eq()
            }
        }
        impl Eq for RefEntry {}
        impl PartialOrd for RefEntry {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for RefEntry {
            fn cmp(&self, other: &Self) -> Ordering {
                self.remaining_tx
                    .cmp(&other.remaining_tx)
                    .then_with(|| self.data.len().cmp(&other.data.len()))
            }
        }

        #[derive(Default)]
        struct Reference {
            flip: BinaryHeap<RefEntry>,
            flop: BinaryHeap<RefEntry>,
            min_len: Option<usize>,
        }
        impl Reference {
            fn add(&mut self, item: Id, data: Vec<u8>, max_tx: usize) {
                self.flip.retain(|e| !item.invalidates(&e.item));
                self.min_len = Some(self.min_len.map_or(data.len(), |m| m.min(data.len())));
                self.flip.push(RefEntry {
                    remaining_tx: max_tx,
                    data,
                    item,
                });
            }
            fn fill(&mut self, buf: &mut Vec<u8>, room: usize, max: usize, prefix: bool) -> usize {
                let extra = if prefix { 2 } else { 0 };
                let (mut taken, mut dropped) = (0, false);
                while taken < max
                    && room - buf.len() >= self.min_len.unwrap_or(usize::MAX).saturating_add(extra)
                {
                    let Some(mut e) = self.flip.pop() else { break };
                    if room - buf.len() >= e.data.len() + extra {
                        taken += 1;
                        if prefix {
                            buf.extend_from_slice(&(e.data.len() as u16).to_be_bytes());
                        }
                        buf.extend_from_slice(&e.data);
                        e.remaining_tx -= 1;
                    }
                    if e.remaining_tx > 0 {
                        self.flop.push(e);
                    } else {
                        dropped = true;
                    }
                }
                self.flip.append(&mut self.flop);
                if dropped {
                    self.min_len = self.flip.iter().map(|e| e.data.len()).min();
                }
                taken
            }
        }

        // Data of 1 to 60 bytes: in place and boxed with either size.
        run::<INLINE>();
        run::<62>();
        fn run<const N: usize>() {
            for seed in 1..=4u64 {
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = move |n: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % n
                };
                let mut queue = Broadcasts::<Id, N>::keeping_inline();
                let mut reference = Reference::default();
                let mut compacted = 0;
                for op in 0..12_000u32 {
                    // Phases of 1,500 operations: the queue grows to a few
                    // hundred entries, then drains.
                    let adds = if (op / 1_500) % 2 == 0 { 8 } else { 1 };
                    if next(10) < adds {
                        let key = Id(next(250) as u8);
                        let data = vec![op as u8; 1 + next(60) as usize];
                        let tx = 1 + next(6) as usize;
                        queue.add_or_replace(key, data.clone(), tx);
                        reference.add(key, data, tx);
                    } else {
                        let room = 20 + next(300) as usize;
                        let max = if next(4) == 0 {
                            next(8) as usize
                        } else {
                            usize::MAX
                        };
                        let prefix = next(2) == 0;
                        let mut got = Vec::new();
                        let slots_before = queue.slots.capacity();
                        let n = if prefix {
                            queue.fill_with_len_prefix(bytes::BufMut::limit(&mut got, room), max)
                        } else {
                            queue.fill(bytes::BufMut::limit(&mut got, room), max)
                        };
                        if queue.slots.capacity() < slots_before {
                            compacted += 1;
                        }
                        let mut want = Vec::new();
                        let m = reference.fill(&mut want, room, max, prefix);
                        assert_eq!(
                            (n, got),
                            (m, want),
                            "N {N}, seed {seed}, op {op}: sent differently"
                        );
                    }
                    assert_eq!(queue.len(), reference.flip.len(), "seed {seed}, op {op}");
                }
                assert!(compacted > 0, "seed {seed}: the slots were never compacted");
            }
        }
    }

    // Chorus patch: shown to fail with `release_spare` not called.
    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        use alloc::vec;
        let mut piggyback = Broadcasts::new();
        for i in 0..1000u32 {
            piggyback.add_or_replace(Key(if i % 2 == 0 { "a" } else { "b" }), vec![0; 40], 1);
            // Pushed past `add_or_replace`, so none replaces another.
            piggyback.push_unscanned(Key("c"), vec![1; 40], 1);
        }
        assert!(piggyback.flip.capacity() >= 1000);
        assert!(piggyback.slots.capacity() >= 1000);
        let mut sent = 0;
        while !piggyback.is_empty() {
            // A datagram's room: about 35 entries per fill, so the queue
            // drains over many fills and is checked part-way too.
            let mut buf = [0u8; 1400];
            let n = piggyback.fill(&mut buf[..], usize::MAX);
            assert!(
                n > 0 && n < 40,
                "a 1,400-byte buffer takes {n} 40-byte entries"
            );
            sent += n;
            assert!(
                piggyback.flip.capacity() <= (4 * piggyback.len() + 3).max(64)
                    && piggyback.slots.capacity() <= (4 * piggyback.len() + 3).max(64)
                    && piggyback.flop.capacity() <= 64,
                "{} queued, room for {} in flip, {} in slots and {} in flop",
                piggyback.len(),
                piggyback.flip.capacity(),
                piggyback.slots.capacity(),
                piggyback.flop.capacity()
            );
        }
        assert_eq!(sent, 1002, "every entry sent once (two are the keyed ones)");
    }

    #[test]
    fn fill_with_len_prefix() {
        let mut bcs = Broadcasts::new();

        bcs.add_or_replace(Key("fo"), b"foo".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"barr".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"bazz".to_vec(), 10);

        let mut buf = Vec::new();
        let num_items = bcs.fill_with_len_prefix(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = bcs.fill_with_len_prefix(&mut buf, 2);
        assert_eq!(2, num_items);

        use bytes::Buf;
        let mut buf = &buf[..];
        assert_eq!(4, buf.get_u16());
        assert_eq!(&b"bazz"[..], &buf[..4]);
        buf.advance(4);
        assert_eq!(3, buf.get_u16());
        assert_eq!(&b"foo"[..], &buf[..3]);
        buf.advance(3);
        assert!(buf.is_empty());
    }
}
