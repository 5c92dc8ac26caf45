//! What a replica's entries cost on the heap, counted by the allocator, not timed.
//!
//! Issue 15 asks for at most 150 bytes per key above key and value at 1M keys, measured as agent
//! RSS (docs/benchmarks.md, "Memory per key"). RSS also holds malloc's rounding and whatever else
//! the agent keeps, so this test bounds what the store's own layout asks for: the bytes requested
//! from the allocator per key, above the key and value themselves. The packed slot layout asks
//! for about 51, 64 since each slot keeps its digest place beside its pointer (24-byte tree
//! elements instead of 16; what that bought is in `store/src/slot.rs`); the
//! `BTreeMap<String, Entry>` it replaced asked for 140, and this test fails on it.

use membership::NodeId;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use store::{Entry, StoreMap, Version};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Keys shaped like the memory bench's (`bench-17-31249`), written in the bench's interleaved
/// order, 100-byte values, then every tenth key overwritten and a few deleted.
#[test]
fn a_key_costs_the_heap_at_most_72_bytes_above_its_key_and_value() {
    const KEYS: u64 = 200_000;
    let entry = |ts: u64, value: Option<Vec<u8>>| Entry {
        version: Version {
            ts,
            node: NodeId(7),
        },
        value,
        expires_at: None,
    };
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("bench-{}-{}", i % 32, i / 32))
        .collect();
    let key_bytes: usize = keys.iter().map(String::len).sum();
    let mut m = StoreMap::default();
    let before = LIVE.load(Ordering::Relaxed);
    for (i, k) in keys.iter().enumerate() {
        m.apply(k, entry(i as u64 + 1, Some(vec![b'x'; 100])));
    }
    for (i, k) in keys.iter().enumerate().step_by(10) {
        m.apply(k, entry(KEYS + i as u64 + 1, Some(vec![b'y'; 100])));
    }
    let used = (LIVE.load(Ordering::Relaxed) - before) as f64;
    let above = (used - key_bytes as f64 - 100.0 * KEYS as f64) / KEYS as f64;
    println!("{KEYS} keys: {used} bytes requested, {above:.1} per key above key and value");
    assert!(
        above <= 72.0,
        "{above:.1} bytes per key above key and value (limit 72)"
    );
    assert_eq!(m.len(), KEYS as usize);
}
