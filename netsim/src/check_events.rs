//! The event-stream checker for failures: every crash is reported as `member_failed` exactly once
//! by every node that stayed up while it was detected, and no node reports one incarnation of a
//! member failed twice.

use crate::check::Verdict;
use crate::sim::{Sim, WorldFault};
use membership::Event;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long after a crash every survivor must have reported it (detection plus dissemination,
/// with room: netsim measures 2-4 s at these sizes).
pub const REPORT_WITHIN: Duration = Duration::from_secs(10);

/// See the module documentation.
pub fn failures_reported_once(sim: &Sim) -> Verdict {
    let mut violations = Vec::new();
    // member_failed reports, by (viewer, subject id, generation): their times.
    let mut reports: BTreeMap<(usize, membership::NodeId, u64), Vec<Duration>> = BTreeMap::new();
    for l in sim.log() {
        if let Event::MemberFailed { member } = &l.event {
            reports
                .entry((l.node, member.id, member.generation))
                .or_default()
                .push(l.at);
        }
    }
    for ((viewer, id, generation), times) in &reports {
        if times.len() > 1 {
            let subject = sim.index_of(*id).map_or("?".to_string(), |s| s.to_string());
            violations.push(format!(
                "node {viewer} reported node {subject} (generation {generation}) failed {} times, at {:?}",
                times.len(),
                times
            ));
        }
    }
    let world = sim.world_faults();
    let mut crashes = 0;
    for (t, f) in world {
        let WorldFault::Crash(s) = f else { continue };
        let (t, s) = (*t, *s);
        let until = t + REPORT_WITHIN;
        // Judged only when the subject stayed down through the window and the run went on.
        let back = world
            .iter()
            .any(|(w, g)| *w > t && *w <= until && matches!(g, WorldFault::Restart(x) if *x == s));
        if sim.now() < until || back {
            continue;
        }
        crashes += 1;
        let id = sim.id_of(s);
        for v in (0..sim.len()).filter(|v| *v != s) {
            // Only viewers that ran untouched through the window, and that could talk to the
            // subject before it (else they may have held it failed already).
            let from = t.saturating_sub(REPORT_WITHIN);
            if !ran_through(world, v, from, until)
                || sim.net.was_disconnected(v, s, from, t)
                || sim.net.was_disconnected(s, v, from, t)
            {
                continue;
            }
            let seen = reports
                .iter()
                .filter(|((viewer, sid, _), _)| *viewer == v && *sid == id)
                .flat_map(|(_, ts)| ts.iter())
                .filter(|at| **at >= t && **at <= until)
                .count();
            if seen != 1 {
                violations.push(format!(
                    "node {v} reported the crash of node {s} at {:.3} s {seen} times within {:?}",
                    t.as_secs_f64(),
                    REPORT_WITHIN
                ));
            }
        }
    }
    Verdict::from(
        "failures reported once",
        violations,
        format!(
            "{crashes} crashes, each reported once by every node up throughout; no incarnation reported failed twice"
        ),
    )
}

/// Whether node `v` ran, untouched by any fault of its own, from `from` through `to`.
fn ran_through(world: &[(Duration, WorldFault)], v: usize, from: Duration, to: Duration) -> bool {
    !world.iter().any(|(w, g)| {
        *w >= from
            && *w <= to
            && matches!(g,
                WorldFault::Crash(x) | WorldFault::Leave(x) | WorldFault::Restart(x)
                | WorldFault::Pause(x, _) | WorldFault::Wipe(x) if *x == v)
    })
}

/// Every `member_joined` names the member rightly, and, when `strict` (runs without faults, where
/// the joiner's metadata follows its join within a few gossip rounds), names it at all: the node
/// holds a join until the joiner's name arrives rather than report a nameless member.
pub fn joins_named(sim: &Sim, strict: bool) -> Verdict {
    let mut violations = Vec::new();
    let (mut joins, mut unnamed) = (0, 0);
    for l in sim.log() {
        let Event::MemberJoined { member } = &l.event else {
            continue;
        };
        joins += 1;
        let Some(s) = sim.index_of(member.id) else {
            continue;
        };
        let want = format!("node{s}");
        if member.name.is_empty() {
            unnamed += 1;
            if strict {
                violations.push(format!(
                    "node {} reported node {s} joined at {:.3} s without its name",
                    l.node,
                    l.at.as_secs_f64()
                ));
            }
        } else if member.name != want {
            violations.push(format!(
                "node {} reported node {s} joined as {:?}, its name is {want:?}",
                l.node, member.name
            ));
        }
    }
    Verdict::from(
        "joins named",
        violations,
        format!("{joins} joins reported, {unnamed} without a name (strict: {strict})"),
    )
}
