//! The state files' format: their magics, [`PartKind`], the fingerprint version a committed
//! state was written with, and the names of sorted parts.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::row_id::FingerprintVersion;

/// Magic of a legacy part (older versions): `(key hash, fingerprint, key text)` per row,
/// unsorted. Still read, so a state committed by an older wharf is diffed against, not resent.
const LEGACY_MAGIC: &[u8; 8] = b"WHSNAP01";
/// Magic of a sorted part: `(key hash, fingerprint)` per row, ascending by key hash; version 2
/// (binary) fingerprints.
pub(super) const SORTED_MAGIC: &[u8; 8] = b"WHSNAP03";
/// The same with version 1 (text) fingerprints.
pub(super) const SORTED_TEXT_MAGIC: &[u8; 8] = b"WHSNAP02";
/// Magic of a key-text part: the key texts of the rows, in no particular order.
pub(super) const KEYS_MAGIC: &[u8; 8] = b"WHKEYS01";
/// Bytes per row of a sorted part.
pub(super) const PAIR: u64 = 32;

/// What a state file holds, from its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// `(key hash, fingerprint)` pairs sorted by key hash
    /// ([`SortedPartWriter`](super::SortedPartWriter)), with fingerprints of this version.
    Sorted(FingerprintVersion),
    /// Key texts ([`KeyTextWriter`](super::KeyTextWriter)).
    Keys,
    /// An older wharf's part: pairs and key texts together, unsorted.
    Legacy,
}

/// Reads `path`'s magic.
pub fn part_kind(path: &Path) -> io::Result<PartKind> {
    let mut magic = [0u8; 8];
    File::open(path)?.read_exact(&mut magic)?;
    match &magic {
        m if m == SORTED_MAGIC => Ok(PartKind::Sorted(FingerprintVersion::Binary)),
        m if m == SORTED_TEXT_MAGIC => Ok(PartKind::Sorted(FingerprintVersion::Text)),
        m if m == KEYS_MAGIC => Ok(PartKind::Keys),
        m if m == LEGACY_MAGIC => Ok(PartKind::Legacy),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a wharf snapshot file", path.display()),
        )),
    }
}

/// The fingerprint version of a committed state (its part files): a state keeps the version
/// it was first written with. No state: the current version.
pub fn state_fingerprint_version(parts: &[PathBuf]) -> io::Result<FingerprintVersion> {
    for path in parts {
        match part_kind(path)? {
            PartKind::Sorted(v) => return Ok(v),
            PartKind::Legacy => return Ok(FingerprintVersion::Text),
            PartKind::Keys => {}
        }
    }
    Ok(FingerprintVersion::Binary)
}

/// The name of worker `index`'s sorted part in a run of `peers` workers.
pub fn sorted_part_name(index: usize, peers: usize) -> String {
    format!("part-{index}-of-{peers}.snap")
}

/// An error for a state file that cannot be read as what it should be.
pub(super) fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "snapshot file {} is truncated or corrupt: {what}",
            path.display()
        ),
    )
}
