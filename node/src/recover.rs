//! What a node is rebuilt from at start, and the rule that decides whether it may have lost
//! writes it acknowledged.

use store::wal::Record;

/// What the driver read back from disk before starting the node.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The newest snapshot's records followed by every good log record after it, in log order.
    pub records: Vec<Record>,
    /// The store log existed before this start (false: none at all yet).
    pub log_existed: bool,
    /// The node's identity was created by this start (its first run).
    pub identity_created: bool,
    /// The catch-up marker was present: an earlier start may have lost writes and has not
    /// caught up since.
    pub marked_lost: bool,
    /// Repair discarded records (not just a torn tail).
    pub repaired: bool,
}

impl Recovered {
    /// Nothing on disk: the first start of a new node.
    pub fn fresh() -> Self {
        Recovered {
            identity_created: true,
            ..Recovered::default()
        }
    }

    /// Whether the node may have lost writes it acknowledged: repair discarded records, or the
    /// store log vanished under an identity that already ran, or an earlier start found either
    /// and has not caught up since. Such a node does not vote until it has caught up.
    pub fn lost_writes(&self) -> bool {
        self.marked_lost || self.repaired || (!self.log_existed && !self.identity_created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_lost_writes_only_when_its_disk_says_so() {
        assert!(
            !Recovered::fresh().lost_writes(),
            "a new node has nothing to lose"
        );
        let ran_before = Recovered {
            log_existed: true,
            ..Recovered::default()
        };
        assert!(!ran_before.lost_writes());
        let wiped = Recovered {
            log_existed: false,
            identity_created: false,
            ..Recovered::default()
        };
        assert!(wiped.lost_writes(), "an identity that ran without its log");
        assert!(
            Recovered {
                repaired: true,
                ..ran_before.clone()
            }
            .lost_writes()
        );
        assert!(
            Recovered {
                marked_lost: true,
                ..ran_before
            }
            .lost_writes()
        );
    }
}
