//! The store's write-ahead log on disk: segment files in `<data_dir>/store/`, read back at start
//! and appended to by one writer thread (fsync blocks, so it stays off the driver's task), or
//! under light load by the driver itself when the thread holds nothing (`Writer::write_inline`).
//!
//! The record format is `store::wal`. A segment is named after the first sequence number it
//! holds (`wal-00000000000000000001.log`) and is closed at 64 MiB. The writer takes batches of
//! records, writes each batch with one `write` into room allocated ahead of it (see
//! `writer::PREALLOCATE`), and fsyncs once per batch when a store in it has
//! `fsync = always` (group commit: everything that queued up while the previous fsync ran shares
//! the next one), every interval for `fsync = <interval>`, and never itself for `fsync = never`.
//! It reports how far the log is written and synced; the store core releases acknowledgements
//! from those marks.
//!
//! Snapshots bound the disk: the whole replica is written as records to
//! `snap-<sequence number>.snap` (through a temporary file, fsynced, renamed), after which every
//! segment and older snapshot is deleted. A start loads the newest snapshot, then the segments.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use store::wal::{self, Damage, Record};
use tracing::{debug, info, warn};

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

pub(crate) fn files(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>, RecoverError> {
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
        if let Some(d) = decoded.whole_file_damage() {
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
            Ok(d) if d.unwritten > 0 && d.damage.is_none() && !last => {
                // The writer cuts a segment to its records before it starts the next one, so
                // zeros at the end of an earlier segment were records once.
                let damage = d.whole_file_damage();
                (d.records, damage.map(|dmg| (d.good_len, dmg)))
            }
            Ok(d) if d.unwritten > 0 && d.damage.is_none() => {
                // Room the writer allocated ahead of its records: cut off, so that the writer
                // goes on from the last record (it allocates again as it writes).
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                f.set_len(d.good_len as u64).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                debug!(file = %path.display(), bytes = d.unwritten, "store log: unwritten room cut off the last segment");
                (d.records, None)
            }
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

/// How long writing one batch of log records into the segment took (before any fsync).
pub static WRITE_SECONDS: std::sync::LazyLock<prometheus_client::metrics::histogram::Histogram> =
    std::sync::LazyLock::new(crate::api_metrics::latency_histogram);
/// How long each fsync of the log took.
pub static FSYNC_SECONDS: std::sync::LazyLock<prometheus_client::metrics::histogram::Histogram> =
    std::sync::LazyLock::new(crate::api_metrics::latency_histogram);

mod writer;
pub use self::writer::{Report, Writer, encode_snapshot, write_snapshot_file};

#[cfg(test)]
mod tests;
