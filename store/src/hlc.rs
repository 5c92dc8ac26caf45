//! A hybrid logical clock: physical milliseconds in the high 48 bits, a counter in the low 16.
//!
//! Versions must grow across the cluster even when wall clocks disagree: a node that observes a
//! version from the future moves its own clock past it, so the next write it coordinates is
//! ordered after everything it has seen. The core never reads a clock: the driver passes wall time.

/// Bits of the logical counter.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// Packs wall milliseconds and a counter into one timestamp.
    pub fn pack(ms: u64, logical: u16) -> u64 {
        (ms << LOGICAL_BITS) | u64::from(logical)
    }

    /// The wall milliseconds of a timestamp.
    pub fn millis(ts: u64) -> u64 {
        ts >> LOGICAL_BITS
    }

    /// A new timestamp, greater than every one issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> u64 {
        let physical = Self::pack(wall_ms, 0);
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Moves the clock past a timestamp seen elsewhere.
    pub fn observe(&mut self, ts: u64) {
        if ts > self.last {
            self.last = ts;
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_grow_even_when_the_wall_clock_steps_back() {
        let mut c = Hlc::default();
        let a = c.tick(1000);
        let b = c.tick(1000);
        let d = c.tick(900);
        assert!(a < b && b < d);
        assert_eq!(Hlc::millis(d), 1000);
    }

    #[test]
    fn observing_the_future_moves_the_clock() {
        let mut c = Hlc::default();
        c.observe(Hlc::pack(5000, 3));
        let t = c.tick(1000);
        assert!(t > Hlc::pack(5000, 3));
    }
}
