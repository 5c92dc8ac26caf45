//! Per-node metadata (name, datacenter, API address, tags, votes, leaving) and how it spreads.
//!
//! Metadata is pushed through foca's custom broadcasts for speed, and pulled with a
//! Scuttlebutt-style digest exchange for convergence: broadcasts are best-effort (each is sent a
//! bounded number of times), so a node that joins late or sits behind a partition would otherwise
//! never learn some records. A record is ordered by `(generation, version)`; the newest wins.

use crate::identity::NodeId;
use hashbrown::HashTable;
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

    /// The record borrowed as the table's reads give it.
    pub fn view(&self) -> MetaRef<'_> {
        MetaRef {
            id: self.id,
            generation: self.generation,
            version: self.version,
            name: &self.name,
            datacenter: &self.datacenter,
            gossip_addr: self.gossip_addr,
            api_addr: self.api_addr,
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            votes: self.votes,
            leaving: self.leaving,
        }
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

/// A record as the table holds it: its stamp beside its wire encoding.
///
/// Why encoded: every node holds a record of every other, so at scale this is memory per pair of
/// nodes. A decoded [`NodeMeta`] in the tree cost about 288 bytes per pair in heaptrack of
/// `netsim scale --nodes 1000` (168 bytes of fields, the tree's slack, the name's allocation);
/// encoded it is about 55 bytes. Reads borrow it through [`MetaRef`] without allocating. The
/// stamp stays beside the pointer: every copy of a record that arrives is compared with the one
/// held, and read from behind the pointer that comparison was a cache miss, 5 % of the same run
/// (perf); beside it, it costs 16 bytes per record.
///
/// The encodings sit end to end in one arena ([`Arena`]), found by offset and length: each in a
/// box of its own cost the allocator's size class (a 33-byte record of netsim took 48) and 16
/// bytes of pointer, about 23 bytes per pair of nodes more at 10,000 nodes.
#[derive(Debug, Clone, Copy)]
struct Held {
    stamp: (u64, u64),
    at: u32,
    len: u32,
}

/// Every record's encoding, end to end; a replaced record's old bytes stay until they are an
/// eighth of the arena, when the live ones are copied into a new arena (O(1) per byte written,
/// amortised; at most an eighth of the room dead).
#[derive(Debug, Default)]
struct Arena {
    bytes: Vec<u8>,
    dead: usize,
}

impl Arena {
    fn slice(&self, h: &Held) -> &[u8] {
        &self.bytes[h.at as usize..h.at as usize + h.len as usize]
    }

    fn view(&self, h: &Held) -> MetaRef<'_> {
        postcard::from_bytes(self.slice(h)).expect("the table holds only records it encoded")
    }

    /// Appends `encoded`; returns where it went.
    fn put(&mut self, encoded: &[u8]) -> (u32, u32) {
        let at = u32::try_from(self.bytes.len()).expect("records within 4 GiB");
        let len = u32::try_from(encoded.len()).expect("a record within 4 GiB");
        self.bytes.extend_from_slice(encoded);
        (at, len)
    }

    /// The bytes of a replaced record are dead; when the dead are an eighth of the arena, the
    /// live records are copied into a new one and `records` pointed at their new places.
    fn release<'a>(&mut self, len: u32, records: impl Iterator<Item = &'a mut Held>) {
        self.dead += len as usize;
        if self.dead * 8 <= self.bytes.len() {
            return;
        }
        let mut fresh = Vec::with_capacity(self.bytes.len() - self.dead);
        for h in records {
            let from = h.at as usize..h.at as usize + h.len as usize;
            h.at = u32::try_from(fresh.len()).expect("records within 4 GiB");
            fresh.extend_from_slice(&self.bytes[from]);
        }
        self.bytes = fresh;
        self.dead = 0;
    }
}

/// The node id and `(generation, version)` an encoded record starts with, read without decoding
/// the rest: the id's 8 fixed bytes, then two postcard varints (7 bits per byte, low first, the
/// high bit saying "more"). `None` when the bytes end first or a varint runs past 64 bits.
fn peek_stamp(bytes: &[u8]) -> Option<(NodeId, (u64, u64))> {
    let id = NodeId(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?));
    let mut at = 8;
    let mut varint = || {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(at)?;
            at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    let generation = varint()?;
    Some((id, (generation, varint()?)))
}

/// A record read from the table without copying it: [`NodeMeta`] with borrowed strings.
///
/// Its fields are [`NodeMeta`]'s in the same order, so it decodes the same bytes
/// (`a_borrowed_record_reads_every_field_of_the_record` checks every field).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetaRef<'a> {
    /// The node this record describes.
    pub id: NodeId,
    /// The node's generation when it wrote this record.
    pub generation: u64,
    /// Bumped on every change within a generation.
    pub version: u64,
    /// Human-readable node name.
    pub name: &'a str,
    /// Datacenter the node runs in.
    pub datacenter: &'a str,
    /// The node's gossip address.
    pub gossip_addr: SocketAddr,
    /// Where the node's HTTP API listens, if anywhere reachable.
    pub api_addr: Option<SocketAddr>,
    /// Free-form operator tags.
    #[serde(borrow)]
    pub tags: BTreeMap<&'a str, &'a str>,
    /// Quorum votes this node holds.
    pub votes: u32,
    /// Set just before a graceful leave.
    pub leaving: bool,
}

impl MetaRef<'_> {
    /// The ordering key, as [`NodeMeta::stamp`].
    pub fn stamp(&self) -> (u64, u64) {
        (self.generation, self.version)
    }

    /// An owned copy.
    pub fn to_meta(&self) -> NodeMeta {
        NodeMeta {
            id: self.id,
            generation: self.generation,
            version: self.version,
            name: self.name.to_owned(),
            datacenter: self.datacenter.to_owned(),
            gossip_addr: self.gossip_addr,
            api_addr: self.api_addr,
            tags: self
                .tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            votes: self.votes,
            leaving: self.leaving,
        }
    }
}

/// Every node's newest known record, keyed by node id, with the ids under each name.
///
/// Records sit in a list in the order they first arrived (a record is replaced in place, never
/// removed), found by id through a hash table of positions, and put in id order only when a
/// digest asks for it. It was a `BTreeMap` by id: every record that arrives (each is gossiped
/// several times to every node) and every name and vote looked up walked down a tree whose
/// nodes missed the cache, 14.8 % of netsim's 1,000-node join (perf); a lookup is now a probe
/// and a read of the record's slot, and an entry takes about the tree's room (40 bytes in the
/// list, 5-10 in the table, 4 in the order).
#[derive(Debug, Default)]
pub struct MetaTable {
    records: Vec<(NodeId, Held)>,
    /// The records' encodings.
    arena: Arena,
    /// The position in `records` of each id.
    by_id: HashTable<u32>,
    /// Positions in id order up to `sorted`, then those of records new since (see `settle`).
    order: Vec<u32>,
    sorted: usize,
    /// Positions in `records` by a hash of the name each record gives (checking a joiner's name
    /// for duplicates is then a lookup, not a scan: a join of n nodes asks it n times on every
    /// node). A hash, not the name: a map of names to sets held a copy of every name and a set
    /// per name, about 200 bytes per member on every node. A tree of (hash, id) pairs after that
    /// cost 16 bytes and a share of a node per member; this is a 4-byte position and a control
    /// byte, and the table rehashes a position from its record's name when it grows.
    by_name: HashTable<u32>,
    /// The digest's hash (see [`MetaTable::digest_hash`]), kept as records change.
    digest_sum: u64,
}

/// One digest entry's share of [`MetaTable::digest_hash`].
fn entry_hash(id: NodeId, stamp: (u64, u64)) -> u64 {
    let bytes = [
        id.0.to_be_bytes(),
        stamp.0.to_be_bytes(),
        stamp.1.to_be_bytes(),
    ];
    crate::envelope::spread64(crate::envelope::fnv1a64(&[&bytes[0], &bytes[1], &bytes[2]]))
}

/// The name table's hash of a name: FNV-1a, spread (`spread64`) so that the low bits, which pick
/// the bucket, depend on all of it (an FNV product's low bits depend only on the low bits of
/// what went in, and names such as `node-17` differ in a few low bits of a few bytes).
fn name_hash(name: &str) -> u64 {
    crate::envelope::spread64(crate::envelope::fnv1a64(&[name.as_bytes()]))
}

/// The table's hash of a node id (ids are random; see `spread64`); the tally's table uses it too.
pub(crate) fn id_hash(id: NodeId) -> u64 {
    crate::envelope::spread64(id.0)
}

impl MetaTable {
    /// The position in `records` of `id`'s record.
    fn position(&self, id: NodeId) -> Option<usize> {
        self.by_id
            .find(id_hash(id), |at| self.records[*at as usize].0 == id)
            .map(|at| *at as usize)
    }

    fn held(&self, id: NodeId) -> Option<&Held> {
        self.position(id).map(|at| &self.records[at].1)
    }

    /// The encoding of the record at position `at`, copied.
    fn encoded_at(&self, at: u32) -> Vec<u8> {
        self.arena.slice(&self.records[at as usize].1).to_vec()
    }

    /// The record at position `at`, borrowed.
    fn view(&self, at: u32) -> MetaRef<'_> {
        self.arena.view(&self.records[at as usize].1)
    }

    /// Keeps `meta` if it is newer than what is known; returns whether it was.
    pub fn merge(&mut self, meta: NodeMeta) -> bool {
        let at = self.position(meta.id);
        let old = at.map(|at| &self.records[at].1);
        if old.is_some_and(|o| o.stamp >= meta.stamp()) {
            return false;
        }
        let old_name = old.map(|o| name_hash(self.arena.view(o).name));
        if let Some(o) = old {
            self.digest_sum = self.digest_sum.wrapping_sub(entry_hash(meta.id, o.stamp));
        }
        self.digest_sum = self
            .digest_sum
            .wrapping_add(entry_hash(meta.id, meta.stamp()));
        let new_name = name_hash(&meta.name);
        let (place, len) = self.arena.put(&meta.encode());
        let held = Held {
            stamp: meta.stamp(),
            at: place,
            len,
        };
        let at = match at {
            Some(at) => {
                let old_len = self.records[at].1.len;
                self.records[at].1 = held;
                self.arena
                    .release(old_len, self.records.iter_mut().map(|(_, h)| h));
                at as u32
            }
            None => {
                let at = u32::try_from(self.records.len()).expect("fewer than 2^32 records");
                self.records.push((meta.id, held));
                let records = &self.records;
                self.by_id
                    .insert_unique(id_hash(meta.id), at, |at| id_hash(records[*at as usize].0));
                self.order.push(at);
                at
            }
        };
        if old_name != Some(new_name) {
            if let Some(o) = old_name
                && let Ok(entry) = self.by_name.find_entry(o, |p| *p == at)
            {
                entry.remove();
            }
            let (records, arena) = (&self.records, &self.arena);
            self.by_name.insert_unique(new_name, at, |p| {
                name_hash(arena.view(&records[*p as usize].1).name)
            });
        }
        true
    }

    /// Puts `order` in id order: the positions of records new since the last call are sorted
    /// and merged into the sorted run (a stable sort finds the two runs, so this is about
    /// linear when few are new).
    fn settle(&mut self) {
        if self.sorted == self.order.len() {
            return;
        }
        let records = &self.records;
        self.order[self.sorted..].sort_unstable_by_key(|at| records[*at as usize].0);
        self.order.sort_by_key(|at| records[*at as usize].0);
        self.sorted = self.order.len();
    }

    /// Positions of the records in `range`, in id order (after `settle`).
    fn in_order(&self, range: &std::ops::RangeInclusive<NodeId>) -> &[u32] {
        debug_assert_eq!(self.sorted, self.order.len(), "settled");
        let id = |at: &u32| self.records[*at as usize].0;
        let from = self.order.partition_point(|at| id(at) < *range.start());
        let to = self.order.partition_point(|at| id(at) <= *range.end());
        &self.order[from..to.max(from)]
    }

    /// The records whose name is `name`, in no particular order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = MetaRef<'a>> + 'a {
        self.by_name
            .iter_hash(name_hash(name))
            .map(|at| self.view(*at))
            .filter(move |m| m.name == name)
    }

    /// The newest record of `id`, borrowed.
    pub fn get(&self, id: NodeId) -> Option<MetaRef<'_>> {
        self.held(id).map(|h| self.arena.view(h))
    }

    /// The newest record of `id` as it goes on the wire (its encoding, which the table keeps),
    /// if it is at least as new as `stamp`.
    pub fn encoded_since(&self, id: NodeId, stamp: (u64, u64)) -> Option<&[u8]> {
        self.held(id)
            .filter(|h| h.stamp >= stamp)
            .map(|h| self.arena.slice(h))
    }

    /// `(generation, version)` of the newest record of `id`, without reading the record.
    pub fn stamp(&self, id: NodeId) -> Option<(u64, u64)> {
        self.held(id).map(|h| h.stamp)
    }

    /// All records in id order.
    pub fn iter(&mut self) -> impl Iterator<Item = MetaRef<'_>> {
        self.settle();
        self.order.iter().map(|at| self.view(*at))
    }

    /// Number of nodes with a record.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is known.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `(id, generation, version)` of every record, in id order: what a peer needs to see what
    /// we lack.
    pub fn digest(&mut self) -> Vec<DigestEntry> {
        self.settle();
        self.order
            .iter()
            .map(|at| {
                let (id, h) = &self.records[*at as usize];
                DigestEntry {
                    id: *id,
                    generation: h.stamp.0,
                    version: h.stamp.1,
                }
            })
            .collect()
    }

    /// A hash of the digest, for the sync's summary: equal tables hash alike, whatever order
    /// their records came in. The sum of a hash per entry, kept as records change, so a summary
    /// costs nothing to make or check. It hashed the whole digest in id order, O(members) per
    /// summary sent and received: 1.7 % of a simulated 5,000-node join (perf), where a node
    /// lacking records syncs every 2 s. Builds before it hash differently, so during a rolling
    /// upgrade old and new nodes always see their summaries differ and exchange digests at each
    /// sync: more datagrams for the upgrade's length, never a record lost.
    pub fn digest_hash(&self) -> u64 {
        self.digest_sum
    }

    /// Records we hold that are newer than `theirs` says (each as encoded, as the arena keeps
    /// it and [`records_payload`] sends it), and entries where `theirs` is newer.
    ///
    /// `theirs` is the peer's whole digest of the ids in `range`: a record here with an id in
    /// the range that `theirs` does not list is one the peer lacks. Ids outside the range are
    /// not compared (a digest too large for one datagram comes in parts, each naming its range;
    /// before parts named one, each part was answered with every record outside it, so a
    /// 1,000-node table exchanged in 24 parts sent about 24 copies of the table: netsim's
    /// 1,000-node join spent most of its time there).
    ///
    /// Both lists are in id order, so they are walked side by side, each entry read once. Each
    /// of theirs was looked up in our table and each of ours in a tree made of theirs: at 5,000
    /// members and more, where a node lacking records exchanges whole digests every 2 s, that
    /// was most of the syncs' work. A `theirs` out of order (no Chorus build sends one) is
    /// sorted first.
    pub fn compare(
        &mut self,
        range: std::ops::RangeInclusive<NodeId>,
        theirs: &[DigestEntry],
    ) -> (Vec<Vec<u8>>, Vec<DigestEntry>) {
        self.settle();
        let sorted_copy: Vec<DigestEntry>;
        let theirs = if theirs.is_sorted_by_key(|e| e.id) {
            theirs
        } else {
            sorted_copy = {
                let mut v = theirs.to_vec();
                v.sort_by_key(|e| e.id);
                v
            };
            &sorted_copy
        };
        let ours = self.in_order(&range);
        let mut newer_here = Vec::new();
        let mut newer_there = Vec::new();
        let mut next = 0;
        for e in theirs.iter().filter(|e| range.contains(&e.id)) {
            while let Some(at) = ours.get(next)
                && self.records[*at as usize].0 < e.id
            {
                newer_here.push(self.encoded_at(*at));
                next += 1;
            }
            let theirs_stamp = (e.generation, e.version);
            match ours.get(next) {
                Some(at) if self.records[*at as usize].0 == e.id => {
                    let held = self.records[*at as usize].1.stamp;
                    if held > theirs_stamp {
                        newer_here.push(self.encoded_at(*at));
                    } else if held < theirs_stamp {
                        newer_there.push(*e);
                    }
                    next += 1;
                }
                _ => newer_there.push(*e),
            }
        }
        newer_here.extend(
            ours[next.min(ours.len())..]
                .iter()
                .map(|at| self.encoded_at(*at)),
        );
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

impl DigestEntry {
    /// Its size in postcard: the 8-byte id and two varints.
    pub fn encoded_len(&self) -> usize {
        let varint = |v: u64| (64 - v.leading_zeros() as usize).max(1).div_ceil(7);
        8 + varint(self.generation) + varint(self.version)
    }
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
    /// "Here is what I hold", the whole table in one datagram: the receiver answers with newer
    /// records and asks for what it lacks. Sent by builds before [`MetaMsg::DigestPart`]; still
    /// answered so that a rolling upgrade keeps converging.
    Digest(Vec<DigestEntry>),
    /// Newer records, plus the entries the sender wants back (empty when it wants nothing).
    Records {
        /// Records newer than the peer's digest showed.
        records: Vec<NodeMeta>,
        /// Entries the sender saw newer at the peer and wants sent.
        want: Vec<DigestEntry>,
    },
    /// "Here is what I hold of the ids `from..=to`": one part of a digest, the parts of one
    /// digest covering every id between them. The receiver compares only ids in the range.
    DigestPart {
        /// First id the part covers.
        from: NodeId,
        /// Last id the part covers.
        to: NodeId,
        /// Every record held with an id in the range, in id order.
        entries: Vec<DigestEntry>,
    },
}

/// The payload of `MetaMsg::Records { records, want }` with each record given by its encoding
/// (as [`NodeMeta::encode`] and the table's arena hold it), made without decoding them: postcard
/// writes an enum as its variant's index and then its fields, a sequence as its length and then
/// its elements, and a record's encoding is the same wherever it sits. Answering a request for
/// records decoded each from the table, copied its strings and encoded it twice (once to size
/// the datagram): reading and answering asks was about 6 % of a simulated 3,000-node join
/// (perf, call graphs), and this saved 2.5 % of its wall time (112.6 against 115.5 s). The test
/// `records_payload_is_what_postcard_writes` compares it with postcard's own.
pub fn records_payload(records: &[Vec<u8>], want: &[DigestEntry]) -> Vec<u8> {
    const RECORDS_VARIANT: u8 = 4;
    let size: usize = records.iter().map(Vec::len).sum::<usize>() + want.len() * 28 + 24;
    let mut out = Vec::with_capacity(size);
    out.push(RECORDS_VARIANT);
    push_varint(&mut out, records.len() as u64);
    for r in records {
        out.extend_from_slice(r);
    }
    postcard::to_io(want, &mut out).expect("writing into a Vec cannot fail");
    out
}

/// Appends `v` as a postcard varint: 7 bits per byte, low first, the high bit saying "more".
fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Splits a digest (in id order) into parts whose entries take at most `budget` bytes encoded
/// (at least one entry each), that together cover every id, so that a receiver can tell "you
/// lack this record" within each part.
///
/// Packed by size: parts of a fixed 43 entries, room for the largest stamps (two 10-byte
/// varints), were about 40 % full, since generations and versions are small numbers (an entry is
/// usually 10 bytes): a 10,000-member digest took about 230 datagrams where 80 hold it.
pub fn digest_parts(digest: &[DigestEntry], budget: usize) -> Vec<MetaMsg> {
    if digest.is_empty() {
        return vec![MetaMsg::DigestPart {
            from: NodeId(0),
            to: NodeId(u64::MAX),
            entries: Vec::new(),
        }];
    }
    let mut parts = Vec::new();
    let mut from = NodeId(0);
    let mut rest = digest;
    while !rest.is_empty() {
        let mut size = 0;
        let take = rest
            .iter()
            .take_while(|e| {
                size += e.encoded_len();
                size <= budget
            })
            .count()
            .max(1);
        let (chunk, after) = rest.split_at(take);
        let last = chunk[take - 1].id;
        parts.push(MetaMsg::DigestPart {
            from,
            to: if after.is_empty() {
                NodeId(u64::MAX)
            } else {
                last
            },
            entries: chunk.to_vec(),
        });
        from = NodeId(last.0.saturating_add(1));
        rest = after;
    }
    parts
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

    /// Records of one node hash alike, so foca skips its scan of the queued records when no
    /// queued one is of the same node. Without it, every record accepted scanned the whole queue:
    /// 2.7 % of a simulated 1,000-node join, where about a record per member is queued (perf,
    /// docs/benchmarks.md "Membership at scale, fourth pass").
    fn invalidation_hash(&self) -> Option<u64> {
        Some(id_hash(self.id))
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

    /// Looks up the held stamp of every record in a datagram before `receive_item` takes them
    /// one by one: each lookup misses the cache in a simulation of many nodes, and one at a
    /// time each waits for the one before (see `foca::BroadcastHandler::warm`).
    fn warm<'a>(&mut self, items: impl Iterator<Item = &'a [u8]>) {
        let table = self.table.lock().expect("meta lock poisoned");
        for data in items {
            if let Some((id, _)) = peek_stamp(data) {
                std::hint::black_box(table.stamp(id));
            }
        }
    }

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&T>,
    ) -> Result<Option<MetaKey>, MetaError> {
        if data.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge(data.len()));
        }
        // Most copies of a record that arrive are of one already held (each is gossiped several
        // times to every node): those are dropped on their stamp, without decoding the record
        // (which allocated its strings only to throw them away). A stale copy is not news
        // whatever follows its stamp, so it is not checked further.
        if let Some((id, stamp)) = peek_stamp(data)
            && !self.deaf.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .table
                .lock()
                .expect("meta lock poisoned")
                .stamp(id)
                .is_some_and(|held| held >= stamp)
        {
            return Ok(None);
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

    /// The ids of records given encoded, as `compare` returns them.
    fn ids_of(encoded: &[Vec<u8>]) -> Vec<u64> {
        encoded.iter().map(|r| peek_stamp(r).unwrap().0.0).collect()
    }

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

    /// The table against a plain map of stamps and names: 20 seeds of 3,000 random merges (ids
    /// of any size, some seen again with older or newer stamps, six names shared and changed),
    /// the lookups by id and by name checked after every merge and the digest, a random range's
    /// comparison and `iter` after every tenth, so the id order is read while records keep
    /// arriving. Shown to fail with `settle` leaving new positions unsorted, with a rename
    /// leaving the old name's entry behind, and with the arena's compaction leaving the records'
    /// offsets as they were.
    #[test]
    fn the_table_agrees_with_a_plain_map() {
        use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
        for seed in 0..20u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let ids: Vec<u64> = (0..200).map(|_| rng.random()).collect();
            let mut table = MetaTable::default();
            let mut model: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            let mut names: BTreeMap<u64, String> = BTreeMap::new();
            let name = |i: u64| format!("node-{i}");
            for step in 0..3_000 {
                let id = ids[rng.random_range(0..ids.len())];
                let stamp = (rng.random_range(0..4u64), rng.random_range(0..4u64));
                let newer = model.get(&id).is_none_or(|held| *held < stamp);
                // A few names shared by many nodes, and renames with every newer record.
                let mut record = meta(id, stamp.0, stamp.1);
                record.name = name(rng.random_range(0..6));
                assert_eq!(
                    table.merge(record.clone()),
                    newer,
                    "seed {seed} step {step}"
                );
                if newer {
                    model.insert(id, stamp);
                    names.insert(id, record.name);
                }
                let probe = ids[rng.random_range(0..ids.len())];
                assert_eq!(table.stamp(NodeId(probe)), model.get(&probe).copied());
                let asked = name(rng.random_range(0..6));
                let mut got: Vec<u64> = table.named(&asked).map(|m| m.id.0).collect();
                got.sort_unstable();
                let want: Vec<u64> = names
                    .iter()
                    .filter(|(_, n)| **n == asked)
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(got, want, "seed {seed} step {step}: named {asked}");
                assert_eq!(
                    table.get(NodeId(probe)).map(|m| (m.id, m.name.to_owned())),
                    names.get(&probe).map(|n| (NodeId(probe), n.clone()))
                );
                // The arena holds the live records and at most an eighth more.
                let live: usize = table.records.iter().map(|(_, h)| h.len as usize).sum();
                let arena = &table.arena;
                assert_eq!(
                    arena.bytes.len(),
                    live + arena.dead,
                    "seed {seed} step {step}"
                );
                assert!(
                    arena.dead * 8 <= arena.bytes.len(),
                    "seed {seed} step {step}"
                );
                if step % 10 == 0 {
                    let want: Vec<DigestEntry> = model
                        .iter()
                        .map(|(id, (generation, version))| DigestEntry {
                            id: NodeId(*id),
                            generation: *generation,
                            version: *version,
                        })
                        .collect();
                    assert_eq!(table.digest(), want, "seed {seed} step {step}");
                    let sum = want.iter().fold(0u64, |sum, e| {
                        sum.wrapping_add(entry_hash(e.id, (e.generation, e.version)))
                    });
                    assert_eq!(table.digest_hash(), sum, "seed {seed} step {step}");
                    let (a, b) = (rng.random::<u64>(), rng.random::<u64>());
                    let range = NodeId(a.min(b))..=NodeId(a.max(b));
                    let (here, there) = table.compare(range.clone(), &[]);
                    let want: Vec<u64> = model
                        .range(a.min(b)..=a.max(b))
                        .map(|(id, _)| *id)
                        .collect();
                    let got: Vec<u64> = ids_of(&here);
                    assert_eq!(got, want, "seed {seed} step {step}: records in {range:?}");
                    assert!(there.is_empty());
                    assert_eq!(table.iter().count(), model.len());
                }
            }
        }
    }

    /// `compare` against a model made of maps: for random tables, random peer digests (in id
    /// order, and shuffled) and random ranges, the records sent are exactly ours in the range
    /// that the peer lacks or holds older, and the entries wanted exactly theirs in the range
    /// that we lack or hold older.
    #[test]
    fn compare_agrees_with_a_model() {
        use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus, seq::SliceRandom};
        for seed in 0..200u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let ids: Vec<u64> = (0..60).map(|_| rng.random_range(0..1_000u64)).collect();
            let stamp = |rng: &mut Xoshiro256PlusPlus| {
                (rng.random_range(0..3u64), rng.random_range(0..3u64))
            };
            let mut table = MetaTable::default();
            let mut ours: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for _ in 0..rng.random_range(0..40) {
                let (id, s) = (ids[rng.random_range(0..ids.len())], stamp(&mut rng));
                if table.merge(meta(id, s.0, s.1)) {
                    ours.insert(id, s);
                }
            }
            let mut theirs: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for _ in 0..rng.random_range(0..40) {
                theirs.insert(ids[rng.random_range(0..ids.len())], stamp(&mut rng));
            }
            let mut digest: Vec<DigestEntry> = theirs
                .iter()
                .map(|(id, (g, v))| DigestEntry {
                    id: NodeId(*id),
                    generation: *g,
                    version: *v,
                })
                .collect();
            if seed % 4 == 0 {
                digest.shuffle(&mut rng);
            }
            let (a, b) = (rng.random_range(0..1_000u64), rng.random_range(0..1_000u64));
            let range = a.min(b)..=a.max(b);
            let (here, there) = table.compare(NodeId(a.min(b))..=NodeId(a.max(b)), &digest);
            let mut got_here: Vec<(u64, (u64, u64))> = here
                .iter()
                .map(|r| {
                    let (id, stamp) = peek_stamp(r).unwrap();
                    (id.0, stamp)
                })
                .collect();
            got_here.sort_unstable();
            let want_here: Vec<(u64, (u64, u64))> = ours
                .range(range.clone())
                .filter(|(id, s)| theirs.get(id).is_none_or(|t| t < s))
                .map(|(id, s)| (*id, *s))
                .collect();
            assert_eq!(got_here, want_here, "seed {seed}: records sent");
            let mut got_there: Vec<u64> = there.iter().map(|e| e.id.0).collect();
            got_there.sort_unstable();
            let want_there: Vec<u64> = theirs
                .range(range)
                .filter(|(id, t)| ours.get(id).is_none_or(|s| s < t))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(got_there, want_there, "seed {seed}: entries wanted");
        }
    }

    /// The records message made from encodings is byte for byte what postcard writes for
    /// `MetaMsg::Records`, for any number of records (the count's varint grows past 127) and
    /// wants; it decodes back to the same message.
    #[test]
    fn records_payload_is_what_postcard_writes() {
        for (n, w) in [(0, 0), (1, 0), (0, 3), (3, 2), (130, 1), (200, 300)] {
            let records: Vec<NodeMeta> = (0..n)
                .map(|i| {
                    let mut m = meta(i * 977 + 1, 1 + i % 3, i % 300);
                    if i % 2 == 0 {
                        m.tags.insert(format!("k{i}"), "v".repeat(i as usize % 7));
                    }
                    m
                })
                .collect();
            let want: Vec<DigestEntry> = (0..w)
                .map(|i| DigestEntry {
                    id: NodeId(i * 31),
                    generation: i << (i % 50),
                    version: i,
                })
                .collect();
            let encoded: Vec<Vec<u8>> = records.iter().map(NodeMeta::encode).collect();
            let msg = MetaMsg::Records { records, want };
            let MetaMsg::Records { want, .. } = &msg else {
                unreachable!()
            };
            let ours = records_payload(&encoded, want);
            assert_eq!(
                ours,
                postcard::to_stdvec(&msg).unwrap(),
                "{n} records, {w} wants"
            );
            assert_eq!(postcard::from_bytes::<MetaMsg>(&ours).unwrap(), msg);
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
        assert_eq!(a.stamp(NodeId(1)), Some((2, 0)));
        assert_eq!(a.stamp(NodeId(2)), None);
    }

    /// The table holds records encoded and reads them through `MetaRef`: a field out of order
    /// or of another type there would read garbage (or fail) here.
    #[test]
    fn a_borrowed_record_reads_every_field_of_the_record() {
        let mut full = meta(7, 3, 9);
        full.name = "web-1".into();
        full.datacenter = "eu-west".into();
        full.gossip_addr = "[fe80::1]:7946".parse().unwrap();
        full.api_addr = Some("10.1.2.3:8080".parse().unwrap());
        full.tags = [("role", "db"), ("zone", "b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        full.votes = 3;
        full.leaving = true;
        let mut t = MetaTable::default();
        assert!(t.merge(full.clone()));
        let got = t.get(NodeId(7)).unwrap();
        assert_eq!(got.to_meta(), full);
        assert_eq!(
            (got.name, got.datacenter, got.votes),
            ("web-1", "eu-west", 3)
        );
        assert_eq!(
            t.iter().map(|m| m.to_meta()).collect::<Vec<_>>(),
            vec![full]
        );
    }

    proptest::proptest! {
        /// The stamp read by hand from a held record is the one postcard decodes.
        #[test]
        fn the_stamp_read_from_the_bytes_is_the_records(
            id in proptest::prelude::any::<u64>(),
            generation in proptest::prelude::any::<u64>(),
            version in proptest::prelude::any::<u64>(),
        ) {
            let bytes = meta(id, generation, version).encode();
            proptest::prop_assert_eq!(
                peek_stamp(&bytes),
                Some((NodeId(id), (generation, version)))
            );
            // Cut inside the stamp, it is not read; cut after it, it is.
            let (_, rest) = postcard::take_from_bytes::<(NodeId, u64, u64)>(&bytes).unwrap();
            let stamp_len = bytes.len() - rest.len();
            for end in 0..bytes.len() {
                proptest::prop_assert_eq!(peek_stamp(&bytes[..end]).is_some(), end >= stamp_len);
            }
        }

        /// Any bytes at all: a stamp or `None`, never a panic.
        #[test]
        fn any_bytes_peek_without_panicking(bytes in proptest::collection::vec(0u8.., 0..40)) {
            let _ = peek_stamp(&bytes);
        }
    }

    #[test]
    fn named_follows_renames_and_shared_names() {
        let mut t = MetaTable::default();
        let mut a = meta(1, 1, 1);
        a.name = "web".into();
        let mut b = meta(2, 1, 1);
        b.name = "web".into();
        t.merge(a.clone());
        t.merge(b);
        t.merge(meta(3, 1, 1));
        let ids = |t: &MetaTable, n: &str| {
            let mut ids = t.named(n).map(|m| m.id.0).collect::<Vec<_>>();
            ids.sort_unstable();
            ids
        };
        assert_eq!(ids(&t, "web"), vec![1, 2]);
        assert_eq!(ids(&t, "n3"), vec![3]);
        assert!(ids(&t, "n1").is_empty());
        a.version = 2;
        a.name = "db".into();
        t.merge(a);
        assert_eq!(ids(&t, "web"), vec![2]);
        assert_eq!(ids(&t, "db"), vec![1]);
    }

    #[test]
    fn compare_finds_both_directions() {
        let mut a = MetaTable::default();
        a.merge(meta(1, 1, 5));
        a.merge(meta(2, 1, 1));
        let mut b = MetaTable::default();
        b.merge(meta(1, 1, 3));
        b.merge(meta(3, 1, 1));
        let (newer_here, newer_there) = a.compare(NodeId(0)..=NodeId(u64::MAX), &b.digest());
        assert_eq!(ids_of(&newer_here), vec![1, 2]);
        assert_eq!(
            newer_there.iter().map(|e| e.id.0).collect::<Vec<_>>(),
            vec![3]
        );
    }

    /// A digest sent in parts asks for each missing record once: every part covers its own
    /// id range, and the parts cover every id. (Before parts named a range, a peer answered each
    /// part with every record outside it: this test then counted each record about once per part.)
    #[test]
    fn a_digest_in_parts_is_answered_with_each_missing_record_once() {
        let mut full = MetaTable::default();
        for id in 1..=100u64 {
            full.merge(meta(id * 7919, 1, 1));
        }
        let mut sparse = MetaTable::default();
        for id in (1..=100u64).filter(|id| id % 3 == 0) {
            sparse.merge(meta(id * 7919, 1, 1));
        }
        sparse.merge(meta(5, 1, 1)); // below every id of `full`
        sparse.merge(meta(u64::MAX, 1, 1)); // above every id of `full`
        let parts = digest_parts(&sparse.digest(), 70);
        assert!(parts.len() > 3, "the digest must be split for this test");
        let mut sent: Vec<u64> = Vec::new();
        let mut wanted: Vec<u64> = Vec::new();
        let mut next_from = 0u64;
        for part in &parts {
            let MetaMsg::DigestPart { from, to, entries } = part else {
                panic!("digest_parts made {part:?}");
            };
            assert_eq!(from.0, next_from, "parts leave a gap or overlap");
            assert!(entries.iter().all(|e| (*from..=*to).contains(&e.id)));
            next_from = to.0.wrapping_add(1);
            let (here, there) = full.compare(*from..=*to, entries);
            sent.extend(ids_of(&here));
            wanted.extend(there.iter().map(|e| e.id.0));
        }
        assert_eq!(next_from, 0, "the last part must reach the largest id");
        let mut expected: Vec<u64> = (1..=100u64)
            .filter(|id| id % 3 != 0)
            .map(|id| id * 7919)
            .collect();
        sent.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sent, expected, "each missing record exactly once");
        assert_eq!(wanted, vec![5, u64::MAX]);
        // An empty table still sends one part covering everything, so it is sent every record.
        let parts = digest_parts(&[], 70);
        let [MetaMsg::DigestPart { from, to, entries }] = parts.as_slice() else {
            panic!("{parts:?}");
        };
        assert_eq!(full.compare(*from..=*to, entries).0.len(), 100);
    }

    /// Parts are packed by the entries' encoded sizes and still fit a datagram, whatever the
    /// stamps' sizes; `encoded_len` is postcard's size of an entry.
    #[test]
    fn digest_parts_are_packed_by_size_and_fit_a_datagram() {
        use crate::envelope::MAX_PAYLOAD;
        use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
        for seed in 0..20u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut digest: Vec<DigestEntry> = (0..2_000)
                .map(|_| {
                    let bits = rng.random_range(0..64u32);
                    DigestEntry {
                        id: NodeId(rng.random()),
                        generation: rng.random::<u64>() >> bits,
                        version: rng.random::<u64>() >> rng.random_range(0..64u32),
                    }
                })
                .collect();
            digest.sort_by_key(|e| e.id);
            for e in &digest {
                assert_eq!(
                    e.encoded_len(),
                    postcard::to_stdvec(e).unwrap().len(),
                    "{e:?}"
                );
            }
            let parts = digest_parts(&digest, MAX_PAYLOAD - 32);
            let mut entries = 0;
            for part in &parts {
                let bytes = postcard::to_stdvec(part).unwrap().len();
                assert!(bytes <= MAX_PAYLOAD, "seed {seed}: a part of {bytes} bytes");
                let MetaMsg::DigestPart { entries: e, .. } = part else {
                    panic!("{part:?}");
                };
                entries += e.len();
            }
            assert_eq!(entries, digest.len());
            // Full: each part but the last would not take its successor's first entry.
            let total: usize = digest.iter().map(DigestEntry::encoded_len).sum();
            assert!(
                parts.len() <= total.div_ceil(MAX_PAYLOAD - 32 - 27) + 1,
                "seed {seed}: {} parts for {total} bytes",
                parts.len()
            );
        }
    }

    #[test]
    fn oversize_and_garbage_records_are_rejected() {
        let mut h = MetaBroadcasts::new(SharedMeta::default());
        let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &[0xff; 10], None);
        assert!(matches!(r, Err(MetaError::Malformed(_))));
        let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &[0; 2000], None);
        assert!(matches!(r, Err(MetaError::TooLarge(2000))));
        // A record already held is not news again, and an older one neither; a newer one is.
        let bytes = |m: &NodeMeta| m.encode();
        let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &bytes(&meta(4, 2, 2)), None);
        assert!(matches!(r, Ok(Some(_))));
        for stale in [meta(4, 2, 2), meta(4, 2, 1), meta(4, 1, 9)] {
            let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &bytes(&stale), None);
            assert!(matches!(r, Ok(None)), "{stale:?} taken as news");
        }
        let r = foca::BroadcastHandler::<()>::receive_item(&mut h, &bytes(&meta(4, 2, 3)), None);
        assert!(matches!(r, Ok(Some(_))));
        assert_eq!(h.table.lock().unwrap().stamp(NodeId(4)), Some((2, 3)));
    }
}
