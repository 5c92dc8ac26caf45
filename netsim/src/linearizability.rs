//! A Wing-Gong-Lowe linearizability checker for one register (one key).
//!
//! The history is a list of operations with invocation and completion times. The search walks
//! the time-ordered list of call and return entries, tries to linearize calls in order, and
//! backtracks when it meets the return of an operation it has not linearized; states already
//! explored (which operations are linearized, and the register's value) are cached, which keeps
//! the search small for the low concurrency of simulated clients. An operation that may or may
//! not have taken effect (indeterminate) has no return entry: it may be linearized at any point
//! after its call, or never.

use std::collections::HashSet;
use std::time::Duration;

/// What an operation did to the register. Values are small integers standing for unique values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Set the value (`None`: delete).
    Write(Option<u32>),
    /// Observed the value (`None`: not found).
    Read(Option<u32>),
}

/// One operation on the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinOp {
    /// When it was called.
    pub invoked: Duration,
    /// When it answered; `None` when it may or may not have taken effect.
    pub completed: Option<Duration>,
    /// What it did.
    pub action: Action,
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinResult {
    /// A linearization exists.
    Linearizable,
    /// None exists; the index of the operation whose return could not be explained by the
    /// deepest attempt.
    NotLinearizable {
        /// Index (into the input) of the operation the search got stuck on.
        stuck_at: usize,
    },
    /// The search exceeded its budget of explored states.
    TooLarge,
}

const NONE: usize = usize::MAX;

/// Checks that `ops` on a register that starts empty are linearizable, exploring at most
/// `budget` states.
pub fn check(ops: &[LinOp], budget: usize) -> LinResult {
    // Entries: (time, is_return, op). Calls sort before returns at the same instant, so two
    // operations that touch the same instant count as concurrent (the permissive reading).
    let mut entries: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        entries.push((o.invoked, false, i));
        if let Some(c) = o.completed {
            entries.push((c.max(o.invoked), true, i));
        }
    }
    entries.sort();
    let m = entries.len();
    let mut next: Vec<usize> = (1..=m).map(|i| if i == m { NONE } else { i }).collect();
    let mut prev: Vec<usize> = (0..m).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
    let mut head = if m == 0 { NONE } else { 0 };
    let mut call_of = vec![NONE; ops.len()];
    let mut ret_of = vec![NONE; ops.len()];
    for (e, (_, is_ret, op)) in entries.iter().enumerate() {
        if *is_ret {
            ret_of[*op] = e;
        } else {
            call_of[*op] = e;
        }
    }
    let mut remaining_returns = ret_of.iter().filter(|r| **r != NONE).count();
    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut state: Option<u32> = None;
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut cache: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    let mut deepest = (0usize, NONE);

    // Unlinks entry `e` from the list.
    let unlink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, head: &mut usize| {
        let (p, n) = (prev[e], next[e]);
        if p == NONE {
            *head = n;
        } else {
            next[p] = n;
        }
        if n != NONE {
            prev[n] = p;
        }
    };
    // Puts entry `e` back where it was (its neighbours are intact, as removals are undone in
    // reverse order).
    let relink = |e: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, head: &mut usize| {
        let (p, n) = (prev[e], next[e]);
        if p == NONE {
            *head = e;
        } else {
            next[p] = e;
        }
        if n != NONE {
            prev[n] = e;
        }
    };

    let mut entry = head;
    while remaining_returns > 0 {
        if entry == NONE {
            // Only indeterminate calls are left after the pointer: nothing can be explained.
            return LinResult::NotLinearizable {
                stuck_at: deepest.1,
            };
        }
        let (_, is_ret, op) = entries[entry];
        if !is_ret {
            let (ok, new_state) = match ops[op].action {
                Action::Write(v) => (true, v),
                Action::Read(v) => (v == state, state),
            };
            if ok {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    if cache.len() > budget {
                        return LinResult::TooLarge;
                    }
                    stack.push((op, state));
                    state = new_state;
                    unlink(call_of[op], &mut next, &mut prev, &mut head);
                    if ret_of[op] != NONE {
                        unlink(ret_of[op], &mut next, &mut prev, &mut head);
                        remaining_returns -= 1;
                    }
                    if stack.len() > deepest.0 {
                        deepest = (stack.len(), op);
                    }
                    entry = head;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            if deepest.1 == NONE {
                deepest.1 = op;
            }
            let Some((op, old)) = stack.pop() else {
                return LinResult::NotLinearizable { stuck_at: op };
            };
            state = old;
            linearized[op / 64] &= !(1 << (op % 64));
            if ret_of[op] != NONE {
                relink(ret_of[op], &mut next, &mut prev, &mut head);
                remaining_returns += 1;
            }
            relink(call_of[op], &mut next, &mut prev, &mut head);
            entry = next[call_of[op]];
        }
    }
    LinResult::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(a: u64, b: Option<u64>, action: Action) -> LinOp {
        LinOp {
            invoked: Duration::from_millis(a),
            completed: b.map(Duration::from_millis),
            action,
        }
    }
    use Action::{Read, Write};

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(0, Some(1), Write(Some(1))),
            op(2, Some(3), Read(Some(1))),
            op(4, Some(5), Write(None)),
            op(6, Some(7), Read(None)),
        ];
        assert_eq!(check(&h, 1000), LinResult::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let h = [
            op(0, Some(1), Write(Some(1))),
            op(2, Some(3), Write(Some(2))),
            op(4, Some(5), Read(Some(1))),
        ];
        assert!(matches!(check(&h, 1000), LinResult::NotLinearizable { .. }));
    }

    #[test]
    fn concurrent_operations_may_order_either_way() {
        let h = [
            op(0, Some(10), Write(Some(1))),
            op(1, Some(9), Write(Some(2))),
            op(11, Some(12), Read(Some(1))),
            op(13, Some(14), Read(Some(1))),
        ];
        assert_eq!(check(&h, 1000), LinResult::Linearizable);
        // Once a read saw 2 after both writes completed, 1 can never come back.
        let h2 = [
            op(0, Some(10), Write(Some(1))),
            op(1, Some(9), Write(Some(2))),
            op(11, Some(12), Read(Some(2))),
            op(13, Some(14), Read(Some(1))),
        ];
        assert!(matches!(
            check(&h2, 1000),
            LinResult::NotLinearizable { .. }
        ));
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_late_or_never() {
        let late = [
            op(0, None, Write(Some(1))),
            op(5, Some(6), Read(None)),
            op(7, Some(8), Read(Some(1))),
        ];
        assert_eq!(check(&late, 1000), LinResult::Linearizable);
        let never = [op(0, None, Write(Some(1))), op(5, Some(6), Read(None))];
        assert_eq!(check(&never, 1000), LinResult::Linearizable);
        // But it cannot take effect before it was called.
        let early = [op(0, Some(1), Read(Some(1))), op(2, None, Write(Some(1)))];
        assert!(matches!(
            check(&early, 1000),
            LinResult::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let h = [op(0, Some(1), Read(Some(9)))];
        assert!(matches!(check(&h, 1000), LinResult::NotLinearizable { .. }));
    }

    #[test]
    fn a_value_cannot_flicker_back() {
        // w1 then w2 complete in order; reads see 2, then 1 (lost write resurfacing).
        let h = [
            op(0, Some(1), Write(Some(1))),
            op(2, Some(3), Write(Some(2))),
            op(4, Some(5), Read(Some(2))),
            op(4, Some(7), Read(Some(1))),
        ];
        assert!(matches!(check(&h, 1000), LinResult::NotLinearizable { .. }));
    }
}
