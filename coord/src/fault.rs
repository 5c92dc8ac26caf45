//! Deliberate defects, injected by simulation tests to show that a checker catches the broken
//! guarantee (a checker that never fails proves nothing). Never used by the agent.

#[cfg(feature = "testing")]
use crate::core::CoordCore;

/// A deliberate defect of the coordination core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Acceptors answer a prepare with a promise they do not keep.
    SkipPromise,
    /// Proposers leave their generation out of ballots and do not count on from the ballots in
    /// their log: after a restart they make ballots of their earlier run again.
    ReuseBallots,
    /// Acceptors answer before their state is durable.
    ReplyBeforeDurable,
    /// A lock holder is told to act for its whole lease, as the grantors count it, without the
    /// clock-rate bound and the margin.
    FullLeaseWindow,
}

#[cfg(feature = "testing")]
impl CoordCore {
    /// Breaks this core on purpose (simulation tests only; see [`Fault`]).
    pub fn inject_fault(&mut self, fault: Fault) {
        self.faults.insert(fault);
    }
}
