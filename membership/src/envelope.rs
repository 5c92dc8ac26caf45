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

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::fmt;

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
}

impl DropReason {
    /// All reasons, for metrics that must list every label even at zero.
    pub const ALL: [DropReason; 9] = [
        DropReason::Truncated,
        DropReason::Oversize,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::BadChannel,
        DropReason::WrongCluster,
        DropReason::BadAuth,
        DropReason::Malformed,
        DropReason::FromSelf,
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
        }
    }
}

/// The 32-byte secret shared by every member of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        ClusterKey(bytes)
    }

    /// A key anyone can compute from the cluster name: used when no key is configured, so that a
    /// development cluster works out of the box. It scopes clusters but is no secret.
    pub fn insecure_from_name(cluster: &str) -> Self {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let h = fnv1a64(&[
                b"chorus-insecure-key".as_slice(),
                &[i as u8],
                cluster.as_bytes(),
            ]);
            chunk.copy_from_slice(&h.to_be_bytes());
        }
        ClusterKey(out)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Seals and opens envelopes for one cluster.
#[derive(Clone)]
pub struct Sealer {
    cluster: String,
    tag: [u8; 4],
    cipher: ChaCha20Poly1305,
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
}

impl Sealer {
    /// A sealer for `cluster` using `key`.
    pub fn new(cluster: &str, key: &ClusterKey) -> Self {
        let h = fnv1a64(&[cluster.as_bytes()]);
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&h.to_be_bytes()[..4]);
        Sealer {
            cluster: cluster.to_string(),
            tag,
            cipher: ChaCha20Poly1305::new(&Key::from(key.0)),
        }
    }

    /// The cluster name this sealer is scoped to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Seals `payload` for `channel`. `nonce` must never repeat under one key: the core draws it
    /// from its RNG (96 random bits make a repeat negligible well past 2^32 packets).
    pub fn seal(&self, channel: Channel, nonce: [u8; 12], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(channel.to_byte());
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&nonce);
        let aad = self.aad(&out);
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: payload,
                    aad: &aad,
                },
            )
            .expect("chacha20poly1305 encryption cannot fail for in-memory buffers");
        out.extend_from_slice(&ct);
        out
    }

    /// Checks and decrypts a datagram, saying why when it must be dropped.
    pub fn open(&self, datagram: &[u8]) -> Result<Opened, DropReason> {
        self.open_frame(datagram, MAX_DATAGRAM)
    }

    /// Checks and decrypts a sealed frame of at most `max` bytes (stream transports carry frames
    /// larger than a datagram).
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
        let payload = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &datagram[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| DropReason::BadAuth)?;
        Ok(Opened { channel, payload })
    }

    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(header.len() + self.cluster.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(self.cluster.as_bytes());
        aad
    }
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
                payload: b"hello".to_vec()
            }
        );
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

    proptest! {
        #[test]
        fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in 0usize..10_000) {
            let s = sealer();
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
