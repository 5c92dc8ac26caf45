//! Who a node is: a stable id, the address it gossips on, and a generation that grows on restart.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A node's stable identity, created once and persisted in its data directory.
///
/// 64 random bits: collisions are negligible for any cluster SWIM can run, and every SWIM header
/// carries two identities, so a small id keeps idle traffic low.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

// Fixed 8 bytes on the wire: a random u64 as a postcard varint would take 10.
impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.to_be_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(d).map(|b| NodeId(u64::from_be_bytes(b)))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Error parsing a [`NodeId`] from text.
#[derive(Debug, thiserror::Error)]
#[error("node id must be 16 hexadecimal digits, got {0:?}")]
pub struct ParseNodeIdError(String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(ParseNodeIdError(s.to_string()));
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| ParseNodeIdError(s.to_string()))
    }
}

/// The identity foca gossips about: one incarnation of one node at one address.
///
/// foca keeps members unique by [`foca::Identity::addr`], the gossip address, so a node that
/// restarts on the same address replaces its old entry instead of appearing twice, and a static
/// seed known only as `host:port` can be announced to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// Where the node gossips.
    pub addr: SocketAddr,
    /// The node's stable id; zero for an address not yet identified (a seed).
    pub id: NodeId,
    /// Grows on every start and every rejoin; the newer generation wins an address conflict.
    pub generation: u64,
}

impl Peer {
    /// A placeholder for an address whose identity is not known yet (a seed, a beacon target).
    pub fn unknown(addr: SocketAddr) -> Self {
        Peer {
            addr,
            id: NodeId(0),
            generation: 0,
        }
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.addr, self.generation)
    }
}

impl foca::Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Peer {
            generation: self.generation + 1,
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Newer generation wins; ties (two nodes misconfigured onto one address) are broken by id so
        // that every node picks the same winner.
        (self.generation, self.id) > (adversary.generation, adversary.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn node_id_text_round_trip() {
        let id = NodeId(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!("0123456789abcdef".parse::<NodeId>().unwrap(), id);
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("0123456789abcdeg".parse::<NodeId>().is_err());
    }

    #[test]
    fn renewal_wins_the_conflict() {
        let p = Peer {
            addr: "10.0.0.1:7946".parse().unwrap(),
            id: NodeId(5),
            generation: 3,
        };
        let r = p.renew().unwrap();
        assert_eq!(r.generation, 4);
        assert!(r.win_addr_conflict(&p));
        assert!(!p.win_addr_conflict(&r));
    }
}
