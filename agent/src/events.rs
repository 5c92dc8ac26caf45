//! The agent's side of events: every event logged with its fields, kept in a bounded buffer for
//! clients that reconnect, and handed to live subscribers.

use node::{EventKind, NodeEvent};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use tracing::{info, warn};

/// One event as the buffer, the stream's subscribers and the handlers share it. Its JSON is built
/// the first time someone reads it, not when it happens: a wiped node catching up 300,000 keys
/// spent 30 % of its driver's time building and dropping `key_changed` JSON nobody read (perf,
/// docs/benchmarks.md).
#[derive(Debug)]
pub struct Shared {
    /// The event.
    pub ev: NodeEvent,
    json: OnceLock<Value>,
}

impl Shared {
    /// Shares `ev`.
    pub fn new(ev: NodeEvent) -> Arc<Shared> {
        Arc::new(Shared {
            ev,
            json: OnceLock::new(),
        })
    }

    /// Its sequence number.
    pub fn seq(&self) -> u64 {
        self.ev.seq
    }

    /// Its type, as in the JSON's `type`.
    pub fn type_name(&self) -> &'static str {
        self.ev.kind.name()
    }

    /// The event as JSON ([`NodeEvent::to_json`]), built once.
    pub fn json(&self) -> &Value {
        self.json.get_or_init(|| self.ev.to_json())
    }
}

/// Events kept for clients that reconnect with `Last-Event-ID`.
pub const BUFFER: usize = 10_000;

/// The bounded buffer of recent events, as JSON.
#[derive(Debug, Default)]
pub struct EventLog {
    recent: VecDeque<Arc<Shared>>,
    /// The sequence number of the newest event (0: none yet).
    pub last_seq: u64,
}

/// What a client that knows up to `since` missed.
#[derive(Debug, Clone)]
pub struct Backlog {
    /// The events after `since` that are still buffered, in order.
    pub events: Vec<Arc<Shared>>,
    /// Events after `since` that are no longer buffered (or were of an earlier run of the
    /// agent): `(first, last)` sequence numbers, if any.
    pub gap: Option<(u64, u64)>,
    /// The newest sequence number.
    pub last_seq: u64,
}

impl EventLog {
    /// Keeps an event.
    pub fn push(&mut self, v: Arc<Shared>) {
        self.last_seq = v.seq();
        self.recent.push_back(v);
        while self.recent.len() > BUFFER {
            self.recent.pop_front();
        }
    }

    /// The events after `since`.
    pub fn since(&self, since: u64) -> Backlog {
        let oldest = self.recent.front().map_or(self.last_seq + 1, |v| v.seq());
        // A client ahead of us saw an earlier run of the agent: everything of this run is new.
        let since = if since > self.last_seq { 0 } else { since };
        let gap = (since + 1 < oldest).then(|| (since + 1, oldest - 1));
        let events = self
            .recent
            .iter()
            .filter(|v| v.seq() > since)
            .cloned()
            .collect();
        Backlog {
            events,
            gap,
            last_seq: self.last_seq,
        }
    }
}

/// Logs an event with its fields: failures and losses at WARN, everything else at INFO
/// (a key change at DEBUG: there are many).
pub fn log(ev: &NodeEvent) {
    let name = ev.kind.name();
    match &ev.kind {
        EventKind::Member(e) => {
            use membership::Event as E;
            match e {
                E::MemberJoined { member }
                | E::MemberLeft { member }
                | E::MemberRecovered { member }
                | E::MemberRestarted { member } => info!(
                    event = name, seq = ev.seq, name = %member.name, id = %member.id,
                    addr = %member.addr, generation = member.generation, "member"
                ),
                E::MemberFailed { member } => warn!(
                    event = name, seq = ev.seq, name = %member.name, id = %member.id,
                    addr = %member.addr, generation = member.generation, "member"
                ),
                E::QuorumLost { quorum } => warn!(
                    event = name,
                    seq = ev.seq,
                    reachable = quorum.reachable_votes,
                    required = quorum.required_votes,
                    "quorum"
                ),
                E::QuorumRegained { quorum } => info!(
                    event = name,
                    seq = ev.seq,
                    reachable = quorum.reachable_votes,
                    required = quorum.required_votes,
                    "quorum"
                ),
                E::GenerationChanged { generation } => {
                    info!(event = name, seq = ev.seq, generation, "identity")
                }
            }
        }
        EventKind::Leader(token) => {
            info!(event = name, seq = ev.seq, fencing_token = ?token, "leader")
        }
        EventKind::CaughtUp => info!(
            event = name,
            seq = ev.seq,
            "caught up with peers: local reads are fresh"
        ),
        EventKind::Storage(Some(why)) => {
            warn!(event = name, seq = ev.seq, reason = %why, "store log")
        }
        EventKind::Storage(None) => info!(event = name, seq = ev.seq, "store log writable again"),
        EventKind::KeyChanged {
            store,
            key,
            version,
            deleted,
        } => tracing::debug!(
            event = name, seq = ev.seq, store = %store, key = %key, version = %version, deleted, "key"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Arc<Shared> {
        Shared::new(NodeEvent {
            seq,
            time_ms: 0,
            kind: node::EventKind::CaughtUp,
        })
    }

    #[test]
    fn a_client_gets_exactly_what_it_missed_or_hears_of_a_gap() {
        let mut log = EventLog::default();
        for s in 1..=BUFFER as u64 + 5 {
            log.push(ev(s));
        }
        let b = log.since(BUFFER as u64);
        assert_eq!(b.events.len(), 5);
        assert_eq!(b.events[0].json()["seq"], BUFFER as u64 + 1);
        assert_eq!(b.events[0].json()["type"], "caught_up");
        assert_eq!(b.gap, None);
        let b = log.since(2);
        assert_eq!(b.gap, Some((3, 5)), "events 3 to 5 fell out of the buffer");
        assert_eq!(b.events.len(), BUFFER);
        let b = log.since(u64::MAX);
        assert_eq!(
            b.gap,
            Some((1, 5)),
            "a client of an earlier run hears of a gap"
        );
        assert!(log.since(BUFFER as u64 + 5).events.is_empty());
    }
}
