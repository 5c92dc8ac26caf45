//! Replays the log decoder's fuzz corpus (`fuzz/corpus/wal_record`) through the fuzz target's
//! check, so CI runs every input the fuzzer kept without needing nightly. With
//! `CHORUS_WRITE_CORPUS=1` it (re)writes the seed inputs first.

use membership::NodeId;
use std::path::PathBuf;
use store::wal::{self, Record};
use store::{Entry, Version};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wal_record")
}

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

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let dir = corpus();
    if std::env::var_os("CHORUS_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/wal_record exists") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        wal::fuzz_check(&bytes);
        n += 1;
    }
    assert!(n >= seeds().len(), "the corpus holds only {n} inputs");
    for (_, bytes) in seeds() {
        wal::fuzz_check(&bytes);
    }
}
