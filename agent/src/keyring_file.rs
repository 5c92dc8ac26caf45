//! The persisted keyring: `keyring` in the data directory, one base64 key per line, the primary
//! first, readable by the agent's user only.
//!
//! Once the file exists it is what the node runs with: the configuration's keys only seed it on
//! the first start (like Serf's and Consul's keyring files). A rotation done through the API then
//! survives restarts even when nobody edits the configuration; a configured key missing from the
//! ring is warned about at start, never added back (it may be the key a rotation just retired).

use crate::atomic_file;
use base64::Engine;
use membership::ClusterKey;
use std::path::{Path, PathBuf};

/// Where the ring is kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("keyring")
}

/// The persisted ring (primary first), or `None` when there is none yet. A damaged file stops
/// the start with what is wrong and where.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<Vec<ClusterKey>>> {
    let p = path(data_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("reading the keyring {}: {e}", p.display()),
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let k = crate::config::parse_key(&format!("{} line {}", p.display(), i + 1), line)
            .map_err(|e| {
                anyhow::anyhow!("{e} (move the file away to start from the configured keys)")
            })?;
        keys.push(k);
    }
    if keys.is_empty() {
        anyhow::bail!(
            "the keyring {} holds no key (move it away to start from the configured keys)",
            p.display()
        );
    }
    Ok(Some(keys))
}

/// Persists the ring, whole or not at all, mode 0600.
pub fn store(data_dir: &Path, keys: &[ClusterKey]) -> std::io::Result<()> {
    let mut text = String::from(
        "# Chorus keyring: the primary key first. Written by the agent; change it with `chorus keyring`.\n",
    );
    for k in keys {
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(k.bytes()));
        text.push('\n');
    }
    atomic_file::replace_with_mode(&path(data_dir), text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let keys = vec![ClusterKey::new([1; 32]), ClusterKey::new([2; 32])];
        store(dir.path(), &keys).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(keys));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(path(dir.path()), "# c\nnot-base64!\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("base64"), "{e}");
    }
}
