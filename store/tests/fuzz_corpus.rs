//! Replays the store fuzz corpora (`fuzz/corpus/wal_record` for the log decoder,
//! `fuzz/corpus/store_msg` for store messages into a core) through the fuzz targets' checks, so CI
//! runs every input the fuzzers kept without needing nightly. With `CHORUS_WRITE_CORPUS=1` it
//! (re)writes the seed inputs first.

use membership::NodeId;
use std::path::PathBuf;
use store::wal::{self, Record};
use store::{Entry, StoreMsg, Version};

fn seeds() -> Vec<(String, Vec<u8>)> {
    let rec = |lsn: u64, value: Option<&[u8]>| Record {
        lsn,
        store: "default".into(),
        key: format!("key-{lsn}"),
        entry: Entry {
            version: Version {
                ts: lsn << 16,
                node: NodeId(lsn),
            },
            value: value.map(<[u8]>::to_vec),
            expires_at: lsn.is_multiple_of(2).then_some(1_700_000_000_000),
        },
    };
    let mut file = wal::file_header().to_vec();
    let mut out = vec![("empty-log".to_string(), file.clone())];
    for (i, v) in [Some(&b"v"[..]), None, Some(&[7u8; 300][..])]
        .into_iter()
        .enumerate()
    {
        wal::encode(&rec(i as u64 + 1, v), &mut file);
        out.push((format!("log-{}-records", i + 1), file.clone()));
    }
    out.push(("torn-tail".into(), file[..file.len() - 5].to_vec()));
    let mut flipped = file.clone();
    flipped[wal::FILE_HEADER_LEN + 2] ^= 1;
    out.push(("flipped-length".into(), flipped));
    let mut zeros = file.clone();
    zeros.extend_from_slice(&[0; 64]);
    out.push(("zero-tail".into(), zeros));
    out.push(("not-a-log".into(), b"hello, world".to_vec()));
    out
}

/// Replays `fuzz/corpus/<target>` and the seeds through `check` (writing the seeds into the
/// corpus first with `CHORUS_WRITE_CORPUS=1`).
fn replay(target: &str, seeds: Vec<(String, Vec<u8>)>, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    if std::env::var_os("CHORUS_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory exists") {
        check(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(
        n >= seeds.len(),
        "the {target} corpus holds only {n} inputs"
    );
    for (_, bytes) in &seeds {
        check(bytes);
    }
}

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    replay("wal_record", seeds(), wal::fuzz_check);
}

/// Store messages of every kind, well-formed and not, each seed a sequence of them.
fn message_seeds() -> Vec<(String, Vec<u8>)> {
    let entry = |ts: u64, v: Option<&[u8]>| Entry {
        version: Version {
            ts: ts << 16,
            node: NodeId(2),
        },
        value: v.map(<[u8]>::to_vec),
        expires_at: None,
    };
    let versions = |round, from: Option<&str>, until: Option<&str>| StoreMsg::Versions {
        store: "default".into(),
        buckets: vec![0, 1, 255, 9999],
        versions: vec![
            ("k1".into(), entry(9, None).version),
            ("zz".into(), Version::ZERO),
        ],
        from: from.map(str::to_string),
        until: until.map(str::to_string),
        round,
    };
    let seqs: Vec<(&str, Vec<StoreMsg>)> = vec![
        (
            "catch-up-round",
            vec![
                versions(1, None, None),
                StoreMsg::SyncMark {
                    round: 1,
                    lost: false,
                    versions: 2,
                },
                StoreMsg::Entries {
                    store: "default".into(),
                    entries: vec![("k1".into(), entry(9, Some(b"v")))],
                },
                StoreMsg::SyncMark {
                    round: 1,
                    lost: false,
                    versions: 0,
                },
            ],
        ),
        ("backwards-range", vec![versions(0, Some("zz"), Some("a"))]),
        (
            "leaves",
            vec![
                StoreMsg::Leaves {
                    store: "default".into(),
                    leaves: vec![
                        (0, vec![0; 64]),
                        (3, vec![1; 64]),
                        (255, vec![2; 3]),
                        (9999, vec![0; 64]),
                    ],
                },
                StoreMsg::Leaves {
                    store: "Bad Name".into(),
                    leaves: vec![(1, vec![5; 64])],
                },
                StoreMsg::LeafVersions {
                    store: "default".into(),
                    leaves: vec![0, 65, 16_383, 65_535],
                    versions: vec![("k1".into(), entry(9, None).version)],
                    from: None,
                    until: Some("a".into()),
                },
                StoreMsg::RoundEntries {
                    store: "default".into(),
                    round: 1 | store::msg::PUSH_EMPTY,
                    entries: vec![
                        ("k1".into(), entry(9, Some(b"v"))),
                        ("".into(), entry(1, None)),
                    ],
                },
                StoreMsg::RoundEntries {
                    store: "Bad Name".into(),
                    round: 0,
                    entries: vec![],
                },
                StoreMsg::LeafVersions {
                    store: "default".into(),
                    leaves: vec![],
                    versions: vec![("k2".into(), Version::ZERO)],
                    from: None,
                    until: None,
                },
            ],
        ),
        (
            "digests",
            vec![
                StoreMsg::Digest {
                    stores: vec![("default".into(), vec![1, 2])],
                    round: 5,
                },
                StoreMsg::Digest {
                    stores: vec![("Bad Name".into(), vec![])],
                    round: 0,
                },
                StoreMsg::SyncBarrier { round: 5 },
            ],
        ),
        (
            "quorum-traffic",
            vec![
                StoreMsg::ReadReq {
                    op: 1,
                    store: "default".into(),
                    key: "k2".into(),
                },
                StoreMsg::ReadResp {
                    op: 1,
                    entry: Some(entry(3, Some(b"x"))),
                },
                StoreMsg::WriteReq {
                    op: 7,
                    store: "default".into(),
                    key: "".into(),
                    entry: entry(4, Some(b"y")),
                },
                StoreMsg::WriteAck { op: 7 },
                StoreMsg::Fetch {
                    store: "nosuch".into(),
                    keys: vec!["k0".into(), "k3".into()],
                },
                StoreMsg::Fetch {
                    store: "default".into(),
                    keys: vec!["k0".into(), "k3".into()],
                },
            ],
        ),
    ];
    seqs.into_iter()
        .map(|(name, msgs)| {
            let mut bytes = Vec::new();
            for m in msgs {
                bytes.extend(postcard::to_stdvec(&m).unwrap());
            }
            (name.to_string(), bytes)
        })
        .collect()
}

#[test]
fn the_store_message_corpus_replays_cleanly() {
    replay("store_msg", message_seeds(), store::fuzz_messages);
}
