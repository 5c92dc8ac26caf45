//! The checker of the strong keyspace: compare-and-set histories are linearizable per key.
//!
//! A strong key's version grows by exactly one on every change, and every value written is
//! unique, so a linearization exists exactly when the versions line up: each version is made by
//! one write at most and holds one value; a write made version n only if its condition held at
//! n - 1; a condition reported as failed did not hold at the version it saw; every version seen
//! was made by a write that may have taken effect (never by one that failed); and real time is
//! respected: an operation that began after another ended sees that one's version or a later
//! one, and a write that began after another ended makes a later version. The order of the
//! versions is then the linearization.

use crate::check::Verdict;
use crate::history::{StrongOp, StrongOutcome};
use crate::sim::Sim;
use coord::{Change, Expect, Outcome, Register};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What one completed operation shows about its key: the version it made (a write) or saw.
#[derive(Debug, Clone)]
struct Point {
    op: usize,
    version: u64,
    made: bool,
}

fn describe(o: &StrongOp, i: usize) -> String {
    let what = match &o.change {
        Change::Read => "read".to_string(),
        Change::Put { value, expect } => {
            format!(
                "put {}={} {expect:?}",
                o.key,
                String::from_utf8_lossy(value)
            )
        }
        Change::Delete { expect } => format!("delete {} {expect:?}", o.key),
        Change::Lock(op) => format!("lock {} {op:?}", o.key),
        Change::Fenced {
            lock,
            token,
            change,
        } => format!("fenced ({lock}:{token}) {change:?}"),
    };
    format!(
        "op #{i} ({what} on node {}, {:.3}-{} s: {:?})",
        o.node,
        o.invoked.as_secs_f64(),
        o.completed
            .map_or("pending".to_string(), |t| format!("{:.3}", t.as_secs_f64())),
        o.outcome
    )
}

/// The change a fenced change wraps (or the change itself).
fn unfenced(c: &Change) -> &Change {
    match c {
        Change::Fenced { change, .. } => unfenced(change),
        other => other,
    }
}

fn holds(expect: Expect, r: &Register) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Version(v) => r.value.is_some() && r.version == v,
        Expect::Absent => r.value.is_none(),
    }
}

/// Strong-keyspace histories are linearizable per key (see the module documentation).
pub fn strong_linearizable(sim: &Sim) -> Verdict {
    let ops = &sim.history().strong;
    let mut violations = Vec::new();
    let keys: BTreeSet<&String> = ops.iter().map(|o| &o.key).collect();
    let mut checked = 0;
    for key in keys {
        // Locks are registers too, but their changes are checked by the lock checker.
        let on_key: Vec<usize> = (0..ops.len())
            .filter(|i| &ops[*i].key == key && !matches!(ops[*i].change, Change::Lock(_)))
            .collect();
        checked += on_key.len();
        check_key(ops, &on_key, &mut violations);
    }
    Verdict::from(
        "strong operations linearizable",
        violations,
        format!("{checked} strong-keyspace operations checked"),
    )
}

fn check_key(ops: &[StrongOp], on_key: &[usize], violations: &mut Vec<String>) {
    // The register at each version, from writes that made it and operations that saw it.
    let mut at: BTreeMap<u64, (Option<Vec<u8>>, usize)> = BTreeMap::new();
    let mut made_by: BTreeMap<u64, usize> = BTreeMap::new();
    let mut points = Vec::new();
    let mut note = |version: u64,
                    value: Option<Vec<u8>>,
                    i: usize,
                    violations: &mut Vec<String>| match at.get(&version) {
        Some((v, j)) if *v != value => violations.push(format!(
            "version {version} of {} holds two values: {} says {:?}, {} says {:?}",
            ops[i].key,
            describe(&ops[*j], *j),
            v.as_deref().map(String::from_utf8_lossy),
            describe(&ops[i], i),
            value.as_deref().map(String::from_utf8_lossy)
        )),
        Some(_) => {}
        None => {
            at.insert(version, (value, i));
        }
    };
    for &i in on_key {
        let o = &ops[i];
        let StrongOutcome::Done(outcome) = &o.outcome else {
            continue;
        };
        match (outcome, &o.change) {
            (Outcome::Written { version }, change) => {
                let value = match unfenced(change) {
                    Change::Put { value, .. } => Some(value.clone()),
                    _ => None,
                };
                if let Some(j) = made_by.insert(*version, i) {
                    violations.push(format!(
                        "two writes made version {version} of {}: {} and {}",
                        o.key,
                        describe(&ops[j], j),
                        describe(o, i)
                    ));
                }
                note(*version, value, i, violations);
                points.push(Point {
                    op: i,
                    version: *version,
                    made: true,
                });
            }
            (Outcome::Lock(_) | Outcome::StaleToken { .. }, _) => continue,
            (Outcome::Value(r) | Outcome::Conflict(r) | Outcome::Absent(r), change) => {
                if let Outcome::Conflict(_) = outcome {
                    let expect = match change {
                        Change::Put { expect, .. } | Change::Delete { expect } => *expect,
                        Change::Read | Change::Lock(_) | Change::Fenced { .. } => Expect::Any,
                    };
                    if holds(expect, r) {
                        violations.push(format!(
                            "{} was refused although its condition held at the version it saw",
                            describe(o, i)
                        ));
                    }
                }
                note(r.version, r.value.clone(), i, violations);
                points.push(Point {
                    op: i,
                    version: r.version,
                    made: false,
                });
            }
        }
    }
    // A write made version n only if its condition held at n - 1.
    for (&n, &i) in &made_by {
        let expect = match &ops[i].change {
            Change::Put { expect, .. } | Change::Delete { expect } => *expect,
            Change::Read | Change::Lock(_) | Change::Fenced { .. } => continue,
        };
        let before = match n.checked_sub(1) {
            Some(0) => Some(Register::default()),
            Some(p) => at.get(&p).map(|(v, _)| Register {
                version: p,
                value: v.clone(),
                ..Register::default()
            }),
            None => None,
        };
        if let Some(r) = before
            && !holds(expect, &r)
        {
            violations.push(format!(
                "{} made version {n} although its condition did not hold at version {} ({:?})",
                describe(&ops[i], i),
                n - 1,
                r.value.as_deref().map(String::from_utf8_lossy)
            ));
        }
    }
    // Every version seen was made by a write that may have taken effect.
    for (&n, (value, seen_by)) in &at {
        if n == 0 || made_by.contains_key(&n) {
            continue;
        }
        let maker = on_key.iter().any(|&i| {
            let o = &ops[i];
            let may = matches!(
                o.outcome,
                StrongOutcome::Indeterminate(_) | StrongOutcome::Pending
            );
            may && match (&o.change, value) {
                (Change::Put { value: w, .. }, Some(v)) => w == v,
                (Change::Delete { .. }, None) => true,
                _ => false,
            }
        });
        if !maker {
            violations.push(format!(
                "version {n} of {} ({:?}), seen by {}, was made by no write that may have taken effect",
                ops[*seen_by].key,
                value.as_deref().map(String::from_utf8_lossy),
                describe(&ops[*seen_by], *seen_by)
            ));
        }
    }
    // Real time: sweep operations by invocation, knowing the highest version of every operation
    // that completed before.
    let mut done: Vec<(Duration, u64, usize)> = points
        .iter()
        .filter_map(|p| ops[p.op].completed.map(|t| (t, p.version, p.op)))
        .collect();
    done.sort();
    let mut by_start: Vec<&Point> = points.iter().collect();
    by_start.sort_by_key(|p| ops[p.op].invoked);
    let (mut k, mut best): (usize, Option<(u64, usize)>) = (0, None);
    for p in by_start {
        let start = ops[p.op].invoked;
        while k < done.len() && done[k].0 < start {
            if best.is_none_or(|(v, _)| done[k].1 > v) {
                best = Some((done[k].1, done[k].2));
            }
            k += 1;
        }
        let Some((v, j)) = best else { continue };
        let stale = if p.made {
            p.version <= v
        } else {
            p.version < v
        };
        if stale {
            violations.push(format!(
                "{} {} version {} after {} had shown version {v}",
                describe(&ops[p.op], p.op),
                if p.made { "made" } else { "saw" },
                p.version,
                describe(&ops[j], j)
            ));
        }
    }
}
