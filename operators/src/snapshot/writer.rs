//! Writing state files: [`SortedPartWriter`] and [`KeyTextWriter`], each writing to
//! `<name>.partial` and giving the part its name once it is complete and synced.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::{KEYS_MAGIC, PAIR, SORTED_MAGIC, SORTED_TEXT_MAGIC};
use super::row_id::FingerprintVersion;

/// Where a part is written until it is complete: `<path>.partial`. Only a finished part has
/// its own name, so a part file that exists is whole (a run killed while writing leaves a
/// `.partial` file, never a short part that looks valid).
fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Creates `path`'s `.partial` file (and its folder) and writes `magic`.
fn create_with_magic(path: &Path, magic: &[u8; 8]) -> io::Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = BufWriter::with_capacity(1 << 20, File::create(partial_path(path))?);
    out.write_all(magic)?;
    Ok(out)
}

/// Flushes and syncs the part, then gives it its name (and syncs the folder, so the name
/// survives a power loss too).
fn finish_file(mut out: BufWriter<File>, path: PathBuf) -> io::Result<PathBuf> {
    out.flush()?;
    out.get_ref().sync_all()?;
    std::fs::rename(partial_path(&path), &path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(path)
}

/// Writes one sorted part of a snapshot's state: the magic (`WHSNAP03`, or `WHSNAP02` for
/// version 1 fingerprints), then per row 16 bytes key hash and 16 bytes fingerprint (both
/// little-endian), ascending by key hash. The fixed row size lets a reader binary-search a key
/// range.
pub struct SortedPartWriter {
    out: BufWriter<File>,
    path: PathBuf,
    last: Option<u128>,
}

impl SortedPartWriter {
    /// Creates (truncates) `path`, for fingerprints of `version`.
    pub fn create(path: &Path, version: FingerprintVersion) -> io::Result<Self> {
        let magic = match version {
            FingerprintVersion::Binary => SORTED_MAGIC,
            FingerprintVersion::Text => SORTED_TEXT_MAGIC,
        };
        Ok(SortedPartWriter {
            out: create_with_magic(path, magic)?,
            path: path.to_path_buf(),
            last: None,
        })
    }

    /// Appends one row; keys must come in ascending order, each once.
    pub fn push(&mut self, key: u128, fp: u128) -> io::Result<()> {
        if self.last.is_some_and(|l| l >= key) {
            return Err(io::Error::other("sorted part rows out of order"));
        }
        self.last = Some(key);
        let mut rec = [0u8; PAIR as usize];
        rec[..16].copy_from_slice(&key.to_le_bytes());
        rec[16..].copy_from_slice(&fp.to_le_bytes());
        self.out.write_all(&rec)
    }

    /// Flushes and syncs the file to disk; returns its path.
    pub fn finish(self) -> io::Result<PathBuf> {
        finish_file(self.out, self.path)
    }
}

/// Writes the key texts of a snapshot's rows: the magic `WHKEYS01`, then per row the text's
/// length as a LEB128 varint and the text. A deleted key's text is found by hashing these.
pub struct KeyTextWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl KeyTextWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(KeyTextWriter {
            out: create_with_magic(path, KEYS_MAGIC)?,
            path: path.to_path_buf(),
        })
    }

    /// Appends one key text.
    pub fn push(&mut self, key: &[u8]) -> io::Result<()> {
        let mut len = key.len();
        let mut buf = [0u8; 10];
        let mut n = 0;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                buf[n] = b;
                n += 1;
                break;
            }
            buf[n] = b | 0x80;
            n += 1;
        }
        self.out.write_all(&buf[..n])?;
        self.out.write_all(key)
    }

    /// Flushes and syncs the file to disk; returns its path.
    pub fn finish(self) -> io::Result<PathBuf> {
        finish_file(self.out, self.path)
    }
}
