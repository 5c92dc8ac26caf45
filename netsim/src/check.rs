//! Checkers: each judges one guarantee from the history, the event log, the network's record and
//! the replicas, and says which operation or event broke it.

use crate::history::{OpKind, OpRecord, Outcome};
use crate::linearizability::{self, Action, LinOp, LinResult};
use crate::sim::{Seen, Sim, WorldFault};
use membership::{Event, MemberState};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use store::{Consistency, Entry};

/// One checker's judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The guarantee checked.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What broke it (or a short summary when it held).
    pub detail: String,
}

impl Verdict {
    pub(crate) fn from(name: &'static str, violations: Vec<String>, summary: String) -> Self {
        let ok = violations.is_empty();
        let detail = if ok {
            summary
        } else {
            let more = violations.len().saturating_sub(3);
            let mut d = violations
                .into_iter()
                .take(3)
                .collect::<Vec<_>>()
                .join("; ");
            if more > 0 {
                d.push_str(&format!("; and {more} more"));
            }
            d
        };
        Verdict { name, ok, detail }
    }
}

/// Stores are named `default` in the simulation.
const STORE: &str = "default";

/// The join of every running replica's entry for `key` (what the cluster converges to).
fn final_entry(sim: &Sim, key: &str) -> Option<Entry> {
    sim.running()
        .into_iter()
        .filter_map(|i| sim.store(i))
        .filter_map(|s| {
            s.replica()
                .store(STORE)
                .and_then(|m| m.get(key))
                .map(|e| e.to_entry())
        })
        .max_by_key(|e| e.version)
}

fn describe(op: &OpRecord, i: usize) -> String {
    let what = match &op.kind {
        OpKind::Put(v) => format!("put {}={}", op.key, String::from_utf8_lossy(v)),
        OpKind::Delete => format!("delete {}", op.key),
        OpKind::Get => format!("get {}", op.key),
    };
    format!(
        "op #{i} ({what} via node {} at {:.3} s, {:?})",
        op.node,
        op.invoked.as_secs_f64(),
        op.outcome
    )
}

fn quorum_keys(sim: &Sim) -> Vec<String> {
    let mut keys: Vec<String> = sim
        .history()
        .ops
        .iter()
        .filter(|o| o.consistency == Consistency::Quorum)
        .map(|o| o.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// No acknowledged quorum write is lost: for every key, the value the replicas hold in the end
/// was written by an operation that did not complete before an acknowledged write began (else
/// that later write was lost), and comes from some write at all.
pub fn no_acknowledged_write_lost(sim: &Sim) -> Verdict {
    let ops = &sim.history().ops;
    let mut violations = Vec::new();
    let mut acked = 0;
    for key in quorum_keys(sim) {
        let fin = final_entry(sim, &key);
        let on_key: Vec<usize> = (0..ops.len())
            .filter(|i| ops[*i].key == key && ops[*i].is_write())
            .collect();
        // Which operations could have produced the final entry.
        let candidates: Vec<usize> = match &fin {
            None => vec![],
            Some(e) => match &e.value {
                Some(v) => on_key
                    .iter()
                    .copied()
                    .filter(|i| matches!(&ops[*i].kind, OpKind::Put(w) if w == v))
                    .collect(),
                None => on_key
                    .iter()
                    .copied()
                    .filter(|i| ops[*i].kind == OpKind::Delete)
                    .filter(|i| match &ops[*i].outcome {
                        Outcome::Written(v) => *v == e.version,
                        o => o.may_have_taken_effect(),
                    })
                    .collect(),
            },
        };
        if let Some(e) = &fin
            && candidates.is_empty()
        {
            violations.push(format!(
                "key {key}: replicas hold version {} that no operation wrote",
                e.version
            ));
            continue;
        }
        for w in on_key.iter().copied() {
            let Outcome::Written(_) = ops[w].outcome else {
                continue;
            };
            acked += 1;
            let superseded_by_later = candidates.iter().any(|c| {
                *c == w
                    || !matches!(ops[*c].outcome, Outcome::Written(_))
                    || ops[*c].completed.is_none_or(|t| t >= ops[w].invoked)
            });
            if !superseded_by_later {
                let holder = candidates
                    .first()
                    .map_or("nothing".to_string(), |c| describe(&ops[*c], *c));
                violations.push(format!(
                    "key {key}: acknowledged {} is lost; replicas hold {holder}",
                    describe(&ops[w], w)
                ));
            }
        }
    }
    Verdict::from(
        "no acknowledged write lost",
        violations,
        format!("{acked} acknowledged quorum writes, none lost"),
    )
}

/// No quorum write coordinated by a node that could not reach a quorum (by the network's record:
/// at no moment of the operation, or of the second before it, did it reach enough nodes) is
/// acknowledged or takes effect.
pub fn no_minority_write_takes_effect(sim: &Sim) -> Verdict {
    let ops = &sim.history().ops;
    let required = sim.store_config().required_votes as usize;
    let now = sim.now();
    // Every value visible anywhere: replicas now, and every read.
    let mut seen_values: HashMap<Vec<u8>, String> = HashMap::new();
    for i in sim.running() {
        if let Some(m) = sim.store(i).and_then(|s| s.replica().store(STORE)) {
            for (k, e) in m.iter() {
                if let Some(v) = e.value() {
                    seen_values.insert(v.to_vec(), format!("held by node {i} under {k}"));
                }
            }
        }
    }
    for (i, o) in ops.iter().enumerate() {
        if let Outcome::Read(Some(v)) = &o.outcome {
            seen_values
                .entry(v.clone())
                .or_insert_with(|| format!("read by op #{i}"));
        }
    }
    let mut violations = Vec::new();
    let mut isolated = 0;
    for (i, o) in ops.iter().enumerate() {
        if !o.is_write() || o.consistency != Consistency::Quorum {
            continue;
        }
        let from = o.invoked.saturating_sub(Duration::from_secs(1));
        let to = o.completed.unwrap_or(now);
        let reached = sim.net.ever_reachable_from(o.node, from, to);
        // By the rule the cluster runs with: a count of votes, or a majority of datacenters
        // each with a majority of its votes.
        if sim.is_quorum(&reached) {
            continue;
        }
        let reach = describe_reach(sim, &reached, required);
        isolated += 1;
        if matches!(o.outcome, Outcome::Written(_)) {
            violations.push(format!(
                "{} was acknowledged while its node reached {reach}",
                describe(o, i)
            ));
        } else if let OpKind::Put(v) = &o.kind
            && let Some(where_) = seen_values.get(v)
        {
            violations.push(format!(
                "{} took effect ({where_}) while its node reached {reach}",
                describe(o, i)
            ));
        }
    }
    Verdict::from(
        "no minority write takes effect",
        violations,
        format!("{isolated} quorum writes tried from a minority, none took effect"),
    )
}

/// What a node reached, for a violation's message: nodes of the required votes, or datacenters.
pub fn describe_reach(sim: &Sim, reached: &[usize], required: usize) -> String {
    if sim.config().quorum_by_datacenter {
        let mut dcs: Vec<String> = reached.iter().map(|i| sim.dc_name(*i)).collect();
        dcs.sort();
        dcs.dedup();
        format!(
            "nodes {reached:?} in {dcs:?}, no majority of datacenters with a majority of their votes"
        )
    } else {
        format!("{} of {required} required", reached.len())
    }
}

/// Quorum reads and writes are linearizable per key (Wing-Gong-Lowe search; indeterminate
/// writes may take effect or not).
pub fn linearizable(sim: &Sim) -> Verdict {
    let ops = &sim.history().ops;
    let mut violations = Vec::new();
    let mut checked = 0;
    for key in quorum_keys(sim) {
        let mut ids: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut id_of = |v: &Vec<u8>| {
            let n = ids.len() as u32;
            *ids.entry(v.clone()).or_insert(n)
        };
        let mut lin = Vec::new();
        let mut index = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            if o.key != key || o.consistency != Consistency::Quorum {
                continue;
            }
            let (action, completed) = match (&o.kind, &o.outcome) {
                (OpKind::Put(v), Outcome::Written(_)) => {
                    (Action::Write(Some(id_of(v))), o.completed)
                }
                (OpKind::Put(v), out) if out.may_have_taken_effect() => {
                    (Action::Write(Some(id_of(v))), None)
                }
                (OpKind::Delete, Outcome::Written(_)) => (Action::Write(None), o.completed),
                (OpKind::Delete, out) if out.may_have_taken_effect() => (Action::Write(None), None),
                (OpKind::Get, Outcome::Read(v)) => {
                    (Action::Read(v.as_ref().map(&mut id_of)), o.completed)
                }
                _ => continue,
            };
            lin.push(LinOp {
                invoked: o.invoked,
                completed,
                action,
            });
            index.push(i);
        }
        checked += lin.len();
        match linearizability::check(&lin, 2_000_000) {
            LinResult::Linearizable => {}
            LinResult::NotLinearizable { stuck_at } => {
                let at = index
                    .get(stuck_at)
                    .map_or("?".to_string(), |i| describe(&ops[*i], *i));
                violations.push(format!(
                    "key {key}: {} operations are not linearizable (search stuck at {at})",
                    lin.len()
                ));
            }
            LinResult::TooLarge => violations.push(format!(
                "key {key}: search over {} operations exceeded its budget",
                lin.len()
            )),
        }
    }
    Verdict::from(
        "quorum operations linearizable",
        violations,
        format!("{checked} quorum operations checked"),
    )
}

/// Every running replica holds the same entries.
pub fn replicas_identical(sim: &Sim) -> Verdict {
    let mut hashes: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in sim.running() {
        if let Some(s) = sim.store(i) {
            let h = s.replica().store(STORE).map_or(0, |m| m.summary_hash());
            hashes.entry(h).or_default().push(i);
        }
    }
    let violations = if hashes.len() > 1 {
        vec![format!(
            "replicas differ: {}",
            hashes
                .iter()
                .map(|(h, nodes)| format!("{h:016x} on {nodes:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )]
    } else {
        vec![]
    };
    Verdict::from(
        "replicas identical",
        violations,
        "every running replica holds the same entries".into(),
    )
}

/// True when replicas are identical (for waiting on convergence).
pub fn converged(sim: &Sim) -> bool {
    replicas_identical(sim).ok
}

/// No member is declared failed without a real fault near it: within `window` before the
/// declaration, the subject or the viewer crashed, restarted, left or paused, or the subject
/// was cut off from some node.
pub fn no_false_failures(sim: &Sim, window: Duration) -> Verdict {
    let mut violations = Vec::new();
    let mut failures = 0;
    let n = sim.len();
    for l in sim.log() {
        let Event::MemberFailed { member } = &l.event else {
            continue;
        };
        failures += 1;
        let Some(s) = sim.index_of(member.id) else {
            continue;
        };
        let from = l.at.saturating_sub(window);
        let touched = |i: usize| {
            sim.world_faults().iter().any(|(t, f)| {
                *t >= from
                    && *t <= l.at
                    && matches!(f, WorldFault::Crash(x) | WorldFault::Restart(x)
                        | WorldFault::Leave(x) | WorldFault::Pause(x, _) if *x == i)
            }) || sim.world_faults().iter().any(|(t, f)| {
                // A pause that was still going on at the start of the window.
                matches!(f, WorldFault::Pause(x, d) if *x == i && *t < from && *t + *d >= from)
            })
        };
        let cut_off = (0..n).any(|j| j != s && sim.net.was_disconnected(s, j, from, l.at));
        if !(touched(s) || touched(l.node) || cut_off) {
            violations.push(format!(
                "node {} declared node {s} failed at {:.3} s with no fault near it",
                l.node,
                l.at.as_secs_f64()
            ));
        }
    }
    Verdict::from(
        "no false failures",
        violations,
        format!("{failures} failure reports, each explained by a real fault"),
    )
}

/// Every running node knows the metadata (name, datacenter) of every node.
pub fn metadata_everywhere(sim: &Sim) -> Verdict {
    let mut violations = Vec::new();
    let n = sim.len();
    for v in sim.running() {
        let core = sim.core(v).expect("running");
        let members = core.members();
        let unnamed: Vec<usize> = members
            .iter()
            .filter(|m| m.name.is_empty() || m.datacenter.is_empty())
            .filter_map(|m| sim.index_of(m.id))
            .collect();
        if core.known_metadata() < n || !unnamed.is_empty() {
            violations.push(format!(
                "node {v} holds {} of {n} metadata records; unnamed: {unnamed:?}",
                core.known_metadata()
            ));
        }
    }
    Verdict::from(
        "metadata known everywhere",
        violations,
        format!("every running node knows all {n} records"),
    )
}

/// The member events each node emitted add up to the member list it reports (a suspect counts
/// as alive: suspicion is not an event).
pub fn events_match_members(sim: &Sim) -> Verdict {
    let mut violations = Vec::new();
    for v in sim.running() {
        for m in sim.core(v).expect("running").members() {
            if m.is_self {
                continue;
            }
            let Some(s) = sim.index_of(m.id) else {
                continue;
            };
            let listed = match m.state {
                MemberState::Alive | MemberState::Suspect => Seen::Alive,
                MemberState::Failed => Seen::Failed,
                MemberState::Left => Seen::Left,
            };
            let by_events = sim.seen_by_events(v, s);
            if listed != by_events {
                violations.push(format!(
                    "node {v} lists node {s} as {:?} but its events say {by_events:?}",
                    m.state
                ));
            }
        }
    }
    Verdict::from(
        "events match member lists",
        violations,
        "every node's events add up to its member list".into(),
    )
}

/// A node that starts catches up before it calls itself current: when its store stopped
/// reporting `catching_up`, it held every quorum write acknowledged before it started; and every
/// node running at the end has caught up.
pub fn caught_up_means_current(sim: &Sim) -> Verdict {
    let mut violations = Vec::new();
    let mut longest = Duration::ZERO;
    let records = sim.catch_ups();
    for r in records {
        match r.ended {
            Some(end) => {
                longest = longest.max(end - r.began);
                if !r.missing.is_empty() {
                    violations.push(format!(
                        "node {} called itself current at {:.3} s (started {:.3} s) lacking {} \
                         acknowledged writes: {}",
                        r.node,
                        end.as_secs_f64(),
                        r.began.as_secs_f64(),
                        r.missing.len(),
                        r.missing
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            None if sim.is_up(r.node) => violations.push(format!(
                "node {} started at {:.3} s and is still catching up at the end",
                r.node,
                r.began.as_secs_f64()
            )),
            None => {} // crashed while catching up; its next start has its own record
        }
    }
    Verdict::from(
        "caught up means current",
        violations,
        format!(
            "{} catch-ups, each current when it cleared; longest {:.3} s",
            records.len(),
            longest.as_secs_f64()
        ),
    )
}
