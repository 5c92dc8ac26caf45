//! Several coordination cores on a virtual clock and a message queue that can be cut: the
//! proposer and acceptor rules end to end, without membership or a disk (the log is simulated:
//! states become durable when the test says).

use coord::{
    Ballot, Change, CoordConfig, CoordCore, CoordError, CoordMsg, Expect, Fault, OpId, Outcome,
    Register, Request,
};
use membership::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

struct Net {
    cores: Vec<CoordCore>,
    ids: Vec<NodeId>,
    now: Duration,
    queue: BTreeMap<(Duration, u64), (usize, usize, CoordMsg)>,
    seq: u64,
    cut: BTreeSet<(usize, usize)>,
    replies: BTreeMap<(usize, OpId), Result<Outcome, CoordError>>,
    /// Acceptor states handed to each node's log and not yet durable.
    unsynced: Vec<Vec<u64>>,
    /// Whether the logs sync on their own after every step.
    auto_sync: bool,
    /// Every ballot any proposer sent a prepare with, by node.
    ballots: Vec<BTreeSet<Ballot>>,
    generation: Vec<u64>,
    /// What each node's log holds: key -> state (the last written).
    disk: Vec<BTreeMap<String, coord::AcceptorState>>,
}

fn cfg(n: usize) -> CoordConfig {
    let mut c = CoordConfig::new(n as u32 / 2 + 1);
    c.durable = true;
    c
}

impl Net {
    fn new(n: usize) -> Net {
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId(10 + i as u64)).collect();
        let cores = (0..n)
            .map(|i| CoordCore::new(ids[i], 1, cfg(n), i as u64, Duration::ZERO))
            .collect();
        let mut net = Net {
            cores,
            ids,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            replies: BTreeMap::new(),
            unsynced: vec![Vec::new(); n],
            auto_sync: true,
            ballots: vec![BTreeSet::new(); n],
            generation: vec![1; n],
            disk: vec![BTreeMap::new(); n],
        };
        for i in 0..n {
            net.view(i);
        }
        net
    }

    fn view(&mut self, i: usize) {
        let peers: BTreeMap<NodeId, u32> = (0..self.cores.len())
            .filter(|j| *j != i)
            .map(|j| (self.ids[j], 1))
            .collect();
        let n = self.cores.len() as u32;
        self.cores[i].set_view(peers, true, n);
        self.flush(i);
    }

    fn index(&self, id: NodeId) -> usize {
        self.ids.iter().position(|x| *x == id).expect("known")
    }

    fn flush(&mut self, i: usize) {
        while let Some((seq, key, state)) = self.cores[i].poll_persist() {
            self.unsynced[i].push(seq);
            self.disk[i].insert(key, state);
        }
        if self.auto_sync {
            self.sync(i);
        }
        while let Some((to, msg)) = self.cores[i].poll_send() {
            if let CoordMsg::Prepare { ballot, .. } = &msg {
                self.ballots[i].insert(*ballot);
            }
            let j = self.index(to);
            if self.cut.contains(&(i, j)) {
                continue;
            }
            self.seq += 1;
            self.queue.insert((self.now + MS, self.seq), (i, j, msg));
        }
        while let Some((op, r)) = self.cores[i].poll_reply() {
            self.replies.insert((i, op), r);
        }
    }

    /// Node `i`'s log syncs everything written so far.
    fn sync(&mut self, i: usize) {
        if let Some(last) = self.unsynced[i].drain(..).max() {
            self.cores[i].persisted(last);
            self.flush(i);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let msg = self.queue.keys().next().copied();
            let timer = (0..self.cores.len())
                .filter_map(|i| self.cores[i].poll_timeout().map(|t| (t, i)))
                .min();
            match (msg, timer) {
                (Some(k), t) if t.is_none_or(|(t, _)| k.0 <= t) => {
                    if k.0 > until {
                        break;
                    }
                    let (from, to, m) = self.queue.remove(&k).expect("peeked");
                    self.now = self.now.max(k.0);
                    let id = self.ids[from];
                    self.cores[to].handle_message(self.now, id, m);
                    self.flush(to);
                }
                (Some(_), None) => unreachable!("the first arm takes a message without a timer"),
                (_, Some((t, i))) => {
                    if t > until {
                        break;
                    }
                    self.now = self.now.max(t);
                    self.cores[i].handle_timeout(self.now);
                    self.flush(i);
                }
                (None, None) => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn request(&mut self, i: usize, key: &str, change: Change) -> OpId {
        let op = self.cores[i].request(
            self.now,
            Request {
                key: key.into(),
                change,
            },
        );
        self.flush(i);
        op
    }

    fn call(&mut self, i: usize, key: &str, change: Change) -> Result<Outcome, CoordError> {
        let op = self.request(i, key, change);
        for _ in 0..5000 {
            if let Some(r) = self.replies.remove(&(i, op)) {
                return r;
            }
            self.run_for(MS);
        }
        panic!("no reply for op {op} at node {i}");
    }

    fn isolate(&mut self, i: usize) {
        for j in 0..self.cores.len() {
            if j != i {
                self.cut.insert((i, j));
                self.cut.insert((j, i));
            }
        }
    }

    /// Restarts node `i` from its log, in the next generation (or the same, to show the fault),
    /// `lost` when the log was wiped.
    fn restart(&mut self, i: usize, wiped: bool, faults: &[Fault]) {
        self.generation[i] += 1;
        let n = self.cores.len();
        let mut c = CoordCore::new(
            self.ids[i],
            self.generation[i],
            cfg(n),
            99 + i as u64,
            self.now,
        );
        for f in faults {
            c.inject_fault(*f);
        }
        if wiped {
            self.disk[i].clear();
        }
        for (k, s) in &self.disk[i] {
            c.restore(k.clone(), s.clone());
        }
        c.begin(wiped);
        self.cores[i] = c;
        self.unsynced[i].clear();
        self.queue.retain(|_, (from, to, _)| *from != i && *to != i);
        self.view(i);
    }
}

fn put(v: &str, expect: Expect) -> Change {
    Change::Put {
        value: v.as_bytes().to_vec(),
        expect,
    }
}

fn value(r: Result<Outcome, CoordError>) -> Register {
    match r {
        Ok(Outcome::Value(reg)) => reg,
        other => panic!("expected a value, got {other:?}"),
    }
}

#[test]
fn compare_and_set_applies_only_on_the_expected_version() {
    let mut net = Net::new(3);
    assert_eq!(
        net.call(0, "k", put("a", Expect::Absent)),
        Ok(Outcome::Written { version: 1 })
    );
    assert_eq!(
        net.call(1, "k", put("b", Expect::Absent)),
        Ok(Outcome::Conflict(Register {
            version: 1,
            value: Some(b"a".to_vec()),
            ..Register::default()
        })),
        "create refused: the key exists"
    );
    assert_eq!(
        net.call(2, "k", put("b", Expect::Version(1))),
        Ok(Outcome::Written { version: 2 })
    );
    assert_eq!(
        net.call(0, "k", put("c", Expect::Version(1)))
            .map(|o| matches!(o, Outcome::Conflict(_))),
        Ok(true),
        "a stale version is refused"
    );
    let r = value(net.call(1, "k", Change::Read));
    assert_eq!((r.version, r.value), (2, Some(b"b".to_vec())));
    assert_eq!(
        net.call(0, "absent", put("x", Expect::Version(3)))
            .map(|o| matches!(o, Outcome::Conflict(_))),
        Ok(true),
        "compare-and-set on a missing key"
    );
}

#[test]
fn two_proposers_racing_on_one_version_never_both_win() {
    for round in 0..20u64 {
        let mut net = Net::new(5);
        net.call(0, "k", put("v0", Expect::Absent)).unwrap();
        let a = net.request(1 + (round as usize % 2), "k", put("a", Expect::Version(1)));
        let b = net.request(3 + (round as usize % 2), "k", put("b", Expect::Version(1)));
        let (ia, ib) = (1 + (round as usize % 2), 3 + (round as usize % 2));
        net.run_for(3000 * MS);
        let ra = net.replies.remove(&(ia, a)).expect("a answered");
        let rb = net.replies.remove(&(ib, b)).expect("b answered");
        let won = |r: &Result<Outcome, CoordError>| matches!(r, Ok(Outcome::Written { .. }));
        assert!(
            !(won(&ra) && won(&rb)),
            "round {round}: both won: {ra:?} {rb:?}"
        );
        let reg = value(net.call(0, "k", Change::Read));
        let winners = usize::from(won(&ra)) + usize::from(won(&rb));
        assert_eq!(
            reg.version,
            1 + winners as u64,
            "round {round}: {ra:?} {rb:?}"
        );
    }
}

#[test]
fn a_minority_fails_and_applies_nothing() {
    let mut net = Net::new(3);
    net.call(0, "k", put("a", Expect::Any)).unwrap();
    net.isolate(2);
    // Node 2's view still says it has quorum (membership has not noticed): phase 1 cannot
    // complete, so nothing is applied.
    assert!(matches!(
        net.call(2, "k", put("minority", Expect::Any)),
        Err(CoordError::NoQuorum { .. })
    ));
    net.cut.clear();
    let r = value(net.call(0, "k", Change::Read));
    assert_eq!(
        r.value,
        Some(b"a".to_vec()),
        "the minority's write took effect"
    );
    // A view without quorum fails at once.
    net.cores[1].set_view(BTreeMap::new(), false, 1);
    let op = net.request(1, "k", Change::Read);
    assert!(matches!(
        net.replies.remove(&(1, op)),
        Some(Err(CoordError::NoQuorum { .. }))
    ));
}

#[test]
fn acceptors_answer_only_once_their_state_is_durable() {
    let mut net = Net::new(3);
    net.auto_sync = false;
    let op = net.request(0, "k", put("a", Expect::Any));
    net.run_for(50 * MS);
    assert!(net.replies.is_empty(), "answered before any log synced");
    assert!(
        net.queue.is_empty(),
        "promises left before the promise was durable"
    );
    for i in 0..3 {
        net.sync(i);
    }
    net.run_for(5 * MS);
    for i in 0..3 {
        net.sync(i);
    }
    net.run_for(5 * MS);
    assert_eq!(
        net.replies.remove(&(0, op)),
        Some(Ok(Outcome::Written { version: 1 }))
    );
}

#[test]
fn a_restarted_node_never_reuses_a_ballot_but_the_fault_does() {
    for (faults, reuse) in [(vec![], false), (vec![Fault::ReuseBallots], true)] {
        let mut net = Net::new(3);
        for f in &faults {
            net.cores[0].inject_fault(*f);
        }
        net.call(0, "k", put("a", Expect::Any)).unwrap();
        let before = net.ballots[0].clone();
        net.restart(0, false, &faults);
        net.ballots[0].clear();
        // Another key: the acceptors know no higher ballot for it, so the counter starts low.
        net.call(0, "other", put("b", Expect::Any)).unwrap();
        let reused = net.ballots[0].intersection(&before).count() > 0;
        assert_eq!(
            reused, reuse,
            "faults {faults:?}: {before:?} then {:?}",
            net.ballots[0]
        );
    }
}

#[test]
fn a_conflict_makes_the_proposer_jump_past_the_higher_ballot() {
    let mut net = Net::new(3);
    for _ in 0..5 {
        net.call(1, "k", put("x", Expect::Any)).unwrap();
    }
    let high = net.ballots[1].iter().max().copied().unwrap();
    // Node 0 has seen nothing of node 1's ballots on this key... but its acceptor has: its
    // first prepare is refused or its counter already jumped; either way it wins with a higher
    // ballot.
    net.call(0, "k", put("y", Expect::Any)).unwrap();
    let mine = net.ballots[0].iter().max().copied().unwrap();
    assert!(mine > high, "{mine} after {high}");
}

#[test]
fn a_wiped_acceptor_abstains_until_it_has_rebuilt_its_state_from_a_quorum() {
    let mut net = Net::new(3);
    net.call(0, "k", put("chosen", Expect::Any)).unwrap();
    net.restart(2, true, &[]);
    assert!(net.cores[2].syncing());
    // With node 1 unreachable, node 2 cannot rebuild (node 0 alone is not a quorum of others)
    // and must not vote: node 0 and node 2 together would otherwise be a quorum that forgot.
    net.isolate(1);
    let r = net.call(0, "k", Change::Read);
    assert!(
        matches!(r, Err(CoordError::NoQuorum { .. })),
        "a quorum formed with a wiped acceptor: {r:?}"
    );
    assert!(net.cores[2].syncing());
    net.cut.clear();
    net.run_for(3000 * MS);
    assert!(
        !net.cores[2].syncing(),
        "rebuilt once a quorum of others answered"
    );
    net.isolate(1);
    let r = value(net.call(0, "k", Change::Read));
    assert_eq!(r.value, Some(b"chosen".to_vec()));
}

#[test]
fn bad_requests_are_refused_with_their_codes_and_change_nothing() {
    let mut net = Net::new(3);
    let big = vec![0u8; (1 << 20) + 1];
    let e = net
        .call(
            0,
            "k",
            Change::Put {
                value: big,
                expect: Expect::Any,
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "too_large");
    assert_eq!(
        net.call(0, "", Change::Read).unwrap_err().code(),
        "bad_request"
    );
    let long = "x".repeat(coord::MAX_KEY_BYTES + 1);
    assert_eq!(
        net.call(0, &long, Change::Read).unwrap_err().code(),
        "bad_request"
    );
    assert!(
        net.cores.iter().all(|c| c.is_empty()),
        "an acceptor state was made"
    );
}

mod locks {
    use super::*;
    use coord::{LockOp, LockOutcome};

    const S: Duration = Duration::from_secs(1);

    fn acquire(owner: &str) -> Change {
        Change::Lock(LockOp::Acquire {
            owner: owner.into(),
            ttl: 5 * S,
            lock_delay: S,
        })
    }

    fn lock(r: Result<Outcome, CoordError>) -> LockOutcome {
        match r {
            Ok(Outcome::Lock(l)) => l,
            other => panic!("expected a lock outcome, got {other:?}"),
        }
    }

    #[test]
    fn a_lease_runs_out_by_the_grantors_clocks_and_the_next_holder_gets_the_next_term() {
        let mut net = Net::new(3);
        let LockOutcome::Holding { term, act_for, .. } =
            lock(net.call(0, "#lock/job", acquire("a")))
        else {
            panic!("a took the free lock")
        };
        assert_eq!(term, 1);
        assert!(act_for < 5 * S && act_for > 4 * S, "acts for {act_for:?}");
        // b keeps asking; its failed acquires are written back without restarting the lease.
        let t0 = net.now;
        let taken = loop {
            match lock(net.call(1, "#lock/job", acquire("b"))) {
                LockOutcome::Busy { holder, term, .. } => {
                    assert_eq!((holder.as_str(), term), ("a", 1));
                    net.run_for(100 * MS);
                }
                LockOutcome::Holding { term, .. } => break (net.now - t0, term),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            taken.1, 2,
            "the fencing token grows with the change of holder"
        );
        assert!(
            taken.0 >= 6 * S && taken.0 < 6 * S + 500 * MS,
            "taken over after ttl + lock delay, not before and not much later: {:?}",
            taken.0
        );
        // a's renew comes too late: it lost the lock and learns who has it.
        let renew = Change::Lock(LockOp::Renew {
            owner: "a".into(),
            term: 1,
        });
        assert_eq!(
            lock(net.call(2, "#lock/job", renew)),
            LockOutcome::Lost {
                holder: Some("b".into()),
                term: 2
            }
        );
    }

    #[test]
    fn a_renewing_holder_keeps_the_lock_and_a_release_frees_it_at_once() {
        let mut net = Net::new(3);
        lock(net.call(0, "#lock/job", acquire("a")));
        for _ in 0..10 {
            net.run_for(1500 * MS);
            let renew = Change::Lock(LockOp::Renew {
                owner: "a".into(),
                term: 1,
            });
            assert!(matches!(
                lock(net.call(2, "#lock/job", renew)),
                LockOutcome::Holding { term: 1, .. }
            ));
            assert!(matches!(
                lock(net.call(1, "#lock/job", acquire("b"))),
                LockOutcome::Busy { .. }
            ));
        }
        let release = Change::Lock(LockOp::Release {
            owner: "a".into(),
            term: 1,
        });
        assert_eq!(
            lock(net.call(0, "#lock/job", release)),
            LockOutcome::Released { term: 1 }
        );
        assert!(matches!(
            lock(net.call(1, "#lock/job", acquire("b"))),
            LockOutcome::Holding { term: 2, .. }
        ));
    }

    #[test]
    fn a_minority_never_acquires() {
        let mut net = Net::new(3);
        net.isolate(2);
        assert!(matches!(
            net.call(2, "#lock/job", acquire("m")),
            Err(CoordError::NoQuorum { .. })
        ));
        net.cut.clear();
        let st = lock(net.call(0, "#lock/job", Change::Lock(LockOp::Inspect)));
        assert!(
            matches!(&st, LockOutcome::State { state, .. } if state.holder.is_none()),
            "{st:?}"
        );
    }

    #[test]
    fn lock_arguments_out_of_range_are_refused() {
        let mut net = Net::new(3);
        let bad = |ttl, delay, owner: &str| {
            Change::Lock(LockOp::Acquire {
                owner: owner.into(),
                ttl,
                lock_delay: delay,
            })
        };
        for change in [
            bad(Duration::from_millis(500), S, "a"),
            bad(Duration::from_secs(25 * 3600), S, "a"),
            bad(5 * S, Duration::from_secs(7200), "a"),
            bad(5 * S, S, ""),
        ] {
            let e = net.call(0, "#lock/job", change).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{e}");
        }
        assert!(
            net.cores.iter().all(|c| c.is_empty()),
            "nothing was proposed"
        );
    }
}

/// A read whose accept loses to a racing proposer tries again rather than answering
/// `indeterminate`: its accept only writes back the register it read, so nothing can be applied
/// twice (an application asking who holds a lock while the holder renews must get an answer).
/// Writes racing the same key may still end `indeterminate`; this test also shows the race
/// reaches a read's accept phase.
#[test]
fn a_read_that_loses_its_accept_to_a_racing_writer_reads_again() {
    reads_racing_writers(Change::Read, |o| matches!(o, Outcome::Value(_)));
    // The leader and a lock's holder are read this way (`GET /v1/members`, `/v1/leader`).
    reads_racing_writers(Change::Lock(coord::LockOp::Inspect), |o| {
        matches!(o, Outcome::Lock(coord::LockOutcome::State { .. }))
    });
}

fn reads_racing_writers(read: Change, answered: fn(&Outcome) -> bool) {
    let mut net = Net::new(3);
    net.call(0, "k", put("v0", Expect::Any)).unwrap();
    let mut retried = 0;
    for round in 0..200 {
        let r = net.request(0, "k", read.clone());
        let attempts_before = net.ballots[0].len();
        // The writers start while the read is in its first or second phase.
        net.run_for(MS * (round % 4));
        let w1 = net.request(1, "k", put(&format!("a{round}"), Expect::Any));
        let w2 = net.request(2, "k", put(&format!("b{round}"), Expect::Any));
        for _ in 0..5000 {
            if [(0, r), (1, w1), (2, w2)]
                .iter()
                .all(|k| net.replies.contains_key(k))
            {
                break;
            }
            net.run_for(MS);
        }
        retried += usize::from(net.ballots[0].len() > attempts_before);
        match net.replies.remove(&(0, r)).expect("the read was answered") {
            Ok(o) if answered(&o) => {}
            other => panic!("round {round}: {read:?} answered {other:?}"),
        }
        net.replies.clear();
    }
    assert!(
        retried > 0,
        "no read ever had to try again: the race proves nothing"
    );
}
