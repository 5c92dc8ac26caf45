//! The writer thread: appends batches of records to segments with group commit, writes
//! snapshots, and reports how far the log is written and synced.

use super::{SEGMENT_BYTES, files};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use store::Fsync;
use store::wal::{self, Record};
use tracing::{debug, error, info};

/// How far the log is on disk, or why it cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Written through the first sequence number, synced through the second.
    Durable(u64, u64),
    /// A write or fsync failed; the writer retries the same records every second.
    Failed(String),
}

/// Handle to the writer thread, and the driver's way to write a small batch itself.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: std::thread::JoinHandle<()>,
    disk: Arc<Mutex<Disk>>,
    /// Messages sent to the thread, and how many it has finished: equal when it holds nothing.
    sent: u64,
    finished: Arc<AtomicU64>,
    /// Writes in the caller's thread are off until then: one took too long.
    inline_off_until: Option<Instant>,
}

/// Work for the writer thread, done in order.
enum Msg {
    Append(Vec<Record>),
    Snapshot { through: u64, records: Vec<Record> },
}

/// Largest batch written in the caller's thread (encoded bytes, about): bigger ones go to the
/// thread, whose write the caller need not wait for.
const INLINE_MAX_BYTES: usize = 64 << 10;

/// A write in the caller's thread that takes longer than this turns such writes off for
/// [`INLINE_BACKOFF`]: the caller (the driver) must not stall on a slow disk.
const INLINE_SLOW: Duration = Duration::from_millis(10);
const INLINE_BACKOFF: Duration = Duration::from_secs(1);

impl Writer {
    /// Starts the writer for `dir`, whose next record is `next_lsn`; `fsync` maps store names to
    /// their policy. Reports go to `reports`.
    pub fn start(
        dir: PathBuf,
        fsync: BTreeMap<String, Fsync>,
        reports: tokio::sync::mpsc::UnboundedSender<Report>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel::<Msg>();
        let interval = fsync
            .values()
            .filter_map(|f| match f {
                Fsync::Interval(d) => Some(*d),
                _ => None,
            })
            .min();
        let disk = Arc::new(Mutex::new(Disk {
            dir,
            fsync,
            interval,
            segment: None,
            buf: Vec::new(),
            written: 0,
            synced: 0,
            last_sync: Instant::now(),
            #[cfg(test)]
            injected: (Duration::ZERO, false),
        }));
        let finished = Arc::new(AtomicU64::new(0));
        let (d, f) = (disk.clone(), finished.clone());
        let thread = std::thread::Builder::new()
            .name("store-log".into())
            .spawn(move || write_loop(d, rx, reports, f))
            .expect("spawning the store log writer");
        Writer {
            tx,
            thread,
            disk,
            sent: 0,
            finished,
            inline_off_until: None,
        }
    }

    /// Lets the writer finish what is queued, fsync, and stop.
    pub fn close(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }

    /// Queues records (in sequence order) for the disk.
    pub fn append(&mut self, records: Vec<Record>) {
        self.sent += 1;
        if self.tx.send(Msg::Append(records)).is_err() {
            error!("the store log writer has stopped; writes will not be acknowledged");
        }
    }

    /// Queues a snapshot of the whole replica, covering every record through `through`; once
    /// it is on disk, the segments and older snapshots are deleted.
    pub fn snapshot(&mut self, through: u64, records: Vec<Record>) {
        self.sent += 1;
        if self.tx.send(Msg::Snapshot { through, records }).is_err() {
            error!("the store log writer has stopped; no snapshot taken");
        }
    }

    /// Writes and fsyncs `records` (next in sequence order) in the caller's thread and returns
    /// the report, when the thread holds nothing (so the order stays), the batch is small and
    /// must be synced (a store in it has `fsync = always`), and no such write was slow lately;
    /// otherwise, or if the write fails, the records are handed back untouched (a failed batch
    /// is cut back off the file), for [`Writer::append`].
    ///
    /// Why (issue 15): with few requests in flight, the hand-offs to the thread and back are two
    /// wake-ups of sleeping threads around every fsync, on the path of every quorum write's
    /// acknowledgement; on this project's 2-core virtual machine each cost tens of microseconds
    /// (docs/benchmarks.md, "Log writes in the driver's thread"). Under load the thread is busy
    /// and inputs are waiting, so batches go to it as before and group commit stays.
    pub fn write_inline(&mut self, records: Vec<Record>) -> Result<Report, Vec<Record>> {
        if self.finished.load(Ordering::Acquire) != self.sent
            || self.inline_off_until.is_some_and(|t| Instant::now() < t)
            || encoded_about(&records) > INLINE_MAX_BYTES
        {
            return Err(records);
        }
        // Free unless the thread is in an interval fsync: then it is busy, and so not this way.
        let Ok(mut disk) = self.disk.try_lock() else {
            return Err(records);
        };
        // A new segment or more room (file creation, `fallocate`) is the thread's work.
        let bytes = encoded_about(&records) as u64;
        let room = disk
            .segment
            .as_ref()
            .is_some_and(|s| s.len < SEGMENT_BYTES && s.len + bytes <= s.allocated);
        if !room || !disk.must_sync(&records) {
            return Err(records);
        }
        let start = Instant::now();
        let report = disk.write(&records);
        drop(disk);
        let took = start.elapsed();
        if took > INLINE_SLOW {
            debug!(
                took_ms = took.as_secs_f64() * 1000.0,
                "store log: a write in the driver's thread was slow; the writer thread takes \
                 every write for the next second"
            );
            self.inline_off_until = Some(Instant::now() + INLINE_BACKOFF);
        }
        report.map_err(|_| records)
    }
}

/// About how many bytes `records` encode to (a record's header is under 64 bytes).
fn encoded_about(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| 64 + r.store.len() + r.key.len() + r.entry.value.as_ref().map_or(0, Vec::len))
        .sum()
}

#[cfg(test)]
impl Writer {
    /// Makes every later write wait `delay` first, and the next one fail if `fail`.
    pub(super) fn inject(&self, delay: Duration, fail: bool) {
        self.disk.lock().unwrap().injected = (delay, fail);
    }
}

/// The log's files and marks, shared by the writer thread and [`Writer::write_inline`]: whoever
/// writes holds the lock, and the two never have records outstanding at once.
struct Disk {
    dir: PathBuf,
    fsync: BTreeMap<String, Fsync>,
    /// The shortest fsync interval of a store with one.
    interval: Option<Duration>,
    segment: Option<Segment>,
    buf: Vec<u8>,
    /// Written and synced through these sequence numbers.
    written: u64,
    synced: u64,
    last_sync: Instant,
    /// Tests only: a delay before each write, and whether the next write fails.
    #[cfg(test)]
    injected: (Duration, bool),
}

impl Disk {
    /// Whether a batch of `records` is followed by an fsync: a store in it has `fsync =
    /// always`, or an interval is due.
    fn must_sync(&self, records: &[Record]) -> bool {
        records
            .iter()
            .any(|r| self.fsync.get(&r.store).copied().unwrap_or_default() == Fsync::Always)
            || self
                .interval
                .is_some_and(|d| self.written > self.synced && self.last_sync.elapsed() >= d)
    }

    /// Writes `records` (and fsyncs, when due) and says how far the log now is.
    fn write(&mut self, records: &[Record]) -> std::io::Result<Report> {
        #[cfg(test)]
        {
            std::thread::sleep(self.injected.0);
            if std::mem::take(&mut self.injected.1) {
                return Err(std::io::Error::other("injected failure"));
            }
        }
        let sync = self.must_sync(records);
        write_batch(&self.dir, &mut self.segment, records, &mut self.buf, sync)?;
        if let Some(last) = records.last() {
            self.written = last.lsn;
        }
        if sync {
            self.synced = self.written;
            self.last_sync = Instant::now();
        }
        Ok(Report::Durable(self.written, self.synced))
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
    disk: Arc<Mutex<Disk>>,
    rx: mpsc::Receiver<Msg>,
    reports: tokio::sync::mpsc::UnboundedSender<Report>,
    finished: Arc<AtomicU64>,
) {
    let lock = || disk.lock().unwrap_or_else(|p| p.into_inner());
    let mut pending: Vec<Record> = Vec::new();
    // Messages taken and not yet finished.
    let mut taken = 0u64;
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
            let wait = {
                let d = lock();
                match d.interval {
                    Some(i) if d.written > d.synced => {
                        Some(i.saturating_sub(d.last_sync.elapsed()))
                    }
                    _ => None,
                }
            };
            let got = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(msg) => {
                    taken += 1;
                    take(msg, &mut pending, &mut snap)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        while snap.is_none() {
            match rx.try_recv() {
                Ok(msg) => {
                    taken += 1;
                    take(msg, &mut pending, &mut snap)
                }
                Err(_) => break,
            }
        }
        let mut d = lock();
        match d.write(&pending) {
            Ok(report) => {
                pending.clear();
                // Finished before the report goes (the driver that reads it may write the next
                // batch itself), except a snapshot, which must not hold the report back.
                if snap.is_none() {
                    finished.fetch_add(std::mem::take(&mut taken), Ordering::Release);
                    drop(d);
                    let _ = reports.send(report);
                    continue;
                }
                let _ = reports.send(report);
                if let Some((through, records)) = snap.take() {
                    let Disk { dir, segment, .. } = &mut *d;
                    match write_snapshot(dir, segment, through, &records) {
                        Ok(removed) => info!(
                            through,
                            entries = records.len(),
                            removed,
                            "store log: snapshot written, older files removed"
                        ),
                        Err(e) => error!(error = %e, "store log: snapshot failed; the log is kept"),
                    }
                }
                drop(d);
                finished.fetch_add(std::mem::take(&mut taken), Ordering::Release);
            }
            Err(e) => {
                drop(d);
                error!(error = %e, "store log: cannot write; retrying every second");
                let _ = reports.send(Report::Failed(e.to_string()));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    if let Some(s) = lock().segment.take()
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
