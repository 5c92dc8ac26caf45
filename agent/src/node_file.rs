//! The node's persisted identity: a stable id and the last generation used, in `node.json`.
//!
//! Every start takes the next generation and writes it back before the node speaks, so that a
//! restarted node always rejoins as a newer incarnation of itself and never collides with what the
//! cluster remembers of its previous life. Generations reached while running (a rejoin after being
//! declared down) are written back too.

use membership::NodeId;
use rand::TryRng;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Errors reading or writing the node file.
#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    /// I/O on the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file exists but is not a valid node file.
    #[error("{path} is corrupt: {message} (move it away to start this node as a new member)")]
    Corrupt {
        /// File path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another agent holds the data directory.
    #[error("data directory {0} is in use by another chorus agent")]
    Locked(PathBuf),
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    id: String,
    generation: u64,
}

/// The open data directory: holds its lock for as long as the agent runs.
#[derive(Debug)]
pub struct NodeFile {
    path: PathBuf,
    id: NodeId,
    generation: u64,
    created: bool,
    _lock: File,
}

/// Creates the data directory if needed and takes its lock, which is held for as long as the
/// returned file is open: one agent (or one restore) per data directory.
pub fn lock_data_dir(dir: &Path) -> Result<File, NodeFileError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NodeFileError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let lock_path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(NodeFileError::Locked(dir.to_path_buf()));
    }
    Ok(lock)
}

/// True when `dir` holds a node identity: a node has run there (and may have acknowledged writes).
pub fn has_identity(dir: &Path) -> bool {
    dir.join("node.json").exists()
}

impl NodeFile {
    /// Opens (or creates) the data directory, locks it, and takes the next generation.
    pub fn open_and_advance(dir: &Path) -> Result<NodeFile, NodeFileError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeFileError::Io { path, source }
        };
        let lock = lock_data_dir(dir)?;
        let path = dir.join("node.json");
        let (id, generation, created) = match fs::read_to_string(&path) {
            Ok(text) => {
                let d: OnDisk =
                    serde_json::from_str(&text).map_err(|e| NodeFileError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                let id = d.id.parse::<NodeId>().map_err(|e| NodeFileError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (id, d.generation + 1, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 8];
                rand::rngs::SysRng
                    .try_fill_bytes(&mut raw)
                    .map_err(|e| NodeFileError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })?;
                // Zero is reserved for "identity not known yet" (a seed address).
                (NodeId(u64::from_be_bytes(raw).max(1)), 1, true)
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let mut nf = NodeFile {
            path,
            id,
            generation,
            created,
            _lock: lock,
        };
        nf.store(generation)?;
        Ok(nf)
    }

    /// The node's stable id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// True when this run created the node's identity (the data directory was new).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The generation this run started with (or last stored).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Durably records `generation` (write to a temporary file, fsync, rename, fsync the dir).
    pub fn store(&mut self, generation: u64) -> Result<(), NodeFileError> {
        let body = serde_json::to_string_pretty(&OnDisk {
            id: self.id.to_string(),
            generation,
        })
        .expect("serialising a small struct cannot fail");
        crate::atomic_file::replace(&self.path, body.as_bytes()).map_err(|source| {
            NodeFileError::Io {
                path: self.path.clone(),
                source,
            }
        })?;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_generation_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (id, g1) = {
            let nf = NodeFile::open_and_advance(dir.path()).unwrap();
            (nf.id(), nf.generation())
        };
        let nf = NodeFile::open_and_advance(dir.path()).unwrap();
        assert_eq!(nf.id(), id);
        assert_eq!(nf.generation(), g1 + 1);
    }

    #[test]
    fn a_second_agent_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = NodeFile::open_and_advance(dir.path()).unwrap();
        assert!(matches!(
            NodeFile::open_and_advance(dir.path()),
            Err(NodeFileError::Locked(_))
        ));
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("node.json"), "{not json").unwrap();
        let e = NodeFile::open_and_advance(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.json") && e.contains("corrupt"), "{e}");
    }

    #[test]
    fn stored_generation_survives() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let mut nf = NodeFile::open_and_advance(dir.path()).unwrap();
            nf.store(41).unwrap();
            nf.id()
        };
        let nf = NodeFile::open_and_advance(dir.path()).unwrap();
        assert_eq!((nf.id(), nf.generation()), (id, 42));
    }
}
