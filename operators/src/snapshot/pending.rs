//! [`PendingSnapshot`]: the finished parts a run that did not commit left in its snapshot
//! folder.

use std::io;
use std::path::{Path, PathBuf};

use super::format::invalid;
use super::keys::owner;

/// The state a run that did not commit may have delivered: the complete sorted parts and
/// key-text parts of its snapshot folder. A later diff must treat each key of a range it
/// covers as possibly in the destination with this snapshot's value (see `diff`).
///
/// A range's sorted part is finished before any change of that range leaves the diff, and
/// every key-text part before any sorted part: a range without a finished part delivered
/// nothing, so the snapshot says nothing about its keys ([`PendingSnapshot::covers`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingSnapshot {
    /// The worker count of the run that wrote it.
    pub peers: usize,
    /// Ranges (of `peers`) whose sorted part is complete.
    pub complete: Vec<usize>,
    /// Its finished part files: sorted parts and key-text parts.
    pub parts: Vec<PathBuf>,
}

impl PendingSnapshot {
    /// Reads the finished parts in `dir` (a run's snapshot folder). `None` when no sorted part
    /// was finished there: such a run delivered no change, so it can be forgotten.
    pub fn load(dir: &Path) -> io::Result<Option<PendingSnapshot>> {
        let mut peers = None;
        let mut complete = Vec::new();
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name
                .strip_prefix("part-")
                .and_then(|r| r.strip_suffix(".snap"))
            {
                let Some((i, n)) = rest.split_once("-of-") else {
                    continue;
                };
                let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.parse::<usize>()) else {
                    continue;
                };
                if n == 0 || i >= n || peers.is_some_and(|p| p != n) {
                    return Err(invalid(&entry.path(), "parts of two worker counts"));
                }
                peers = Some(n);
                complete.push(i);
                parts.push(entry.path());
            } else if name.starts_with("keys-") && name.ends_with(".snap") {
                parts.push(entry.path());
            }
        }
        let Some(peers) = peers else { return Ok(None) };
        complete.sort_unstable();
        parts.sort();
        Ok(Some(PendingSnapshot {
            peers,
            complete,
            parts,
        }))
    }

    /// Whether this snapshot says anything about `key`: its range's part is complete.
    pub fn covers(&self, key: u128) -> bool {
        self.complete.binary_search(&owner(key, self.peers)).is_ok()
    }
}
