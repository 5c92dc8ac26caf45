//! A node's inputs and outputs in the simulation: queue items delivered to it (datagrams,
//! store messages, requests, fsyncs) and everything it asks for executed (datagrams and store
//! messages onto the network, records and snapshots onto its disk, replies, events).

use super::Sim;
use super::clients::{outcome_of, strong_outcome};
use super::queue::What;
use crate::history::Outcome;
use crate::history::StrongOutcome;
use membership::Destination;
use node::PeerMsg;
use node::{Input, Output};
use rand::RngExt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

impl Sim {
    pub(super) fn handle_item(&mut self, what: What) {
        let target = match &what {
            What::Datagram { to, .. } => Some(*to as usize),
            What::Stream { to, .. }
            | What::Request { to, .. }
            | What::StrongRequest { to, .. }
            | What::Flush { node: to, .. } => Some(*to),
            _ => None,
        };
        if let Some(to) = target
            && self.paused(to)
        {
            let at = self.slots[to].paused_until.expect("paused");
            self.push(at, what);
            return;
        }
        let now = self.now;
        match what {
            What::Datagram { to, from, bytes } => {
                let (to, from) = (to as usize, self.slots[from as usize].addr);
                self.delivered += 1;
                self.mix(&[1, to as u64, bytes.len() as u64, now.as_micros() as u64]);
                let bytes = bytes.to_vec();
                self.feed(to, Input::Datagram { from, bytes });
                self.flush_after_input(to);
            }
            What::Stream {
                to,
                incarnation,
                from,
                msg,
            } => {
                if self.slots[to].incarnation != incarnation {
                    return; // the connection died with the process it was open to
                }
                self.delivered += 1;
                self.mix(&[2, to as u64, now.as_micros() as u64]);
                self.frames_received[to] += 1;
                self.feed(to, Input::Frame { from, msg: *msg });
                self.flush_after_input(to);
            }
            What::Request {
                to,
                incarnation,
                op,
            } => {
                self.mix(&[3, to as u64, op as u64, now.as_micros() as u64]);
                if self.slots[to].incarnation != incarnation || !self.is_up(to) {
                    self.complete(op, Outcome::Failed("node down".into()));
                    return;
                }
                self.client_request(to, op);
            }
            What::StrongRequest {
                to,
                incarnation,
                op,
            } => {
                self.mix(&[9, to as u64, op as u64, now.as_micros() as u64]);
                if self.slots[to].incarnation != incarnation || !self.is_up(to) {
                    self.complete_strong(op, StrongOutcome::Failed("node down".into()));
                    return;
                }
                self.strong_request(to, op);
            }
            What::Resume { node } => {
                self.mix(&[4, node as u64, now.as_micros() as u64]);
                self.slots[node].paused_until = None;
                self.refresh_timer(node);
            }
            What::Client { client } => self.client_call(client),
            What::Synced {
                node,
                incarnation,
                sync,
            } => {
                let node = node as usize;
                if self.slots[node].incarnation != incarnation || !self.is_up(node) {
                    return; // the process died before its fsync returned
                }
                self.mix(&[8, node as u64, sync.lsn, now.as_micros() as u64]);
                self.slots[node].disk.synced(sync);
                self.disk_progress(node);
                self.flush_after_input(node);
            }
            What::Flush { node, incarnation } => {
                if self.slots[node].incarnation == incarnation
                    && self.is_up(node)
                    && self.slots[node].flush_due
                {
                    self.mix(&[10, node as u64, now.as_micros() as u64]);
                    self.flush(node);
                }
            }
            What::Start { node } => {
                self.mix(&[7, node as u64, now.as_micros() as u64]);
                if !self.is_up(node) {
                    self.start(node);
                }
            }
        }
    }

    /// Hands node `i` one input at its own clock's time (recorded when the node is being
    /// recorded). The caller flushes.
    pub(super) fn feed(&mut self, i: usize, input: Input) {
        let skew = self.slots[i].skew;
        let (local, wall) = (skew.local(self.now), skew.wall_ms(self.now));
        let Some(n) = self.slots[i].node.as_mut() else {
            return;
        };
        if let Some(r) = self.recording.as_mut().filter(|r| r.node == i && r.live) {
            r.inputs.push((local, wall, input.clone()));
        }
        n.handle(local, wall, input);
    }

    /// After node `i` took an input from outside: executes its outputs at once, or, when inputs
    /// are batched ([`super::SimConfig::batch_inputs`]), within a drawn span unless a flush is
    /// already due (then this input's outputs leave with the earlier ones').
    pub(super) fn flush_after_input(&mut self, i: usize) {
        let Some(span) = self.cfg.batch_inputs else {
            self.flush(i);
            return;
        };
        if self.slots[i].flush_due {
            self.batched_inputs += 1;
            return;
        }
        self.slots[i].flush_due = true;
        let span = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
        let at = self.now + Duration::from_micros(self.rng.random_range(0..=span));
        let incarnation = self.slots[i].incarnation;
        self.push(
            at,
            What::Flush {
                node: i,
                incarnation,
            },
        );
    }

    /// Executes everything node `i` asked for: datagrams and store messages onto the network,
    /// records and snapshots onto its disk, replies to the clients, events into the log.
    pub(super) fn flush(&mut self, i: usize) {
        self.slots[i].flush_due = false;
        loop {
            let Some(node) = self.slots[i].node.as_mut() else {
                self.disarm(i);
                return;
            };
            let outputs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
            if outputs.is_empty() {
                break;
            }
            if let Some(r) = self.recording.as_mut().filter(|r| r.node == i && r.live) {
                r.outputs.extend(outputs.iter().cloned());
            }
            let mut wrote = false;
            for out in outputs {
                match out {
                    Output::Datagram(tx) => self.send_datagram(i, tx),
                    Output::Frame { to, msg, .. } => self.send_frame(i, to, msg),
                    // Streams die with the process they are open to (see `What::Stream`); a
                    // closed connection loses nothing else here.
                    Output::CloseStreams(_) => {}
                    Output::AppendLog(records) => {
                        self.slots[i].disk.append(&records);
                        wrote = true;
                    }
                    Output::WriteSnapshot { through, records } => {
                        self.slots[i].disk.write_snapshot(through, records);
                        wrote = true;
                    }
                    Output::Reply { token, result } => {
                        if self.in_flight.remove(&(i, token)) {
                            let op = token as usize;
                            let outcome = outcome_of(&self.history.ops[op].kind, result);
                            self.complete(op, outcome);
                        }
                    }
                    Output::StrongReply { token, result } => {
                        if self.in_flight_strong.remove(&(i, token)) {
                            self.complete_strong(token as usize, strong_outcome(result));
                        }
                    }
                    Output::Event(ev) => {
                        if let node::EventKind::Member(e) = ev.kind {
                            self.record_event(i, e);
                        }
                    }
                    Output::PersistGeneration(g) => self.slots[i].generation = g,
                    Output::MarkCatchingUp => self.slots[i].disk.marker = true,
                    Output::CaughtUp => {
                        self.slots[i].disk.marker = false;
                        self.note_caught_up(i);
                    }
                    // No simulated client changes the keyring (its rules are the envelope's unit
                    // tests and the agent's rotation e2e).
                    Output::PersistKeyring(_) | Output::KeyringReply { .. } => {}
                }
            }
            if wrote {
                self.disk_progress(i);
            }
        }
        self.note_leader(i);
        self.refresh_timer(i);
    }

    /// Node `i` wrote log records or an fsync returned: tell it how far the disk is, and start an
    /// fsync of what is unsynced unless one is running (group commit: one fsync covers everything
    /// written before it starts).
    pub(super) fn disk_progress(&mut self, i: usize) {
        let now = self.now;
        let disk = &mut self.slots[i].disk;
        let (w, sy) = (disk.written_lsn, disk.synced_lsn);
        let sync = disk.start_sync();
        self.feed(
            i,
            Input::Persisted {
                written: w,
                synced: sy,
            },
        );
        if let Some(sync) = sync {
            let (lo, hi) = self.cfg.fsync;
            let span = hi.saturating_sub(lo).as_micros().max(1) as u64;
            let d = lo + Duration::from_micros(self.rng.random_range(0..span));
            let incarnation = self.slots[i].incarnation;
            self.push(
                now + d,
                What::Synced {
                    node: i as u32,
                    incarnation,
                    sync,
                },
            );
        }
    }

    pub(super) fn send_datagram(&mut self, i: usize, tx: membership::Transmit) {
        self.traffic.datagrams += 1;
        self.traffic.datagram_bytes += tx.bytes.len() as u64;
        let bytes: Rc<[u8]> = Rc::from(tx.bytes);
        match tx.to {
            Destination::Unicast(addr) => {
                if let Some(to) = self.by_addr.get(&addr).copied() {
                    self.route_datagram(i, to, &bytes);
                }
            }
            Destination::Beacon => {
                let dc = self.net.dc_of(i);
                for to in 0..self.slots.len() {
                    if to != i && self.net.dc_of(to) == dc {
                        self.route_datagram(i, to, &bytes);
                    }
                }
            }
        }
    }

    /// A store message on the stream from node `i` to the node at `addr`: ordered per pair of
    /// nodes, lost when the link is cut either way (the connection breaks).
    pub(super) fn send_frame(&mut self, i: usize, addr: SocketAddr, msg: PeerMsg) {
        let Some(to) = self.by_addr.get(&addr).copied() else {
            return;
        };
        self.traffic.stream_msgs += 1;
        self.traffic.stream_bytes += postcard::to_stdvec(&msg).map_or(0, |b| b.len() as u64);
        if !self.net.reaches(i, to) || !self.net.reaches(to, i) {
            return;
        }
        let lat = self.net.latency(&mut self.rng, i, to);
        let tail = self.stream_tail.entry((i, to)).or_default();
        let at = (self.now + lat).max(*tail);
        *tail = at;
        let incarnation = self.slots[to].incarnation;
        let from = self.slots[i].id;
        self.push(
            at,
            What::Stream {
                to,
                incarnation,
                from,
                msg: Box::new(msg),
            },
        );
    }

    pub(super) fn route_datagram(&mut self, from_i: usize, to: usize, bytes: &Rc<[u8]>) {
        let fate = self.net.datagram_fate(&mut self.rng, from_i, to);
        for d in fate.as_slice() {
            let at = self.now + *d;
            self.push(
                at,
                What::Datagram {
                    to: to as u32,
                    from: from_i as u32,
                    bytes: bytes.clone(),
                },
            );
        }
    }
}
