//! Properties of the write-ahead log format: records round-trip; any truncation reads back as a
//! prefix of what was written (or is reported); any single flipped bit is detected, never read
//! as a different record.

use membership::NodeId;
use proptest::prelude::*;
use store::wal::{self, Damage, Decoded, HeaderError, Record};
use store::{Entry, Version};

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        "[a-z]{1,8}",
        "[ -~]{0,40}",
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(lsn, store, key, ts, node, value, expires_at)| Record {
            lsn,
            store,
            key,
            entry: Entry {
                version: Version {
                    ts,
                    node: NodeId(node),
                },
                value,
                expires_at,
            },
        })
}

fn file(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = wal::file_header().to_vec();
    let mut ends = vec![bytes.len()];
    for r in records {
        wal::encode(r, &mut bytes);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #[test]
    fn records_round_trip(records in proptest::collection::vec(record(), 0..20)) {
        let (bytes, _) = file(&records);
        let d = wal::decode_file(&bytes).unwrap();
        prop_assert_eq!(d, Decoded { records, good_len: bytes.len(), damage: None, unwritten: 0 });
    }

    #[test]
    fn any_truncation_reads_back_a_prefix_or_is_reported(
        records in proptest::collection::vec(record(), 1..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let (bytes, ends) = file(&records);
        let at = cut.index(bytes.len() + 1);
        match wal::decode_file(&bytes[..at]) {
            Err(e) => prop_assert_eq!(e, HeaderError::Short(at)),
            Ok(d) => {
                // The records that fit entirely before the cut, and nothing else.
                let whole = ends.iter().filter(|e| **e <= at).count() - 1;
                prop_assert_eq!(&d.records[..], &records[..whole]);
                prop_assert_eq!(d.good_len, ends[whole]);
                if at == ends[whole] {
                    prop_assert_eq!(d.damage, None);
                } else {
                    let torn = matches!(d.damage, Some(Damage::Torn { offset, .. }) if offset == ends[whole]);
                    prop_assert!(torn, "{:?}", d.damage);
                }
            }
        }
    }

    /// A batch written into allocated room (zeros) and cut anywhere by a crash: what reads back
    /// is the records before the cut (a record whose lost bytes were zeros anyway reads back
    /// whole) and, at worst, a tear; never corruption, which would stop the start.
    #[test]
    fn any_cut_in_allocated_room_reads_back_a_prefix_or_a_tear(
        records in proptest::collection::vec(record(), 1..12),
        cut in any::<prop::sample::Index>(),
        room in 1usize..300,
    ) {
        let (bytes, ends) = file(&records);
        let at = cut.index(bytes.len() + 1).max(wal::FILE_HEADER_LEN);
        let mut crashed = bytes[..at].to_vec();
        crashed.resize(bytes.len() + room, 0);
        let d = wal::decode_file(&crashed).unwrap();
        let whole = ends.iter().filter(|e| **e <= at).count() - 1;
        prop_assert!(d.records.len() >= whole, "{} of {} whole records", d.records.len(), whole);
        prop_assert_eq!(&d.records[..], &records[..d.records.len()]);
        prop_assert!(!matches!(d.damage, Some(Damage::Corrupt { .. })), "{:?}", d.damage);
        prop_assert_eq!(d.damage.is_none(), d.good_len + d.unwritten == crashed.len());
    }

    #[test]
    fn any_flipped_bit_is_detected(
        records in proptest::collection::vec(record(), 1..8),
        bit in any::<prop::sample::Index>(),
    ) {
        let (mut bytes, _) = file(&records);
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        match wal::decode_file(&bytes) {
            Err(_) => {}
            Ok(d) => {
                prop_assert!(d.damage.is_some(), "a flipped bit {} went unnoticed", i);
                prop_assert!(d.records.len() < records.len());
                prop_assert_eq!(&d.records[..], &records[..d.records.len()]);
            }
        }
    }
}
