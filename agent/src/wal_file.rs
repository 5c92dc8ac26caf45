//! The store's write-ahead log on disk: segment files in `<data_dir>/store/`, read back at start
//! and appended to by one writer thread (fsync blocks, so it stays off the driver's task).
//!
//! The record format is `store::wal`. A segment is named after the first sequence number it
//! holds (`wal-00000000000000000001.log`) and is closed at 64 MiB. The writer takes batches of
//! records, writes each batch with one `write`, and fsyncs once per batch when a store in it has
//! `fsync = always` (group commit: everything that queued up while the previous fsync ran shares
//! the next one), every interval for `fsync = <interval>`, and never itself for `fsync = never`.
//! It reports how far the log is written and synced; the store core releases acknowledgements
//! from those marks.
//!
//! Snapshots bound the disk: the whole replica is written as records to
//! `snap-<sequence number>.snap` (through a temporary file, fsynced, renamed), after which every
//! segment and older snapshot is deleted. A start loads the newest snapshot, then the segments.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use store::Fsync;
use store::wal::{self, Damage, Record};
use tracing::{error, info, warn};

/// Segments are closed once they reach this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Why the log could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A file could not be read, truncated or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A record before the end of the log is damaged.
    #[error(
        "the store log {path} is damaged at byte {offset}: {reason}. Nothing was served from it. \
         Start with `chorus agent --repair` to discard the log from there; the discarded entries \
         come back from peers by anti-entropy"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// What start-up read back.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every good record, in log order.
    pub records: Vec<Record>,
    /// The next sequence number to write.
    pub next_lsn: u64,
    /// Bytes discarded by truncating a torn tail or, with repair, damage.
    pub discarded_bytes: u64,
    /// The log directory existed before (false: this node has no store log at all yet).
    pub existed: bool,
    /// Repair discarded records (not just a torn tail): writes this node acknowledged may be gone.
    pub repaired: bool,
    /// The lost-writes marker is present: an earlier start lost its log and has not caught up.
    pub marked_lost: bool,
}

/// The file whose presence says this node may have lost writes it acknowledged and has not yet
/// caught up from its peers; it survives restarts, so a crash during the catch-up cannot make a
/// partial replica look whole.
pub const LOST_MARKER: &str = "CATCHING_UP";

/// Creates the lost-writes marker durably (the file, then the directory entry).
pub fn mark_lost(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(LOST_MARKER);
    let f = File::create(&path)?;
    f.sync_all()?;
    File::open(dir)?.sync_all()
}

/// Removes the lost-writes marker once the catch-up is complete and on disk.
pub fn clear_lost(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(LOST_MARKER)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    }
    File::open(dir)?.sync_all()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecoverError + '_ {
    move |source| RecoverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segment files of `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, RecoverError> {
    files(dir, "wal-", ".log")
}

/// The snapshot files of `dir`, in order (the newest last).
fn snapshots(dir: &Path) -> Result<Vec<PathBuf>, RecoverError> {
    files(dir, "snap-", ".snap")
}

fn files(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>, RecoverError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the log in `dir` back. A torn tail of the last segment is truncated with a log line.
/// Damage anywhere else stops the start with the file and offset, unless `repair`: then the
/// segment is truncated there, every later segment is removed, and the start goes on.
pub fn recover(dir: &Path, repair: bool) -> Result<Recovered, RecoverError> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = segments(dir)?;
    let mut out = Recovered {
        next_lsn: 1,
        existed,
        marked_lost: dir.join(LOST_MARKER).exists(),
        ..Recovered::default()
    };
    // The newest snapshot first. It was renamed into place only once complete and synced, so
    // any damage in it is corruption; older snapshots left by a crash during compaction go.
    let snaps = snapshots(dir)?;
    if let Some((newest, older)) = snaps.split_last() {
        let bytes = std::fs::read(newest).map_err(io(newest))?;
        let decoded = wal::decode_file(&bytes).map_err(|e| RecoverError::Corrupt {
            path: newest.clone(),
            offset: 0,
            reason: e.to_string(),
        })?;
        if let Some(d) = decoded.damage {
            return Err(RecoverError::Corrupt {
                path: newest.clone(),
                offset: d.offset(),
                reason: d.reason(),
            });
        }
        out.records = decoded.records;
        for old in older {
            std::fs::remove_file(old).map_err(io(old))?;
        }
    }
    for (k, path) in files.iter().enumerate() {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(path))?;
        let last = k + 1 == files.len();
        let (records, cut) = match wal::decode_file(&bytes) {
            Err(e) => (
                vec![],
                Some((
                    0,
                    Damage::Corrupt {
                        offset: 0,
                        reason: e.to_string(),
                    },
                )),
            ),
            Ok(d) => {
                let cut = d.damage.map(|dmg| (d.good_len, dmg));
                (d.records, cut)
            }
        };
        out.records.extend(records);
        let Some((good, damage)) = cut else { continue };
        let (offset, reason) = (damage.offset(), damage.reason());
        let torn = matches!(damage, Damage::Torn { .. });
        if !(repair || torn && last) {
            return Err(RecoverError::Corrupt {
                path: path.clone(),
                offset,
                reason,
            });
        }
        let discarded = bytes.len() - good;
        out.discarded_bytes += discarded as u64;
        if good < wal::FILE_HEADER_LEN {
            std::fs::remove_file(path).map_err(io(path))?;
            warn!(file = %path.display(), "store log: removed a segment with a damaged header");
        } else {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(good as u64).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
        if torn && last {
            warn!(file = %path.display(), offset, reason = %reason, discarded,
                "store log: dropped a torn tail (a write cut short by a crash)");
        } else {
            out.repaired = true;
            warn!(file = %path.display(), offset, reason = %reason, discarded,
                "store log: repair discarded the log from the damage on; peers will refill it");
            for later in &files[k + 1..] {
                let len = std::fs::metadata(later).map(|m| m.len()).unwrap_or(0);
                out.discarded_bytes += len;
                std::fs::remove_file(later).map_err(io(later))?;
                warn!(file = %later.display(), "store log: repair removed a later segment");
            }
            break;
        }
    }
    out.next_lsn = out.records.iter().map(|r| r.lsn + 1).max().unwrap_or(1);
    if !out.records.is_empty() {
        info!(
            records = out.records.len(),
            next_lsn = out.next_lsn,
            "store log read back"
        );
    }
    Ok(out)
}

/// How far the log is on disk, or why it cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Written through the first sequence number, synced through the second.
    Durable(u64, u64),
    /// A write or fsync failed; the writer retries the same records every second.
    Failed(String),
}

/// Handle to the writer thread.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: std::thread::JoinHandle<()>,
}

/// Work for the writer thread, done in order.
enum Msg {
    Append(Vec<Record>),
    Snapshot { through: u64, records: Vec<Record> },
}

impl Writer {
    /// Starts the writer for `dir`, whose next record is `next_lsn`; `fsync` maps store names to
    /// their policy. Reports go to `reports`.
    pub fn start(
        dir: PathBuf,
        fsync: BTreeMap<String, Fsync>,
        reports: tokio::sync::mpsc::UnboundedSender<Report>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("store-log".into())
            .spawn(move || write_loop(dir, fsync, rx, reports))
            .expect("spawning the store log writer");
        Writer { tx, thread }
    }

    /// Lets the writer finish what is queued, fsync, and stop.
    pub fn close(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }

    /// Queues records (in sequence order) for the disk.
    pub fn append(&self, records: Vec<Record>) {
        if self.tx.send(Msg::Append(records)).is_err() {
            error!("the store log writer has stopped; writes will not be acknowledged");
        }
    }

    /// Queues a snapshot of the whole replica, covering every record through `through`; once
    /// it is on disk, the segments and older snapshots are deleted.
    pub fn snapshot(&self, through: u64, records: Vec<Record>) {
        if self.tx.send(Msg::Snapshot { through, records }).is_err() {
            error!("the store log writer has stopped; no snapshot taken");
        }
    }
}

struct Segment {
    file: File,
    len: u64,
}

fn open_segment(dir: &Path, first_lsn: u64) -> std::io::Result<Segment> {
    let path = dir.join(format!("wal-{first_lsn:020}.log"));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)?;
    let mut len = file.metadata()?.len();
    if len == 0 {
        file.write_all(&wal::file_header())?;
        file.sync_all()?;
        len = wal::FILE_HEADER_LEN as u64;
        // Make the new name itself durable.
        File::open(dir)?.sync_all()?;
    }
    Ok(Segment { file, len })
}

fn write_loop(
    dir: PathBuf,
    fsync: BTreeMap<String, Fsync>,
    rx: mpsc::Receiver<Msg>,
    reports: tokio::sync::mpsc::UnboundedSender<Report>,
) {
    let interval = fsync
        .values()
        .filter_map(|f| match f {
            Fsync::Interval(d) => Some(*d),
            _ => None,
        })
        .min();
    let mut segment: Option<Segment> = None;
    let mut pending: Vec<Record> = Vec::new();
    let (mut written, mut synced) = (0u64, 0u64);
    let mut last_sync = Instant::now();
    let mut buf = Vec::new();
    let mut snap: Option<(u64, Vec<Record>)> = None;
    let take =
        |msg: Msg, pending: &mut Vec<Record>, snap: &mut Option<(u64, Vec<Record>)>| match msg {
            Msg::Append(batch) => pending.extend(batch),
            Msg::Snapshot { through, records } => *snap = Some((through, records)),
        };
    loop {
        // Wait for records (or for the next interval fsync), then take everything queued up to
        // a snapshot (which must follow the records before it).
        if pending.is_empty() && snap.is_none() {
            let got = match interval {
                Some(d) if written > synced => {
                    rx.recv_timeout(d.saturating_sub(last_sync.elapsed()))
                }
                _ => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(msg) => take(msg, &mut pending, &mut snap),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        while snap.is_none() {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut pending, &mut snap),
                Err(_) => break,
            }
        }
        let must_sync = pending
            .iter()
            .any(|r| fsync.get(&r.store).copied().unwrap_or_default() == Fsync::Always)
            || interval.is_some_and(|d| written > synced && last_sync.elapsed() >= d);
        match write_batch(&dir, &mut segment, &pending, &mut buf, must_sync) {
            Ok(()) => {
                if let Some(last) = pending.last() {
                    written = last.lsn;
                }
                if must_sync {
                    synced = written;
                    last_sync = Instant::now();
                }
                pending.clear();
                let _ = reports.send(Report::Durable(written, synced));
                if let Some((through, records)) = snap.take() {
                    match write_snapshot(&dir, &mut segment, through, &records) {
                        Ok(removed) => info!(
                            through,
                            entries = records.len(),
                            removed,
                            "store log: snapshot written, older files removed"
                        ),
                        Err(e) => error!(error = %e, "store log: snapshot failed; the log is kept"),
                    }
                }
            }
            Err(e) => {
                error!(error = %e, "store log: cannot write; retrying every second");
                let _ = reports.send(Report::Failed(e.to_string()));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    if let Some(s) = segment {
        let _ = s.file.sync_all();
    }
}

/// Writes a snapshot covering every record through `through`, then removes every segment (all
/// hold only such records: the writer handles messages in order) and every older snapshot.
/// Returns how many files were removed.
fn write_snapshot(
    dir: &Path,
    segment: &mut Option<Segment>,
    through: u64,
    records: &[Record],
) -> std::io::Result<usize> {
    if let Some(old) = segment.take() {
        old.file.sync_all()?;
    }
    let path = write_snapshot_file(dir, through, &encode_snapshot(records))?;
    let mut removed = 0;
    let listed = |p, s| files(dir, p, s).map_err(|e| std::io::Error::other(e.to_string()));
    for old in listed("wal-", ".log")?
        .into_iter()
        .chain(listed("snap-", ".snap")?.into_iter().filter(|p| *p != path))
    {
        std::fs::remove_file(&old)?;
        removed += 1;
    }
    File::open(dir)?.sync_all()?;
    Ok(removed)
}

/// A snapshot file's bytes: the log file header, then every record.
pub fn encode_snapshot(records: &[Record]) -> Vec<u8> {
    let mut bytes = wal::file_header().to_vec();
    for r in records {
        wal::encode(r, &mut bytes);
    }
    bytes
}

/// Puts `bytes` in place as `snap-<through>.snap` in `dir` so that it is either whole or absent:
/// a temporary file, fsynced, renamed, and the directory fsynced.
pub fn write_snapshot_file(dir: &Path, through: u64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("snap-{through:020}.snap"));
    crate::atomic_file::replace(&path, bytes)?;
    Ok(path)
}

/// Writes `records` with one `write` and, if asked, one fsync. On failure the segment is cut
/// back to where it was, so a half-written batch never stays in the file.
fn write_batch(
    dir: &Path,
    segment: &mut Option<Segment>,
    records: &[Record],
    buf: &mut Vec<u8>,
    sync: bool,
) -> std::io::Result<()> {
    if let Some(first) = records.first()
        && segment.as_ref().is_none_or(|s| s.len >= SEGMENT_BYTES)
    {
        if let Some(old) = segment.take() {
            old.file.sync_all()?;
        }
        *segment = Some(open_segment(dir, first.lsn)?);
    }
    let Some(seg) = segment.as_mut() else {
        return Ok(());
    };
    buf.clear();
    for r in records {
        wal::encode(r, buf);
    }
    if let Err(e) = seg.file.write_all(buf) {
        let _ = seg.file.set_len(seg.len);
        return Err(e);
    }
    seg.len += buf.len() as u64;
    if sync {
        seg.file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use membership::NodeId;
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
            // Force a new segment for the next batch.
            seg.as_mut().unwrap().len = SEGMENT_BYTES;
        }
        assert_eq!(segments(tmp.path()).unwrap().len(), 3);
        let r = recover(tmp.path(), false).unwrap();
        let lsns: Vec<u64> = r.records.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, vec![1, 2, 3]);
    }

    #[test]
    fn a_snapshot_replaces_the_segments_and_reads_back_with_later_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut policies = BTreeMap::new();
        policies.insert("default".to_string(), Fsync::Always);
        let w = Writer::start(tmp.path().to_path_buf(), policies, tx);
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
    }

    #[test]
    fn never_and_interval_stores_are_acknowledged_once_written_and_synced_later() {
        for policy in [Fsync::Never, Fsync::Interval(Duration::from_millis(30))] {
            let tmp = tempfile::tempdir().unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut policies = BTreeMap::new();
            policies.insert("default".to_string(), policy);
            let w = Writer::start(tmp.path().to_path_buf(), policies, tx);
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
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut policies = BTreeMap::new();
        policies.insert("default".to_string(), Fsync::Always);
        let w = Writer::start(tmp.path().to_path_buf(), policies, tx);
        w.append(vec![rec(1), rec(2)]);
        let report = rx.blocking_recv().unwrap();
        assert_eq!(report, Report::Durable(2, 2));
        w.close();
        let r = recover(tmp.path(), false).unwrap();
        assert_eq!(r.records.len(), 2);
    }
}
