//! Per-node metadata (name, datacenter, API address, tags, votes, leaving) and how it spreads.
//!
//! Metadata is pushed through foca's custom broadcasts for speed, and pulled with a
//! Scuttlebutt-style digest exchange for convergence: broadcasts are best-effort (each is sent a
//! bounded number of times), so a node that joins late or sits behind a partition would otherwise
//! never learn some records. A record is ordered by `(generation, version)`; the newest wins.

use crate::identity::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Largest encoded metadata record; keeps a record well inside one SWIM packet.
pub const MAX_META_BYTES: usize = 900;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The node this record describes.
    pub id: NodeId,
    /// The node's generation when it wrote this record.
    pub generation: u64,
    /// Bumped on every change within a generation.
    pub version: u64,
    /// Human-readable node name.
    pub name: String,
    /// Datacenter the node runs in.
    pub datacenter: String,
    /// The node's gossip address.
    pub gossip_addr: SocketAddr,
    /// Where the node's HTTP API listens, if anywhere reachable.
    pub api_addr: Option<SocketAddr>,
    /// Free-form operator tags.
    pub tags: BTreeMap<String, String>,
    /// Quorum votes this node holds.
    pub votes: u32,
    /// Set just before a graceful leave, so that peers report the node `left`, not `failed`.
    pub leaving: bool,
}

impl NodeMeta {
    /// The ordering key: a record replaces another of the same node when this is greater.
    pub fn stamp(&self) -> (u64, u64) {
        (self.generation, self.version)
    }

    /// Encodes the record for the wire.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding NodeMeta into a Vec cannot fail")
    }
}

/// Error returned when a metadata record is rejected.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The bytes did not decode as a record.
    #[error("malformed metadata record: {0}")]
    Malformed(#[from] postcard::Error),
    /// The record is larger than [`MAX_META_BYTES`].
    #[error("metadata record is {0} bytes, the limit is {MAX_META_BYTES}")]
    TooLarge(usize),
}

/// Every node's newest known record, keyed by node id, with the ids under each name.
#[derive(Debug, Default)]
pub struct MetaTable {
    records: BTreeMap<NodeId, NodeMeta>,
    /// Node ids by the name their record gives (checking a joiner's name for duplicates is then
    /// a lookup, not a scan: a join of n nodes asks it n times on every node).
    by_name: BTreeMap<String, std::collections::BTreeSet<NodeId>>,
}

impl MetaTable {
    /// Keeps `meta` if it is newer than what is known; returns whether it was.
    pub fn merge(&mut self, meta: NodeMeta) -> bool {
        match self.records.get(&meta.id) {
            Some(old) if old.stamp() >= meta.stamp() => false,
            old => {
                if old.is_none_or(|o| o.name != meta.name) {
                    if let Some(o) = old
                        && let Some(ids) = self.by_name.get_mut(&o.name)
                    {
                        ids.remove(&meta.id);
                        if ids.is_empty() {
                            self.by_name.remove(&o.name);
                        }
                    }
                    self.by_name
                        .entry(meta.name.clone())
                        .or_default()
                        .insert(meta.id);
                }
                self.records.insert(meta.id, meta);
                true
            }
        }
    }

    /// The records whose name is `name`.
    pub fn named(&self, name: &str) -> impl Iterator<Item = &NodeMeta> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|id| self.records.get(id))
    }

    /// The newest record of `id`.
    pub fn get(&self, id: NodeId) -> Option<&NodeMeta> {
        self.records.get(&id)
    }

    /// All records in id order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeMeta> {
        self.records.values()
    }

    /// Number of nodes with a record.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is known.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `(id, generation, version)` of every record: what a peer needs to see what we lack.
    pub fn digest(&self) -> Vec<DigestEntry> {
        self.records
            .values()
            .map(|m| DigestEntry {
                id: m.id,
                generation: m.generation,
                version: m.version,
            })
            .collect()
    }

    /// Records we hold that are newer than `theirs` says, and entries where `theirs` is newer.
    pub fn compare(&self, theirs: &[DigestEntry]) -> (Vec<NodeMeta>, Vec<DigestEntry>) {
        let their: BTreeMap<NodeId, (u64, u64)> = theirs
            .iter()
            .map(|e| (e.id, (e.generation, e.version)))
            .collect();
        let newer_here = self
            .records
            .values()
            .filter(|m| their.get(&m.id).is_none_or(|s| *s < m.stamp()))
            .cloned()
            .collect();
        let newer_there = theirs
            .iter()
            .filter(|e| {
                self.records
                    .get(&e.id)
                    .is_none_or(|m| m.stamp() < (e.generation, e.version))
            })
            .copied()
            .collect();
        (newer_here, newer_there)
    }
}

/// One line of a metadata digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// Node described.
    pub id: NodeId,
    /// Generation of the newest record held.
    pub generation: u64,
    /// Version of the newest record held.
    pub version: u64,
}

/// Messages on the metadata channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaMsg {
    /// A hash of the sender's digest: the receiver answers with its digest only if they differ,
    /// so a converged cluster exchanges a few bytes per round.
    Summary(u64),
    /// "You are suspected at this incarnation": sent straight to a suspect so that it refutes in
    /// time. SWIM only piggybacks suspicion on random gossip, and a suspect that no gossip happens
    /// to reach is declared down although alive (Lifeguard's "buddy system" fixes the same gap).
    /// "The cluster holds you as down": the receiver renews its identity (a new generation) and
    /// rejoins. This is foca's TurnUndead, sent only to identities currently held down (foca's own
    /// can fire for a suspect that refuted in time).
    Down {
        /// The identity held down.
        peer: crate::identity::Peer,
        /// Who holds it down: the renewed node announces itself there at once.
        by: crate::identity::Peer,
    },
    Suspected {
        /// The identity suspected.
        peer: crate::identity::Peer,
        /// The incarnation suspected.
        incarnation: u16,
        /// Who holds the suspicion: the suspect answers it directly, so its refutation reaches
        /// the suspecter in one round trip instead of by chance through gossip.
        by: crate::identity::Peer,
    },
    /// "Here is what I hold": the receiver answers with newer records and asks for what it lacks.
    Digest(Vec<DigestEntry>),
    /// Newer records, plus the entries the sender wants back (empty when it wants nothing).
    Records {
        /// Records newer than the peer's digest showed.
        records: Vec<NodeMeta>,
        /// Entries the sender saw newer at the peer and wants sent.
        want: Vec<DigestEntry>,
    },
}

/// The shared handle foca's broadcast handler writes into and the core reads from.
pub type SharedMeta = Arc<Mutex<MetaTable>>;

/// foca broadcast key: a newer record of the same node invalidates an older one still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaKey {
    id: NodeId,
    stamp: (u64, u64),
}

impl foca::Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.stamp > other.stamp
    }
}

/// Receives metadata broadcasts from foca into the shared table.
#[derive(Debug, Clone)]
pub struct MetaBroadcasts {
    table: SharedMeta,
    fresh: Arc<Mutex<Vec<NodeId>>>,
    /// Test-only defect: drop every record received (see `Fault::DeafToMetadata`).
    deaf: Arc<std::sync::atomic::AtomicBool>,
}

impl MetaBroadcasts {
    /// A handler writing into `table`.
    pub fn new(table: SharedMeta) -> Self {
        MetaBroadcasts {
            table,
            fresh: Arc::default(),
            deaf: Arc::default(),
        }
    }

    /// Makes this handler drop every record it receives (a deliberate defect for checkers).
    pub fn set_deaf(&self) {
        self.deaf.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ids whose record changed since the last call, in arrival order.
    pub fn take_fresh(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.fresh.lock().expect("meta lock poisoned"))
    }

    /// Merges a record from any path (broadcast or digest exchange); returns whether it was news.
    pub fn accept(&self, meta: NodeMeta) -> bool {
        if self.deaf.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let id = meta.id;
        let news = self.table.lock().expect("meta lock poisoned").merge(meta);
        if news {
            self.fresh.lock().expect("meta lock poisoned").push(id);
        }
        news
    }
}

impl<T> foca::BroadcastHandler<T> for MetaBroadcasts {
    type Key = MetaKey;
    type Error = MetaError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&T>,
    ) -> Result<Option<MetaKey>, MetaError> {
        if data.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge(data.len()));
        }
        let meta: NodeMeta = postcard::from_bytes(data)?;
        let key = MetaKey {
            id: meta.id,
            stamp: meta.stamp(),
        };
        Ok(self.accept(meta).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, generation: u64, version: u64) -> NodeMeta {
        NodeMeta {
            id: NodeId(id),
            generation,
            version,
            name: format!("n{id}"),
            datacenter: "dc1".into(),
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            api_addr: None,
            tags: BTreeMap::new(),
            votes: 1,
            leaving: false,
        }
    }

    #[test]
    fn newest_record_wins_in_any_order() {
        let mut a = MetaTable::default();
        assert!(a.merge(meta(1, 1, 2)));
        assert!(!a.merge(meta(1, 1, 1)));
        assert!(!a.merge(meta(1, 1, 2)));
        assert!(a.merge(meta(1, 2, 0)));
        assert_eq!(a.get(NodeId(1)).unwrap().stamp(), (2, 0));
    }

    #[test]
    fn compare_finds_both_directions() {
        let mut a = MetaTable::default();
        a.merge(meta(1, 1, 5));
        a.merge(meta(2, 1, 1));
        let mut b = MetaTable::default();
        b.merge(meta(1, 1, 3));
        b.merge(meta(3, 1, 1));
        let (newer_here, newer_there) = a.compare(&b.digest());
        let ids: Vec<_> = newer_here.iter().map(|m| m.id.0).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            newer_there.iter().map(|e| e.id.0).collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn oversize_and_garbage_records_are_rejected() {
        let mut h = MetaBroadcasts::new(SharedMeta::default());
        let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &[0xff; 10], None);
        assert!(matches!(r, Err(MetaError::Malformed(_))));
        let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &[0; 2000], None);
        assert!(matches!(r, Err(MetaError::TooLarge(2000))));
    }
}
