//! Row identity for snapshot diffs: a key hash, a 128-bit fingerprint of the row's values,
//! and the compact files in which a committed snapshot's `(key, fingerprint)` state is kept.
//!
//! # Fingerprint
//! The fingerprint is `xxh3_128` over a canonical encoding of the row's non-key columns:
//! columns are taken in the order of their names (so reordering columns changes nothing), and
//! every non-NULL value is hashed as `name 0x00 value`. NULL values — and values without a JSON
//! form, NaN and ±infinity — are left out entirely, so adding a nullable column changes no
//! fingerprint, wherever it is added. Columns named as JSON columns are canonicalized first:
//! parsed and re-written with object keys sorted and no whitespace, so key order and
//! formatting do not matter (text that is not valid JSON is hashed as it is).
//!
//! `value` has two versions ([`FingerprintVersion`]). Version 2 (binary, the default): a tag
//! byte and the value's bytes — integers of any width as `i` + i64 little-endian (`u` + u64
//! above i64's range), floats as `f` + the f64's bits, strings as `s` + u64 length + UTF-8,
//! booleans as `b` + 0/1, JSON columns as `j` + length + canonical JSON, every other type as
//! `t` + length + its JSON text. Version 1 (text; states committed by older versions): the
//! value's JSON text followed by `0x1e`. A sync keeps the version its committed state was
//! written with (the state files say which), so an upgrade resends nothing; `wharf reset`
//! starts it over on version 2.
//!
//! For events (identity columns configured), the upper 64 bits of the fingerprint are a hash of
//! the identity columns (event name, distinct id, time) and the lower 64 bits a hash of the
//! rest: an update that changes an event's identity can then be told apart from one that does
//! not, without keeping the old row.
//!
//! # Key
//! The key of a row is the JSON text of its primary-key value (a JSON array for composite
//! keys); the key hash is `xxh3_128` of that text. A row with a NULL key column has no key.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::columns::{find_column, MappingError};
use crate::encode::{write_json_str, write_key_json, ColumnEncoder};

/// The identity of one snapshot row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId {
    /// Hash of the key's JSON text.
    pub key: u128,
    /// Fingerprint of the values.
    pub fp: u128,
}

/// How values are encoded for the fingerprint (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintVersion {
    /// JSON text of each value (states written by older versions).
    Text,
    /// Tagged binary values.
    Binary,
}

/// Computes [`RowId`]s and key texts for the rows of one table schema.
#[derive(Debug, Clone)]
pub struct RowHasher {
    version: FingerprintVersion,
    keys: Vec<usize>,
    key_names: Vec<String>,
    /// (name, column, is JSON), sorted by name; key and identity columns excluded.
    values: Vec<(String, usize, bool)>,
    /// Identity columns (events): hashed into the fingerprint's upper 64 bits.
    identity: Vec<usize>,
    n_columns: usize,
}

/// The hashes and keys of one batch's rows.
#[derive(Debug, Default, Clone)]
pub struct HashedBatch {
    /// Per row: its identity, or `None` when a key column is NULL.
    pub ids: Vec<Option<RowId>>,
    /// Key JSON texts back to back; row `i`'s key is `keys[key_ends[i-1]..key_ends[i]]`.
    pub keys: Vec<u8>,
    /// End offsets into `keys`.
    pub key_ends: Vec<usize>,
}

impl HashedBatch {
    /// Row `i`'s key JSON text (empty when the key has a NULL).
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        &self.keys[start..self.key_ends[i]]
    }
}

impl RowHasher {
    /// A hasher for `schema` keyed by `key_columns` (at least one). `identity_columns` (events
    /// only) split the fingerprint as described in the module docs; `json_columns` are
    /// canonicalized before hashing.
    pub fn new(
        schema: &Schema,
        key_columns: &[String],
        identity_columns: &[String],
        json_columns: &[String],
    ) -> Result<Self, MappingError> {
        let keys = key_columns
            .iter()
            .map(|c| find_column(schema, c, "primary_key"))
            .collect::<Result<Vec<_>, _>>()?;
        let identity = identity_columns
            .iter()
            .map(|c| find_column(schema, c, "event identity"))
            .collect::<Result<Vec<_>, _>>()?;
        for c in json_columns {
            find_column(schema, c, "properties_column")?;
        }
        let mut values: Vec<(String, usize, bool)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| !keys.contains(i) && !identity.contains(i))
            .map(|(i, f)| (f.name().clone(), i, json_columns.contains(f.name())))
            .collect();
        values.sort();
        Ok(RowHasher {
            version: FingerprintVersion::Binary,
            keys,
            key_names: key_columns.to_vec(),
            values,
            identity,
            n_columns: schema.fields().len(),
        })
    }

    /// The same hasher with fingerprints of `version`.
    pub fn with_fingerprint(&self, version: FingerprintVersion) -> Self {
        RowHasher {
            version,
            ..self.clone()
        }
    }

    /// The fingerprint version this hasher computes.
    pub fn fingerprint_version(&self) -> FingerprintVersion {
        self.version
    }

    /// Number of columns of the schema this hasher was built for.
    pub fn n_columns(&self) -> usize {
        self.n_columns
    }

    /// Writes row `row`'s key JSON into `out`; false when a key column is NULL.
    fn write_key(&self, encs: &[ColumnEncoder<'_>], row: usize, out: &mut Vec<u8>) -> bool {
        write_key_json(encs, &self.keys, row, out)
    }

    /// Hashes every row of `batch`.
    pub fn hash_batch(&self, batch: &RecordBatch) -> HashedBatch {
        let encs: Vec<ColumnEncoder<'_>> = batch.columns().iter().map(ColumnEncoder::new).collect();
        let rows = batch.num_rows();
        let mut out = HashedBatch {
            ids: Vec::with_capacity(rows),
            keys: Vec::with_capacity(rows * 16),
            key_ends: Vec::with_capacity(rows),
        };
        let mut scratch = Vec::with_capacity(256);
        let mut json = Vec::new();
        for row in 0..rows {
            let start = out.keys.len();
            if !self.write_key(&encs, row, &mut out.keys) {
                out.keys.truncate(start);
                out.key_ends.push(start);
                out.ids.push(None);
                continue;
            }
            out.key_ends.push(out.keys.len());
            let key = xxh3_128(&out.keys[start..]);
            scratch.clear();
            for (name, i, is_json) in &self.values {
                let e = &encs[*i];
                if e.is_null(row) {
                    continue;
                }
                let mark = scratch.len();
                scratch.extend_from_slice(name.as_bytes());
                scratch.push(0);
                let ok = match self.version {
                    FingerprintVersion::Binary => {
                        write_binary(e, *is_json, row, &mut scratch, &mut json)
                    }
                    FingerprintVersion::Text => {
                        let ok = if *is_json {
                            match e.text(row) {
                                Some(text) => {
                                    json.clear();
                                    canonical_json(&text, &mut json);
                                    scratch.extend_from_slice(&json);
                                    true
                                }
                                None => e.write(row, &mut scratch),
                            }
                        } else {
                            e.write(row, &mut scratch)
                        };
                        scratch.push(0x1e);
                        ok
                    }
                };
                if !ok {
                    scratch.truncate(mark);
                }
            }
            let fp = if self.identity.is_empty() {
                xxh3_128(&scratch)
            } else {
                let rest = xxh3_64(&scratch);
                scratch.clear();
                for &i in &self.identity {
                    if encs[i].is_null(row) || !encs[i].write(row, &mut scratch) {
                        scratch.extend_from_slice(b"null");
                    }
                    scratch.push(0x1e);
                }
                ((xxh3_64(&scratch) as u128) << 64) | rest as u128
            };
            out.ids.push(Some(RowId { key, fp }));
        }
        out
    }

    /// The key columns' names.
    pub fn key_names(&self) -> Vec<String> {
        self.key_names.clone()
    }

    /// The key texts of `batch`'s rows (empty for a row with a NULL key column).
    pub fn key_texts(&self, batch: &RecordBatch) -> Vec<String> {
        let encs: Vec<ColumnEncoder<'_>> = batch.columns().iter().map(ColumnEncoder::new).collect();
        let mut buf = Vec::with_capacity(64);
        (0..batch.num_rows())
            .map(|row| {
                buf.clear();
                if self.write_key(&encs, row, &mut buf) {
                    String::from_utf8_lossy(&buf).into_owned()
                } else {
                    String::new()
                }
            })
            .collect()
    }

    /// Only the key hashes of `batch` (for finding rows again).
    pub fn key_hashes(&self, batch: &RecordBatch) -> Vec<Option<u128>> {
        let encs: Vec<ColumnEncoder<'_>> = batch.columns().iter().map(ColumnEncoder::new).collect();
        let mut buf = Vec::with_capacity(64);
        (0..batch.num_rows())
            .map(|row| {
                buf.clear();
                self.write_key(&encs, row, &mut buf).then(|| xxh3_128(&buf))
            })
            .collect()
    }
}

/// Writes `e`'s value at `row` in the binary canonical form (version 2, see the module docs);
/// false when it has none (NaN, ±infinity). `json` is scratch space.
fn write_binary(
    e: &ColumnEncoder<'_>,
    is_json: bool,
    row: usize,
    out: &mut Vec<u8>,
    json: &mut Vec<u8>,
) -> bool {
    fn int(out: &mut Vec<u8>, v: i64) {
        out.push(b'i');
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn float(out: &mut Vec<u8>, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        out.push(b'f');
        out.extend_from_slice(&v.to_bits().to_le_bytes());
        true
    }
    fn tagged(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    if is_json {
        if let Some(text) = e.text(row) {
            json.clear();
            canonical_json(&text, json);
            tagged(out, b'j', json);
            return true;
        }
    }
    match e {
        ColumnEncoder::I8(a) => int(out, a.value(row).into()),
        ColumnEncoder::I16(a) => int(out, a.value(row).into()),
        ColumnEncoder::I32(a) => int(out, a.value(row).into()),
        ColumnEncoder::I64(a) => int(out, a.value(row)),
        ColumnEncoder::U8(a) => int(out, a.value(row).into()),
        ColumnEncoder::U16(a) => int(out, a.value(row).into()),
        ColumnEncoder::U32(a) => int(out, a.value(row).into()),
        ColumnEncoder::U64(a) => match i64::try_from(a.value(row)) {
            Ok(v) => int(out, v),
            Err(_) => {
                out.push(b'u');
                out.extend_from_slice(&a.value(row).to_le_bytes());
            }
        },
        ColumnEncoder::F32(a) => return float(out, a.value(row).into()),
        ColumnEncoder::F64(a) => return float(out, a.value(row)),
        ColumnEncoder::Utf8(a) => tagged(out, b's', a.value(row).as_bytes()),
        ColumnEncoder::LargeUtf8(a) => tagged(out, b's', a.value(row).as_bytes()),
        ColumnEncoder::Utf8View(a) => tagged(out, b's', a.value(row).as_bytes()),
        ColumnEncoder::Bool(a) => {
            out.push(b'b');
            out.push(u8::from(a.value(row)));
        }
        other => {
            json.clear();
            if !other.write(row, json) {
                return false;
            }
            tagged(out, b't', json);
        }
    }
    true
}

/// Whether the upper (identity) halves of two event fingerprints differ.
pub fn identity_changed(old_fp: u128, new_fp: u128) -> bool {
    (old_fp >> 64) != (new_fp >> 64)
}

/// Writes `text` as canonical JSON (sorted object keys, no whitespace) into `out`; text that
/// is not JSON is written as a JSON string.
pub fn canonical_json(text: &str, out: &mut Vec<u8>) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => write_canonical(&v, out),
        Err(_) => write_json_str(out, text),
    }
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push(b'{');
            for (n, (k, v)) in sorted.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_json_str(out, k);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (n, v) in a.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_json_str(out, s),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// Magic of a legacy part (older versions): `(key hash, fingerprint, key text)` per row,
/// unsorted. Still read, so a state committed by an older wharf is diffed against, not resent.
const LEGACY_MAGIC: &[u8; 8] = b"WHSNAP01";
/// Magic of a sorted part: `(key hash, fingerprint)` per row, ascending by key hash; version 2
/// (binary) fingerprints.
const SORTED_MAGIC: &[u8; 8] = b"WHSNAP03";
/// The same with version 1 (text) fingerprints.
const SORTED_TEXT_MAGIC: &[u8; 8] = b"WHSNAP02";
/// Magic of a key-text part: the key texts of the rows, in no particular order.
const KEYS_MAGIC: &[u8; 8] = b"WHKEYS01";
/// Bytes per row of a sorted part.
const PAIR: u64 = 32;

/// What a state file holds, from its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// `(key hash, fingerprint)` pairs sorted by key hash ([`SortedPartWriter`]), with
    /// fingerprints of this version.
    Sorted(FingerprintVersion),
    /// Key texts ([`KeyTextWriter`]).
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

/// Hashes a key hash for a hash table: it already is a uniform hash, so its lower 64 bits
/// are used as they are (std's default SipHash costs more than the rest of a lookup).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only used for key hashes (`write_u128`); anything else is mixed in byte by byte.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

/// Builds [`KeyHasher`]s.
pub type KeyHashing = std::hash::BuildHasherDefault<KeyHasher>;
/// A map keyed by key hashes.
pub type KeyMap<V> = std::collections::HashMap<u128, V, KeyHashing>;
/// A set of key hashes.
pub type KeySet = std::collections::HashSet<u128, KeyHashing>;

/// The worker (of `peers`) that owns `key`: the key space is cut into `peers` contiguous
/// ranges by the key hash's upper 64 bits, so each worker's keys are one range and the ranges
/// are in worker order. The result is below `peers`.
pub fn owner(key: u128, peers: usize) -> usize {
    (((key >> 64) * peers as u128) >> 64) as usize
}

/// Where a part is written until it is complete: `<path>.partial`. Only a finished part has
/// its own name, so a part file that exists is whole (a run killed while writing leaves a
/// `.partial` file, never a short part that looks valid).
fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

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

/// The name of worker `index`'s sorted part in a run of `peers` workers.
pub fn sorted_part_name(index: usize, peers: usize) -> String {
    format!("part-{index}-of-{peers}.snap")
}

/// The state a run that did not commit may have delivered: the complete sorted parts and
/// key-text parts of its snapshot folder. A later diff must treat each key of a range it
/// covers as possibly in the destination with this snapshot's value (see `diff`).
///
/// A range's sorted part is finished before any change of that range leaves the diff, and
/// every key-text part before any sorted part: a range without a finished part delivered
/// nothing, so the snapshot says nothing about its keys ([`PendingSnapshot::covers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
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

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "snapshot file {} is truncated or corrupt: {what}",
            path.display()
        ),
    )
}

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

    #[test]
    fn owners_cut_the_key_space_into_ordered_ranges() {
        for peers in [1usize, 2, 3, 4, 7] {
            assert_eq!(owner(0, peers), 0);
            assert_eq!(owner(u128::MAX, peers), peers - 1);
            let mut last = 0;
            for i in 0..1000u128 {
                let key = i * (u128::MAX / 1000);
                let o = owner(key, peers);
                assert!(o < peers && o >= last, "owner of {key} with {peers} peers");
                last = o;
            }
        }
    }

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
