//! The write-ahead log's on-disk format: segment files of checksummed records, and how a segment
//! is read back. Pure functions over bytes; the agent does the file I/O.
//!
//! A segment starts with an 8-byte magic and a little-endian `u16` format version. Each record is
//!
//! ```text
//! len: u32 LE | header_crc: u32 LE = crc32(len) | crc: u32 LE = crc32(len, payload) | payload
//! ```
//!
//! where the payload is a postcard-encoded [`Record`]. The length has a checksum of its own so that
//! a flipped bit in it is reported as corruption rather than read as a record running past the end
//! of the file (which would look like a write cut short).
//!
//! Reading stops at the first damage and says what it was:
//! - **torn**: the last record was being written when the process or the machine stopped (fewer
//!   bytes than a header, a payload shorter than its length, zeros to the end of the file, or a bad
//!   payload checksum on the very last record). The records before it are good; the tail is
//!   dropped.
//! - **corrupt**: anything else (a bad header checksum, or a bad payload checksum with more bytes
//!   after it). The start stops with the file and the offset; `chorus agent --repair` truncates
//!   there and lets anti-entropy refill the rest from peers.

use crate::entry::Entry;
use serde::{Deserialize, Serialize};

/// First bytes of every segment and snapshot file.
pub const MAGIC: [u8; 8] = *b"CHORUSWL";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the first record of a file.
pub const FILE_HEADER_LEN: usize = 10;
/// Bytes before each record's payload.
pub const RECORD_HEADER_LEN: usize = 12;
/// Largest payload accepted (values are capped far below this).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// One logged change: `entry` was applied to `key` in `store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Log sequence number: strictly increasing across segments.
    pub lsn: u64,
    /// Store name.
    pub store: String,
    /// Key.
    pub key: String,
    /// The entry applied (merging is idempotent, so replaying a record twice is harmless).
    pub entry: Entry,
}

/// The bytes that start a segment or snapshot file.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Appends `rec`, framed, to `out`. The payload is encoded in place after a header left blank
/// and filled in once its length is known: a `postcard::to_stdvec` per record, grown a few bytes at
/// a time, was 17 % of a catching-up node's log thread (docs/benchmarks.md).
pub fn encode(rec: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 12]);
    *out = postcard::to_extend(rec, std::mem::take(out)).expect("records always encode");
    let len = ((out.len() - start - 12) as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&out[start + 12..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Appends an already encoded payload, framed, to `out`.
pub fn encode_payload(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// What stopped a read before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The last record is incomplete: drop the bytes from `offset` on.
    Torn {
        /// Where the incomplete record starts.
        offset: usize,
        /// What was incomplete.
        reason: &'static str,
    },
    /// A record before the end is damaged.
    Corrupt {
        /// Where the damaged record starts.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

impl Damage {
    /// Where the damaged or incomplete record starts.
    pub fn offset(&self) -> usize {
        match self {
            Damage::Torn { offset, .. } | Damage::Corrupt { offset, .. } => *offset,
        }
    }

    /// What was wrong, in words.
    pub fn reason(&self) -> String {
        match self {
            Damage::Torn { reason, .. } => reason.to_string(),
            Damage::Corrupt { reason, .. } => reason.clone(),
        }
    }
}

/// Why a file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than the file header.
    #[error("the file is {0} bytes, shorter than its {FILE_HEADER_LEN}-byte header")]
    Short(usize),
    /// Not a Chorus log file.
    #[error("the file does not start with the Chorus log magic")]
    BadMagic,
    /// Written by a different format version.
    #[error("the file has format version {0}; this build reads version {FORMAT_VERSION}")]
    Version(u16),
}

/// Records read from one file, and where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The good records, in order.
    pub records: Vec<Record>,
    /// Length of the good prefix of the file (header included).
    pub good_len: usize,
    /// Why reading stopped before the end, if it did.
    pub damage: Option<Damage>,
    /// Zero bytes from `good_len` to the end of the file, starting where a record would: room
    /// the writer allocated ahead of its records (a segment grows in steps, so that an fsync
    /// need not record a new file size) and has not written yet. Not damage.
    pub unwritten: usize,
}

impl Decoded {
    /// What is wrong with a file written whole before anyone read it (a snapshot, a backup): its
    /// damage, or zeros after its records, which only a log segment's allocated room has.
    pub fn whole_file_damage(&self) -> Option<Damage> {
        self.damage.clone().or_else(|| {
            (self.unwritten > 0).then_some(Damage::Corrupt {
                offset: self.good_len,
                reason: format!(
                    "{} bytes of zeros after the last record (only the last log segment may end \
                     in room not yet written)",
                    self.unwritten
                ),
            })
        })
    }
}

/// Checks the file header.
pub fn check_header(bytes: &[u8]) -> Result<(), HeaderError> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(HeaderError::Short(bytes.len()));
    }
    if bytes[..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let v = u16::from_le_bytes([bytes[8], bytes[9]]);
    if v != FORMAT_VERSION {
        return Err(HeaderError::Version(v));
    }
    Ok(())
}

/// Reads a whole file's worth of bytes: header, then records until the end or the first damage.
pub fn decode_file(bytes: &[u8]) -> Result<Decoded, HeaderError> {
    check_header(bytes)?;
    let mut out = Decoded {
        records: Vec::new(),
        good_len: FILE_HEADER_LEN,
        damage: None,
        unwritten: 0,
    };
    let mut at = FILE_HEADER_LEN;
    while at < bytes.len() {
        match framed(bytes, at) {
            Ok((payload, next)) => match postcard::from_bytes::<Record>(payload) {
                Ok(r) => {
                    out.records.push(r);
                    at = next;
                    out.good_len = at;
                }
                Err(e) => {
                    out.damage = Some(Damage::Corrupt {
                        offset: at,
                        reason: format!("checksum matches but the record does not decode: {e}"),
                    });
                    break;
                }
            },
            Err(d) => {
                // Checked only on failure: it scans to the end. Zeros from a record's start to
                // the end are room allocated and not yet written (or a file a crash extended
                // without its data, which is the same: nothing there was acknowledged).
                if bytes[at..].iter().all(|b| *b == 0) {
                    out.unwritten = bytes.len() - at;
                } else {
                    out.damage = Some(torn_if_only_zeros_follow(bytes, at, d));
                }
                break;
            }
        }
    }
    Ok(out)
}

/// `damage` of the record at `at`, as a tear when nothing but zeros follows that record (and
/// some do): a batch written into allocated room and cut short by a crash leaves its last
/// record damaged and zeros after it, where an appended batch left a record cut at the end of
/// the file. The record ends where its length says if the length passes its checksum, else
/// after its header. Damage with anything else after it stays corruption.
fn torn_if_only_zeros_follow(bytes: &[u8], at: usize, damage: Damage) -> Damage {
    if !matches!(damage, Damage::Corrupt { .. }) {
        return damage;
    }
    let rest = &bytes[at..];
    let header_ok = rest.len() >= RECORD_HEADER_LEN
        && crc32fast::hash(&rest[..4]).to_le_bytes() == rest[4..8]
        && u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize <= MAX_PAYLOAD;
    let extent = if header_ok {
        RECORD_HEADER_LEN + u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize
    } else {
        RECORD_HEADER_LEN
    };
    let after = &rest[extent.min(rest.len())..];
    if !after.is_empty() && after.iter().all(|b| *b == 0) {
        Damage::Torn {
            offset: at,
            reason: "a record cut short, only zeros after it",
        }
    } else {
        damage
    }
}

fn framed(bytes: &[u8], at: usize) -> Result<(&[u8], usize), Damage> {
    let rest = &bytes[at..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(Damage::Torn {
            offset: at,
            reason: "a partial record header",
        });
    }
    let word = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
    let (len, header_crc, crc) = (word(0), word(4), word(8));
    if crc32fast::hash(&rest[..4]) != header_crc {
        return Err(Damage::Corrupt {
            offset: at,
            reason: "the record length fails its checksum".into(),
        });
    }
    let len = len as usize;
    if len > MAX_PAYLOAD {
        return Err(Damage::Corrupt {
            offset: at,
            reason: format!("a record of {len} bytes is over the {MAX_PAYLOAD}-byte limit"),
        });
    }
    let end = RECORD_HEADER_LEN + len;
    if rest.len() < end {
        return Err(Damage::Torn {
            offset: at,
            reason: "a payload shorter than its length",
        });
    }
    let payload = &rest[RECORD_HEADER_LEN..end];
    let mut h = crc32fast::Hasher::new();
    h.update(&rest[..4]);
    h.update(payload);
    if h.finalize() != crc {
        if rest.len() == end {
            return Err(Damage::Torn {
                offset: at,
                reason: "the last record fails its checksum (a write cut short)",
            });
        }
        return Err(Damage::Corrupt {
            offset: at,
            reason: "a record fails its checksum".into(),
        });
    }
    Ok((payload, at + end))
}

/// The property the fuzz target and its corpus replay check on any bytes: decoding never
/// panics, and the records it accepts re-encode to exactly the accepted prefix of the input.
#[cfg(feature = "testing")]
pub fn fuzz_check(data: &[u8]) {
    if let Ok(d) = decode_file(data) {
        let mut again = file_header().to_vec();
        for r in &d.records {
            encode(r, &mut again);
        }
        // Re-encoding is canonical only for canonical input; a decoder accepting non-canonical
        // bytes must still account for every byte it accepted.
        assert!(d.good_len + d.unwritten <= data.len());
        assert_eq!(d.damage.is_none(), d.good_len + d.unwritten == data.len());
        assert!(
            data[d.good_len..d.good_len + d.unwritten]
                .iter()
                .all(|b| *b == 0)
        );
        if again.len() == d.good_len {
            assert_eq!(&again[..], &data[..d.good_len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Version;
    use membership::NodeId;

    fn rec(lsn: u64, value: &[u8]) -> Record {
        Record {
            lsn,
            store: "default".into(),
            key: format!("k{lsn}"),
            entry: Entry {
                version: Version {
                    ts: lsn << 16,
                    node: NodeId(7),
                },
                value: Some(value.to_vec()),
                expires_at: None,
            },
        }
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut b = file_header().to_vec();
        for r in records {
            encode(r, &mut b);
        }
        b
    }

    #[test]
    fn a_file_reads_back() {
        let rs = vec![rec(1, b"a"), rec(2, b""), rec(3, &[9; 300])];
        let d = decode_file(&file(&rs)).unwrap();
        assert_eq!(d.records, rs);
        assert_eq!(d.damage, None);
    }

    /// Encoding in place writes the same bytes as framing a separately encoded payload, the
    /// format every earlier build wrote and reads.
    #[test]
    fn records_encoded_in_place_are_framed_as_before() {
        let mut out = b"prefix".to_vec();
        let mut expected = out.clone();
        for r in [rec(1, b"a"), rec(2, b""), rec(300, &[7; 200])] {
            encode(&r, &mut out);
            encode_payload(&postcard::to_stdvec(&r).unwrap(), &mut expected);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(decode_file(b"CHORUS"), Err(HeaderError::Short(6)));
        assert_eq!(decode_file(b"NOTALOG\0\x01\0"), Err(HeaderError::BadMagic));
        let mut b = file(&[]);
        b[8] = 9;
        assert_eq!(decode_file(&b), Err(HeaderError::Version(9)));
    }

    /// Two records (the second holding `value`), their file, and where the second starts.
    fn two(value: &[u8]) -> (Vec<Record>, Vec<u8>, usize) {
        let rs = vec![rec(1, b"one"), rec(2, value)];
        let b = file(&rs);
        let second =
            FILE_HEADER_LEN + RECORD_HEADER_LEN + postcard::to_stdvec(&rs[0]).unwrap().len();
        (rs, b, second)
    }

    #[test]
    fn damage_before_the_tail_is_corruption_and_at_the_tail_a_tear() {
        let (rs, b, second) = two(b"two");
        // A flipped payload bit in the first record: corruption at offset 10, with or without
        // allocated room (zeros) after the second record.
        for room in [0, 64] {
            let mut c = b.clone();
            c.resize(b.len() + room, 0);
            c[FILE_HEADER_LEN + RECORD_HEADER_LEN + 2] ^= 4;
            let d = decode_file(&c).unwrap();
            assert!(matches!(
                d.damage,
                Some(Damage::Corrupt {
                    offset: FILE_HEADER_LEN,
                    ..
                })
            ));
            assert!(d.records.is_empty());
        }
        // The same in the last record: a tear, the first record kept.
        let mut t = b.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        let d = decode_file(&t).unwrap();
        assert!(matches!(d.damage, Some(Damage::Torn { offset, .. }) if offset == second));
        assert_eq!(d.records, rs[..1]);
        // A flipped bit in a length is corruption even in the last record.
        let mut l = b.clone();
        l[second] ^= 0x40;
        let d = decode_file(&l).unwrap();
        assert!(matches!(d.damage, Some(Damage::Corrupt { .. })));
        // Zeros after the last record are room not yet written: no damage.
        let mut z = b.clone();
        z.extend_from_slice(&[0; 100]);
        let d = decode_file(&z).unwrap();
        assert_eq!(d.records, rs);
        assert_eq!((&d.damage, d.good_len, d.unwritten), (&None, b.len(), 100));
        // A file written whole (a snapshot, a backup) never has any: there they are damage.
        assert!(
            matches!(d.whole_file_damage(), Some(Damage::Corrupt { offset, .. }) if offset == b.len())
        );
        assert_eq!(decode_file(&b).unwrap().whole_file_damage(), None);
    }

    /// A batch written into allocated room and cut short by a crash: its last record damaged,
    /// zeros after it. That is a tear wherever the cut falls (in the payload, in the header),
    /// and damage followed by anything but zeros is still corruption.
    #[test]
    fn a_record_cut_short_in_allocated_room_is_a_tear() {
        let (rs, b, second) = two(b"two two two");
        let room = |cut: usize| {
            let mut f = b[..cut].to_vec();
            f.resize(b.len() + 64, 0);
            f
        };
        // (The last byte is the expiry, `None`: a zero, so the cut starts one before it.)
        for cut in [
            b.len() - 2,
            second + RECORD_HEADER_LEN + 3,
            second + 6,
            second + 1,
        ] {
            let d = decode_file(&room(cut)).unwrap();
            assert_eq!(d.records, rs[..1], "cut at {cut}");
            assert!(
                matches!(d.damage, Some(Damage::Torn { offset, .. }) if offset == second),
                "cut at {cut}: {:?}",
                d.damage
            );
        }
        // Cut right after the first record: nothing damaged, the rest unwritten.
        let d = decode_file(&room(second)).unwrap();
        assert_eq!(
            (d.records.len(), d.damage, d.unwritten),
            (1, None, b.len() + 64 - second)
        );
        // A bit flipped in the last record's payload with something non-zero after it, far
        // into the room: corruption, not a tear.
        let mut far = room(b.len());
        let end = far.len() - 1;
        far[end] = 1;
        far[b.len() - 1] ^= 1;
        let d = decode_file(&far).unwrap();
        assert!(
            matches!(d.damage, Some(Damage::Corrupt { .. })),
            "{:?}",
            d.damage
        );
    }
}
