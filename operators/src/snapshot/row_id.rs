//! Row identity: [`RowId`] (key hash and fingerprint) and the [`RowHasher`] that computes it
//! for the rows of one table schema (the encoding is described in the [`snapshot`](super)
//! module docs).

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::canonical::{canonical_json, write_binary};
use crate::columns::{find_column, MappingError};
use crate::encode::{write_key_json, ColumnEncoder};

/// The identity of one snapshot row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId {
    /// Hash of the key's JSON text.
    pub key: u128,
    /// Fingerprint of the values.
    pub fp: u128,
}

/// How values are encoded for the fingerprint (see the [`snapshot`](super) module docs).
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
    /// only) split the fingerprint as described in the [`snapshot`](super) module docs;
    /// `json_columns` are canonicalized before hashing.
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

    /// Names what its hashes are of (the version, key, identity and value columns): pairs
    /// made by hashers with different ids are not comparable.
    pub fn layout_id(&self) -> u64 {
        xxh3_64(format!("{self:?}").as_bytes())
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

/// Whether the upper (identity) halves of two event fingerprints differ.
pub fn identity_changed(old_fp: u128, new_fp: u128) -> bool {
    (old_fp >> 64) != (new_fp >> 64)
}
