//! Node clocks: each node's monotonic clock may run fast or slow and its wall clock be off.

use std::time::Duration;

/// Unix milliseconds that virtual time zero maps to on a node's wall clock (before its skew).
pub const WALL_BASE_MS: u64 = 1_700_000_000_000;

/// A node's clock error: its monotonic clock runs fast or slow, its wall clock is offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skew {
    /// Rate error in parts per million (positive: fast).
    pub drift_ppm: i32,
    /// Wall clock offset in milliseconds.
    pub wall_offset_ms: i64,
}

impl Skew {
    /// The node's monotonic reading at global time `t`.
    pub fn local(&self, t: Duration) -> Duration {
        let ns = t.as_nanos() as i128;
        let local = ns + ns * i128::from(self.drift_ppm) / 1_000_000;
        Duration::from_nanos(local.max(0) as u64)
    }

    /// The earliest global time at which the node's monotonic clock reads `local` or more.
    pub fn global(&self, local: Duration) -> Duration {
        let l = local.as_nanos() as i128;
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let mut g = Duration::from_nanos(((l * 1_000_000 + rate - 1) / rate).max(0) as u64);
        let ns = Duration::from_nanos(1);
        while self.local(g) < local {
            g += ns;
        }
        while g > Duration::ZERO && self.local(g - ns) >= local {
            g -= ns;
        }
        g
    }

    /// The node's wall clock (Unix milliseconds) at global time `t`.
    pub fn wall_ms(&self, t: Duration) -> u64 {
        let base = WALL_BASE_MS as i64 + self.local(t).as_millis() as i64;
        (base + self.wall_offset_ms).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_maps_both_ways() {
        for drift in [-500, -1, 0, 1, 333, 20_000] {
            let s = Skew {
                drift_ppm: drift,
                wall_offset_ms: -1500,
            };
            for t in [0u64, 1, 999, 123_456_789, 3_600_000_000_007] {
                let local = Duration::from_nanos(t);
                let g = s.global(local);
                assert!(s.local(g) >= local, "drift {drift} t {t}");
                if g > Duration::ZERO {
                    assert!(s.local(g - Duration::from_nanos(1)) < local);
                }
            }
        }
        let s = Skew {
            drift_ppm: 0,
            wall_offset_ms: -1500,
        };
        assert_eq!(s.wall_ms(Duration::from_secs(2)), WALL_BASE_MS + 500);
    }
}
