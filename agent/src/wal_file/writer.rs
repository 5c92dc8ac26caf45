//! The writer thread: appends batches of records to segments with group commit, writes
//! snapshots, and reports how far the log is written and synced.

use super::{SEGMENT_BYTES, files};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use store::Fsync;
use store::wal::{self, Record};
use tracing::{error, info};

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

pub(super) struct Segment {
    file: File,
    pub(super) len: u64,
    /// Bytes allocated to the file (its size): records are written at `len`, inside it.
    allocated: u64,
}

/// Room added to a segment at a time, ahead of the records written into it.
///
/// Why (issue 15): appending grows the file, and an fsync then records the new size as well as
/// the data. Writing inside room allocated earlier leaves the size alone: a 400-byte write and
/// `fdatasync` took 0.11-0.14 ms against 0.17-0.19 ms appended, on this project's virtio disk
/// (docs/benchmarks.md, "Log room allocated ahead"). The size changes once per 4 MiB instead.
/// The room reads as zeros, which the reader takes for the end of the log (`wal::Decoded::
/// unwritten`); a segment is cut to its records before the next one starts and when the writer
/// stops, and start-up cuts the last one.
pub(super) const PREALLOCATE: u64 = 4 << 20;

/// Gives the segment room for `more` bytes past `len`, in steps of [`PREALLOCATE`].
fn reserve(seg: &mut Segment, more: u64) -> std::io::Result<()> {
    if seg.len + more <= seg.allocated {
        return Ok(());
    }
    let need = seg.len + more;
    let step = need.max(seg.allocated + PREALLOCATE);
    match allocate(&seg.file, step) {
        Ok(()) => seg.allocated = step,
        // A full disk may still hold what this batch needs.
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && step > need => {
            allocate(&seg.file, need)?;
            seg.allocated = need;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Makes `file` `len` bytes long, with its blocks allocated where the filesystem can
/// (`fallocate`); elsewhere it is extended with a hole, which keeps the size out of later
/// fsyncs all the same.
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let len_off = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: `fd` is an open file the caller keeps open for the call; mode 0 allocates and
    // extends the size, and touches no memory of ours.
    if unsafe { libc::fallocate(fd, 0, 0, len_off) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return file.set_len(len);
    }
    Err(e)
}

/// Cuts the segment to its records and makes that durable: before the next segment starts,
/// zeros at the end of an earlier one would read as lost records.
pub(super) fn finish(seg: Segment) -> std::io::Result<()> {
    if seg.allocated > seg.len {
        seg.file.set_len(seg.len)?;
    }
    seg.file.sync_all()
}

pub(super) fn open_segment(dir: &Path, first_lsn: u64) -> std::io::Result<Segment> {
    let path = dir.join(format!("wal-{first_lsn:020}.log"));
    // Written at `len` (into allocated room), not appended. An existing segment is the last one,
    // which the start cut to its records (`recover`).
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)?;
    let mut len = file.metadata()?.len();
    if len == 0 {
        std::os::unix::fs::FileExt::write_all_at(&file, &wal::file_header(), 0)?;
        file.sync_all()?;
        len = wal::FILE_HEADER_LEN as u64;
        // Make the new name itself durable.
        File::open(dir)?.sync_all()?;
    }
    Ok(Segment {
        file,
        len,
        allocated: len,
    })
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
    if let Some(s) = segment
        && let Err(e) = finish(s)
    {
        error!(error = %e, "store log: cannot cut the last segment to its records on close");
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
pub(super) fn write_batch(
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
            finish(old)?;
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
    reserve(seg, buf.len() as u64)?;
    let start = std::time::Instant::now();
    if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&seg.file, buf, seg.len) {
        // Never leave half a batch in the file; the room goes with it and comes back.
        let _ = seg.file.set_len(seg.len);
        seg.allocated = seg.len;
        return Err(e);
    }
    super::WRITE_SECONDS.observe(start.elapsed().as_secs_f64());
    seg.len += buf.len() as u64;
    if sync {
        let start = std::time::Instant::now();
        seg.file.sync_data()?;
        super::FSYNC_SECONDS.observe(start.elapsed().as_secs_f64());
    }
    Ok(())
}
