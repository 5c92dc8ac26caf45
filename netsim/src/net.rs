//! The simulated network: who can reach whom, and what happens to a datagram on the way.
//!
//! Links are directed. A datagram from `a` to `b` passes when both are in the same partition
//! group and the directed link `a -> b` is not cut. Latency depends on whether the two nodes share
//! a datacenter. Loss, duplication and reordering are drawn per datagram from the simulator's one
//! seeded RNG, so the same seed makes the same network. Every change of connectivity is kept with
//! its time, so checkers can ask afterwards whether two nodes could talk during an interval.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use std::collections::BTreeSet;
use std::time::Duration;

/// How links behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkModel {
    /// One-way latency between nodes of the same datacenter, drawn uniformly from this range.
    pub intra_dc: (Duration, Duration),
    /// One-way latency between datacenters, drawn uniformly from this range.
    pub inter_dc: (Duration, Duration),
    /// Probability (per million) that a datagram is lost.
    pub loss_ppm: u32,
    /// Probability (per million) that a datagram is delivered twice.
    pub duplicate_ppm: u32,
    /// Probability (per million) that a datagram is held back by up to `reorder_by`, so that
    /// later datagrams overtake it.
    pub reorder_ppm: u32,
    /// Largest extra delay of a reordered datagram.
    pub reorder_by: Duration,
}

impl LinkModel {
    /// A clean LAN: 0.2-2 ms one way, 20-40 ms between datacenters, nothing lost.
    pub fn lan() -> Self {
        LinkModel {
            intra_dc: (Duration::from_micros(200), Duration::from_millis(2)),
            inter_dc: (Duration::from_millis(20), Duration::from_millis(40)),
            loss_ppm: 0,
            duplicate_ppm: 0,
            reorder_ppm: 0,
            reorder_by: Duration::from_millis(50),
        }
    }
}

/// Connectivity at one moment: partition groups and cut directed links.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Links {
    group: Vec<u32>,
    cut: BTreeSet<(usize, usize)>,
}

impl Links {
    fn reaches(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b] && !self.cut.contains(&(a, b))
    }
}

/// The network between `n` nodes.
#[derive(Debug, Clone)]
pub struct Network {
    /// Link behaviour.
    pub model: LinkModel,
    dc: Vec<u16>,
    links: Links,
    next_group: u32,
    /// Connectivity over time, from time zero (kept for small clusters only: checkers need it).
    history: Vec<(Duration, Links)>,
    keep_history: bool,
}

/// Clusters up to this size keep their connectivity history for checkers.
const HISTORY_UP_TO: usize = 64;

impl Network {
    /// A fully connected network; `dc[i]` is node `i`'s datacenter.
    pub fn new(dc: Vec<u16>, model: LinkModel) -> Self {
        let n = dc.len();
        let links = Links {
            group: vec![0; n],
            cut: BTreeSet::new(),
        };
        let keep_history = n <= HISTORY_UP_TO;
        Network {
            model,
            dc,
            history: if keep_history {
                vec![(Duration::ZERO, links.clone())]
            } else {
                vec![]
            },
            links,
            next_group: 1,
            keep_history,
        }
    }

    /// Node `i`'s datacenter.
    pub fn dc_of(&self, i: usize) -> u16 {
        self.dc[i]
    }

    /// True when a datagram from `a` can reach `b` now.
    pub fn reaches(&self, a: usize, b: usize) -> bool {
        self.links.reaches(a, b)
    }

    /// True when nothing is cut.
    pub fn is_whole(&self) -> bool {
        self.links.cut.is_empty() && self.links.group.iter().all(|g| *g == self.links.group[0])
    }

    fn changed(&mut self, now: Duration) {
        if self.keep_history {
            if self.history.last().is_some_and(|(t, _)| *t == now) {
                self.history.pop();
            }
            self.history.push((now, self.links.clone()));
        }
    }

    /// Splits the nodes into groups that cannot talk to each other; a node in no group is alone.
    pub fn partition(&mut self, now: Duration, groups: &[&[usize]]) {
        self.links.cut.clear();
        for g in self.links.group.iter_mut() {
            *g = u32::MAX;
        }
        for members in groups {
            let label = self.next_group;
            self.next_group += 1;
            for i in *members {
                self.links.group[*i] = label;
            }
        }
        for i in 0..self.links.group.len() {
            if self.links.group[i] == u32::MAX {
                self.links.group[i] = self.next_group;
                self.next_group += 1;
            }
        }
        self.changed(now);
    }

    /// Cuts node `i` off from everyone, both ways.
    pub fn isolate(&mut self, now: Duration, i: usize) {
        self.links.group[i] = self.next_group;
        self.next_group += 1;
        self.changed(now);
    }

    /// Puts node `i` back in the group of node `with`, and removes its cut links.
    pub fn reconnect(&mut self, now: Duration, i: usize, with: usize) {
        self.links.group[i] = self.links.group[with];
        self.links.cut.retain(|(a, b)| *a != i && *b != i);
        self.changed(now);
    }

    /// Cuts the directed link from `a` to `b`.
    pub fn cut_one_way(&mut self, now: Duration, a: usize, b: usize) {
        self.links.cut.insert((a, b));
        self.changed(now);
    }

    /// Cuts every link between a node of `left` and a node of `right`, both ways (for bridges:
    /// `left` and `right` each still reach the nodes in neither set).
    pub fn cut_between(&mut self, now: Duration, left: &[usize], right: &[usize]) {
        for a in left {
            for b in right {
                self.links.cut.insert((*a, *b));
                self.links.cut.insert((*b, *a));
            }
        }
        self.changed(now);
    }

    /// Restores every link.
    pub fn heal(&mut self, now: Duration) {
        self.links.cut.clear();
        for g in self.links.group.iter_mut() {
            *g = 0;
        }
        self.changed(now);
    }

    /// True when, at some moment in `[from, to]`, `a` could not send to `b` or `b` to `a`.
    /// Always false for clusters too large to keep history.
    pub fn was_disconnected(&self, a: usize, b: usize, from: Duration, to: Duration) -> bool {
        let mut current: Option<&Links> = None;
        for (t, links) in &self.history {
            if *t <= from {
                current = Some(links);
                continue;
            }
            if *t > to {
                break;
            }
            if !links.reaches(a, b) || !links.reaches(b, a) {
                return true;
            }
        }
        current.is_some_and(|l| !l.reaches(a, b) || !l.reaches(b, a))
    }

    /// Nodes `i` could exchange messages with in both directions at some moment in
    /// `[from, to]` (itself included). For clusters too large to keep history: every node.
    pub fn ever_reachable_from(&self, i: usize, from: Duration, to: Duration) -> Vec<usize> {
        let n = self.dc.len();
        if !self.keep_history {
            return (0..n).collect();
        }
        let mut reach = vec![false; n];
        reach[i] = true;
        for (k, (t, links)) in self.history.iter().enumerate() {
            let ends = self.history.get(k + 1).map_or(Duration::MAX, |(u, _)| *u);
            if ends <= from || *t > to {
                continue;
            }
            for (j, r) in reach.iter_mut().enumerate() {
                *r |= links.reaches(i, j) && links.reaches(j, i);
            }
        }
        (0..n).filter(|j| reach[*j]).collect()
    }

    /// A one-way latency for a message between `a` and `b`.
    pub fn latency(&self, rng: &mut Xoshiro256PlusPlus, a: usize, b: usize) -> Duration {
        let (lo, hi) = if self.dc[a] == self.dc[b] {
            self.model.intra_dc
        } else {
            self.model.inter_dc
        };
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(if span == 0 {
            0
        } else {
            rng.random_range(0..span)
        })
    }

    /// What happens to one datagram from `a` to `b`: the delays of its copies (none when lost or
    /// cut, two when duplicated).
    pub fn datagram_fate(
        &self,
        rng: &mut Xoshiro256PlusPlus,
        a: usize,
        b: usize,
    ) -> smallvec_like::Copies {
        let mut out = smallvec_like::Copies::default();
        if !self.reaches(a, b) {
            return out;
        }
        let m = &self.model;
        if m.loss_ppm > 0 && rng.random_range(0..1_000_000) < m.loss_ppm {
            return out;
        }
        let copies = if m.duplicate_ppm > 0 && rng.random_range(0..1_000_000) < m.duplicate_ppm {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut d = self.latency(rng, a, b);
            if m.reorder_ppm > 0 && rng.random_range(0..1_000_000) < m.reorder_ppm {
                let extra = m.reorder_by.as_micros().max(1) as u64;
                d += Duration::from_micros(rng.random_range(0..extra));
            }
            out.push(d);
        }
        out
    }
}

/// A tiny fixed-capacity list, so routing a datagram allocates nothing.
pub mod smallvec_like {
    use std::time::Duration;

    /// Up to two delivery delays.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Copies {
        items: [Duration; 2],
        len: usize,
    }

    impl Copies {
        /// Adds a delay (at most two are kept).
        pub fn push(&mut self, d: Duration) {
            if self.len < 2 {
                self.items[self.len] = d;
                self.len += 1;
            }
        }

        /// The delays.
        pub fn as_slice(&self) -> &[Duration] {
            &self.items[..self.len]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cuts_and_history() {
        let mut net = Network::new(vec![0; 4], LinkModel::lan());
        let s = Duration::from_secs(1);
        assert!(net.reaches(0, 3));
        net.partition(s, &[&[0, 1], &[2, 3]]);
        assert!(net.reaches(0, 1) && !net.reaches(0, 2) && !net.reaches(3, 1));
        net.heal(2 * s);
        net.cut_one_way(3 * s, 0, 1);
        assert!(!net.reaches(0, 1) && net.reaches(1, 0));
        net.heal(4 * s);
        net.cut_between(5 * s, &[0], &[2]);
        assert!(net.reaches(0, 1) && net.reaches(1, 2) && !net.reaches(0, 2));
        assert!(net.was_disconnected(0, 2, Duration::ZERO, 2 * s));
        assert!(!net.was_disconnected(0, 1, Duration::ZERO, s / 2));
        assert!(net.was_disconnected(1, 0, 3 * s, 3 * s));
        assert!(!net.was_disconnected(2, 3, Duration::ZERO, 10 * s));
        assert_eq!(net.ever_reachable_from(0, 5 * s, 10 * s), vec![0, 1, 3]);
        assert_eq!(net.ever_reachable_from(0, s, 2 * s), vec![0, 1, 2, 3]);
        assert_eq!(net.ever_reachable_from(0, s, s + s / 2), vec![0, 1]);
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let mut model = LinkModel::lan();
        model.loss_ppm = 100_000;
        model.duplicate_ppm = 50_000;
        let net = Network::new(vec![0, 0], model);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..100_000 {
            match net.datagram_fate(&mut rng, 0, 1).as_slice().len() {
                0 => lost += 1,
                2 => dup += 1,
                _ => {}
            }
        }
        assert!((9_000..11_000).contains(&lost), "lost {lost}");
        assert!((4_000..5_500).contains(&dup), "duplicated {dup}");
    }
}
