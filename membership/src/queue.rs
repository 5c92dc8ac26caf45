//! Output queues that give their room back once drained.
//!
//! Why: a core's output queues are drained after every input, but a `VecDeque` keeps the room
//! its largest burst needed. In a mass join one datagram can bring hundreds of member-ups at
//! once, and every node then kept room for that burst in two queues (membership's events, the
//! node's outputs) for the rest of the run: about 20 MB of the peak heap of `netsim scale
//! --nodes 1000 --secs 20` (heaptrack), 20 bytes per pair of members, where memory per pair is
//! what keeps 10,000 nodes from fitting (docs/benchmarks.md).

use std::collections::VecDeque;

/// The room a drained queue keeps: bursts up to this size never reallocate.
pub const KEEP: usize = 32;

/// The front of `q`; when there is none, `q` gives back any room above [`KEEP`].
pub fn pop_front_or_shrink<T>(q: &mut VecDeque<T>) -> Option<T> {
    let front = q.pop_front();
    if front.is_none() && q.capacity() > KEEP {
        q.shrink_to(KEEP);
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst comes out whole and in order, and the drained queue keeps no more than [`KEEP`].
    #[test]
    fn a_drained_queue_gives_its_room_back() {
        let mut q = VecDeque::new();
        for round in 0..3 {
            let burst = 1000 * (round + 1);
            q.extend(0..burst);
            assert!(q.capacity() >= burst);
            let out: Vec<usize> = std::iter::from_fn(|| pop_front_or_shrink(&mut q)).collect();
            assert_eq!(out, (0..burst).collect::<Vec<_>>());
            assert!(q.capacity() <= KEEP, "kept room for {}", q.capacity());
        }
        // A small burst keeps its room: no reallocation per input.
        q.extend(0..10);
        let cap = q.capacity();
        while pop_front_or_shrink(&mut q).is_some() {}
        assert_eq!(q.capacity(), cap);
    }
}
