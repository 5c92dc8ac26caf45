//! The lock checker: at most one holder per term, no two holders acting at the same true time,
//! fencing tokens that grow with every change of holder, and no grant to a node that could not
//! reach a quorum.
//!
//! A holder acts from the answer to its acquire or renew until the window that answer gave it
//! runs out (counted on its node's clock from when it asked), plus the stall the workload allows
//! it (`WorkloadConfig::holder_stall`, none by default), or until it asks to release. While
//! stalls stay under the lease's margin, acting intervals must not overlap in true time.

use crate::check::Verdict;
use crate::history::Grant;
use crate::sim::Sim;
use std::collections::BTreeMap;
use std::time::Duration;

fn describe(g: &Grant) -> String {
    format!(
        "{} (token {}, via node {}, acting {:.3}-{:.3} s)",
        g.owner,
        g.term,
        g.node,
        g.from.as_secs_f64(),
        g.until.as_secs_f64()
    )
}

/// Locks are exclusive (see the module documentation).
pub fn locks_exclusive(sim: &Sim) -> Verdict {
    let grants = &sim.history().grants;
    let mut violations = Vec::new();
    // One holder per term.
    let mut by_term: BTreeMap<u64, &Grant> = BTreeMap::new();
    for g in grants {
        match by_term.get(&g.term) {
            Some(h) if h.owner != g.owner => violations.push(format!(
                "token {} granted to two holders: {} and {}",
                g.term,
                describe(h),
                describe(g)
            )),
            Some(_) => {}
            None => {
                by_term.insert(g.term, g);
            }
        }
    }
    for (i, a) in grants.iter().enumerate() {
        for b in &grants[i + 1..] {
            if a.owner == b.owner {
                continue;
            }
            // No two holders acting at once.
            if a.from < b.until && b.from < a.until {
                violations.push(format!(
                    "two holders acted at once: {} and {}",
                    describe(a),
                    describe(b)
                ));
            }
            // A later holder has a higher token.
            let (first, second) = if a.from <= b.from { (a, b) } else { (b, a) };
            if first.from < second.invoked && second.term <= first.term {
                violations.push(format!(
                    "the fencing token went back: {} then {}",
                    describe(first),
                    describe(second)
                ));
            }
        }
    }
    // No grant to a node that could not reach a quorum.
    let required = sim.store_config().required_votes as usize;
    let mut minority = 0;
    for g in grants {
        let from = g.invoked.saturating_sub(Duration::from_secs(1));
        let reached = sim.net.ever_reachable_from(g.node, from, g.from);
        if !sim.is_quorum(&reached) {
            minority += 1;
            violations.push(format!(
                "{} was granted while its node reached {}",
                describe(g),
                crate::check::describe_reach(sim, &reached, required)
            ));
        }
    }
    let holders: std::collections::BTreeSet<&str> =
        grants.iter().map(|g| g.owner.as_str()).collect();
    Verdict::from(
        "locks exclusive",
        violations,
        format!(
            "{} grants to {} holders up to token {}, none overlapping; {minority} from a minority",
            grants.len(),
            holders.len(),
            by_term.keys().next_back().copied().unwrap_or(0)
        ),
    )
}

/// At most one node leads at any true time, each by its own account, and every new leader's
/// token is higher than the last one's.
pub fn one_leader_at_a_time(sim: &Sim) -> Verdict {
    let spans = sim.leader_spans();
    let mut violations = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.node == b.node {
                continue;
            }
            if a.from < b.until && b.from < a.until {
                violations.push(format!(
                    "nodes {} (token {}, {:.3}-{:.3} s) and {} (token {}, {:.3}-{:.3} s) led at once",
                    a.node,
                    a.token,
                    a.from.as_secs_f64(),
                    a.until.as_secs_f64(),
                    b.node,
                    b.token,
                    b.from.as_secs_f64(),
                    b.until.as_secs_f64()
                ));
            }
            let (first, second) = if a.from <= b.from { (a, b) } else { (b, a) };
            if second.token <= first.token {
                violations.push(format!(
                    "node {} led with token {} after node {} had led with token {}",
                    second.node, second.token, first.node, first.token
                ));
            }
        }
    }
    let leaders: std::collections::BTreeSet<usize> = spans.iter().map(|s| s.node).collect();
    Verdict::from(
        "one leader at a time",
        violations,
        format!(
            "{} terms of leadership by {} nodes, none overlapping",
            spans.len(),
            leaders.len()
        ),
    )
}
