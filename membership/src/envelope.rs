//! The authenticated envelope that wraps every agent-to-agent datagram.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic "CH" (2) | version (1) | channel (1) | cluster tag (4) | nonce (12) | ciphertext | AEAD tag (16)
//! ```
//!
//! The plain header lets a receiver count *why* a packet was dropped (not ours, a newer protocol,
//! another cluster) before spending a decryption on it. The header and the full cluster name are
//! the associated data of a ChaCha20-Poly1305 seal, so a packet from another cluster or sealed with
//! another key never authenticates, whatever its header claims. The cluster tag is only a fast,
//! non-secret filter.

use crate::keyring::{ClusterKey, KeyId, Keyring, KeyringError, KeyringOp};
use ring::aead::{Aad, Nonce};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{RwLock, RwLockReadGuard};

/// First two bytes of every Chorus datagram.
pub const MAGIC: [u8; 2] = *b"CH";
/// Wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the plain header before the ciphertext.
pub const HEADER_LEN: usize = 2 + 1 + 1 + 4 + 12;
/// Bytes the envelope adds to a payload.
pub const OVERHEAD: usize = HEADER_LEN + 16;
/// Largest datagram any Chorus node sends or accepts.
pub const MAX_DATAGRAM: usize = 1400;
/// Largest payload that fits in one datagram.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;

/// What a datagram carries; each channel has its own decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// SWIM traffic handled by foca.
    Swim,
    /// Discovery beacons sent to the multicast group.
    Beacon,
    /// Node metadata digests and records.
    Meta,
    /// Object store traffic (reserved for the store crate).
    Store,
}

impl Channel {
    /// All channels, in wire order.
    pub const ALL: [Channel; 4] = [
        Channel::Swim,
        Channel::Beacon,
        Channel::Meta,
        Channel::Store,
    ];

    fn to_byte(self) -> u8 {
        match self {
            Channel::Swim => 1,
            Channel::Beacon => 2,
            Channel::Meta => 3,
            Channel::Store => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Channel::Swim,
            2 => Channel::Beacon,
            3 => Channel::Meta,
            4 => Channel::Store,
            _ => return None,
        })
    }

    /// Stable lowercase name, used in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Swim => "swim",
            Channel::Beacon => "beacon",
            Channel::Meta => "meta",
            Channel::Store => "store",
        }
    }
}

/// Why an incoming datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than the envelope header plus tag.
    #[error("truncated: shorter than the envelope")]
    Truncated,
    /// Longer than [`MAX_DATAGRAM`] (or the frame limit of a stream).
    #[error("oversize: longer than allowed")]
    Oversize,
    /// Does not start with the Chorus magic bytes.
    #[error("not a chorus packet (bad magic)")]
    BadMagic,
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version")]
    BadVersion,
    /// A channel byte this build does not know.
    #[error("unknown channel")]
    BadChannel,
    /// The cluster tag names another cluster.
    #[error("packet from another cluster")]
    WrongCluster,
    /// The AEAD tag did not verify: wrong cluster key or tampering.
    #[error("authentication failed (wrong cluster key or tampered)")]
    BadAuth,
    /// Authenticated, but the payload did not decode.
    #[error("malformed payload")]
    Malformed,
    /// Authenticated and decoded, but sent by this very node (multicast loopback).
    #[error("sent by this node")]
    FromSelf,
    /// Authenticated, but a copy of one already received (or of an older connection).
    #[error("replayed: already received")]
    Replay,
}

impl DropReason {
    /// All reasons, for metrics that must list every label even at zero.
    pub const ALL: [DropReason; 10] = [
        DropReason::Truncated,
        DropReason::Oversize,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::BadChannel,
        DropReason::WrongCluster,
        DropReason::BadAuth,
        DropReason::Malformed,
        DropReason::FromSelf,
        DropReason::Replay,
    ];

    /// Stable snake_case name, used in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversize => "oversize",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion => "bad_version",
            DropReason::BadChannel => "bad_channel",
            DropReason::WrongCluster => "wrong_cluster",
            DropReason::BadAuth => "bad_auth",
            DropReason::Malformed => "malformed",
            DropReason::FromSelf => "from_self",
            DropReason::Replay => "replay",
        }
    }
}

/// Seals and opens envelopes for one cluster, with its keyring.
///
/// The ring sits behind a lock because one sealer serves the membership core and the stream
/// transport's tasks, and a keyring operation changes it for both at once. Sealing takes the
/// read lock for one encryption; only a keyring operation writes.
pub struct Sealer {
    cluster: String,
    tag: [u8; 4],
    ring: RwLock<Keyring>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A datagram that passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Which decoder the payload is for.
    pub channel: Channel,
    /// The decrypted payload.
    pub payload: Vec<u8>,
    /// The key it opened under.
    pub key: KeyId,
    /// Its nonce (replay protection reads it).
    pub nonce: [u8; 12],
}

impl Sealer {
    /// A sealer for `cluster` with a ring of the one key `key`.
    pub fn new(cluster: &str, key: &ClusterKey) -> Self {
        Sealer::with_ring(cluster, Keyring::new(key.clone(), []))
    }

    /// A sealer for `cluster` with the keys of `ring`.
    pub fn with_ring(cluster: &str, ring: Keyring) -> Self {
        let h = fnv1a64(&[cluster.as_bytes()]);
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&h.to_be_bytes()[..4]);
        Sealer {
            cluster: cluster.to_string(),
            tag,
            ring: RwLock::new(ring),
        }
    }

    /// The cluster name this sealer is scoped to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The keyring, for reading.
    pub fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        self.ring.read().expect("keyring lock poisoned")
    }

    /// Changes the keyring (see [`Keyring::apply`]); nothing changes on an error.
    pub fn apply(&self, op: &KeyringOp) -> Result<bool, KeyringError> {
        self.ring.write().expect("keyring lock poisoned").apply(op)
    }

    /// Seals `payload` for `channel` under the primary key. `nonce` must never repeat under one
    /// key: datagrams take theirs from a [`crate::replay::NonceSeq`], stream frames draw 96
    /// random bits (a repeat is negligible well past 2^32 frames).
    pub fn seal(&self, channel: Channel, nonce: [u8; 12], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(channel.to_byte());
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&nonce);
        let aad = self.aad(&out);
        out.extend_from_slice(payload);
        let ring = self.keyring();
        let tag = ring.keys[0]
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut out[HEADER_LEN..],
            )
            .expect("sealing fails only past 256 GiB in one message");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Checks and decrypts a datagram, saying why when it must be dropped.
    pub fn open(&self, datagram: &[u8]) -> Result<Opened, DropReason> {
        self.open_frame(datagram, MAX_DATAGRAM)
    }

    /// Checks and decrypts a sealed frame of at most `max` bytes (stream transports carry frames
    /// larger than a datagram). Tries the primary key first, then the others in ring order.
    pub fn open_frame(&self, datagram: &[u8], max: usize) -> Result<Opened, DropReason> {
        if datagram.len() > max {
            return Err(DropReason::Oversize);
        }
        if datagram.len() < 2 || datagram[..2] != MAGIC {
            return Err(DropReason::BadMagic);
        }
        if datagram.len() < OVERHEAD {
            return Err(DropReason::Truncated);
        }
        if datagram[2] != PROTOCOL_VERSION {
            return Err(DropReason::BadVersion);
        }
        let channel = Channel::from_byte(datagram[3]).ok_or(DropReason::BadChannel)?;
        if datagram[4..8] != self.tag {
            return Err(DropReason::WrongCluster);
        }
        let header = &datagram[..HEADER_LEN];
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&datagram[8..HEADER_LEN]);
        let aad = self.aad(header);
        let ring = self.keyring();
        for k in &ring.keys {
            // Opened in place; a failed open leaves the copy unusable, so each key gets its own.
            let mut payload = datagram[HEADER_LEN..].to_vec();
            if let Ok(plain) = k.cipher.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut payload,
            ) {
                let len = plain.len();
                payload.truncate(len);
                k.opened.fetch_add(1, Ordering::Relaxed);
                return Ok(Opened {
                    channel,
                    payload,
                    key: k.id,
                    nonce,
                });
            }
        }
        Err(DropReason::BadAuth)
    }

    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(header.len() + self.cluster.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(self.cluster.as_bytes());
        aad
    }
}

/// A bucket hash for a value that is already random or unique (a node id, a sender generation):
/// a multiply and a fold make sure the low bits, which pick a hash table's bucket, depend on all
/// of the value's bits. Not keyed: a sender that holds the cluster key could pick colliding
/// values, and such a sender can already forge records.
pub fn spread64(x: u64) -> u64 {
    let mixed = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed ^ (mixed >> 32)
}

/// FNV-1a over several byte slices: a stable, dependency-free hash for tags and digests (not a
/// security primitive; the AEAD authenticates).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> Sealer {
        Sealer::new("prod", &ClusterKey::new([7; 32]))
    }

    #[test]
    fn round_trip() {
        let s = sealer();
        let d = s.seal(Channel::Meta, [1; 12], b"hello");
        assert_eq!(d.len(), OVERHEAD + 5);
        let o = s.open(&d).unwrap();
        assert_eq!(
            o,
            Opened {
                channel: Channel::Meta,
                payload: b"hello".to_vec(),
                key: ClusterKey::new([7; 32]).id(),
                nonce: [1; 12],
            }
        );
    }

    /// A datagram sealed by a build that used the RustCrypto `chacha20poly1305` crate (before
    /// ring's implementation replaced it) opens, and sealing the same input gives the same bytes:
    /// nodes of both builds understand each other, and key ids did not change.
    #[test]
    fn a_datagram_sealed_by_an_earlier_build_opens_and_seals_the_same() {
        let hex = "4348010185729c0e6e6f6e63652d7477656c76657cc0111700521a85f0c248f8f0fff8d8ec40\
                   bf66362f6c31deba7a5c2866cd2b7b6f6acc7a889b4fc7d06ad286ef0721d551a116f7";
        let earlier: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let payload = b"a datagram sealed by an earlier build";
        let s = sealer();
        let o = s.open(&earlier).unwrap();
        assert_eq!(o.payload, payload);
        assert_eq!(o.channel, Channel::Swim);
        assert_eq!(o.key.to_string(), "24550aa3");
        assert_eq!(s.seal(Channel::Swim, *b"nonce-twelve", payload), earlier);
        // One flipped bit anywhere past the header fails authentication.
        for at in HEADER_LEN..earlier.len() {
            let mut bad = earlier.clone();
            bad[at] ^= 1;
            assert_eq!(
                s.open(&bad),
                Err(DropReason::BadAuth),
                "bit flipped at {at}"
            );
        }
    }

    #[test]
    fn wrong_cluster_and_wrong_key_are_told_apart() {
        let d = sealer().seal(Channel::Swim, [1; 12], b"x");
        let other_cluster = Sealer::new("staging", &ClusterKey::new([7; 32]));
        assert_eq!(other_cluster.open(&d), Err(DropReason::WrongCluster));
        let other_key = Sealer::new("prod", &ClusterKey::new([8; 32]));
        assert_eq!(other_key.open(&d), Err(DropReason::BadAuth));
    }

    #[test]
    fn header_tampering_fails_auth() {
        let s = sealer();
        let mut d = s.seal(Channel::Swim, [1; 12], b"payload");
        d[3] = 3; // claim the meta channel
        assert_eq!(s.open(&d), Err(DropReason::BadAuth));
    }

    #[test]
    fn size_checks() {
        let s = sealer();
        assert_eq!(s.open(&[]), Err(DropReason::BadMagic));
        assert_eq!(s.open(b"CH\x01"), Err(DropReason::Truncated));
        assert_eq!(
            s.open(&vec![0u8; MAX_DATAGRAM + 1]),
            Err(DropReason::Oversize)
        );
        let d = s.seal(Channel::Swim, [1; 12], b"payload");
        assert_eq!(s.open(&d[..d.len() - 1]), Err(DropReason::BadAuth));
        let mut v = d.clone();
        v[2] = 9;
        assert_eq!(s.open(&v), Err(DropReason::BadVersion));
        let mut c = d;
        c[3] = 77;
        assert_eq!(s.open(&c), Err(DropReason::BadChannel));
    }

    #[test]
    fn a_rotation_keeps_every_packet_opening_and_a_removed_key_is_refused() {
        let (old, new) = (ClusterKey::new([1; 32]), ClusterKey::new([2; 32]));
        let a = Sealer::new("prod", &old);
        let b = Sealer::new("prod", &old);
        let before = a.seal(Channel::Swim, [1; 12], b"under old");
        // Install on both: both still seal with the old key, both open either.
        for s in [&a, &b] {
            assert_eq!(s.apply(&KeyringOp::Install(new.clone())), Ok(true));
        }
        // `a` uses the new key before `b` does: each still opens what the other sends.
        a.apply(&KeyringOp::Use(new.id())).unwrap();
        let from_a = a.seal(Channel::Swim, [2; 12], b"under new");
        let from_b = b.seal(Channel::Swim, [3; 12], b"under old");
        assert_eq!(b.open(&from_a).unwrap().key, new.id());
        assert_eq!(a.open(&from_b).unwrap().key, old.id());
        b.apply(&KeyringOp::Use(new.id())).unwrap();
        for s in [&a, &b] {
            assert_eq!(s.apply(&KeyringOp::Remove(old.id())), Ok(true));
        }
        assert_eq!(a.open(&before), Err(DropReason::BadAuth));
        assert_eq!(a.open(&from_b), Err(DropReason::BadAuth));
        assert!(a.open(&b.seal(Channel::Swim, [4; 12], b"x")).is_ok());
        let counts: Vec<u64> = a.keyring().list().iter().map(|k| k.opened).collect();
        assert_eq!(counts, vec![1], "one packet opened under the new key on a");
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_rejected_under_any_ring(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in 0usize..10_000) {
            let s = sealer();
            s.apply(&KeyringOp::Install(ClusterKey::new([9; 32]))).unwrap();
            let mut d = s.seal(Channel::Store, [3; 12], &payload);
            let bit = bit % (d.len() * 8);
            d[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(s.open(&d).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = sealer().open(&bytes);
        }
    }
}
