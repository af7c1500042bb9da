//! Reading state files: one owner's key range of a sorted part ([`SortedRangeReader`]), of a
//! whole committed state ([`PreviousRange`]), and key texts ([`KeyTextReader`],
//! [`key_texts_of`]).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_128;

use super::format::{invalid, part_kind, PartKind, PAIR};
use super::keys::{owner, KeySet};

/// Reads the rows of one owner's key range out of a sorted part, in ascending key order.
pub struct SortedRangeReader {
    input: BufReader<File>,
    path: PathBuf,
    left: u64,
    owner: usize,
    peers: usize,
}

impl SortedRangeReader {
    /// Opens `path` (a [`PartKind::Sorted`] part) at the first row that `owner` of `peers`
    /// owns (found by binary search).
    pub fn open(path: &Path, owner: usize, peers: usize) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < 8 || (len - 8) % PAIR != 0 {
            return Err(invalid(path, format!("{len} bytes")));
        }
        let rows = (len - 8) / PAIR;
        let key_at = |i: u64| -> io::Result<u128> {
            let mut b = [0u8; 16];
            file.read_exact_at(&mut b, 8 + i * PAIR)?;
            Ok(u128::from_le_bytes(b))
        };
        // First row whose owner is at least `owner`.
        let (mut lo, mut hi) = (0u64, rows);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self::owner(key_at(mid)?, peers) < owner {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut input = BufReader::with_capacity(1 << 20, file);
        input.seek(SeekFrom::Start(8 + lo * PAIR))?;
        Ok(SortedRangeReader {
            input,
            path: path.to_path_buf(),
            left: rows - lo,
            owner,
            peers,
        })
    }

    /// The next `(key hash, fingerprint)` of the range, or `None` past its end.
    pub fn next_pair(&mut self) -> io::Result<Option<(u128, u128)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut rec = [0u8; PAIR as usize];
        self.input
            .read_exact(&mut rec)
            .map_err(|e| invalid(&self.path, e))?;
        self.left -= 1;
        let mut k = [0u8; 16];
        k.copy_from_slice(&rec[..16]);
        let key = u128::from_le_bytes(k);
        if owner(key, self.peers) != self.owner {
            self.left = 0;
            return Ok(None);
        }
        let mut f = [0u8; 16];
        f.copy_from_slice(&rec[16..]);
        Ok(Some((key, u128::from_le_bytes(f))))
    }
}

/// Reads the key texts of a [`PartKind::Keys`] part, or the rows of a [`PartKind::Legacy`] one
/// (the magic `WHSNAP01`, then per row 16 bytes key hash, 16 bytes fingerprint, the key
/// text's length as a LEB128 varint and the key text).
pub struct KeyTextReader {
    input: BufReader<File>,
    path: PathBuf,
    legacy: bool,
}

impl KeyTextReader {
    /// Opens `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let legacy = match part_kind(path)? {
            PartKind::Keys => false,
            PartKind::Legacy => true,
            PartKind::Sorted(_) => {
                return Err(invalid(path, "a sorted part holds no key texts"));
            }
        };
        let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
        input.read_exact(&mut [0u8; 8])?;
        Ok(KeyTextReader {
            input,
            path: path.to_path_buf(),
            legacy,
        })
    }

    /// The next key text (into `key`); false at the end. In a legacy part, which also holds
    /// each row's key hash and fingerprint, `pair` is set to them.
    pub fn next_key(
        &mut self,
        key: &mut Vec<u8>,
        pair: &mut Option<(u128, u128)>,
    ) -> io::Result<bool> {
        let mut first = [0u8; 1];
        if self.legacy {
            let mut rec = [0u8; PAIR as usize];
            match self.input.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            let (k, f) = rec.split_at(16);
            *pair = Some((
                u128::from_le_bytes(k.try_into().unwrap_or_default()),
                u128::from_le_bytes(f.try_into().unwrap_or_default()),
            ));
            self.input
                .read_exact(&mut first)
                .map_err(|e| invalid(&self.path, e))?;
        } else {
            match self.input.read_exact(&mut first) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let mut len = (first[0] & 0x7f) as usize;
        let mut b = first[0];
        let mut shift = 7;
        while b & 0x80 != 0 {
            if shift > 35 {
                return Err(invalid(&self.path, "bad length"));
            }
            let mut next = [0u8; 1];
            self.input
                .read_exact(&mut next)
                .map_err(|e| invalid(&self.path, e))?;
            b = next[0];
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
        }
        key.clear();
        key.resize(len, 0);
        self.input
            .read_exact(key)
            .map_err(|e| invalid(&self.path, e))?;
        Ok(true)
    }
}

/// The previous snapshot's `(key hash, fingerprint)` pairs in one owner's key range,
/// ascending by key hash: streamed from sorted parts (each binary-searched to the range), or,
/// for a legacy state, loaded and sorted in memory once.
pub struct PreviousRange {
    heads: Vec<(Option<(u128, u128)>, SortedRangeReader)>,
    loaded: std::vec::IntoIter<(u128, u128)>,
    last: Option<u128>,
}

impl PreviousRange {
    /// Opens the pairs of `parts` (the committed state's files) owned by `owner` of `peers`.
    pub fn open(parts: &[PathBuf], owner: usize, peers: usize) -> io::Result<Self> {
        let mut heads = Vec::new();
        let mut loaded = Vec::new();
        let mut legacy = false;
        let mut key = Vec::new();
        for path in parts {
            match part_kind(path)? {
                PartKind::Sorted(_) => {
                    let mut r = SortedRangeReader::open(path, owner, peers)?;
                    heads.push((r.next_pair()?, r));
                }
                PartKind::Keys => {}
                PartKind::Legacy => {
                    legacy = true;
                    let mut r = KeyTextReader::open(path)?;
                    let mut pair = None;
                    while r.next_key(&mut key, &mut pair)? {
                        if let Some(p) = pair.filter(|p| self::owner(p.0, peers) == owner) {
                            loaded.push(p);
                        }
                    }
                }
            }
        }
        if legacy {
            for (head, r) in &mut heads {
                while let Some(p) = head.take() {
                    loaded.push(p);
                    *head = r.next_pair()?;
                }
            }
            heads.clear();
            loaded.sort_unstable();
        }
        Ok(PreviousRange {
            heads,
            loaded: loaded.into_iter(),
            last: None,
        })
    }

    /// The next pair, or `None` at the end of the range. A key seen twice is an error (the
    /// state is corrupt).
    pub fn next_pair(&mut self) -> io::Result<Option<(u128, u128)>> {
        let next = match self.loaded.next() {
            Some(p) => Some(p),
            None => {
                let Some(i) = (0..self.heads.len())
                    .filter(|&i| self.heads[i].0.is_some())
                    .min_by_key(|&i| self.heads[i].0.map(|p| p.0))
                else {
                    return Ok(None);
                };
                let (head, r) = &mut self.heads[i];
                let p = *head;
                *head = r.next_pair()?;
                p
            }
        };
        if let Some((k, _)) = next {
            if self.last.is_some_and(|l| l >= k) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the snapshot state holds a key twice or out of order",
                ));
            }
            self.last = Some(k);
        }
        Ok(next)
    }
}

/// The key texts whose hashes are in `wanted`, read from the key-text and legacy parts of
/// `parts`; each once, also where several snapshots' parts hold it.
pub fn key_texts_of(parts: &[PathBuf], wanted: &KeySet) -> io::Result<Vec<String>> {
    let mut out = Vec::with_capacity(wanted.len());
    let mut found = KeySet::default();
    let mut key = Vec::new();
    let mut pair = None;
    for path in parts {
        if found.len() == wanted.len() {
            break;
        }
        if let PartKind::Sorted(_) = part_kind(path)? {
            continue;
        }
        let mut r = KeyTextReader::open(path)?;
        while r.next_key(&mut key, &mut pair)? {
            let h = xxh3_128(&key);
            if wanted.contains(&h) && found.insert(h) {
                out.push(String::from_utf8_lossy(&key).into_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{FingerprintVersion, KeyTextWriter, SortedPartWriter};

    #[test]
    fn a_sorted_part_is_read_by_owner_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.snap");
        let mut keys: Vec<u128> = (0..5000u128).map(|i| xxh3_128(&i.to_le_bytes())).collect();
        keys.sort_unstable();
        let mut w = SortedPartWriter::create(&path, FingerprintVersion::Binary).unwrap();
        for &k in &keys {
            w.push(k, !k).unwrap();
        }
        assert!(w.push(keys[0], 0).is_err(), "out of order is refused");
        w.finish().unwrap();
        assert_eq!(
            part_kind(&path).unwrap(),
            PartKind::Sorted(FingerprintVersion::Binary)
        );
        for peers in [1, 2, 3] {
            let mut all = Vec::new();
            for o in 0..peers {
                let mut r = SortedRangeReader::open(&path, o, peers).unwrap();
                while let Some((k, fp)) = r.next_pair().unwrap() {
                    assert_eq!(owner(k, peers), o);
                    assert_eq!(fp, !k);
                    all.push(k);
                }
            }
            assert_eq!(all, keys, "{peers} ranges read every row once, in order");
        }
    }

    #[test]
    fn key_texts_are_found_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.snap");
        let mut w = KeyTextWriter::create(&path).unwrap();
        let long = "x".repeat(300);
        for k in ["1", "\"a\"", long.as_str()] {
            w.push(k.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        let wanted: KeySet = [xxh3_128(b"\"a\""), xxh3_128(long.as_bytes())]
            .into_iter()
            .collect();
        let got = key_texts_of(&[path], &wanted).unwrap();
        assert_eq!(got, vec!["\"a\"".to_string(), long]);
    }
}
