//! Rebuilding an acceptor that lost its state (a wiped or repaired log).
//!
//! An acceptor must never forget a promise or an accept: with its state gone it could accept a
//! lower ballot and let a stale proposer choose over a chosen value. So a node that may have lost
//! its log takes no part in votes until it has merged the states of peers holding a quorum of
//! votes without it: any value chosen was accepted by a quorum, and any promise that mattered was
//! made by a quorum, and each of those quorums meets the peers it merged. It keeps, per key, the
//! highest ballot seen as its promise and the register accepted at the highest ballot, makes that
//! durable, and only then votes again.

use crate::acceptor::AcceptorState;
use crate::core::{CoordCore, Due, Held};
use crate::msg::CoordMsg;
use membership::NodeId;
use std::collections::BTreeSet;

/// A state sync in progress.
#[derive(Debug, Default)]
pub(crate) struct Sync {
    round: u64,
    /// Peers whose states have been merged.
    merged: BTreeSet<NodeId>,
    /// The request of this round is out (to the peers reachable then).
    pub(crate) asked: bool,
    /// Merged enough; waiting for the log.
    draining: bool,
}

impl CoordCore {
    /// Starts the node's acceptor: with `lost`, it abstains from votes until it has rebuilt its
    /// state from peers holding a quorum of votes (see the module documentation).
    pub fn begin(&mut self, lost: bool) {
        if lost {
            self.sync = Some(Sync {
                round: 1,
                ..Sync::default()
            });
            self.ask_for_sync();
        }
    }

    /// Asks every reachable peer not merged yet for its states, once per round.
    pub(crate) fn ask_for_sync(&mut self) {
        let Some(s) = self.sync.as_mut() else { return };
        if s.asked || s.draining {
            return;
        }
        s.asked = true;
        let round = s.round;
        let peers: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|p| !s.merged.contains(p))
            .copied()
            .collect();
        for p in peers {
            self.send(p, CoordMsg::SyncRequest { round });
        }
        let every = self.cfg.round_timeout;
        self.unschedule(Due::Sync);
        self.schedule(every, Due::Sync);
    }

    pub(crate) fn on_sync_request(&mut self, from: NodeId, round: u64) {
        if self.sync.is_some() {
            return; // our own states are not whole either
        }
        let states: Vec<(String, AcceptorState)> = self
            .acceptors
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        self.send(from, CoordMsg::SyncState { round, states });
    }

    pub(crate) fn on_sync_state(
        &mut self,
        from: NodeId,
        round: u64,
        states: Vec<(String, AcceptorState)>,
    ) {
        let me = self.me;
        let Some(s) = self.sync.as_mut() else { return };
        if s.round != round || s.draining || from == me || !s.merged.insert(from) {
            return;
        }
        let merged: Vec<NodeId> = s.merged.iter().copied().collect();
        for (key, theirs) in states {
            let st = self.acceptors.entry(key.clone()).or_default();
            st.promised = st.promised.max(theirs.seen());
            if theirs.accepted > st.accepted {
                st.accepted = theirs.accepted;
                st.register = theirs.register;
                self.accepted_at.insert(key.clone(), self.now);
            }
            self.counter = self.counter.max(st.promised.counter);
            let state = st.clone();
            self.persist(key, state);
        }
        if self.is_quorum(merged.iter()) {
            if let Some(s) = self.sync.as_mut() {
                s.draining = true;
            }
            self.unschedule(Due::Sync);
            self.after_durable(Held::Synced);
        }
    }
}
