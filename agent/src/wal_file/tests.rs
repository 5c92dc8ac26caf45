//! Recovery, repair, snapshots and the writer against real files in a temporary directory.

use super::writer::{PREALLOCATE, finish, write_batch};
use super::*;
use membership::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;
use store::Fsync;
use store::{Entry, Version};

fn rec(lsn: u64) -> Record {
    Record {
        lsn,
        store: "default".into(),
        key: format!("k{lsn}"),
        entry: Entry {
            version: Version {
                ts: lsn << 16,
                node: NodeId(1),
            },
            value: Some(vec![lsn as u8; 10]),
            expires_at: None,
        },
    }
}

/// A writer thread for `dir`, with these stores' fsync policies, and its reports.
fn writer(
    dir: &Path,
    policies: &[(&str, Fsync)],
) -> (Writer, tokio::sync::mpsc::UnboundedReceiver<Report>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let policies: BTreeMap<String, Fsync> =
        policies.iter().map(|(s, f)| (s.to_string(), *f)).collect();
    (Writer::start(dir.to_path_buf(), policies, tx), rx)
}

fn write(dir: &Path, lsns: std::ops::RangeInclusive<u64>) {
    let mut seg = None;
    let records: Vec<Record> = lsns.map(rec).collect();
    write_batch(dir, &mut seg, &records, &mut Vec::new(), true).unwrap();
}

#[test]
fn a_log_reads_back_and_a_torn_tail_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), 1..=5);
    let r = recover(tmp.path(), false).unwrap();
    assert_eq!(r.records.len(), 5);
    assert_eq!(r.next_lsn, 6);
    // Cut the last record in half: the start drops it and goes on.
    let path = segments(tmp.path()).unwrap().remove(0);
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let r = recover(tmp.path(), false).unwrap();
    assert_eq!(r.records.len(), 4);
    assert!(r.discarded_bytes > 0);
    // The truncation stuck: a second start finds nothing to drop.
    let r = recover(tmp.path(), false).unwrap();
    assert_eq!((r.records.len(), r.discarded_bytes), (4, 0));
}

#[test]
fn damage_before_the_tail_stops_the_start_until_repair() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), 1..=5);
    let path = segments(tmp.path()).unwrap().remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[wal::FILE_HEADER_LEN + wal::RECORD_HEADER_LEN + 3] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let err = recover(tmp.path(), false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("at byte 10"),
        "{msg}"
    );
    assert!(msg.contains("--repair"), "{msg}");
    let r = recover(tmp.path(), true).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_lsn, 1);
    assert!(recover(tmp.path(), false).is_ok());
}

#[test]
fn segments_roll_over_and_read_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seg = None;
    let mut buf = Vec::new();
    for lsn in 1..=3 {
        write_batch(tmp.path(), &mut seg, &[rec(lsn)], &mut buf, true).unwrap();
        if lsn < 3 {
            // What a full segment gets before the next one starts: cut to its records.
            let len = seg.as_ref().unwrap().len;
            finish(seg.take().unwrap()).unwrap();
            let path = segments(tmp.path()).unwrap().pop().unwrap();
            assert_eq!(std::fs::metadata(path).unwrap().len(), len);
        }
    }
    assert_eq!(segments(tmp.path()).unwrap().len(), 3);
    let r = recover(tmp.path(), false).unwrap();
    let lsns: Vec<u64> = r.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1, 2, 3]);
}

#[test]
fn a_snapshot_replaces_the_segments_and_reads_back_with_later_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, mut rx) = writer(tmp.path(), &[("default", Fsync::Always)]);
    w.append((1..=50).map(rec).collect());
    // The replica then holds 10 live entries; a snapshot of them covers 1..=50.
    let live: Vec<Record> = (41..=50).map(|l| Record { lsn: 50, ..rec(l) }).collect();
    w.snapshot(50, live);
    w.append(vec![rec(51), rec(52)]);
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(50, 50)));
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(52, 52)));
    w.close();
    assert_eq!(snapshots(tmp.path()).unwrap().len(), 1);
    assert_eq!(
        segments(tmp.path()).unwrap().len(),
        1,
        "only the segment after the snapshot"
    );
    let r = recover(tmp.path(), false).unwrap();
    let keys: Vec<String> = r.records.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), 12);
    assert_eq!(keys[0], "k41");
    assert_eq!(keys[11], "k52");
    assert_eq!(r.next_lsn, 53);
    // A snapshot was written whole: zeros after its records are damage (in a segment they
    // would be unwritten room).
    let snap = snapshots(tmp.path()).unwrap().remove(0);
    let len = std::fs::metadata(&snap).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(len + 64)
        .unwrap();
    let msg = recover(tmp.path(), false).unwrap_err().to_string();
    assert!(
        msg.contains(&snap.display().to_string()) && msg.contains("zeros"),
        "{msg}"
    );
}

#[test]
fn never_and_interval_stores_are_acknowledged_once_written_and_synced_later() {
    for policy in [Fsync::Never, Fsync::Interval(Duration::from_millis(30))] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, mut rx) = writer(tmp.path(), &[("default", policy)]);
        w.append(vec![rec(1), rec(2), rec(3)]);
        let first = rx.blocking_recv().unwrap();
        assert_eq!(
            first,
            Report::Durable(3, 0),
            "{policy:?}: written, not synced"
        );
        if let Fsync::Interval(_) = policy {
            // The interval fsync follows without more records (a bounded wait on the report).
            assert_eq!(rx.blocking_recv(), Some(Report::Durable(3, 3)));
        }
        w.close();
        assert_eq!(recover(tmp.path(), false).unwrap().records.len(), 3);
    }
}

#[test]
fn the_writer_reports_written_and_synced_marks() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, mut rx) = writer(tmp.path(), &[("default", Fsync::Always)]);
    w.append(vec![rec(1), rec(2)]);
    let report = rx.blocking_recv().unwrap();
    assert_eq!(report, Report::Durable(2, 2));
    w.close();
    let r = recover(tmp.path(), false).unwrap();
    assert_eq!(r.records.len(), 2);
}

/// Records are written into room allocated ahead of them (the file is longer than its records
/// while the writer runs); a start reads every record, cuts the room off without calling it
/// damage, and the writer then goes on from the last record. Zeros at the end of a segment
/// that is not the last were records once: that stops the start.
#[test]
fn records_written_into_allocated_room_read_back_and_the_log_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seg = None;
    let mut buf = Vec::new();
    for lsn in 1..=4 {
        write_batch(tmp.path(), &mut seg, &[rec(lsn)], &mut buf, true).unwrap();
    }
    let written = seg.as_ref().unwrap().len;
    let path = segments(tmp.path()).unwrap().remove(0);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        wal::FILE_HEADER_LEN as u64 + PREALLOCATE
    );
    drop(seg); // a crash: nothing cut
    let r = recover(tmp.path(), false).unwrap();
    assert_eq!(r.records.len(), 4);
    assert_eq!((r.discarded_bytes, r.repaired, r.next_lsn), (0, false, 5));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
    // The writer goes on from there, into new room.
    let mut seg = None;
    write_batch(tmp.path(), &mut seg, &[rec(5), rec(6)], &mut buf, true).unwrap();
    drop(seg);
    let r = recover(tmp.path(), false).unwrap();
    let lsns: Vec<u64> = r.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=6).collect::<Vec<_>>());

    // A later segment exists, and the earlier one ends in zeros.
    let mut seg = None;
    write_batch(tmp.path(), &mut seg, &[rec(7)], &mut buf, true).unwrap();
    finish(seg.take().unwrap()).unwrap();
    let mut seg = None;
    write_batch(tmp.path(), &mut seg, &[rec(8)], &mut buf, true).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len + 100)
        .unwrap();
    let msg = recover(tmp.path(), false).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("zeros after the last record")
            && msg.contains("only the last log segment"),
        "{msg}"
    );
}

/// The writer thread cuts its segment to its records when it stops.
#[test]
fn a_stopped_writer_leaves_no_room_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, mut rx) = writer(tmp.path(), &[("default", Fsync::Always)]);
    w.append((1..=3).map(rec).collect());
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(3, 3)));
    let path = segments(tmp.path()).unwrap().remove(0);
    assert!(std::fs::metadata(&path).unwrap().len() > PREALLOCATE);
    w.close();
    let bytes = std::fs::read(&path).unwrap();
    let d = wal::decode_file(&bytes).unwrap();
    assert_eq!(
        (d.records.len(), d.good_len, d.unwritten),
        (3, bytes.len(), 0)
    );
}

/// The driver writes a small batch itself only when the thread holds nothing: the log keeps
/// its order whichever way each batch goes. Each round queues a batch for the thread and at once
/// offers the next to `write_inline`, which must refuse while the thread is busy with the
/// first (taking it would put it on disk ahead of the earlier batch); then, with the thread
/// idle, it must take one. (Shown to fail with the `finished != sent` guard removed: batches
/// land out of order.)
#[test]
fn batches_written_inline_keep_the_log_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, mut rx) = writer(
        tmp.path(),
        &[("default", Fsync::Always), ("fast", Fsync::Never)],
    );
    // No segment yet: opening one is the thread's work.
    let first = w.write_inline(vec![rec(1)]).unwrap_err();
    w.append(first);
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(1, 1)));
    let (mut inline, mut refused) = (0, 0);
    let mut lsn = 2;
    for _ in 0..100 {
        w.append(vec![rec(lsn)]);
        match w.write_inline(vec![rec(lsn + 1)]) {
            Ok(report) => {
                // Only sound if the thread had finished the batch before it.
                assert_eq!(report, Report::Durable(lsn + 1, lsn + 1));
                inline += 1;
                assert_eq!(rx.blocking_recv(), Some(Report::Durable(lsn, lsn)));
            }
            Err(back) => {
                assert_eq!(back.len(), 1, "handed back untouched");
                w.append(back);
                refused += 1;
                // One report per write: the thread may have taken both batches in one.
                loop {
                    match rx.blocking_recv() {
                        Some(Report::Durable(l, s)) if l == s && l == lsn => {}
                        Some(Report::Durable(l, s)) if l == s && l == lsn + 1 => break,
                        other => panic!("after batch {lsn}: {other:?}"),
                    }
                }
            }
        }
        // The thread is idle now: a small batch that must be synced is written here.
        let r = w.write_inline(vec![rec(lsn + 2)]);
        assert_eq!(r, Ok(Report::Durable(lsn + 2, lsn + 2)));
        inline += 1;
        lsn += 3;
    }
    // A batch that needs no fsync (a `never` store) goes to the thread.
    let mut fast = rec(lsn);
    fast.store = "fast".into();
    assert!(w.write_inline(vec![fast]).is_err());
    w.close();
    assert!(
        refused > 0 && inline >= 100,
        "refused {refused}, inline {inline}"
    );
    let r = recover(tmp.path(), false).unwrap();
    let lsns: Vec<u64> = r.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..lsn).collect::<Vec<_>>());
}

/// A write in the driver's thread that fails hands its records back and leaves nothing in the
/// file, so the thread writes them next (and reports the failure only if it fails too); one that
/// is slow turns such writes off for a while, so a slow disk does not keep stalling the driver.
#[test]
fn a_failed_or_slow_inline_write_leaves_the_batch_to_the_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, mut rx) = writer(tmp.path(), &[("default", Fsync::Always)]);
    w.append(vec![rec(1)]);
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(1, 1)));
    w.inject(Duration::ZERO, true);
    let back = w.write_inline(vec![rec(2), rec(3)]).unwrap_err();
    assert_eq!(back.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![2, 3]);
    w.append(back);
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(3, 3)));
    // Slow: written, and the next batch, on a fast disk again, still goes to the thread.
    w.inject(Duration::from_millis(15), false);
    assert_eq!(w.write_inline(vec![rec(4)]), Ok(Report::Durable(4, 4)));
    w.inject(Duration::ZERO, false);
    assert!(
        w.write_inline(vec![rec(5)]).is_err(),
        "off after a slow write"
    );
    w.append(vec![rec(5)]);
    assert_eq!(rx.blocking_recv(), Some(Report::Durable(5, 5)));
    w.close();
    let r = recover(tmp.path(), false).unwrap();
    let lsns: Vec<u64> = r.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1, 2, 3, 4, 5]);
}
