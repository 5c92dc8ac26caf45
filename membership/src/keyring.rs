//! The keyring: every cluster key a node accepts, and the one it seals with.
//!
//! Rotating a key on a running cluster takes three cluster-wide steps, each finished on every
//! node before the next starts: *install* the new key (every node opens packets under it but
//! still seals with the old one), *use* it (every node seals with it; the old one still opens
//! what is in flight and what lagging nodes send), *remove* the old one. At no step does a node
//! send what another cannot open, so no member is ever reported failed (docs/security.md).
//!
//! A key is named by its id: 4 bytes of a MAC of a fixed message under the key, printed as 8 hex
//! digits. The id names a key in commands and metrics without revealing anything about it.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most keys a ring holds: a rotation needs two; a few more allow overlapping rotations, and a
/// bound keeps trial decryption of a packet under a stranger's key cheap.
pub const MAX_KEYS: usize = 8;

/// The nonce the key id is computed under. Datagram nonces start with a generation whose top bit
/// is set ([`crate::envelope::NonceSeq`]), and stream nonces are random; this one's top bit is
/// clear, so no packet ever shares it.
const ID_NONCE: [u8; 12] = *b"chorus-keyid";

/// The 32-byte secret shared by every member of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub(crate) [u8; 32]);

impl ClusterKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        ClusterKey(bytes)
    }

    /// The raw bytes (to persist the ring or carry a key to install; never to log).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key anyone can compute from the cluster name: used when no key is configured, so that a
    /// development cluster works out of the box. It scopes clusters but is no secret.
    pub fn insecure_from_name(cluster: &str) -> Self {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let h = crate::envelope::fnv1a64(&[
                b"chorus-insecure-key".as_slice(),
                &[i as u8],
                cluster.as_bytes(),
            ]);
            chunk.copy_from_slice(&h.to_be_bytes());
        }
        ClusterKey(out)
    }

    /// ChaCha20-Poly1305 (RFC 8439) under this key.
    pub(crate) fn cipher(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.0)
                .expect("a ChaCha20-Poly1305 key is 32 bytes"),
        )
    }

    /// The key's public name.
    pub fn id(&self) -> KeyId {
        let tag = self
            .cipher()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(ID_NONCE),
                Aad::from(b"chorus key id"),
                &mut [],
            )
            .expect("sealing an empty message cannot fail");
        let mut id = [0u8; 4];
        id.copy_from_slice(&tag.as_ref()[..4]);
        KeyId(id)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({})", self.id())
    }
}

// A key travels only inside sealed store frames (to install it on a peer).
impl Serialize for ClusterKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClusterKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 32]>::deserialize(d).map(ClusterKey)
    }
}

/// A key's public name: 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("a key id is 8 hexadecimal digits, got {s:?}");
        if s.len() != 8 {
            return Err(bad());
        }
        let n = u32::from_str_radix(s, 16).map_err(|_| bad())?;
        Ok(KeyId(n.to_be_bytes()))
    }
}

/// A change to the keyring, applied on every node by the cluster-wide operation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringOp {
    /// Accept packets under this key too (idempotent).
    Install(ClusterKey),
    /// Seal with this installed key from now on.
    Use(KeyId),
    /// Stop accepting this key. Refused for the primary and for the last key.
    Remove(KeyId),
}

impl fmt::Debug for KeyringOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringOp::Install(k) => write!(f, "Install({})", k.id()),
            KeyringOp::Use(id) => write!(f, "Use({id})"),
            KeyringOp::Remove(id) => write!(f, "Remove({id})"),
        }
    }
}

impl KeyringOp {
    /// Stable lowercase name of the operation.
    pub fn name(&self) -> &'static str {
        match self {
            KeyringOp::Install(_) => "install",
            KeyringOp::Use(_) => "use",
            KeyringOp::Remove(_) => "remove",
        }
    }

    /// The key the operation is about.
    pub fn key_id(&self) -> KeyId {
        match self {
            KeyringOp::Install(k) => k.id(),
            KeyringOp::Use(id) | KeyringOp::Remove(id) => *id,
        }
    }
}

/// Why a keyring operation was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KeyringError {
    /// No installed key has this id.
    #[error("no key {0} is installed on this node")]
    UnknownKey(KeyId),
    /// The primary key cannot be removed: `use` another first.
    #[error("key {0} is the primary key; `use` another key before removing it")]
    RemovePrimary(KeyId),
    /// The ring is full.
    #[error("the keyring already holds {MAX_KEYS} keys; remove one first")]
    Full,
}

impl KeyringError {
    /// Stable snake_case code, for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            KeyringError::UnknownKey(_) => "unknown_key",
            KeyringError::RemovePrimary(_) => "key_is_primary",
            KeyringError::Full => "keyring_full",
        }
    }
}

pub(crate) struct RingKey {
    pub(crate) id: KeyId,
    key: ClusterKey,
    pub(crate) cipher: LessSafeKey,
    pub(crate) opened: AtomicU64,
}

impl RingKey {
    fn new(key: ClusterKey) -> Self {
        RingKey {
            id: key.id(),
            cipher: key.cipher(),
            key,
            opened: AtomicU64::new(0),
        }
    }
}

/// One key of a ring as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: KeyId,
    /// Whether this node seals with it.
    pub primary: bool,
    /// Packets and frames opened under it since this node started.
    pub opened: u64,
}

/// The keys a node accepts; the first is the primary, which seals.
pub struct Keyring {
    pub(crate) keys: Vec<RingKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| k.id))
            .finish()
    }
}

impl Keyring {
    /// A ring sealing with `primary` and also accepting `others` (duplicates ignored).
    pub fn new(primary: ClusterKey, others: impl IntoIterator<Item = ClusterKey>) -> Self {
        let mut ring = Keyring {
            keys: vec![RingKey::new(primary)],
        };
        for k in others {
            // A configuration with too many keys keeps the first ones (the agent validates).
            let _ = ring.install(k);
        }
        ring
    }

    /// Applies `op`. `Ok(true)` when the ring changed, `Ok(false)` when it already was so.
    pub fn apply(&mut self, op: &KeyringOp) -> Result<bool, KeyringError> {
        match op {
            KeyringOp::Install(k) => self.install(k.clone()),
            KeyringOp::Use(id) => self.use_key(*id),
            KeyringOp::Remove(id) => self.remove(*id),
        }
    }

    fn position(&self, id: KeyId) -> Result<usize, KeyringError> {
        self.keys
            .iter()
            .position(|k| k.id == id)
            .ok_or(KeyringError::UnknownKey(id))
    }

    fn install(&mut self, key: ClusterKey) -> Result<bool, KeyringError> {
        if self.keys.iter().any(|k| k.key == key) {
            return Ok(false);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(RingKey::new(key));
        Ok(true)
    }

    fn use_key(&mut self, id: KeyId) -> Result<bool, KeyringError> {
        let i = self.position(id)?;
        if i == 0 {
            return Ok(false);
        }
        // The new primary goes first; the others keep their order, so trial decryption tries
        // the previous primary (what lagging nodes still send) right after it.
        let k = self.keys.remove(i);
        self.keys.insert(0, k);
        Ok(true)
    }

    fn remove(&mut self, id: KeyId) -> Result<bool, KeyringError> {
        let i = match self.position(id) {
            Ok(i) => i,
            // Already gone: a repeated remove (an operator retrying a partial report) is done.
            Err(_) => return Ok(false),
        };
        if i == 0 {
            // Also covers the last key: a ring of one has only its primary.
            return Err(KeyringError::RemovePrimary(id));
        }
        self.keys.remove(i);
        Ok(true)
    }

    /// The primary key's id.
    pub fn primary(&self) -> KeyId {
        self.keys[0].id
    }

    /// Every key with its counters, primary first.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| KeyInfo {
                id: k.id,
                primary: i == 0,
                opened: k.opened.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every key, primary first (to persist the ring).
    pub fn keys(&self) -> Vec<ClusterKey> {
        self.keys.iter().map(|k| k.key.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> ClusterKey {
        ClusterKey::new([b; 32])
    }

    #[test]
    fn ids_are_stable_distinct_and_parse_back() {
        assert_eq!(k(1).id(), k(1).id());
        assert_ne!(k(1).id(), k(2).id());
        let id = k(1).id();
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        assert!("xyz".parse::<KeyId>().is_err());
        assert!("0123456789".parse::<KeyId>().is_err());
    }

    #[test]
    fn install_use_remove_and_the_refusals() {
        let mut r = Keyring::new(k(1), []);
        assert_eq!(
            r.apply(&KeyringOp::Remove(k(1).id())),
            Err(KeyringError::RemovePrimary(k(1).id())),
            "the last key is the primary and stays"
        );
        assert_eq!(r.apply(&KeyringOp::Install(k(2))), Ok(true));
        assert_eq!(r.apply(&KeyringOp::Install(k(2))), Ok(false));
        assert_eq!(
            r.apply(&KeyringOp::Use(k(3).id())),
            Err(KeyringError::UnknownKey(k(3).id()))
        );
        assert_eq!(r.apply(&KeyringOp::Use(k(2).id())), Ok(true));
        assert_eq!(r.primary(), k(2).id());
        assert_eq!(
            r.apply(&KeyringOp::Remove(k(2).id())),
            Err(KeyringError::RemovePrimary(k(2).id()))
        );
        assert_eq!(r.apply(&KeyringOp::Remove(k(1).id())), Ok(true));
        assert_eq!(r.apply(&KeyringOp::Remove(k(1).id())), Ok(false));
        assert_eq!(r.keys(), vec![k(2)]);
        for b in 3..=(MAX_KEYS as u8 + 1) {
            r.apply(&KeyringOp::Install(k(b))).unwrap();
        }
        assert_eq!(
            r.apply(&KeyringOp::Install(k(100))),
            Err(KeyringError::Full)
        );
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let s = format!("{:?} {:?}", k(0xab), KeyringOp::Install(k(0xab)));
        assert!(!s.contains("171") && !s.contains("abab"), "{s}");
    }
}
