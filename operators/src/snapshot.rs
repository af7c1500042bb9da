//! Row identity for snapshot diffs: a key hash, a 128-bit fingerprint of the row's values,
//! and the compact files in which a committed snapshot's `(key, fingerprint)` state is kept.
//!
//! # Fingerprint
//! The fingerprint is `xxh3_128` over a canonical encoding of the row's non-key columns:
//! columns are taken in the order of their names (so reordering columns changes nothing), and
//! for every non-NULL value the bytes `name 0x00 value 0x1e` are hashed, where `value` is the
//! value's JSON encoding (the same encoding the destinations get). NULL values — and values
//! without a JSON form, NaN and ±infinity — are left out entirely, so adding a nullable column
//! changes no fingerprint, wherever it is added. Columns named as JSON columns are
//! canonicalized first: parsed and re-written with object keys sorted and no whitespace, so key
//! order and formatting do not matter (text that is not valid JSON is hashed as it is).
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

use crate::encode::{write_json_str, write_key_json, ColumnEncoder};
use crate::events::{find_column, MappingError};

/// The identity of one snapshot row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId {
    /// Hash of the key's JSON text.
    pub key: u128,
    /// Fingerprint of the values.
    pub fp: u128,
}

/// Computes [`RowId`]s and key texts for the rows of one table schema.
#[derive(Debug, Clone)]
pub struct RowHasher {
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
            keys,
            key_names: key_columns.to_vec(),
            values,
            identity,
            n_columns: schema.fields().len(),
        })
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
                if ok {
                    scratch.push(0x1e);
                } else {
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

const MAGIC: &[u8; 8] = b"WHSNAP01";

/// Writes one part of a snapshot's state: `(key hash, fingerprint, key text)` per row, in the
/// order given. Format: the 8-byte magic `WHSNAP01`, then per row 16 bytes key hash (LE),
/// 16 bytes fingerprint (LE), the key text's length as a LEB128 varint and the key text.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    rows: u64,
}

impl SnapshotWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(MAGIC)?;
        Ok(SnapshotWriter {
            out,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    /// Appends one row.
    pub fn push(&mut self, id: RowId, key: &[u8]) -> io::Result<()> {
        self.out.write_all(&id.key.to_le_bytes())?;
        self.out.write_all(&id.fp.to_le_bytes())?;
        let mut len = key.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.out.write_all(&[b])?;
                break;
            }
            self.out.write_all(&[b | 0x80])?;
        }
        self.out.write_all(key)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and syncs the file to disk; returns its path.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.path)
    }
}

/// Reads a part written by [`SnapshotWriter`].
pub struct SnapshotReader {
    input: BufReader<File>,
    path: PathBuf,
}

impl SnapshotReader {
    /// Opens `path` and checks its magic.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a wharf snapshot file", path.display()),
            ));
        }
        Ok(SnapshotReader {
            input,
            path: path.to_path_buf(),
        })
    }

    /// The next row (its key text goes into `key`), or `None` at the end.
    pub fn next_row(&mut self, key: &mut Vec<u8>) -> io::Result<Option<RowId>> {
        let mut buf = [0u8; 16];
        match self.input.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let k = u128::from_le_bytes(buf);
        self.input
            .read_exact(&mut buf)
            .map_err(|e| self.corrupt(e))?;
        let fp = u128::from_le_bytes(buf);
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            self.input.read_exact(&mut b).map_err(|e| self.corrupt(e))?;
            len |= ((b[0] & 0x7f) as usize) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 35 {
                return Err(self.corrupt(io::Error::other("bad length")));
            }
        }
        key.clear();
        key.resize(len, 0);
        self.input.read_exact(key).map_err(|e| self.corrupt(e))?;
        Ok(Some(RowId { key: k, fp }))
    }

    fn corrupt(&self, e: io::Error) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot file {} is truncated or corrupt: {e}",
                self.path.display()
            ),
        )
    }
}
