//! Simulated clients: each calls one operation at a time on a node the workload picks, and the
//! history records what it asked and what came back.

use super::Sim;
use super::queue::What;
use crate::history::{OpKind, OpRecord, Outcome, StrongOp, StrongOutcome};
use crate::workload::{Next, Workload, WorkloadConfig};
use node::Input;
use store::{Reply, Request, StoreError};

pub(super) struct ClientState {
    pub(super) pending: Option<Pending>,
    /// Set for a lock client (see `locks.rs`).
    pub(super) lock: Option<super::locks::LockRole>,
}

/// The operation a client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// On the object store (an index into the history's `ops`).
    Kv(usize),
    /// On the strong keyspace (an index into the history's `strong`).
    Strong(usize),
}

/// A strong-keyspace answer as the history records it.
pub(super) fn strong_outcome(r: Result<coord::Outcome, coord::CoordError>) -> StrongOutcome {
    match r {
        Ok(o) => StrongOutcome::Done(o),
        Err(coord::CoordError::Indeterminate) => StrongOutcome::Indeterminate("timed out".into()),
        Err(e) => StrongOutcome::Failed(e.code().to_string()),
    }
}

pub(super) fn outcome_of(kind: &OpKind, reply: Result<Reply, StoreError>) -> Outcome {
    match reply {
        Ok(Reply::Written { version }) => Outcome::Written(version),
        Ok(Reply::Value { value, .. }) => Outcome::Read(Some(value)),
        Ok(Reply::Keys { .. }) => Outcome::Failed("unexpected list reply".into()),
        Err(StoreError::NotFound { .. }) if matches!(kind, OpKind::Get) => Outcome::Read(None),
        Err(StoreError::Indeterminate) => Outcome::Indeterminate("round timed out".into()),
        Err(e) => Outcome::Failed(e.code().to_string()),
    }
}

impl Sim {
    /// Client operation `op` reaches node `to`, which is running: it becomes a request.
    pub(super) fn client_request(&mut self, to: usize, op: usize) {
        let rec = &self.history.ops[op];
        let (store, key) = ("default".to_string(), rec.key.clone());
        let consistency = Some(rec.consistency);
        let req = match &rec.kind {
            OpKind::Put(v) => Request::Put {
                store,
                key,
                value: v.clone(),
                ttl: None,
                consistency,
            },
            OpKind::Delete => Request::Delete {
                store,
                key,
                consistency,
            },
            OpKind::Get => Request::Get {
                store,
                key,
                consistency,
            },
        };
        self.in_flight.insert((to, op as u64));
        self.feed(
            to,
            Input::Request {
                token: op as u64,
                req,
            },
        );
        self.flush_after_input(to);
    }

    /// Starts simulated clients (the simulation must run stores).
    pub fn start_clients(&mut self, cfg: WorkloadConfig) {
        assert!(self.cfg.store, "clients need stores: set SimConfig::store");
        let n = cfg.clients;
        let locks = cfg.lock_clients;
        self.workload = Some(Workload::new(cfg));
        self.clients_on = true;
        self.clients = (0..n)
            .map(|_| ClientState {
                pending: None,
                lock: None,
            })
            .collect();
        // Lock clients beside nodes spread over the cluster.
        let nodes = self.slots.len();
        for k in 0..locks {
            let c = n + k;
            let node = (k * nodes / locks.max(1)) % nodes;
            self.clients.push(ClientState {
                pending: None,
                lock: Some(super::locks::LockRole::new(c, node)),
            });
        }
        for c in 0..n + locks {
            let wait = self.workload.as_ref().expect("set").think(&mut self.rng);
            let at = self.now + wait;
            self.push(at, What::Client { client: c });
        }
    }

    /// Clients make no new calls; calls in flight still complete.
    pub fn stop_clients(&mut self) {
        self.clients_on = false;
    }

    /// Number of client operations without an answer yet.
    pub fn pending_ops(&self) -> usize {
        self.clients.iter().filter(|c| c.pending.is_some()).count()
    }

    pub(super) fn client_call(&mut self, client: usize) {
        if !self.clients_on || self.clients[client].pending.is_some() {
            return;
        }
        if self.clients[client].lock.is_some() {
            self.lock_call(client);
            return;
        }
        let n = self.slots.len();
        let next = self
            .workload
            .as_mut()
            .expect("clients started")
            .next(&mut self.rng, client, n);
        let call = match next {
            Next::Kv(call) => call,
            Next::Strong(call) => {
                let op = self.history.strong.len();
                self.history.strong.push(StrongOp {
                    client,
                    node: call.node,
                    key: call.key,
                    change: call.change,
                    invoked: self.now,
                    completed: None,
                    outcome: StrongOutcome::Pending,
                });
                self.clients[client].pending = Some(Pending::Strong(op));
                let incarnation = self.slots[call.node].incarnation;
                let to = call.node;
                self.push(
                    self.now,
                    What::StrongRequest {
                        to,
                        incarnation,
                        op,
                    },
                );
                return;
            }
        };
        let op = self.history.ops.len();
        self.history.ops.push(OpRecord {
            client,
            node: call.node,
            key: call.key,
            kind: call.kind,
            consistency: call.consistency,
            invoked: self.now,
            completed: None,
            outcome: Outcome::Pending,
        });
        self.clients[client].pending = Some(Pending::Kv(op));
        let incarnation = self.slots[call.node].incarnation;
        self.push(
            self.now,
            What::Request {
                to: call.node,
                incarnation,
                op,
            },
        );
    }

    /// Strong operation `op` reaches node `to`, which is running: it becomes a request.
    pub(super) fn strong_request(&mut self, to: usize, op: usize) {
        let rec = &self.history.strong[op];
        let req = coord::Request {
            key: rec.key.clone(),
            change: rec.change.clone(),
        };
        self.in_flight_strong.insert((to, op as u64));
        self.feed(
            to,
            Input::StrongRequest {
                token: op as u64,
                req,
            },
        );
        self.flush_after_input(to);
    }

    pub(super) fn complete_strong(&mut self, op: usize, outcome: StrongOutcome) {
        let rec = &mut self.history.strong[op];
        rec.completed = Some(self.now);
        if let StrongOutcome::Done(o) = &outcome {
            let version = match o {
                coord::Outcome::Written { version } => Some(*version),
                coord::Outcome::Value(r)
                | coord::Outcome::Conflict(r)
                | coord::Outcome::Absent(r) => Some(r.version),
                coord::Outcome::Lock(_) | coord::Outcome::StaleToken { .. } => None,
            };
            let (client, key) = (rec.client, rec.key.clone());
            if let (Some(w), Some(version)) = (self.workload.as_mut(), version) {
                w.saw(client, &key, version);
            }
        }
        let rec = &mut self.history.strong[op];
        rec.outcome = outcome;
        let client = rec.client;
        if self.clients[client].lock.is_some() {
            self.lock_answer(client, op);
            return;
        }
        self.after_answer(client);
    }

    pub(super) fn complete(&mut self, op: usize, outcome: Outcome) {
        let rec = &mut self.history.ops[op];
        rec.completed = Some(self.now);
        rec.outcome = outcome;
        let client = rec.client;
        self.after_answer(client);
    }

    /// The client got its answer: it thinks, then calls again.
    fn after_answer(&mut self, client: usize) {
        self.clients[client].pending = None;
        let wait = self
            .workload
            .as_ref()
            .expect("clients")
            .think(&mut self.rng);
        let at = self.now + wait;
        self.push(at, What::Client { client });
    }
}
