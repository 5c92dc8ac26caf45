//! Backups: `chorus snapshot save FILE` fetches a running node's whole replica (in the log's
//! record format, so the same checksums guard it), and `chorus snapshot restore FILE` installs
//! one as the store log of a node that holds nothing yet. The restored node starts with the
//! backup's entries and catches up with its peers like any node that starts; merging is a join,
//! so entries newer than the backup on other nodes win.

use crate::wal_file::{self, RecoverError};
use std::path::{Path, PathBuf};
use store::wal;

/// Why a backup could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The backup's bytes fail their checksums or are cut short.
    #[error("the backup {path} is damaged at byte {offset}: {reason}; nothing was restored")]
    Damaged {
        /// The backup file (or where it came from).
        path: PathBuf,
        /// Where the damage starts.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// The node's store already holds entries.
    #[error(
        "the store in {dir} already holds {entries} entries; a backup is restored onto an empty \
         node only (stop the agent and move {dir} away first)"
    )]
    NotEmpty {
        /// The store directory.
        dir: PathBuf,
        /// Entries it holds.
        entries: usize,
    },
    /// The node's own log cannot be read.
    #[error(transparent)]
    Recover(#[from] RecoverError),
}

/// Checks that `bytes` are a whole, undamaged backup; returns its records.
pub fn verify(path: &Path, bytes: &[u8]) -> Result<Vec<wal::Record>, BackupError> {
    let damaged = |offset, reason| BackupError::Damaged {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let decoded = wal::decode_file(bytes).map_err(|e| damaged(0, e.to_string()))?;
    if let Some(d) = decoded.whole_file_damage() {
        return Err(damaged(d.offset(), d.reason()));
    }
    Ok(decoded.records)
}

/// Writes a verified backup to `path` whole or not at all (temporary file, fsync, rename).
pub fn save(path: &Path, bytes: &[u8]) -> Result<usize, BackupError> {
    let entries = verify(path, bytes)?.len();
    crate::atomic_file::replace(path, bytes).map_err(|source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(entries)
}

/// What a restore installed.
#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    /// Entries restored.
    pub entries: usize,
    /// The snapshot file now in the store directory.
    pub path: PathBuf,
}

/// Installs the backup `file` as the store log in `store_dir`, which must hold no entries.
/// `was_member`: a node already ran with this data directory, so it may have acknowledged writes
/// the backup lacks; it is then marked as having lost writes and does not vote until caught up.
pub fn restore(file: &Path, store_dir: &Path, was_member: bool) -> Result<Restored, BackupError> {
    let bytes = std::fs::read(file).map_err(|source| BackupError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let records = verify(file, &bytes)?;
    let held = wal_file::recover(store_dir, false)?;
    if !held.records.is_empty() {
        return Err(BackupError::NotEmpty {
            dir: store_dir.to_path_buf(),
            entries: held.records.len(),
        });
    }
    let io = |source| BackupError::Io {
        path: store_dir.to_path_buf(),
        source,
    };
    if was_member {
        wal_file::mark_lost(store_dir).map_err(io)?;
    }
    let through = records.iter().map(|r| r.lsn).max().unwrap_or(0);
    let path = wal_file::write_snapshot_file(store_dir, through, &bytes).map_err(io)?;
    Ok(Restored {
        entries: records.len(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Entry, Version};

    fn rec(i: u64) -> wal::Record {
        wal::Record {
            lsn: 40,
            store: "default".into(),
            key: format!("k{i}"),
            entry: Entry {
                version: Version {
                    ts: i + 1,
                    node: membership::NodeId(7),
                },
                value: Some(vec![b'v'; 10]),
                expires_at: None,
            },
        }
    }

    #[test]
    fn a_backup_restores_onto_an_empty_store_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.snap");
        let records: Vec<_> = (0..50).map(rec).collect();
        assert_eq!(
            save(&file, &wal_file::encode_snapshot(&records)).unwrap(),
            50
        );
        let store = dir.path().join("data/store");
        let r = restore(&file, &store, false).unwrap();
        assert_eq!(r.entries, 50);
        let back = wal_file::recover(&store, false).unwrap();
        assert_eq!(back.records, records);
        assert_eq!(back.next_lsn, 41);
        assert!(!back.marked_lost, "a new node lost nothing");
        // A second restore finds the store full.
        let again = restore(&file, &store, true).unwrap_err();
        assert!(
            matches!(again, BackupError::NotEmpty { entries: 50, .. }),
            "{again}"
        );
    }

    #[test]
    fn a_damaged_or_cut_backup_is_refused_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = wal_file::encode_snapshot(&(0..5).map(rec).collect::<Vec<_>>());
        let file = dir.path().join("b.snap");
        let cut = &bytes[..bytes.len() - 3];
        let e = save(&file, cut).unwrap_err();
        assert!(e.to_string().contains("damaged at byte"), "{e}");
        assert!(!file.exists(), "nothing is saved from a cut download");
        // Zeros after the records: a log segment's unwritten room, never a backup's.
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 512, 0);
        let e = save(&file, &padded).unwrap_err();
        assert!(
            e.to_string()
                .contains("bytes of zeros after the last record"),
            "{e}"
        );
        bytes[30] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let e = restore(&file, &dir.path().join("store"), false).unwrap_err();
        assert!(
            e.to_string().contains("damaged at byte 10")
                && e.to_string().contains("nothing was restored"),
            "{e}"
        );
        let held = wal_file::recover(&dir.path().join("store"), false).unwrap();
        assert!(held.records.is_empty());
    }

    #[test]
    fn a_restore_onto_a_former_member_marks_it_as_having_lost_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.snap");
        save(&file, &wal_file::encode_snapshot(&[rec(1)])).unwrap();
        let store = dir.path().join("store");
        restore(&file, &store, true).unwrap();
        let back = wal_file::recover(&store, false).unwrap();
        assert!(
            back.marked_lost,
            "it may have acknowledged writes the backup lacks"
        );
        assert_eq!(back.records.len(), 1);
    }
}
