//! What the simulation saw: every event each node reported, what each node believes about the
//! others by its events, faults of the world, catch-ups, traffic; and the queries checkers ask.

use super::Sim;
use crate::history::Outcome;
use membership::{Event, MemberState, Peer};
use node::{Input, NodeConfig, Output, Recovered};
use std::time::Duration;

/// A stretch of (true) time during which a node led the cluster by its own account: from the
/// grant until the acting window of its last renewal ran out, or it crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSpan {
    /// The node.
    pub node: usize,
    /// Its fencing token.
    pub token: u64,
    /// From (global time).
    pub from: Duration,
    /// Until (global time).
    pub until: Duration,
}

/// A record of something a node reported, for checkers and traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Virtual time.
    pub at: Duration,
    /// Which node reported it.
    pub node: usize,
    /// What it reported.
    pub event: Event,
}

/// A fault of the simulated world itself (not of a message), kept for checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldFault {
    /// The node crashed (lost its memory).
    Crash(usize),
    /// The node started again.
    Restart(usize),
    /// The node stopped gracefully.
    Leave(usize),
    /// The node's process stalled for a while.
    Pause(usize, Duration),
    /// The (crashed) node's disk was wiped: it restarts with an empty log.
    Wipe(usize),
}

/// One catch-up of a node after it started, and what it lacked when it called itself current.
#[derive(Debug, Clone)]
pub struct CatchUpRecord {
    /// The node.
    pub node: usize,
    /// When it started (and began catching up).
    pub began: Duration,
    /// When it cleared, if it has.
    pub ended: Option<Duration>,
    /// Quorum writes acknowledged before it began that it did not hold when it cleared.
    pub missing: Vec<String>,
}

/// What one node was built from, fed and asked to do during its first run: a node is a pure
/// function of these, so a harness that feeds a fresh node the same inputs gets the same outputs.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The node recorded.
    pub node: usize,
    /// Its configuration.
    pub cfg: NodeConfig,
    /// Its identity.
    pub identity: Peer,
    /// Its seed.
    pub seed: u64,
    /// Its clock readings at start (core time, wall milliseconds).
    pub started: (Duration, u64),
    /// What its disk held.
    pub disk: Recovered,
    /// Every input, with the node's clock readings when it was fed.
    pub inputs: Vec<(Duration, u64, Input)>,
    /// Every output, in the order the node gave them.
    pub outputs: Vec<Output>,
    /// Still recording (the first run has not ended).
    pub(super) live: bool,
}

/// What a node believes about another, as told by its events (suspects count as alive: an event
/// stream has no "suspect" event, and a suspect is still reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No event about it yet.
    Unknown,
    /// Joined, recovered or restarted.
    Alive,
    /// Reported failed.
    Failed,
    /// Reported left.
    Left,
}

pub(super) const SEEN_CODES: [Seen; 4] = [Seen::Unknown, Seen::Alive, Seen::Failed, Seen::Left];

pub(super) fn seen_code(s: Seen) -> u8 {
    SEEN_CODES.iter().position(|x| *x == s).expect("listed") as u8
}

/// Message counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams sent (a beacon counts once).
    pub datagrams: u64,
    /// Bytes of sealed datagram payload sent.
    pub datagram_bytes: u64,
    /// Store messages sent over the (simulated) stream transport.
    pub stream_msgs: u64,
    /// Bytes of those messages, postcard-encoded.
    pub stream_bytes: u64,
}

impl Sim {
    /// Every event reported so far.
    ///
    /// # Panics
    /// When the run keeps no log ([`super::SimConfig::event_log`] off): a checker reading it
    /// would find nothing wrong in nothing.
    pub fn log(&self) -> &[Logged] {
        assert!(
            self.cfg.event_log,
            "this run keeps no event log (SimConfig::event_log is off)"
        );
        &self.log
    }

    /// Crashes, restarts, leaves and pauses so far, with their times.
    pub fn world_faults(&self) -> &[(Duration, WorldFault)] {
        &self.world
    }

    /// Datagrams and bytes (sealed UDP payload) sent by all nodes so far; a multicast beacon counts
    /// once, as on a real network.
    pub fn sent(&self) -> (u64, u64) {
        (self.traffic.datagrams, self.traffic.datagram_bytes)
    }

    /// All message counters.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Number of deliveries processed so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Store messages delivered to node `i` so far (over all its runs).
    pub fn frames_received(&self, i: usize) -> u64 {
        self.frames_received[i]
    }

    /// Inputs nodes took while a flush of earlier inputs' outputs was still pending
    /// ([`SimConfig::batch_inputs`]); zero when inputs are not batched.
    pub fn batched_inputs(&self) -> u64 {
        self.batched_inputs
    }

    /// Snapshots node `i` has written so far (over all its runs; a wipe starts again at zero).
    pub fn snapshots_written(&self, i: usize) -> u64 {
        self.slots[i].disk.snapshots
    }

    /// Torn log tails dropped by restarts so far.
    pub fn torn_tails(&self) -> u64 {
        self.torn_tails
    }

    /// What [`SimConfig::record_node`] recorded so far.
    pub fn recording(&self) -> Option<&Recording> {
        self.recording.as_ref()
    }

    /// Every catch-up so far: one per node start.
    pub fn catch_ups(&self) -> &[CatchUpRecord] {
        &self.catch_ups
    }

    /// Closes node `i`'s catch-up record once its store says it is current, noting every quorum
    /// write acknowledged before it began that its replica lacks.
    pub(super) fn note_caught_up(&mut self, i: usize) {
        let Some(rec) = self.slots[i].catching else {
            return;
        };
        let Some(store) = self.slots[i].node.as_ref().and_then(|n| n.store()) else {
            return;
        };
        let began = self.catch_ups[rec].began;
        let mut missing = Vec::new();
        for op in &self.history.ops {
            let Outcome::Written(v) = op.outcome else {
                continue;
            };
            if op.consistency != store::Consistency::Quorum
                || op.completed.is_none_or(|t| t > began)
            {
                continue;
            }
            let held = store
                .replica()
                .store("default")
                .map_or(store::Version::ZERO, |s| s.version(&op.key));
            if held < v {
                missing.push(format!("{} (version {v}, node holds {held})", op.key));
            }
        }
        self.catch_ups[rec].ended = Some(self.now);
        self.catch_ups[rec].missing = missing;
        self.slots[i].catching = None;
    }

    pub(super) fn record_event(&mut self, viewer: usize, event: Event) {
        let now = self.now;
        self.mix(&[6, viewer as u64, now.as_micros() as u64]);
        let n = self.slots.len();
        let subject = event.member().and_then(|m| self.by_id.get(&m.id).copied());
        let seen = match &event {
            Event::MemberJoined { .. }
            | Event::MemberRecovered { .. }
            | Event::MemberRestarted { .. } => Some(Seen::Alive),
            Event::MemberFailed { .. } => Some(Seen::Failed),
            Event::MemberLeft { .. } => Some(Seen::Left),
            _ => None,
        };
        if let (Some(s), Some(state)) = (subject, seen) {
            let cell = &mut self.seen[viewer * n + s];
            let alive = seen_code(Seen::Alive);
            if *cell == alive {
                self.alive_of[s] -= 1;
            }
            *cell = seen_code(state);
            if *cell == alive {
                self.alive_of[s] += 1;
            }
        }
        if self.cfg.event_log {
            self.log.push(Logged {
                at: now,
                node: viewer,
                event,
            });
        }
    }

    /// What `viewer`'s events say about `subject`.
    pub fn seen_by_events(&self, viewer: usize, subject: usize) -> Seen {
        let n = self.slots.len();
        SEEN_CODES[self.seen[viewer * n + subject] as usize]
    }

    /// True when every running node's events say every other running node is alive
    /// (O(n): suited to large clusters).
    pub fn all_running_alive_by_events(&self) -> bool {
        let running = self.slots.iter().filter(|s| s.node.is_some()).count() as u32;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node.is_some())
            .all(|(i, _)| self.alive_of[i] + 1 == running)
    }

    /// How many running nodes other than `subject` have reported it `state` by their events.
    pub fn count_reporting(&self, subject: usize, state: Seen) -> usize {
        (0..self.slots.len())
            .filter(|v| *v != subject && self.is_up(*v))
            .filter(|v| self.seen_by_events(*v, subject) == state)
            .count()
    }

    /// The state node `viewer` reports for node `subject`, if it lists it.
    pub fn state_seen(&self, viewer: usize, subject: usize) -> Option<MemberState> {
        let id = self.slots[subject].id;
        self.core(viewer)?
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
    }

    /// True when every running node lists every node in `alive` as alive (from member lists:
    /// O(n^2), for small clusters).
    pub fn all_see_alive(&self, alive: &[usize]) -> bool {
        (0..self.slots.len()).filter(|v| self.is_up(*v)).all(|v| {
            let members = self.core(v).expect("up").members();
            alive.iter().all(|s| {
                let id = self.slots[*s].id;
                members
                    .iter()
                    .any(|m| m.id == id && m.state == MemberState::Alive)
            })
        })
    }

    /// True when every running node other than `subject` reports `subject` in `state`.
    pub fn all_report(&self, subject: usize, state: MemberState) -> bool {
        (0..self.slots.len())
            .filter(|v| *v != subject && self.is_up(*v))
            .all(|v| self.state_seen(v, subject) == Some(state))
    }

    /// True when every running node reaches a quorum.
    pub fn all_have_quorum(&self) -> bool {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref())
            .all(|n| n.membership().quorum().has_quorum)
    }
}

impl Sim {
    /// Notes node `i`'s leadership after it handled something.
    pub(super) fn note_leader(&mut self, i: usize) {
        // Asked at the present, as an application asks: a node whose last input is old (it was
        // paused before its outputs left) must not count a lease that ran out meanwhile.
        let local = self.slots[i].skew.local(self.now);
        let Some(l) = self.slots[i]
            .node
            .as_ref()
            .and_then(|n| n.leading_at(local))
        else {
            return;
        };
        let until = self.slots[i].skew.global(l.until);
        let now = self.now;
        match self
            .leaders
            .iter_mut()
            .rev()
            .find(|s| s.node == i && s.token == l.token && s.until >= now)
        {
            Some(s) => s.until = s.until.max(until),
            None => self.leaders.push(LeaderSpan {
                node: i,
                token: l.token,
                from: now,
                until,
            }),
        }
    }

    /// Every stretch of time a node led, by its own account.
    pub fn leader_spans(&self) -> &[LeaderSpan] {
        &self.leaders
    }

    /// The running node that leads now, by its own account, if any.
    pub fn leader_now(&self) -> Option<usize> {
        let now = self.now;
        self.leaders
            .iter()
            .find(|s| s.from <= now && now < s.until && self.is_up(s.node))
            .map(|s| s.node)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Sim, SimConfig};
    use std::time::Duration;

    /// With the log off, joins are still seen (the matrix) but a checker cannot read the log.
    #[test]
    #[should_panic(expected = "keeps no event log")]
    fn a_run_without_the_event_log_refuses_to_hand_it_out() {
        let mut cfg = SimConfig::lan(3, 1);
        cfg.event_log = false;
        let mut sim = Sim::new(cfg);
        sim.run_until(Duration::from_secs(5));
        assert!(sim.all_running_alive_by_events());
        let _ = sim.log();
    }
}
