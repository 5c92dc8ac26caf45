//! Durability benchmark (not a test: it measures).
//!
//! `cargo bench -p chorus-agent --bench durability -- [--keys N]`
//!
//! Writes a log of N records of 100-byte values (one per key) with the agent's writer, then
//! measures: bytes on disk per key for the log; the time to read it back and rebuild the replica
//! (what a restart does); the same for a snapshot of those keys; and bytes per key in the
//! snapshot.

use agent::wal_file::{self, Report, Writer};
use membership::NodeId;
use std::collections::BTreeMap;
use std::time::Instant;
use store::wal::Record;
use store::{Entry, Fsync, StoreConfig, StoreCore, Version};

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn rebuild(dir: &std::path::Path) -> (f64, usize) {
    let t = Instant::now();
    let r = wal_file::recover(dir, false).expect("recover");
    let mut core = StoreCore::new(
        NodeId(1),
        StoreConfig::new(1),
        1,
        std::time::Duration::ZERO,
        0,
    );
    core.restore(r.records);
    (t.elapsed().as_secs_f64(), core.entries())
}

fn main() {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut keys: u64 = 1_000_000;
    let mut i = 0;
    while i < v.len() {
        match v[i].as_str() {
            "--keys" => {
                keys = v[i + 1].parse().expect("--keys needs a number");
                i += 2;
            }
            "--bench" => i += 1,
            other => panic!("unknown argument {other}"),
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    std::fs::create_dir_all(&dir).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut policies = BTreeMap::new();
    policies.insert("default".to_string(), Fsync::Never);
    let mut writer = Writer::start(dir.clone(), policies, tx);
    let t = Instant::now();
    let batch = 10_000;
    let mut lsn = 0;
    let value = vec![b'x'; 100];
    while lsn < keys {
        let n = batch.min(keys - lsn);
        let recs: Vec<Record> = (0..n)
            .map(|_| {
                lsn += 1;
                Record {
                    lsn,
                    store: "default".into(),
                    key: format!("key-{lsn:08}"),
                    entry: Entry {
                        version: Version {
                            ts: lsn << 16,
                            node: NodeId(7),
                        },
                        value: Some(value.clone()),
                        expires_at: None,
                    },
                }
            })
            .collect();
        writer.append(recs);
    }
    while let Some(Report::Durable(w, _)) = rx.blocking_recv() {
        if w == keys {
            break;
        }
    }
    let write_secs = t.elapsed().as_secs_f64();
    let log_bytes = dir_bytes(&dir);
    let (secs, entries) = rebuild(&dir);
    println!("{keys} keys of 100-byte values, one record each, on this machine's disk");
    println!("  writing the log (fsync never): {write_secs:.2} s");
    println!(
        "  log on disk: {log_bytes} bytes, {:.1} bytes per key",
        log_bytes as f64 / keys as f64
    );
    println!("  restart from the log: {secs:.2} s to read it back and rebuild {entries} entries");

    // A snapshot of the same keys, then a restart from it.
    let r = wal_file::recover(&dir, false).unwrap();
    let mut core = StoreCore::new(
        NodeId(1),
        StoreConfig::new(1),
        1,
        std::time::Duration::ZERO,
        0,
    );
    core.restore(r.records);
    let (through, all) = core.snapshot();
    writer.snapshot(through, all);
    writer.close();
    let snap_bytes = dir_bytes(&dir);
    let (secs, entries) = rebuild(&dir);
    println!(
        "  snapshot on disk: {snap_bytes} bytes, {:.1} bytes per key",
        snap_bytes as f64 / keys as f64
    );
    println!(
        "  restart from the snapshot: {secs:.2} s to read it back and rebuild {entries} entries"
    );
}
